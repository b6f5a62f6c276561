"""The runner contract, against the real local runner and a RayRunner, and a real on-disk store."""

import hashlib
import threading
import time
from dataclasses import dataclass

import pytest

from lenscape.analysis.summary import SummaryConfig
from lenscape.backend.codec import encode
from lenscape.backend.jobs import Job, JobCancelled, JobFailed, JobStatus, NotReady, job_kind
from lenscape.backend.runner import LocalRunner
from lenscape.backend.store import ResultStore

CALLS: dict[str, int] = {}
GATES: dict[str, threading.Event] = {}


class Steps(threading.Semaphore):
    """A gate that lets one step of a job through per release()."""

    def __init__(self) -> None:
        super().__init__(0)

    def wait(self, timeout: float) -> None:
        self.acquire(timeout=timeout)


@dataclass(frozen=True)
class SlowConfig:
    name: str
    steps: int = 5
    fail_at: int = -1


@job_kind("test_slow")
def slow_job(ctx, cfg: SlowConfig) -> dict:
    CALLS[cfg.name] = CALLS.get(cfg.name, 0) + 1
    gate = GATES.get(cfg.name)
    for i in range(cfg.steps):
        if gate is not None:
            gate.wait(10)
        if i == cfg.fail_at:
            raise ValueError(f"step {i} exploded")
        ctx.progress((i + 1) / cfg.steps, f"step {i + 1}/{cfg.steps}")
        time.sleep(0.01)
    import numpy as np

    return {"name": cfg.name, "squares": np.arange(cfg.steps) ** 2}


@job_kind("test_training", lane="long")
def long_job(ctx, cfg: SlowConfig) -> dict:
    return slow_job(ctx, cfg)


@job_kind("test_summary_config")
def config_job(ctx, cfg: SlowConfig) -> SummaryConfig:
    CALLS[cfg.name] = CALLS.get(cfg.name, 0) + 1
    return SummaryConfig(n_samples=cfg.steps)


@pytest.fixture(autouse=True)
def own_kinds(register_kinds):
    register_kinds(slow_job, long_job, config_job)


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "store")


@pytest.fixture
def runner(store, make_runner):
    """Each contract test runs on the local runner and on a RayRunner (tests/backend/conftest.py)."""
    r = make_runner(store, workers=2)
    yield r
    r.shutdown()


def _job(name, **kw):
    CALLS.pop(name, None)
    return Job("test_slow", SlowConfig(name, **kw), fingerprints=("abc",), label=name)


def test_concurrent_identical_submissions_run_once(runner):
    job = _job("dedupe")
    GATES["dedupe"] = gate = threading.Event()
    ids = []
    threads = [threading.Thread(target=lambda: ids.append(runner.submit(job))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    with pytest.raises(NotReady):
        runner.result(ids[0])
    gate.set()
    assert runner.wait(ids[0], 10) == JobStatus.DONE
    assert CALLS["dedupe"] == 1
    assert runner.submit(job) == ids[0] and CALLS["dedupe"] == 1  # stored: returned at once
    assert runner.result(ids[0])["squares"].tolist() == [0, 1, 4, 9, 16]


def test_progress_is_reported(runner):
    job = _job("progress", steps=4)
    GATES["progress"] = gate = Steps()
    job_id = runner.submit(job)
    seen = set()
    for _ in range(4):
        gate.release()
        time.sleep(0.1)
        seen.add(runner.progress(job_id).fraction)
    runner.wait(job_id, 10)
    assert runner.progress(job_id).fraction == 1.0
    assert any(0 < f < 1 for f in seen), seen


def test_cancel_leaves_no_result_and_resubmit_runs_again(runner, store):
    job = _job("cancel", steps=50)
    GATES["cancel"] = gate = threading.Event()
    job_id = runner.submit(job)
    time.sleep(0.05)
    runner.cancel(job_id)
    gate.set()
    assert runner.wait(job_id, 10) == JobStatus.CANCELLED
    assert not store.path(job_id).exists()
    with pytest.raises(JobCancelled):
        runner.result(job_id)
    GATES.pop("cancel")
    assert runner.submit(job) == job_id
    assert runner.wait(job_id, 10) == JobStatus.DONE and CALLS["cancel"] == 2


def test_failure_is_recorded_and_the_runner_keeps_working(runner, store):
    bad = _job("bad", fail_at=2)
    job_id = runner.submit(bad)
    assert runner.wait(job_id, 10) == JobStatus.FAILED
    with pytest.raises(JobFailed, match="step 2 exploded"):
        runner.result(job_id)
    assert "ValueError" in store.get(job_id)["error"]
    good = runner.submit(_job("after-failure"))
    assert runner.wait(good, 10) == JobStatus.DONE


def test_restart_finds_old_results(store, make_runner):
    first = make_runner(store)
    job = _job("restart")
    job_id = first.submit(job)
    first.wait(job_id, 10)
    first.shutdown()
    second = make_runner(ResultStore(store.root))  # a new backend object over the same folder
    assert second.status(job_id) == JobStatus.DONE
    assert second.submit(job) == job_id and CALLS["restart"] == 1
    assert second.result(job_id)["name"] == "restart"
    row = second.store.get(job_id)
    assert row["kind"] == "test_slow" and row["seconds"] > 0 and "torch" in row["versions"]
    second.shutdown()


def test_corrupted_result_is_recomputed(runner, store):
    job = _job("corrupt")
    job_id = runner.submit(job)
    runner.wait(job_id, 10)
    raw = bytearray(store.path(job_id).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    store.path(job_id).write_bytes(bytes(raw))
    assert runner.submit(job) == job_id
    assert runner.wait(job_id, 10) == JobStatus.DONE
    assert CALLS["corrupt"] == 2 and runner.result(job_id)["squares"].tolist() == [0, 1, 4, 9, 16]


def test_key_depends_on_config_fingerprints_and_data():
    a = Job("test_slow", SlowConfig("k"), fingerprints=("m1",))
    assert a.key() == Job("test_slow", SlowConfig("k"), fingerprints=("m1",)).key()
    assert a.key() != Job("test_slow", SlowConfig("k", steps=6), fingerprints=("m1",)).key()
    assert a.key() != Job("test_slow", SlowConfig("k"), fingerprints=("m2",)).key()
    assert a.key() != Job("test_slow", SlowConfig("k"), fingerprints=("m1",), data={"n": 1}).key()


def test_real_training_job_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path))
    from lenscape.backend.runner import open_backend
    from lenscape.backend.tasks import summary_job_for, train_jobs
    from lenscape.models.training import preset
    from lenscape.models.zoo import list_runs, load_model

    runner = open_backend()
    ids = [runner.submit(j) for j in train_jobs(preset("digits-mlp", epochs=4), [0, 1])]
    assert len(set(ids)) == 2 and all(runner.wait(i, 60) == JobStatus.DONE for i in ids)
    assert len(list_runs()) == 2
    lm = load_model(runner.result(ids[0])["run_id"])
    sid = runner.submit(summary_job_for(lm))
    assert runner.wait(sid, 60) == JobStatus.DONE
    summary = runner.result(sid)
    assert summary.confusion.sum() == 360 and summary.test_acc > 0.85
    assert summary.test_acc == pytest.approx(runner.result(ids[0])["metrics"][-1]["test_acc"])
    runner.shutdown()


def test_a_stored_result_that_todays_code_refuses_is_a_miss(runner, store, make_runner):
    """A result stored by older code whose config today's validation refuses (here n_samples=-1)
    is recomputed, by result() and by submit(), instead of raising out of the page."""
    CALLS.pop("refused", None)
    job = Job("test_summary_config", SlowConfig("refused", steps=3))
    job_id = runner.submit(job)
    assert runner.wait(job_id, 10) == JobStatus.DONE and runner.result(job_id) == SummaryConfig(n_samples=3)

    def store_refused():
        raw = encode(SummaryConfig(n_samples=3)).replace(b'"n_samples": 3', b'"n_samples": -1')
        assert b'"n_samples": -1' in raw
        store.path(job_id).write_bytes(raw)
        store.upsert(job_id, checksum=hashlib.sha256(raw).hexdigest())  # a valid file, checksum and all

    store_refused()
    with pytest.raises(NotReady):  # dropped and recomputing
        runner.result(job_id)
    assert runner.wait(job_id, 10) == JobStatus.DONE
    assert runner.result(job_id) == SummaryConfig(n_samples=3) and CALLS["refused"] == 2
    store_refused()
    other = make_runner(store)  # another process: knows nothing of it until it submits it
    assert other.submit(job) == job_id  # reads it, refuses it, recomputes
    assert other.wait(job_id, 10) == JobStatus.DONE and CALLS["refused"] == 3
    assert other.result(job_id) == SummaryConfig(n_samples=3)
    other.shutdown()


def test_short_jobs_do_not_wait_behind_a_long_one(store, make_runner):
    runner = make_runner(store, workers=1, long_workers=1)
    GATES["long"] = gate = threading.Event()
    CALLS.pop("long", None)
    long_id = runner.submit(Job("test_training", SlowConfig("long")))
    short_id = runner.submit(_job("short"))
    assert runner.wait(short_id, 10) == JobStatus.DONE  # while the long one is still held
    assert runner.status(long_id) == JobStatus.RUNNING
    gate.set()
    assert runner.wait(long_id, 10) == JobStatus.DONE
    runner.shutdown()


def test_release_cancels_a_job_only_when_nobody_watches_it(runner):
    GATES["watched"] = gate = threading.Event()
    job = _job("watched", steps=3)
    job_id = runner.submit(job, watcher="session-a")
    runner.submit(job, watcher="session-b")
    runner.release(job_id, "session-a")
    assert runner.status(job_id) in (JobStatus.QUEUED, JobStatus.RUNNING)
    runner.release(job_id, "session-b")
    gate.set()
    assert runner.wait(job_id, 10) == JobStatus.CANCELLED
    GATES["anon"] = gate = threading.Event()
    anon = runner.submit(_job("anon", steps=2))  # submitted without a watcher: never released
    runner.release(anon, "session-a")
    gate.set()
    assert runner.wait(anon, 10) == JobStatus.DONE


def test_a_burst_of_submissions_from_many_threads_computes_each_job_once(runner):
    names = [f"burst{i % 5}" for i in range(20)]
    for n in set(names):
        CALLS.pop(n, None)
    ids: list[str] = []
    lock = threading.Lock()

    def go(name):
        job_id = runner.submit(_job_keep(name), watcher=f"thread-{name}")
        with lock:
            ids.append(job_id)

    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 20 and len(set(ids)) == 5
    assert all(runner.wait(i, 20) == JobStatus.DONE for i in set(ids))
    assert all(CALLS[n] == 1 for n in set(names))
    assert sorted(runner.result(i)["name"] for i in set(ids)) == sorted(set(names))


def _job_keep(name):
    return Job("test_slow", SlowConfig(name), fingerprints=("abc",), label=name)


def test_both_runners_keep_the_one_contract_the_ui_uses(runner, store):
    """`Runner` is what pages, the command line and notebooks use: both runners implement all of it,
    and its store queries answer from the real store."""
    import inspect

    from lenscape.backend.runner import RayRunner, Runner

    assert isinstance(runner, Runner)
    declared = {n for n, _ in inspect.getmembers(Runner, inspect.isfunction) if not n.startswith("_")}
    assert {"submit", "result", "record", "records", "forget", "stored_bytes", "export_bundle"} <= declared
    for cls in (LocalRunner, RayRunner):
        for name in declared:
            assert (
                inspect.signature(getattr(cls, name)).parameters.keys()
                == inspect.signature(getattr(Runner, name)).parameters.keys()
            ), (cls, name)
    job_id = runner.submit(_job("contract", steps=2))
    assert runner.wait(job_id, 30) == JobStatus.DONE
    row = runner.record(job_id)
    assert row["kind"] == "test_slow" and row["label"] == "contract" and row == store.get(job_id)
    assert [r["id"] for r in runner.records("test_slow")] == [job_id] and runner.records("no_such_kind") == []
    assert runner.stored_bytes(job_id) == store.path(job_id).stat().st_size > 0
    runner.forget(job_id)
    assert runner.record(job_id) is None and runner.stored_bytes(job_id) == 0 and not store.path(job_id).exists()


def test_the_ui_uses_the_runner_contract_and_never_its_store():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    reached = [
        f"{p.relative_to(root)}:{n.lineno}"
        for folder in ("ui", "pages")
        for p in (root / folder).glob("*.py")
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.Attribute) and n.attr == "store"
    ]
    assert reached == [], reached
