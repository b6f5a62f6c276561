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

from apphelpers import ROOT
from backend.jobs import job, ref
from models.data import DataSpec, load_data
from models.zoo import load_model

HAS_MNIST = (Path(os.environ.get("LENSCAPE_DATA", "")) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def _open(runner, job_id: str) -> AppTest:
    from ui.runs import reopen_link

    page, params = reopen_link(runner.store.get(job_id))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)     # links need the app's navigation
    for k, v in params.items():
        at.query_params[k] = v
    return at.switch_page(page).run()


def _labels(at: AppTest) -> list[str]:
    return [e.label for kind in ("download_button", "metric") for e in at.get(kind)]


def assert_reopened(runner, job_id: str, state_key: str, widgets: dict, shown: str, reruns: int = 0) -> AppTest:
    """Open the link; the widgets hold `widgets`, the panel shows the stored job (`shown` is the label
    of a download button or metric its result draws), and the store has no new or running job.
    `reruns`: page runs after the first (a view that picks its images once predictions are in)."""
    before = {r["id"]: r["status"] for r in runner.store.list()}
    at = _open(runner, job_id)
    for _ in range(reruns):
        at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    for key, value in widgets.items():
        got = at.session_state[key]
        assert (list(got) if isinstance(got, (list, tuple)) else got) == value, (key, got, value)
    assert at.session_state[state_key] == [job_id]
    assert shown in _labels(at), _labels(at)
    after = {r["id"]: r["status"] for r in runner.store.list()}
    assert after == before, set(after) ^ set(before)
    return at


def _predict(runner, wait_for_job, lm, split: str = "test"):
    """The predictions job the page ran before the result could be computed (its image pickers)."""
    from backend.saliency_tasks import PredictConfig

    r = ref(lm)
    return wait_for_job(runner.submit(job("predict", PredictConfig(model=r, split=split), (r,), "predictions")))


def _methods(lm, names, **settings):
    """SaliencyConfigs as the method form builds them: the same settings on every method, the
    training data's mean for the "mean" baseline."""
    from analysis.saliency import SaliencyConfig

    mean = tuple(load_data(lm.data, "train").mean)
    return tuple(SaliencyConfig(method=m, baseline_mean=mean, **settings) for m in names)


def test_saliency_maps_reopen_with_every_widget(runner, wait_for_job, trained_run):
    from backend.saliency_tasks import GridConfig

    older, rec = trained_run("digits-mlp", seeds=(0, 1), epochs=2)
    lm = load_model(older["run_id"])                       # not the newest: the page's default is the other one
    _predict(runner, wait_for_job, lm, "train")
    methods = _methods(lm, ("gradient", "integrated_gradients", "smoothgrad", "occlusion"), target="true",
                       n_steps=16, baseline="blurred", noise_level=0.3, n_samples=5, window=3, stride=1, batch_size=64)
    cfg = GridConfig(model=ref(lm), indices=(3, 11, 20), methods=methods, split="train")
    job_id = runner.submit(job("saliency", cfg, (cfg.model,), "maps"))
    wait_for_job(job_id)
    key = "sal.browse"
    assert_reopened(runner, job_id, f"{key}.jobs", {
        "sal.primary": lm.run_id, "sal.others": [], f"{key}.split": "train", f"{key}.idx": "3,11,20",
        f"{key}.methods": ["gradient", "integrated_gradients", "smoothgrad", "occlusion"], f"{key}.target": "true class",
        f"{key}.igs": 16, f"{key}.igb": "blurred", f"{key}.sgn": 0.3, f"{key}.sgs": 5, f"{key}.ow": 3, f"{key}.os": 1,
        f"{key}.batch": 64}, "Attributions (.npz)", reruns=1)


def test_saliency_maps_reopen_on_a_chosen_class_and_a_gradcam_layer(runner, wait_for_job, trained_run):
    from analysis.saliency import conv_layers
    from backend.saliency_tasks import GridConfig

    (rec,) = trained_run("digits-cnn", epochs=2)
    lm = load_model(rec["run_id"])
    _predict(runner, wait_for_job, lm)
    first = conv_layers(lm.model)[0]                       # not the suggested (last usable) layer
    gradcam, gradient = _methods(lm, ("gradcam", "gradient"), target=7, layer=first)
    methods = (gradcam, replace(gradient, layer=None))     # the form gives the layer to Grad-CAM only
    cfg = GridConfig(model=ref(lm), indices=(5,), methods=methods)
    job_id = runner.submit(job("saliency", cfg, (cfg.model,), "maps"))
    wait_for_job(job_id)
    assert_reopened(runner, job_id, "sal.browse.jobs", {
        "sal.browse.methods": ["gradcam", "gradient"], "sal.browse.target": "a chosen class", "sal.browse.cls": 7,
        "sal.browse.layer": first, "sal.browse.idx": "5"}, "Attributions (.npz)", reruns=1)


def test_randomization_and_diffroar_reopen_with_every_widget(runner, wait_for_job, trained_run):
    from analysis.roar import DiffRoarConfig
    from backend.saliency_tasks import DiffRoarJobConfig, RandomizationConfig

    older, _ = trained_run("digits-mlp", seeds=(0, 1), epochs=2)
    lm = load_model(older["run_id"])
    r = ref(lm)
    cfg = RandomizationConfig(model=r, indices=(0, 1, 2), order="independent", map_mode="signed",
                              methods=_methods(lm, ("gradient", "smoothgrad"), n_samples=3, batch_size=32))
    job_id = runner.submit(job("randomization", cfg, (r,), "randomization"))
    wait_for_job(job_id)
    assert_reopened(runner, job_id, "sal.rand.job", {
        "sal.primary": lm.run_id, "sal.rand.n": 3, "sal.rand.order": "independent", "sal.rand.mapmode": "signed",
        "sal.rand.form.methods": ["gradient", "smoothgrad"], "sal.rand.form.sgs": 3, "sal.rand.form.batch": 32},
        "Randomization check (.csv)")

    roar = DiffRoarConfig(methods=("gradient", "gradient_x_input"), k_grid=(0.1, 0.3), seeds=(0,), epochs=1,
                          train_subset=300)
    job_id = runner.submit(job("diffroar", DiffRoarJobConfig(model=r, roar=roar), (r,), "diffroar"))
    wait_for_job(job_id)
    assert_reopened(runner, job_id, "sal.roar.job", {
        "sal.primary": lm.run_id, "sal.roar.methods": ["gradient", "gradient_x_input"], "sal.roar.k": [0.1, 0.3],
        "sal.roar.seeds": 1, "sal.roar.epochs": 1, "sal.roar.subset": 300}, "DiffROAR table (.csv)")


@pytest.mark.skipif(not HAS_MNIST, reason="BlockMNIST is built from MNIST: needs it in LENSCAPE_DATA")
def test_blockmnist_null_mass_reopens_with_every_widget(runner, wait_for_job, trained_run):
    from backend.saliency_tasks import NullMassConfig

    top = DataSpec(name="blockmnist", block_top_only=True)                 # the toggle's other side
    (rec,) = trained_run("blockmnist-mlp", data=top, epochs=1, train_subset=2000)
    lm = load_model(rec["run_id"])
    r = ref(lm)
    cfg = NullMassConfig(models=(r,), methods=_methods(lm, ("gradient", "smoothgrad"), n_samples=4),
                         k_grid=(0.1,), n_images=40)
    job_id = runner.submit(job("null_mass", cfg, (r,), "null mass"))
    wait_for_job(job_id)
    assert_reopened(runner, job_id, "sal.block.job", {
        "sal.block.top": True, "sal.block.models": [lm.run_id], "sal.block.form.methods": ["gradient", "smoothgrad"],
        "sal.block.form.sgs": 4, "sal.block.k": 0.1, "sal.block.n": 40}, "Null mass per model and method (.csv)")


def test_level_set_traversal_reopens_with_every_widget(runner, wait_for_job, trained_run):
    from analysis.level_sets import LSTConfig
    from backend.level_set_tasks import TraversalConfig
    from ui.level_sets import PRESETS

    older, _ = trained_run("digits-cnn", seeds=(0, 1), epochs=6)
    lm = load_model(older["run_id"])
    probs = _predict(runner, wait_for_job, lm)
    labels = load_data(lm.data, "test").labels.numpy()
    correct = probs.argmax(1) == labels
    sure = correct & (probs[np.arange(len(labels)), labels] > 0.6)
    source = int(np.flatnonzero(correct & (labels == 3))[1])                # "Which one" = 2
    targets = (int(np.flatnonzero(sure & (labels == 1))[0]), int(np.flatnonzero(sure & (labels == 5))[1]))
    lst = LSTConfig(eta=0.07, steps=12, delta=0.1, eps_adv=2 / 255, jitter=3 / 255, seed=5, log_every=3)
    r = ref(lm)
    cfg = TraversalConfig(model=r, source=source, targets=targets, lst=lst, data=lm.data.key())
    job_id = runner.submit(job("level_set_traversal", cfg, (r,), "traversal"))
    wait_for_job(job_id)
    p = next(iter(PRESETS))
    at = assert_reopened(runner, job_id, "lst.job", {
        "lst.model": lm.run_id, "lst.compare": False, "lst.cls": 3, "lst.which.3": 2, "lst.mode": "by class",
        "lst.targets.3": [1, 5], "lst.tw.1": 1, "lst.tw.5": 2, f"lst.eta.{p}": 0.07, f"lst.T.{p}": 12,
        f"lst.delta.{p}": 0.1, f"lst.seed": 5, "lst.frames": 3}, "Path and metrics (.npz)", reruns=1)
    assert at.session_state[f"lst.eps.{p}"] == pytest.approx(2) and at.session_state[f"lst.jit.{p}"] == pytest.approx(3)
    assert at.query_params["source"] == str(source) and at.query_params["targets"] == ",".join(map(str, targets))


def test_model_summary_reopens_on_its_model_and_checkpoint(runner, wait_for_job, trained_run):
    from backend.tasks import summary_job_for

    older, _ = trained_run("digits-mlp", seeds=(0, 1), epochs=3)
    lm = load_model(older["run_id"], epoch=1)
    job_id = runner.submit(summary_job_for(lm))
    wait_for_job(job_id)
    run = lm.run_id
    assert_reopened(runner, job_id, "models.summary_job", {
        "models.summary.model": run, f"models.summary.model.epoch.{run}": 1, "models.data.name": "digits"},
        "Test accuracy")
