"""Finding 12: a failed job ends once and is not started again by a page's rerun (only by Retry);
a saliency grid keeps the methods that worked when one fails. (DeepLift on an imported torchvision
classifier, the failure that finding named: tests/analysis/test_deeplift.py.)"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import torch

from lenscape.analysis.saliency import SaliencyConfig, compute_saliency
from lenscape.backend.jobs import JobContext, JobFailed, JobStatus, job, job_kind, ref
from lenscape.backend.saliency_tasks import GridConfig
from lenscape.models.architectures import ArchSpec, build_model
from lenscape.models.data import DataSpec
from lenscape.models.zoo import import_model, load_model

CALLS: list[float] = []


@dataclass(frozen=True)
class FlakyConfig:
    name: str = "x"


@job_kind("test_always_fails")
def always_fails(ctx: JobContext, cfg: FlakyConfig) -> float:
    CALLS.append(time.time())
    raise ValueError("images differ in size: a.png is (32, 32), b.png is (28, 28)")


@pytest.fixture
def failing_kind(register_kinds):
    register_kinds(always_fails)
    CALLS.clear()
    return job("test_always_fails", FlakyConfig(), label="decode")


def test_a_failed_job_is_not_started_again_by_a_rerun(runner, failing_kind):
    job_id = runner.submit(failing_kind, watcher="page:a")
    assert runner.wait(job_id, 30) == JobStatus.FAILED
    for _ in range(5):  # five reruns of the page that submits it
        assert runner.submit(failing_kind, watcher="page:a") == job_id
        time.sleep(0.05)
    assert runner.status(job_id) == JobStatus.FAILED and len(CALLS) == 1
    with pytest.raises(JobFailed, match="differ in size"):
        runner.result(job_id)


def test_retry_runs_a_failed_job_once_more(runner, failing_kind):
    job_id = runner.submit(failing_kind)
    runner.wait(job_id, 30)
    runner.retry(job_id)
    time.sleep(0.2)
    assert runner.wait(job_id, 30) == JobStatus.FAILED and len(CALLS) == 2
    runner.submit(failing_kind)
    time.sleep(0.2)
    assert len(CALLS) == 2


def test_a_failure_recorded_by_an_earlier_process_is_not_rerun(runner, failing_kind, lenscape_home):
    from lenscape.backend.runner import LocalRunner

    job_id = runner.submit(failing_kind)
    runner.wait(job_id, 30)
    later = LocalRunner(runner.store)  # the app restarted
    try:
        assert later.submit(failing_kind) == job_id and later.status(job_id) == JobStatus.FAILED
        time.sleep(0.2)
        assert len(CALLS) == 1
    finally:
        later.shutdown()


def _tiny_cnn():
    arch = ArchSpec(name="cnn", channels=(4, 8), in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,))
    torch.manual_seed(0)
    rec = import_model(build_model(arch), arch, "cnn", DataSpec(name="digits"), tuple(map(str, range(10))), "test")
    return load_model(rec["run_id"])


def test_a_grid_keeps_the_methods_that_worked(runner, wait_for_job):
    lm = _tiny_cnn()
    r = ref(lm)
    methods = (
        SaliencyConfig(method="gradient"),
        SaliencyConfig(method="gradcam", layer="no.such.layer"),
        SaliencyConfig(method="gradient_x_input"),
    )
    res = wait_for_job(runner.submit(job("saliency", GridConfig(model=r, indices=(0, 1, 2), methods=methods), (r,))))
    assert [x.config.method for x in res] == ["gradient", "gradcam", "gradient_x_input"]
    assert res[0].error == "" and res[2].error == "" and res[0].attributions.shape == (3, 1, 8, 8)
    assert "no.such.layer" in res[1].error and res[1].attributions.size == 0
    direct = compute_saliency(lm.model, *_digits(3), SaliencyConfig(method="gradient"))
    assert torch.allclose(torch.from_numpy(res[0].attributions), torch.from_numpy(direct.attributions))


def _digits(n):
    from lenscape.models.data import load_data

    test = load_data(DataSpec(name="digits"), "test")
    return test.x(slice(0, n)), test.labels[:n]


def test_a_grid_whose_every_method_fails_fails_with_every_reason(runner):
    r = ref(_tiny_cnn())
    methods = (SaliencyConfig(method="gradcam", layer="nope.a"), SaliencyConfig(method="gradcam", layer="nope.b"))
    job_id = runner.submit(job("saliency", GridConfig(model=r, indices=(0,), methods=methods), (r,)))
    assert runner.wait(job_id, 60) == JobStatus.FAILED
    assert "nope.a" in runner.error(job_id) and "nope.b" in runner.error(job_id)


def test_a_job_cut_short_by_the_app_stopping_runs_when_asked_again(runner, failing_kind, lenscape_home):
    """An interrupted job did not fail: submitting the same work again runs it (once)."""
    from lenscape.backend.runner import LocalRunner

    job = failing_kind
    job_id = job.key()
    runner.store.upsert(job_id, kind=job.kind, label="x", status="RUNNING", owner="gone-host:1", created=0.0)
    later = LocalRunner(runner.store)  # the restart marks it interrupted
    try:
        assert later.status(job_id) == JobStatus.FAILED and "interrupted" in later.error(job_id)
        later.submit(job)
        assert later.wait(job_id, 30) == JobStatus.FAILED and len(CALLS) == 1 and "differ" in later.error(job_id)
        later.submit(job)  # now it really failed: not again
        time.sleep(0.2)
        assert len(CALLS) == 1
    finally:
        later.shutdown()
