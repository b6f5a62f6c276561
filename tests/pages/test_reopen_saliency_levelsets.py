"""Reopening a stored result from the Runs page (issue 23, 1) on the Saliency, Level-sets and Models
pages: for every job kind, the view opens on the stored result with every widget that produced it
set as it was, and submits no new job.

Each job is computed here with settings other than the page's defaults (a restore that is missing
leaves a default, which builds another job), then the page is opened with the Runs page's own link
(ui.runs.reopen_link). The helpers are test_reopen.py's, with floats compared to the bit where the
widget holds what the config holds, and `shown` any element label of the result."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import ROOT, assert_reopened
from lenscape.backend.jobs import job, ref
from lenscape.models.data import DataSpec, load_data
from lenscape.models.zoo import load_model

HAS_MNIST = (Path(os.environ.get("LENSCAPE_DATA", "")) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def _predict(runner, wait_for_job, lm, split: str = "test"):
    """The predictions job the page ran before the result could be computed (its image pickers)."""
    from lenscape.backend.saliency_tasks import PredictConfig

    r = ref(lm)
    return wait_for_job(runner.submit(job("predict", PredictConfig(model=r, split=split), (r,), "predictions")))


def _methods(lm, names, **settings):
    """SaliencyConfigs as the method form builds them: the same settings on every method, the
    training data's mean for the "mean" baseline."""
    from lenscape.analysis.saliency import SaliencyConfig

    mean = tuple(load_data(lm.data, "train").mean)
    return tuple(SaliencyConfig(method=m, baseline_mean=mean, **settings) for m in names)


def test_saliency_maps_reopen_with_every_widget(runner, wait_for_job, trained_run):
    from lenscape.backend.saliency_tasks import GridConfig

    older, rec = trained_run("digits-mlp", seeds=(0, 1), epochs=2)
    lm = load_model(older["run_id"])  # not the newest: the page's default is the other one
    _predict(runner, wait_for_job, lm, "train")
    methods = _methods(
        lm,
        ("gradient", "integrated_gradients", "smoothgrad", "occlusion"),
        target="true",
        n_steps=16,
        baseline="blurred",
        noise_level=0.3,
        n_samples=5,
        window=3,
        stride=1,
        batch_size=64,
    )
    cfg = GridConfig(model=ref(lm), indices=(3, 11, 20), methods=methods, split="train")
    job_id = runner.submit(job("saliency", cfg, (cfg.model,), "maps"))
    wait_for_job(job_id)
    key = "sal.browse"
    assert_reopened(
        runner,
        job_id,
        f"{key}.jobs",
        {
            "sal.primary": lm.run_id,
            "sal.others": [],
            f"{key}.split": "train",
            f"{key}.idx": "3,11,20",
            f"{key}.methods": ["gradient", "integrated_gradients", "smoothgrad", "occlusion"],
            f"{key}.target": "true class",
            f"{key}.igs": 16,
            f"{key}.igb": "blurred",
            f"{key}.sgn": 0.3,
            f"{key}.sgs": 5,
            f"{key}.ow": 3,
            f"{key}.os": 1,
            f"{key}.batch": 64,
        },
        "Attributions (.npz)",
        reruns=1,
    )


def test_saliency_maps_reopen_on_a_chosen_class_and_a_gradcam_layer(runner, wait_for_job, trained_run):
    from lenscape.analysis.saliency import conv_layers
    from lenscape.backend.saliency_tasks import GridConfig

    (rec,) = trained_run("digits-cnn", epochs=2)
    lm = load_model(rec["run_id"])
    _predict(runner, wait_for_job, lm)
    first = conv_layers(lm.model)[0]  # not the suggested (last usable) layer
    gradcam, gradient = _methods(lm, ("gradcam", "gradient"), target=7, layer=first)
    methods = (gradcam, replace(gradient, layer=None))  # the form gives the layer to Grad-CAM only
    cfg = GridConfig(model=ref(lm), indices=(5,), methods=methods)
    job_id = runner.submit(job("saliency", cfg, (cfg.model,), "maps"))
    wait_for_job(job_id)
    assert_reopened(
        runner,
        job_id,
        "sal.browse.jobs",
        {
            "sal.browse.methods": ["gradcam", "gradient"],
            "sal.browse.target": "a chosen class",
            "sal.browse.cls": 7,
            "sal.browse.layer": first,
            "sal.browse.idx": "5",
        },
        "Attributions (.npz)",
        reruns=1,
    )


def test_randomization_and_diffroar_reopen_with_every_widget(runner, wait_for_job, trained_run):
    from lenscape.analysis.roar import DiffRoarConfig
    from lenscape.backend.saliency_tasks import DiffRoarJobConfig, RandomizationConfig

    older, _ = trained_run("digits-mlp", seeds=(0, 1), epochs=2)
    lm = load_model(older["run_id"])
    r = ref(lm)
    cfg = RandomizationConfig(
        model=r,
        indices=(0, 1, 2),
        order="independent",
        map_mode="signed",
        methods=_methods(lm, ("gradient", "smoothgrad"), n_samples=3, batch_size=32),
    )
    job_id = runner.submit(job("randomization", cfg, (r,), "randomization"))
    wait_for_job(job_id)
    assert_reopened(
        runner,
        job_id,
        "sal.rand.job",
        {
            "sal.primary": lm.run_id,
            "sal.rand.n": 3,
            "sal.rand.order": "independent",
            "sal.rand.mapmode": "signed",
            "sal.rand.form.methods": ["gradient", "smoothgrad"],
            "sal.rand.form.sgs": 3,
            "sal.rand.form.batch": 32,
        },
        "Randomization check (.csv)",
    )

    roar = DiffRoarConfig(
        methods=("gradient", "gradient_x_input"), k_grid=(0.1, 0.3), seeds=(0,), epochs=1, train_subset=300
    )
    job_id = runner.submit(job("diffroar", DiffRoarJobConfig(model=r, roar=roar), (r,), "diffroar"))
    wait_for_job(job_id)
    assert_reopened(
        runner,
        job_id,
        "sal.roar.job",
        {
            "sal.primary": lm.run_id,
            "sal.roar.methods": ["gradient", "gradient_x_input"],
            "sal.roar.k": [0.1, 0.3],
            "sal.roar.seeds": 1,
            "sal.roar.epochs": 1,
            "sal.roar.subset": 300,
        },
        "DiffROAR table (.csv)",
    )


@pytest.mark.skipif(not HAS_MNIST, reason="BlockMNIST is built from MNIST: needs it in LENSCAPE_DATA")
def test_blockmnist_null_mass_reopens_with_every_widget(runner, wait_for_job, trained_run):
    from lenscape.backend.saliency_tasks import NullMassConfig

    top = DataSpec(name="blockmnist", block_top_only=True)  # the toggle's other side
    (rec,) = trained_run("blockmnist-mlp", data=top, epochs=1, train_subset=2000)
    lm = load_model(rec["run_id"])
    r = ref(lm)
    cfg = NullMassConfig(
        models=(r,), methods=_methods(lm, ("gradient", "smoothgrad"), n_samples=4), k_grid=(0.1,), n_images=40
    )
    job_id = runner.submit(job("null_mass", cfg, (r,), "null mass"))
    wait_for_job(job_id)
    assert_reopened(
        runner,
        job_id,
        "sal.block.job",
        {
            "sal.block.top": True,
            "sal.block.models": [lm.run_id],
            "sal.block.form.methods": ["gradient", "smoothgrad"],
            "sal.block.form.sgs": 4,
            "sal.block.k": 0.1,
            "sal.block.n": 40,
        },
        "Null mass per model and method (.csv)",
    )


def test_level_set_traversal_reopens_with_every_widget(runner, wait_for_job, trained_run):
    from lenscape.analysis.level_sets import LSTConfig
    from lenscape.backend.level_set_tasks import TraversalConfig
    from lenscape.ui.level_sets import PRESETS

    older, _ = trained_run("digits-cnn", seeds=(0, 1), epochs=6)
    lm = load_model(older["run_id"])
    probs = _predict(runner, wait_for_job, lm)
    labels = load_data(lm.data, "test").labels.numpy()
    correct = probs.argmax(1) == labels
    sure = correct & (probs[np.arange(len(labels)), labels] > 0.6)
    source = int(np.flatnonzero(correct & (labels == 3))[1])  # "Which one" = 2
    targets = (int(np.flatnonzero(sure & (labels == 1))[0]), int(np.flatnonzero(sure & (labels == 5))[1]))
    lst = LSTConfig(eta=0.07, steps=12, delta=0.1, eps_adv=2 / 255, jitter=3 / 255, seed=5, log_every=3)
    r = ref(lm)
    cfg = TraversalConfig(model=r, source=source, targets=targets, lst=lst, data=lm.data.key())
    job_id = runner.submit(job("level_set_traversal", cfg, (r,), "traversal"))
    wait_for_job(job_id)
    p = next(iter(PRESETS))
    at = assert_reopened(
        runner,
        job_id,
        "lst.job",
        {
            "lst.model": lm.run_id,
            "lst.compare": False,
            "lst.cls": 3,
            "lst.which.3": 2,
            "lst.mode": "by class",
            "lst.targets.3": [1, 5],
            "lst.tw.1": 1,
            "lst.tw.5": 2,
            f"lst.eta.{p}": 0.07,
            f"lst.T.{p}": 12,
            f"lst.delta.{p}": 0.1,
            "lst.seed": 5,
            "lst.frames": 3,
        },
        "Path and metrics (.npz)",
        reruns=1,
    )
    assert at.session_state[f"lst.eps.{p}"] == pytest.approx(2) and at.session_state[f"lst.jit.{p}"] == pytest.approx(3)
    assert at.query_params["source"] == str(source) and at.query_params["targets"] == ",".join(map(str, targets))


def test_model_summary_reopens_on_its_model_and_checkpoint(runner, wait_for_job, trained_run):
    from lenscape.backend.tasks import summary_job_for

    older, _ = trained_run("digits-mlp", seeds=(0, 1), epochs=3)
    lm = load_model(older["run_id"], epoch=1)
    job_id = runner.submit(summary_job_for(lm))
    wait_for_job(job_id)
    run = lm.run_id
    assert_reopened(
        runner,
        job_id,
        "models.summary_job",
        {"models.summary.model": run, f"models.summary.model.epoch.{run}": 1, "models.data.name": "digits"},
        "Test accuracy",
    )


# ---------------------------------------------------------------------------------------------
# Issue 23, 2: every URL these pages write reproduces the view in a fresh session

PAGES = {name: str(ROOT / "pages" / f"{name}.py") for name in ("1_Models", "2_Saliency", "3_Level_sets")}


def _settle(at: AppTest, runs: int = 3) -> AppTest:
    """A few reruns, as the job panels' polling would make (predictions, then the widgets they pick)."""
    import time

    for _ in range(runs):
        time.sleep(0.3)
        at.run()
    return at


def assert_link_reproduces(at: AppTest, page: str, keys: list[str], runs: int = 3) -> AppTest:
    """Open the address bar `at` shows in a fresh session: each widget in `keys` holds the value it
    has in `at`, and no warning says a parameter was not understood."""
    link = AppTest.from_file(PAGES[page], default_timeout=120)
    for k, v in at.query_params.items():
        link.query_params[k] = v
    _settle(link.run(), runs)
    assert not link.exception, link.exception
    assert not [w.value for w in link.warning if "link" in w.value], [w.value for w in link.warning]
    for key in keys:
        want, got = at.session_state[key], link.session_state[key]
        norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v
        assert norm(got) == norm(want), (key, got, want, dict(at.query_params))
    return link


def _set(at: AppTest, values: dict) -> AppTest:
    """Set widgets by key, one run each (later widgets depend on earlier ones)."""
    for key, value in values.items():
        at.session_state[key] = value
        at.run()
    assert not at.exception, at.exception
    return at


def test_models_page_link_holds_an_image_folder_and_its_size(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((10, 10, 3), 40 * i, dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    at = AppTest.from_file(PAGES["1_Models"], default_timeout=60)
    at.query_params["data"] = "imagefolder"  # the app's own URL: understood, asks for the folder
    at.run()
    assert not at.warning and any("Enter the path of a folder" in i.value for i in at.info), [
        w.value for w in at.warning
    ]
    _set(at, {"models.data.folder": str(tmp_path / "imgs"), "models.data.size": 8})
    _settle(at)  # the folder is decoded by a job
    assert at.query_params["folder"] == str(tmp_path / "imgs") and at.query_params["size"] == "8"
    assert_link_reproduces(at, "1_Models", ["models.data.name", "models.data.folder", "models.data.size"])
    # a folder outside the allowed roots is refused as a typed one is, and not put in the box
    bad = AppTest.from_file(PAGES["1_Models"], default_timeout=60)
    bad.query_params.update({"data": "imagefolder", "folder": "/etc"})
    bad.run()
    assert any("is not allowed" in w.value for w in bad.warning) and not bad.exception
    assert not bad.session_state["models.data.folder"]


@pytest.mark.skipif(not HAS_MNIST, reason="BlockMNIST is built from MNIST: needs it in LENSCAPE_DATA")
def test_models_page_link_holds_blockmnist_options():
    at = AppTest.from_file(PAGES["1_Models"], default_timeout=120).run()
    _set(
        at,
        {
            "models.data.name": "blockmnist",
            "models.data.a": 3,
            "models.data.b": 8,
            "models.data.top": True,
            "models.data.patch": 6,
        },
    )
    assert {k: at.query_params[k] for k in ("digit0", "digit1", "top", "patch")} == {
        "digit0": "3",
        "digit1": "8",
        "top": "1",
        "patch": "6",
    }
    assert_link_reproduces(
        at, "1_Models", ["models.data.name", "models.data.a", "models.data.b", "models.data.top", "models.data.patch"]
    )
    _set(at, {"models.data.name": "digits"})  # other data sets' options leave the link
    assert not {"digit0", "digit1", "top", "patch"} & set(at.query_params)


def test_models_page_link_holds_the_summary_checkpoint(trained_run):
    older, _ = trained_run("digits-mlp", seeds=(0, 1), epochs=3)
    at = AppTest.from_file(PAGES["1_Models"], default_timeout=60)
    at.query_params.update({"tab": "Workspace models", "model": older["run_id"]})
    at.run()
    _set(at, {f"models.summary.model.epoch.{older['run_id']}": 1})
    assert at.query_params["epoch"] == "1"
    link = assert_link_reproduces(
        at, "1_Models", ["models.summary.model", f"models.summary.model.epoch.{older['run_id']}"]
    )
    assert link.session_state["models.summary_job"] == at.session_state["models.summary_job"]


def test_saliency_maps_link_holds_every_setting_and_the_comparison(trained_run):
    older, newer = trained_run("digits-cnn", seeds=(0, 1), epochs=2)
    at = AppTest.from_file(PAGES["2_Saliency"], default_timeout=120)
    at.query_params["model"] = older["run_id"]
    _settle(at.run(), 2)
    k = "sal.browse"
    values = {
        "sal.others": [newer["run_id"]],
        f"{k}.split": "train",
        f"{k}.classes": [1, 2],
        f"{k}.which": "correct",
        f"{k}.conf": (0.2, 1.0),
        f"{k}.per": 3,
        f"{k}.page": 2,
        f"{k}.methods": ["gradient", "occlusion", "gradcam"],
        f"{k}.target": "a chosen class",
        f"{k}.cls": 3,
        f"{k}.igb": "mean",
        f"{k}.igs": 8,
        f"{k}.sgn": 0.2,
        f"{k}.sgs": 5,
        f"{k}.ow": 3,
        f"{k}.os": 1,
        f"{k}.batch": 64,
        f"{k}.sign": "all",
        f"{k}.mode": "heat map",
        f"{k}.opacity": 0.7,
        f"{k}.perc": 1.0,
        f"{k}.shared": "shared",
    }
    _settle(_set(at, values), 2)
    assert at.query_params["compare"] == newer["run_id"]
    link = assert_link_reproduces(at, "2_Saliency", ["sal.primary", *values, f"{k}.layer"])
    assert link.session_state[f"{k}.jobs"] == at.session_state[f"{k}.jobs"]  # the same jobs: stored ones


def test_saliency_checks_links_hold_their_settings(trained_run):
    trained_run("digits-mlp", epochs=2)
    at = AppTest.from_file(PAGES["2_Saliency"], default_timeout=120)
    at.query_params["tab"] = "Randomization check"
    at.run()
    rand = {
        "sal.rand.form.methods": ["gradient", "smoothgrad"],
        "sal.rand.form.sgs": 3,
        "sal.rand.n": 5,
        "sal.rand.order": "independent",
        "sal.rand.mapmode": "signed",
    }
    _set(at, rand)
    assert_link_reproduces(at, "2_Saliency", list(rand), runs=1)
    at.query_params["tab"] = "DiffROAR"
    at.session_state["tab"] = "DiffROAR"
    roar = {
        "sal.roar.methods": ["gradient_x_input"],
        "sal.roar.k": [0.1, 0.3],
        "sal.roar.seeds": 1,
        "sal.roar.epochs": 3,
        "sal.roar.subset": 500,
    }
    _set(at.run(), roar)
    assert_link_reproduces(at, "2_Saliency", list(roar), runs=1)


def test_level_sets_link_holds_the_second_model_images_and_settings(trained_run):
    older, newer = trained_run("digits-cnn", seeds=(0, 1), epochs=6)
    at = AppTest.from_file(PAGES["3_Level_sets"], default_timeout=120)
    at.query_params["model"] = older["run_id"]
    _settle(at.run(), 2)
    paper = "the paper's ImageNet run (η 0.01, T 400, δ 0.2)"
    values = {
        "lst.compare": True,
        "lst.model_b": newer["run_id"],
        "lst.cls": 4,
        "lst.which.4": 2,
        "lst.targets.4": [0, 7],
        "lst.tw.7": 2,
        "lst.preset": paper,
        f"lst.eta.{paper}": 0.02,
        f"lst.T.{paper}": 30,
        f"lst.delta.{paper}": 0.15,
        f"lst.eps.{paper}": 1.5,
        f"lst.jit.{paper}": 2.0,
        "lst.seed": 9,
        "lst.frames": 3,
    }
    _settle(_set(at, values), 2)
    assert at.query_params["compare"] == newer["run_id"] and at.query_params["preset"] == "paper"
    assert_link_reproduces(at, "3_Level_sets", list(values))
    drawn = {"lst.mode": "at random", "lst.nrand": 2, "lst.rseed": 4}
    _settle(_set(at, drawn), 1)
    assert "targets" not in at.query_params and at.query_params["pick"] == "random"
    assert_link_reproduces(at, "3_Level_sets", ["lst.cls", "lst.which.4", *drawn])
