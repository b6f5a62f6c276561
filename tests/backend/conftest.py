"""The backend's contract runs against every runner: the local one always, and a RayRunner over a
Ray instance started on this machine (once per session; skipped where Ray is not installed)."""

import time

import pytest


@pytest.fixture(scope="session")
def ray_instance():
    ray = pytest.importorskip("ray")
    from backend.pieces import connect

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
    from backend.runner import LocalRunner, RayRunner

    def make(store, **kwargs):
        return RayRunner(store, "local", **kwargs) if runner_kind == "ray" else LocalRunner(store, **kwargs)
    return make
