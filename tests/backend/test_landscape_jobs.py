"""Landscape jobs on a digits MLP trained by the backend, checked against what training recorded."""

import numpy as np
import pytest

from analysis.evaluation import evaluate
from backend.jobs import job, ref
from backend.landscape_tasks import (EvalSet, HessianConfig, InterpolationConfig, SurfaceConfig, TrajectoryConfig)
from models.data import DataSpec, load_data
from models.errors import InvalidInputError
from models.zoo import load_model


def test_surface_interpolation_trajectory_and_hessian_jobs(runner, trained_run, wait_for_job):
    (rec,) = trained_run("digits-mlp", epochs=4)
    final, start = load_model(rec["run_id"]), load_model(rec["run_id"], 0)
    r, r0 = ref(final), ref(start)
    test = load_data(DataSpec(name="digits"), "test")

    line = wait_for_job(runner.submit(job("landscape_surface", SurfaceConfig(model=r, dims=1, resolution=5,
                                                                             data=EvalSet(n_examples=0)), (r,))))
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
    assert spread <= 0.05 * eig.values[:, 0].mean()          # three restarts agree on the top one


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
    with pytest.raises(InvalidInputError, match="1 or 2"):
        SurfaceConfig(model=a, dims=3)
    with pytest.raises(InvalidInputError, match="lo < hi"):
        SurfaceConfig(model=a, lo=1, hi=-1)


def test_refining_a_grid_evaluates_only_the_new_points(runner, trained_run, wait_for_job):
    (rec,) = trained_run("digits-mlp", epochs=2)
    r = ref(load_model(rec["run_id"]))
    coarse = wait_for_job(runner.submit(job("landscape_surface", SurfaceConfig(model=r, resolution=3,
                                                                               data=EvalSet(n_examples=100)), (r,))))
    assert coarse.reused == 0
    fine = wait_for_job(runner.submit(job("landscape_surface", SurfaceConfig(model=r, resolution=5,
                                                                             data=EvalSet(n_examples=100)), (r,))))
    assert fine.reused == 9 and fine.loss.shape == (5, 5)
    assert np.array_equal(fine.loss[::2, ::2], coarse.loss)               # the shared points, as computed
    # and the reused points are what a fresh evaluation gives
    from analysis.landscape import random_directions, surface
    lm = load_model(rec["run_id"])
    test = load_data(DataSpec(name="digits"), "test").head(100)
    dirs = random_directions(lm.model, 2, SurfaceConfig(model=r).directions)
    grid = np.linspace(-1, 1, 5)
    direct = surface(lm.model, dirs, grid, grid, test.images, test.labels)
    assert np.allclose(fine.loss, direct.loss, rtol=1e-5)
