"""The class demo keeps its promise (issue 23, 5): every claim in a tour step's text is checked
on the stored result that the step draws, after `warm` prepared the demo in this workspace."""

import numpy as np
import pytest

from lenscape.backend.teaching import STEPS, tour_jobs, warm
from lenscape.models.data import load_data


@pytest.fixture(scope="module")
def results(class_demo, tmp_path_factory):
    """The tour's stored results, read from a copy of the workspace `lenscape warm` prepared."""
    import os
    import shutil

    from lenscape.backend.runner import open_backend

    home = tmp_path_factory.mktemp("tour-home")
    shutil.copytree(class_demo[0], home, dirs_exist_ok=True)
    old = os.environ.get("LENSCAPE_HOME")
    os.environ["LENSCAPE_HOME"] = str(home)
    runner = open_backend()
    try:
        warm(runner, say=lambda m: None)  # finds everything stored
        jobs = tour_jobs()
        res = {k: runner.result(j.key()) for k, j in jobs.items()}
        cfg = jobs["saliency"].config
        from lenscape.models.zoo import load_model

        res["saliency images"] = load_data(load_model(cfg.model.run_id).data, "test").x(list(cfg.indices)).numpy()
        yield res, jobs
    finally:
        runner.shutdown()
        if old is None:
            os.environ.pop("LENSCAPE_HOME", None)
        else:
            os.environ["LENSCAPE_HOME"] = old


def _text(key):
    return next(s.text for s in STEPS if s.key == key)


def test_saliency_the_gradient_spills_integrated_gradients_sits_on_the_strokes_smoothgrad_is_smoother(results):
    res, jobs = results
    assert "spills onto the black background" in _text("saliency")
    ink = res["saliency images"] > 0.05
    maps = {r.config.method: np.abs(r.attributions) for r in res["saliency"]}

    def on_ink(a):
        return float(((a * ink).sum(axis=(1, 2, 3)) / a.sum(axis=(1, 2, 3))).mean())

    def roughness(a):  # neighbouring pixels' mean difference, relative to the mean
        return float((np.abs(np.diff(a, axis=-1)).mean(axis=(1, 2, 3)) / a.mean(axis=(1, 2, 3))).mean())

    assert on_ink(maps["gradient"]) < 0.8  # spills onto the background
    assert on_ink(maps["integrated_gradients"]) > on_ink(maps["gradient"]) + 0.2
    assert roughness(maps["smoothgrad"]) < roughness(maps["gradient"])


def test_similarity_the_diagonal_is_bright(results):
    res, _ = results
    assert "bright diagonal" in _text("similarity")
    v = res["similarity"].values
    assert v.shape[0] == v.shape[1] >= 4  # enough layers for a diagonal
    assert all(int(np.argmax(v[i])) == i and int(np.argmax(v[:, i])) == i for i in range(len(v)))
    off = v[~np.eye(len(v), dtype=bool)]
    assert np.diag(v).mean() - off.mean() > 0.25
    assert v[0, -1] < 0.5 and v[-1, 0] < 0.5  # first conv vs classifier: little shared


def test_landscape_the_loss_rises_between_two_good_solutions(results):
    res, _ = results
    assert "The loss rises in between" in _text("landscape")
    for curve in (res["landscape"].train, res["landscape"].test):
        a, loss = np.asarray(curve.alphas), np.asarray(curve.loss)
        ends = max(loss[np.argmin(abs(a))], loss[np.argmin(abs(a - 1))])
        assert ends < 0.1 and loss[(a > 0) & (a < 1)].max() > max(0.5, 10 * ends)


def test_level_sets_outputs_come_halfway_with_the_same_confidence(results):
    res, _ = results
    assert "half the distance" in _text("level_sets")
    t = res["level_sets"]
    lst = t.lst
    assert t.label == 0 and (lst.predictions == 0).all()
    assert (np.abs(lst.confidence - lst.p0) <= t.delta + 1e-6).all()
    assert (lst.dist_l2[-1] <= 0.6 * lst.dist_l2[0]).all()
    assert (lst.ssim[0] < 0.1).all() and (lst.ssim[-1] > 0.3).all()


def test_memorization_clean_first_flipped_later_test_stalls_and_the_gallery_has_examples(results):
    res, _ = results
    ov = res["memorization"]
    assert "only later" in _text("memorization")
    clean = int(np.argmax(ov.clean_acc >= 0.9))
    noisy = int(np.argmax(ov.noisy_acc >= 0.5))
    assert ov.clean_acc.max() >= 0.9 and ov.noisy_acc.max() >= 0.5
    assert ov.epochs[noisy] - ov.epochs[clean] >= 10  # flipped ones only later
    assert ov.test_acc[-1] <= ov.test_acc.max() and ov.test_acc[-1] - ov.test_acc[: len(ov.test_acc) // 4].max() < 0.01
    assert ov.memorized.sum() > 0
