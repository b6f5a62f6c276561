"""Landscape jobs on a digits MLP trained by the backend, checked against what training recorded."""

import numpy as np
import pytest
import torch

from lenscape.analysis.evaluation import evaluate
from lenscape.backend.jobs import job, ref
from lenscape.backend.landscape_tasks import (
    BNSubset,
    EvalSet,
    HessianConfig,
    InterpolationConfig,
    SurfaceConfig,
    TrajectoryConfig,
)
from lenscape.models.data import DataSpec, load_data
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import load_model


def test_surface_interpolation_trajectory_and_hessian_jobs(runner, trained_run, wait_for_job):
    (rec,) = trained_run("digits-mlp", epochs=4)
    final, start = load_model(rec["run_id"]), load_model(rec["run_id"], 0)
    r, r0 = ref(final), ref(start)
    test = load_data(DataSpec(name="digits"), "test")

    line = wait_for_job(
        runner.submit(
            job("landscape_surface", SurfaceConfig(model=r, dims=1, resolution=5, data=EvalSet(n_examples=0)), (r,))
        )
    )
    assert line.loss.shape == (1, 5)
    assert line.loss[0, 2] == pytest.approx(evaluate(final.model, test.images, test.labels).loss, rel=1e-5)

    cfg = InterpolationConfig(a=r0, b=r, lo=0.0, hi=1.0, points=3, n_examples=0)
    curves = wait_for_job(runner.submit(job("landscape_interpolation", cfg, (r0, r))))
    # α = 1 is the final model: the test loss training recorded at its last epoch
    assert curves.test.loss[-1] == pytest.approx(rec["metrics"][-1]["test_loss"], rel=1e-5)
    assert curves.test.loss[0] > curves.test.loss[-1]

    path = wait_for_job(runner.submit(job("landscape_trajectory", TrajectoryConfig(model=r, resolution=5), (r,))))
    assert path.epochs == [0, 1, 2, 3, 4] and np.allclose(path.path.coords[-1], 0)
    assert path.plane.loss.shape == (5, 5) and np.isfinite(path.plane.loss).all()

    eig = wait_for_job(runner.submit(job("landscape_hessian", HessianConfig(model=r, k=2, iters=30), (r,))))
    assert eig.values.shape == (3, 2) and (eig.values[:, 0] > 0).all()
    spread = eig.values[:, 0].max() - eig.values[:, 0].min()
    assert spread <= 0.05 * eig.values[:, 0].mean()  # three restarts agree on the top one


def test_bad_landscape_requests_say_what_is_wrong(runner, trained_run, wait_for_job):
    (mlp,) = trained_run("digits-mlp", epochs=1)
    (cnn,) = trained_run("digits-cnn", epochs=1)
    a, b = ref(load_model(mlp["run_id"])), ref(load_model(cnn["run_id"]))
    bad = runner.submit(job("landscape_interpolation", InterpolationConfig(a=a, b=b, n_examples=50), (a, b)))
    runner.wait(bad, 120)
    assert "different architectures" in runner.error(bad)
    short = runner.submit(job("landscape_trajectory", TrajectoryConfig(model=a), (a,)))
    runner.wait(short, 120)
    assert "at least 3" in runner.error(short)
    no_bn = runner.submit(
        job("landscape_surface", SurfaceConfig(model=a, dims=1, resolution=3, recompute_bn=BNSubset()), (a,))
    )
    runner.wait(no_bn, 120)
    assert "no BatchNorm" in runner.error(no_bn)
    with pytest.raises(InvalidInputError, match="2 to 10,000"):
        BNSubset(n_examples=1)
    with pytest.raises(InvalidInputError, match="1 or 2"):
        SurfaceConfig(model=a, dims=3)
    with pytest.raises(InvalidInputError, match="lo < hi"):
        SurfaceConfig(model=a, lo=1, hi=-1)


def test_refining_a_grid_evaluates_only_the_new_points(runner, trained_run, wait_for_job):
    (rec,) = trained_run("digits-mlp", epochs=2)
    r = ref(load_model(rec["run_id"]))
    coarse = wait_for_job(
        runner.submit(
            job("landscape_surface", SurfaceConfig(model=r, resolution=3, data=EvalSet(n_examples=100)), (r,))
        )
    )
    assert coarse.reused == 0
    fine = wait_for_job(
        runner.submit(
            job("landscape_surface", SurfaceConfig(model=r, resolution=5, data=EvalSet(n_examples=100)), (r,))
        )
    )
    assert fine.reused == 9 and fine.loss.shape == (5, 5)
    assert np.array_equal(fine.loss[::2, ::2], coarse.loss)  # the shared points, as computed
    # and the reused points are what a fresh evaluation gives
    from lenscape.analysis.landscape import random_directions, surface

    lm = load_model(rec["run_id"])
    test = load_data(DataSpec(name="digits"), "test").head(100)
    dirs = random_directions(lm.model, 2, SurfaceConfig(model=r).directions)
    grid = np.linspace(-1, 1, 5)
    direct = surface(lm.model, dirs, grid, grid, test.images, test.labels)
    assert np.allclose(fine.loss, direct.loss, rtol=1e-5)


def test_recomputed_batchnorm_statistics_on_a_surface_and_an_interpolation(runner, trained_run, wait_for_job):
    (rec,) = trained_run("digits-cnn", epochs=2, batchnorm=True)
    final, start = load_model(rec["run_id"]), load_model(rec["run_id"], 0)
    r, r0 = ref(final), ref(start)
    data, bn = EvalSet(n_examples=100), BNSubset(n_examples=64, seed=3)

    def line(recompute):
        cfg = SurfaceConfig(model=r, dims=1, resolution=3, data=data, recompute_bn=recompute)
        return wait_for_job(runner.submit(job("landscape_surface", cfg, (r,))))

    plain = line(None)
    both = line(bn)
    assert plain.loss_recomputed is None and both.loss_recomputed.shape == (1, 3)
    assert both.reused == 3 and np.array_equal(both.loss, plain.loss)  # the stored figures, from the cache
    from lenscape.analysis.evaluation import random_subset
    from lenscape.analysis.landscape import random_directions, surface
    from lenscape.models.zoo import training_data

    lm = load_model(rec["run_id"])
    train = training_data(lm).train
    subset = train.images[random_subset(len(train), 64, torch.Generator().manual_seed(3))]
    test = load_data(DataSpec(name="digits"), "test").head(100)
    dirs = random_directions(lm.model, 1, SurfaceConfig(model=r).directions)
    direct = surface(lm.model, dirs, np.linspace(-1, 1, 3), None, test.images, test.labels, bn_examples=subset)
    assert np.allclose(both.loss_recomputed, direct.loss_recomputed, rtol=1e-5)
    assert not np.allclose(both.loss_recomputed, both.loss, rtol=1e-3)  # the statistics do matter here
    other = line(BNSubset(n_examples=64, seed=4))  # another subset: evaluated anew
    assert other.reused == 3 and not np.array_equal(other.loss_recomputed, both.loss_recomputed)

    cfg = InterpolationConfig(a=r0, b=r, lo=0.0, hi=1.0, points=3, n_examples=100, recompute_bn=bn)
    curves = wait_for_job(runner.submit(job("landscape_interpolation", cfg, (r0, r))))
    assert curves.test.loss_recomputed.shape == (3,) and np.isfinite(curves.train.loss_recomputed).all()
    assert curves.test.loss[-1] == pytest.approx(evaluate(final.model, test.images, test.labels).loss, rel=1e-5)
