"""Tests read data from ../shared/data (full MNIST and CIFAR-10) unless LENSCAPE_DATA says
otherwise, and keep every workspace in a temporary folder."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not os.environ.get("LENSCAPE_DATA") and SHARED.is_dir():
    os.environ["LENSCAPE_DATA"] = str(SHARED)
os.environ.setdefault("LENSCAPE_OFFLINE", "1")
os.environ.setdefault("LENSCAPE_DEVICE", "cpu")
# the tests' image folders and model files live in tmp_path, outside the data root and the workspace
os.environ.setdefault("LENSCAPE_ALLOWED_ROOTS", tempfile.gettempdir())
# CIFAR-10's 60,000 JPEGs are decoded once for the whole run (about 10 s each time), not once per workspace:
# every worker and every server a test starts shares this folder cache (its files are named by folder stamp)
os.environ.setdefault(
    "LENSCAPE_FOLDER_CACHE", str(Path(tempfile.gettempdir()) / f"lenscape-test-folders-{os.getuid()}")
)


@pytest.fixture(autouse=True)
def lenscape_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LENSCAPE_HOME", str(home))
    return home


def has_data(name: str) -> bool:
    root = Path(os.environ.get("LENSCAPE_DATA", ""))
    return {"mnist": root / "MNIST" / "raw" / "train-images-idx3-ubyte", "cifar10": root / "cifar10-jpg" / "test"}[
        name
    ].exists()


@pytest.fixture(scope="session", autouse=True)
def job_kinds():
    """The app's job kinds, registered as open_backend() registers them."""
    from lenscape.backend.kinds import register_all

    return register_all()


@pytest.fixture
def register_kinds():
    """register_kinds(*fns): a test's own job kinds, known to the registry until the test ends (a
    module's autouse fixture registers them for each of its tests). Ask for it before `runner`, so
    that the runner stops before its kinds are forgotten."""
    from lenscape.backend.jobs import REGISTRY

    added: list = []

    def register(*fns) -> None:
        REGISTRY.register(*fns)
        added.extend(fns)

    yield register
    REGISTRY.unregister(*added)


@pytest.fixture
def runner(lenscape_home):
    """The real backend (local runner and on-disk store) over the test's workspace."""
    from lenscape.backend.runner import open_backend

    r = open_backend()
    yield r
    r.shutdown()


@pytest.fixture
def wait_for_job(runner):
    """wait_for_job(job_id) -> its result; fails the test with the job's error if it did not finish."""
    from lenscape.backend.jobs import JobStatus

    def wait(job_id: str, timeout: float = 900):
        status = runner.wait(job_id, timeout)
        assert status == JobStatus.DONE, f"job {job_id} ended {status.value}: {runner.error(job_id)}"
        return runner.result(job_id)

    return wait


@pytest.fixture
def trained_run(runner, wait_for_job):
    """trained_run(recipe="digits-mlp", seeds=(0,), **overrides) -> the run records, trained by the
    backend's train jobs into the test's workspace. `recipe` is a preset name or a TrainConfig."""
    from dataclasses import replace

    from lenscape.backend.tasks import train_jobs
    from lenscape.models.training import preset

    def train(recipe="digits-mlp", seeds=(0,), **overrides) -> list[dict]:
        cfg = preset(recipe, **overrides) if isinstance(recipe, str) else replace(recipe, **overrides)
        return [wait_for_job(runner.submit(j)) for j in train_jobs(cfg, list(seeds))]

    return train


def _run_root(tmp_path_factory) -> Path:
    """A folder of this test run that every xdist worker sees (pytest keeps the last three runs)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def class_demo(tmp_path_factory) -> tuple[Path, str]:
    """(a workspace where `lenscape warm --preset teaching` prepared the class demo, that command's
    output). Warmed once per test run, from an empty workspace, by whichever worker asks first (the
    others wait on a lock): the tests that only read the demo copy it with `demo_home` instead of
    training its three models again (so does the browser journeys' server). Preparing it from Home's
    button in an empty workspace is tests/pages/test_tour.py's one-click test."""
    import fcntl

    root = _run_root(tmp_path_factory)
    folder, said = root / "class-demo", root / "class-demo.out"
    with open(root / "class-demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not said.exists():
            partial = root / "class-demo.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            out = subprocess.run(
                [sys.executable, "-m", "lenscape", "warm", "--preset", "teaching"],
                cwd=Path(__file__).resolve().parents[1],
                env={**os.environ, "LENSCAPE_HOME": str(partial)},
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert out.returncode == 0, out.stderr[-2000:]
            partial.rename(folder)
            said.write_text(out.stdout)
    return folder, said.read_text()


@pytest.fixture
def demo_home(class_demo, lenscape_home) -> Path:
    """This test's workspace (LENSCAPE_HOME), a copy of the warmed class demo's."""
    shutil.copytree(class_demo[0], lenscape_home, dirs_exist_ok=True)
    return lenscape_home


# The backend's contract runs against every runner: the local one always, and a RayRunner over a
# Ray instance started on this machine (once per session; skipped where Ray is not installed).


@pytest.fixture(scope="session")
def ray_instance():
    ray = pytest.importorskip("ray")
    from lenscape.backend.cluster import connect

    started = time.perf_counter()
    summary = connect("local", workers=2)
    print(f"\nRay started in {time.perf_counter() - started:.1f} s: {summary}")
    yield summary
    ray.shutdown()


@pytest.fixture(params=["local", "ray"])
def runner_kind(request) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_instance")
    return request.param


@pytest.fixture
def make_runner(runner_kind):
    """make_runner(store, **kwargs): a runner of the test's kind ("local" or "ray") over `store`."""
    from lenscape.backend.runner import LocalRunner, RayRunner

    def make(store, **kwargs):
        return RayRunner(store, "local", **kwargs) if runner_kind == "ray" else LocalRunner(store, **kwargs)

    return make


def _cost_rank(item) -> int:
    """0 for the files that take longest (the browser journeys), then files that start a server and a
    browser, then the page tests, then the rest: with `--dist loadfile --no-loadscope-reorder` the two
    workers take the longest files first, so neither is left with a long file at the end."""
    if item.path.parent.name == "e2e":
        return 0 if "journeys" in item.path.name else 1
    if {"page", "server"} & set(getattr(item, "fixturenames", ())) or item.path.name == "test_wheel.py":
        return 2
    return 3 if item.path.parent.name == "pages" else 4


def pytest_collection_modifyitems(config, items):
    ranks: dict[Path, int] = {}
    for item in items:
        ranks[item.path] = min(ranks.get(item.path, 9), _cost_rank(item))
    items.sort(key=lambda it: ranks[it.path])  # stable: the file order is kept within a rank
