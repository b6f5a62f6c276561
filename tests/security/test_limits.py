"""Finding 14: limits are the backend's, not only the page's. The runner refuses configs over the
server's limits (LENSCAPE_LIMITS, set by whoever starts the server), landscape jobs refuse a grid
whose estimated time is over the limit, imported models get an estimate from a timed probe pass,
and a user can cancel the jobs of their own tab from the Runs page."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from lenscape.analysis.saliency import SaliencyConfig
from lenscape.backend.jobs import JobStatus, job, job_kind, ref
from lenscape.backend.landscape_tasks import EvalSet, SurfaceConfig
from lenscape.backend.limits import seconds_per_example
from lenscape.backend.saliency_tasks import GridConfig
from lenscape.models.architectures import ArchSpec, build_model
from lenscape.models.data import DataSpec
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import import_model, load_model

ROOT = Path(__file__).resolve().parents[2]
ARCH = ArchSpec(name="mlp", widths=(16,), in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    rec = import_model(build_model(ARCH), ARCH, "tiny", DataSpec(name="digits"), tuple(map(str, range(10))), "test")
    return load_model(rec["run_id"])


def _grid(lm, indices=(0,), **method):
    r = ref(lm)
    return job("saliency", GridConfig(model=r, indices=indices, methods=(SaliencyConfig(**method),)), (r,))


@pytest.mark.parametrize(
    "indices,method,field",
    [
        ((0,), dict(method="integrated_gradients", n_steps=10_000), "n_steps"),
        ((0,), dict(method="smoothgrad", n_samples=1_000_000), "n_samples"),
        (tuple(range(10_000)), dict(method="gradient"), "indices"),
    ],
)
def test_the_runner_refuses_work_over_the_limits_whatever_the_page_allowed(runner, tiny, indices, method, field):
    with pytest.raises(InvalidInputError, match=f"{field}.*over this server's limit"):
        runner.submit(_grid(tiny, indices, **method))
    assert runner.store.list() == [] and runner.running() == []


def test_limits_count_only_where_they_mean_something(runner, tiny, wait_for_job):
    # 10,000 IG steps on a method that takes no steps is not work: accepted
    wait_for_job(runner.submit(_grid(tiny, method="gradient", n_steps=10_000)))


def test_whoever_runs_the_server_sets_the_limits(runner, tiny, monkeypatch, wait_for_job):
    monkeypatch.setenv("LENSCAPE_LIMITS", "noise_samples=2000")
    wait_for_job(runner.submit(_grid(tiny, method="smoothgrad", n_samples=600)))
    monkeypatch.setenv("LENSCAPE_LIMITS", "ig_steps=10")
    with pytest.raises(InvalidInputError, match="limit of 10"):
        runner.submit(_grid(tiny, method="integrated_gradients", n_steps=11))
    monkeypatch.setenv("LENSCAPE_LIMITS", "no_such_limit=3")
    with pytest.raises(InvalidInputError, match="unknown limit"):
        runner.submit(_grid(tiny, method="integrated_gradients", n_steps=11))


def test_an_imported_model_gets_an_estimate_from_a_timed_probe(tiny):
    assert not tiny.record.get("metrics")
    per = seconds_per_example(tiny)
    assert 0 < per < 0.01
    assert seconds_per_example(tiny) == per  # measured once per model and device


def test_a_landscape_grid_over_the_time_limit_is_refused_by_the_job(runner, tiny, monkeypatch):
    per = seconds_per_example(tiny)
    cfg = SurfaceConfig(model=ref(tiny), dims=2, resolution=41, data=EvalSet(n_examples=200))
    expected = 41 * 41 * 200 * per
    monkeypatch.setenv("LENSCAPE_LIMITS", f"job_seconds={expected / 10}")
    job_id = runner.submit(job("landscape_surface", cfg, (ref(tiny),)))
    assert runner.wait(job_id, 60) == JobStatus.FAILED
    assert "job_seconds" in runner.error(job_id)
    monkeypatch.setenv("LENSCAPE_LIMITS", f"job_seconds={expected * 10}")
    runner.retry(job_id)
    assert runner.wait(job_id, 120) == JobStatus.DONE


GATE = threading.Event()


@dataclass(frozen=True)
class WaitConfig:
    name: str


@job_kind("test_waits")
def waits(ctx, cfg: WaitConfig) -> int:
    while not GATE.is_set():
        ctx.progress(0.5, "waiting")
        time.sleep(0.05)
    return 1


def test_a_user_cancels_their_own_job_from_the_runs_page(register_kinds):
    from lenscape.ui.common import backend

    register_kinds(waits)
    GATE.clear()
    runner = backend()
    mine = runner.submit(job("test_waits", WaitConfig(name="mine"), label="my long job"), watcher="tab-1:sal")
    theirs = runner.submit(job("test_waits", WaitConfig(name="theirs"), label="their job"), watcher="tab-2:sal")
    try:
        at = AppTest.from_file(str(ROOT / "pages" / "7_Runs.py"), default_timeout=60)
        at.session_state["_lenscape.session"] = "tab-1"
        at.run()
        assert not at.exception
        labels = " ".join(str(p.proto.text) for p in at.get("progress"))
        assert "my long job" in labels and "their job" not in labels  # another tab's jobs are not offered
        at.button(key=f"runs.cancel.{mine}").click().run()
        assert runner.wait(mine, 10) == JobStatus.CANCELLED
        assert runner.status(theirs) in (JobStatus.QUEUED, JobStatus.RUNNING)  # another tab's job runs on
    finally:
        GATE.set()
        runner.wait(theirs, 10)


@pytest.mark.parametrize(
    "make,field",
    [
        (
            lambda r: GridConfig(model=r, indices=(0,), methods=(SaliencyConfig(method="integrated_gradients"),) * 200),
            "methods",
        ),
        (
            lambda r: GridConfig(
                model=r, indices=(0,), methods=(SaliencyConfig(method="smoothgrad", batch_size=2000),)
            ),
            "batch_size",
        ),
    ],
)
def test_more_fields_that_decide_the_cost_are_limited(runner, tiny, make, field):
    r = ref(tiny)
    with pytest.raises(InvalidInputError, match=f"{field}.*over this server's limit"):
        runner.submit(job("saliency", make(r), (r,)))


@pytest.mark.parametrize(
    "overrides,field",
    [({"widths": (131072, 16)}, "widths"), ({"epochs": 10**6}, "epochs"), ({"batch_size": 10**9}, "batch_size")],
)
def test_a_training_recipe_over_the_limits_is_refused(runner, overrides, field):
    from lenscape.backend.tasks import train_jobs
    from lenscape.models.training import preset

    (j,) = train_jobs(preset("digits-mlp", **overrides), [0])
    with pytest.raises(InvalidInputError, match=f"{field}.*over this server's limit"):
        runner.submit(j)


def test_a_record_s_timings_do_not_decide_the_estimate(tiny):
    from dataclasses import replace

    # Two timings of one model differ by 200x on a busy CI machine, so compare each with the forged
    # figure, not with each other: no forward pass of a real batch takes under a nanosecond per example,
    # or a second per example for this tiny model.
    fast = replace(
        tiny, fingerprint="f" * 16, record={**tiny.record, "metrics": [{"seconds": 1e-12}], "n_train": 10**12}
    )
    slow = replace(tiny, fingerprint="e" * 16, record={**tiny.record, "metrics": [{"seconds": 1e9}], "n_train": 1})
    assert seconds_per_example(fast) > 1e-9
    assert seconds_per_example(slow) < 1.0


def test_retry_keeps_the_tab_as_the_job_s_watcher(register_kinds, runner):
    register_kinds(waits)
    GATE.clear()
    j = job("test_waits", WaitConfig(name="retried"), label="again")
    try:
        job_id = runner.submit(j, watcher="tab-9:x")
        runner.cancel(job_id)
        assert runner.wait(job_id, 10) == JobStatus.CANCELLED
        runner.retry(job_id, watcher="tab-9:x")
        assert job_id in runner.watched_by("tab-9")
    finally:
        GATE.set()
        runner.wait(job_id, 10)
