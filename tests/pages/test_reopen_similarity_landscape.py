"""Reopening a stored Similarity or Loss-landscape result from the Runs page (issue 23): every job
kind opens on its stored result with every widget that produced it set as it was, and submits no
new job; the address bar the page then writes reproduces the same widgets in a fresh session.
Each job is computed with settings other than the page's defaults, on models other than the
newest, so that a widget left at its default fails.

Also the defaults a researcher would choose: the seeds of the current model's recipe, the layer
before the logits, and an interpolation between the final checkpoints of two seeds."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import ROOT, assert_reopened, open_tab
from lenscape.backend.jobs import job, ref
from lenscape.models.zoo import load_model

SIMILARITY = str(ROOT / "pages" / "5_Similarity.py")
LANDSCAPE = str(ROOT / "pages" / "6_Loss_landscape.py")


def _values(at: AppTest, widgets: dict) -> dict:
    got = {key: at.session_state[key] for key in widgets}
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in got.items()}


def assert_link_reproduces(at: AppTest, page: str, widgets: dict) -> AppTest:
    """The address bar `at` wrote, without the job it was opened on, opened in a fresh session of
    `page`: the same widget values."""
    link = AppTest.from_file(page, default_timeout=120)
    for k, v in at.query_params.items():
        if k not in ("job", "open"):
            link.query_params[k] = v
    link.query_params["tab"] = at.session_state["tab"]  # the browser's ?tab= (bound to the tabs; AppTest has none)
    link.run()
    assert not link.exception and not link.error, (link.exception, [e.value for e in link.error])
    assert _values(link, widgets) == widgets, dict(at.query_params)
    return link


def check(runner, wait_for_job, page: str, kind: str, cfg, state_key: str, widgets: dict, shown: str) -> None:
    models = tuple(
        getattr(cfg, "models", None) or [m for m in (getattr(cfg, f, None) for f in ("model", "a", "b")) if m]
    )
    job_id = runner.submit(job(kind, cfg, models, f"{kind} for the reopen test"))
    wait_for_job(job_id)
    at = assert_reopened(runner, job_id, state_key, widgets, shown)
    assert_link_reproduces(at, page, widgets)


@pytest.fixture
def cnns(trained_run):
    """Three seeds of a digits CNN, then a newer model of another recipe (the old defaults' pick)."""
    seeds = [load_model(r["run_id"]) for r in trained_run("digits-cnn", seeds=(0, 1, 2), epochs=3)]
    trained_run("digits-mlp", epochs=2)
    return seeds


def test_every_similarity_kind_reopens_on_its_result(runner, wait_for_job, cnns):
    from lenscape.analysis.embedding import ProjectionConfig
    from lenscape.backend.similarity_tasks import (
        ActSpec,
        ConvergenceConfig,
        LayerMatrixConfig,
        PairConfig,
        ProjectionJobConfig,
        SeedMatrixConfig,
    )

    c0, c1, c2 = cnns
    ids = [c.run_id for c in cnns]
    at_epoch = lambda lm, e: ref(load_model(lm.run_id, e))  # noqa: E731
    acts = ActSpec(n_examples=300, conv_mode="flatten", seed=3)
    a_acts = {"n": 300, "mode": "flatten", "seed": 3}
    a1, b2 = at_epoch(c1, 1), at_epoch(c0, 2)
    check(
        runner,
        wait_for_job,
        SIMILARITY,
        "layer_similarity",
        LayerMatrixConfig(a=a1, b=b2, layers_a=("relu2", "relu3"), layers_b=("relu3",), metric="rbf_cka", acts=acts),
        "sim.layers.job",
        {
            "sim.layers.a": ids[1],
            f"sim.layers.a.epoch.{ids[1]}": 1,
            "sim.layers.b": ids[0],
            f"sim.layers.b.epoch.{ids[0]}": 2,
            f"sim.layers.la.{ids[1]}": ["relu2", "relu3"],
            f"sim.layers.lb.{ids[0]}": ["relu3"],
            "sim.layers.metric": "rbf_cka",
            **{f"sim.layers.{k}": v for k, v in a_acts.items()},
        },
        "Matrix (.csv)",
    )
    # the reported case: a CKA across three seeds at one layer opened other models at relu1, no result
    order = (ref(c2), ref(c0), ref(c1))
    check(
        runner,
        wait_for_job,
        SIMILARITY,
        "seed_similarity",
        SeedMatrixConfig(models=order, layer="relu2", metric="debiased_cka", acts=acts),
        "sim.seeds.job",
        {
            "sim.seeds.models": [ids[2], ids[0], ids[1]],
            "sim.seeds.layer": "relu2",
            "sim.seeds.metric": "debiased_cka",
            **{f"sim.seeds.{k}": v for k, v in a_acts.items()},
        },
        "Matrix (.csv)",
    )
    check(
        runner,
        wait_for_job,
        SIMILARITY,
        "convergence",
        ConvergenceConfig(model=ref(c1), layers=("relu1", "fc2"), metric="svcca", acts=acts),
        "sim.train.job",
        {
            "sim.train.model": ids[1],
            f"sim.train.layers.{ids[1]}": ["relu1", "fc2"],
            "sim.train.metric": "svcca",
            **{f"sim.train.{k}": v for k, v in a_acts.items()},
        },
        "Values (.csv)",
    )
    check(
        runner,
        wait_for_job,
        SIMILARITY,
        "all_metrics",
        PairConfig(a=at_epoch(c2, 2), b=at_epoch(c2, 1), layer_a="relu1", layer_b="relu2", acts=acts),
        "sim.pair.job",
        {
            "sim.pair.a": ids[2],
            f"sim.pair.a.epoch.{ids[2]}": 2,
            "sim.pair.b": ids[2],
            f"sim.pair.b.epoch.{ids[2]}": 1,
            f"sim.pair.la.{ids[2]}": "relu1",
            f"sim.pair.lb.{ids[2]}": "relu2",
            **{f"sim.pair.{k}": v for k, v in a_acts.items()},
        },
        "Table (.csv)",
    )
    check(
        runner,
        wait_for_job,
        SIMILARITY,
        "projection",
        ProjectionJobConfig(
            model=ref(c1),
            layer="relu1",
            split="train",
            n_examples=400,
            projection=ProjectionConfig(method="pca", n_neighbors=7, min_dist=0.3, metric="cosine", seed=4),
        ),
        "sim.proj.jobs",
        {
            "sim.proj.models": [ids[1]],
            f"sim.proj.layer.{ids[1]}": "relu1",
            "sim.proj.method": "pca",
            "sim.proj.split": "train",
            "sim.proj.n": 400,
            "sim.proj.nn": 7,
            "sim.proj.md": 0.3,
            "sim.proj.metric": "cosine",
            "sim.proj.seed": 4,
        },
        "Coordinates (.csv)",
    )


@pytest.fixture
def mlps(trained_run):
    """Two seeds of a digits MLP, then a newer model of another recipe."""
    seeds = [load_model(r["run_id"]) for r in trained_run("digits-mlp", seeds=(0, 1), epochs=4)]
    trained_run("digits-mlp", epochs=4, lr=0.1)
    return seeds


def test_every_landscape_kind_reopens_on_its_result(runner, wait_for_job, mlps):
    from lenscape.analysis.landscape import DirectionConfig
    from lenscape.backend.landscape_tasks import (
        ConvexityConfig,
        EvalSet,
        HessianConfig,
        InterpolationConfig,
        SurfaceConfig,
        TrajectoryConfig,
    )

    m0, m1 = mlps
    ids = [m.run_id for m in mlps]
    at_epoch = lambda lm, e: ref(load_model(lm.run_id, e))  # noqa: E731
    data = EvalSet(split="train", n_examples=200)
    dirs = DirectionConfig(norm="layer", ignore_biasbn=False, seed=7)
    for dims, res in ((1, 9), (2, 4)):  # a line reopened as a line (it came back as the plane's form)
        check(
            runner,
            wait_for_job,
            LANDSCAPE,
            "landscape_surface",
            SurfaceConfig(
                model=at_epoch(m1, 3), directions=dirs, dims=dims, lo=-0.5, hi=0.8, resolution=res, data=data
            ),
            "land.dirs.jobs",
            {
                "land.dirs.a": ids[1],
                f"land.dirs.a.epoch.{ids[1]}": 3,
                "land.dirs.dims": dims,
                "land.dirs.norm": "layer",
                "land.dirs.ignore": False,
                "land.dirs.seed": 7,
                f"land.dirs.res.{dims}": res,
                "land.dirs.lo": -0.5,
                "land.dirs.hi": 0.8,
                "land.dirs.split": "train",
                "land.dirs.n": 200,
            },
            "Line (.csv)" if dims == 1 else "Surface (.npz)",
        )
    check(
        runner,
        wait_for_job,
        LANDSCAPE,
        "landscape_interpolation",
        InterpolationConfig(a=at_epoch(m1, 1), b=at_epoch(m0, 3), lo=-0.2, hi=1.2, points=5, n_examples=200),
        "land.interp.job",
        {
            "land.interp.a": ids[1],
            f"land.interp.a.epoch.{ids[1]}": 1,
            "land.interp.b": ids[0],
            f"land.interp.b.epoch.{ids[0]}": 3,
            "land.interp.lo": -0.2,
            "land.interp.hi": 1.2,
            "land.interp.points": 5,
            "land.interp.n": 200,
        },
        "Curves (.csv)",
    )
    check(
        runner,
        wait_for_job,
        LANDSCAPE,
        "landscape_trajectory",
        TrajectoryConfig(model=ref(m1), resolution=4, data=EvalSet(split="train", n_examples=150)),
        "land.traj.job",
        {"land.traj.model": ids[1], "land.traj.res": 4, "land.traj.split": "train", "land.traj.n": 150},
        "Path (.csv)",
    )
    curvature = {
        "land.hess.model": ids[1],
        f"land.hess.model.epoch.{ids[1]}": 2,
        "land.hess.iters": 10,
        "land.hess.n": 100,
    }
    check(
        runner,
        wait_for_job,
        LANDSCAPE,
        "landscape_hessian",
        HessianConfig(
            model=at_epoch(m1, 2),
            k=2,
            iters=10,
            restarts=2,
            params="weights",
            data=EvalSet(split="train", n_examples=100),
        ),
        "land.hess.job",
        {**curvature, "land.hess.k": 2, "land.hess.restarts": 2, "land.hess.params": "weights"},
        "Eigenvalues (.csv)",
    )
    check(
        runner,
        wait_for_job,
        LANDSCAPE,
        "landscape_convexity",
        ConvexityConfig(
            model=at_epoch(m1, 2),
            directions=DirectionConfig(seed=9),
            lo=-0.5,
            hi=0.5,
            resolution=2,
            iters=10,
            data=EvalSet(split="train", n_examples=100),
        ),
        "land.hess.map.job",
        {**curvature, "land.hess.map.res": 2, "land.hess.map.span": 0.5, "land.hess.map.seed": 9},
        "Convexity map (.csv)",
    )


def test_similarity_defaults_to_the_seeds_of_the_linked_models_recipe_at_the_layer_before_the_logits(cnns):
    """?model= names the model; the Seeds tab takes it with the other seeds of its recipe (not the
    three newest models, of mixed recipes), and every one-layer picker the layer before the logits
    (relu1 scores near 1 even between random networks)."""
    c0, c1, c2 = (c.run_id for c in cnns)
    at = AppTest.from_file(SIMILARITY, default_timeout=120)
    at.query_params.update(model=c1, open="Seeds (N × N)")
    at.run()
    assert not at.exception and not at.error
    assert at.multiselect(key="sim.seeds.models").value == [c1, c0, c2]
    assert at.selectbox(key="sim.seeds.layer").value == "relu3"
    assert at.query_params["seeds.models"] == f"{c1},{c0},{c2}" and "seeds.layer" not in at.query_params
    open_tab(at, "All metrics")
    assert (at.selectbox(key="sim.pair.a").value, at.selectbox(key="sim.pair.b").value) == (c1, c0)
    assert at.selectbox(key=f"sim.pair.la.{c1}").value == at.selectbox(key=f"sim.pair.lb.{c0}").value == "relu3"
    open_tab(at, "Projection")
    assert at.multiselect(key="sim.proj.models").value == [c1]
    assert at.selectbox(key=f"sim.proj.layer.{c1}").value == "relu3"
    assert not at.exception and not at.error


def test_interpolation_defaults_to_the_final_checkpoints_of_two_seeds(mlps):
    m0, m1 = (m.run_id for m in mlps)
    at = AppTest.from_file(LANDSCAPE, default_timeout=120)
    at.query_params.update(model=m1, open="Interpolation")
    at.run()
    assert not at.exception and not at.error
    assert (at.selectbox(key="land.interp.a").value, at.selectbox(key="land.interp.b").value) == (m1, m0)
    assert at.select_slider(key=f"land.interp.a.epoch.{m1}").value == 4
    assert at.select_slider(key=f"land.interp.b.epoch.{m0}").value == 4
    # the link the page writes for another checkpoint of A opens on it
    at.select_slider(key=f"land.interp.a.epoch.{m1}").set_value(2).run()
    link = AppTest.from_file(LANDSCAPE, default_timeout=120)
    link.query_params.update(at.query_params, tab="Interpolation")
    link.run()
    assert link.select_slider(key=f"land.interp.a.epoch.{m1}").value == 2 and link.query_params["interp.epoch"] == "2"
    assert not link.exception and not link.error
