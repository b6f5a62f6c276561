"""Bring your own model (issue 25): networks the zoo does not know (tests/custom_nets.py: a residual
CNN and a tiny vision transformer) go through lenscape.add_model with a plain Dataset; they are
listed, rebuilt from their code reference, and a saliency grid, a layer × layer CKA and a 5×5 loss
surface compute on them, in this process and again in a new one (a server restart). A reference
that the person running the server did not give is never imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import custom_nets

ROOT = Path(__file__).resolve().parents[2]
RES = "tests.custom_nets:residual_cnn"
VIT = "tests.custom_nets:tiny_vit"


@pytest.fixture
def added(lenscape_home):
    import lenscape

    torch.manual_seed(0)
    res = custom_nets.residual_cnn(width=8, blocks=2)
    vit = custom_nets.tiny_vit(depth=2)
    a = lenscape.add_model(
        res, custom_nets.DigitsDataset(), name="my residual CNN", architecture=RES, kwargs={"width": 8, "blocks": 2}
    )
    b = lenscape.add_model(
        vit,
        (custom_nets.DigitsDataset("train"), custom_nets.DigitsDataset("test")),
        name="my tiny ViT",
        architecture=VIT,
        kwargs={"depth": 2},
        mean=(0.5,),
        std=(0.5,),
    )
    return {"res": (a, res), "vit": (b, vit)}


def test_added_models_are_listed_and_rebuilt_from_their_reference(added):
    from lenscape.analysis import hidden_layers
    from lenscape.models.architectures import InputNorm
    from lenscape.models.zoo import list_runs, load_model

    listed = {r["run_id"]: r for r in list_runs()}
    (a, res), (b, vit) = added["res"], added["vit"]
    assert listed[a]["name"] == "my residual CNN" and listed[b]["name"] == "my tiny ViT"
    assert listed[a]["arch"]["builder"] == RES and json.loads(listed[a]["arch"]["builder_kwargs"]) == {
        "blocks": 2,
        "width": 8,
    }
    assert listed[a]["classes"] == [f"digit {d}" for d in range(10)]  # from the data set's `classes`
    x = torch.rand(4, 1, 8, 8)
    for run_id, net, norm in ((a, res, InputNorm((0.0,), (1.0,))), (b, vit, InputNorm((0.5,), (0.5,)))):
        lm = load_model(run_id)
        assert type(lm.model) is type(net)  # the user's own class, rebuilt from the reference
        with torch.no_grad():
            torch.testing.assert_close(lm.model(x), net.eval()(norm(x)))
    # their repeated blocks are the layers to compare, then the logits
    assert hidden_layers(load_model(a).model) == ["blocks.0", "blocks.1", "head"]
    assert hidden_layers(load_model(b).model) == ["blocks.0", "blocks.1", "head"]
    # adding the same model again gives the same id, nothing new
    import lenscape

    assert lenscape.add_model(res, custom_nets.DigitsDataset(), architecture=RES, kwargs={"width": 8, "blocks": 2}) == a
    assert len(list_runs()) == 2


def _compute(runner, wait_for_job, run_id: str) -> dict:
    """A saliency grid, a layer × layer CKA and a 5×5 surface of one model, through the backend."""
    from lenscape.analysis import SaliencyConfig, hidden_layers, suggest_gradcam_layer
    from lenscape.backend.jobs import job, ref
    from lenscape.backend.landscape_tasks import EvalSet, SurfaceConfig
    from lenscape.backend.saliency_tasks import GridConfig
    from lenscape.backend.similarity_tasks import LayerMatrixConfig
    from lenscape.models.zoo import load_model

    lm = load_model(run_id)
    r = ref(lm)
    layer = suggest_gradcam_layer(lm.model, lm.arch.in_shape)
    methods = (
        SaliencyConfig(method="gradient"),
        SaliencyConfig(method="integrated_gradients", n_steps=8),
        SaliencyConfig(method="gradcam", layer=layer),
    )
    grid = wait_for_job(runner.submit(job("saliency", GridConfig(model=r, indices=(0, 1, 2), methods=methods), (r,))))
    layers = tuple(hidden_layers(lm.model))
    cka = wait_for_job(
        runner.submit(job("layer_similarity", LayerMatrixConfig(a=r, b=r, layers_a=layers, layers_b=layers), (r,)))
    )
    surface = wait_for_job(
        runner.submit(job("landscape_surface", SurfaceConfig(model=r, resolution=5, data=EvalSet(n_examples=64)), (r,)))
    )
    return {"grid": grid, "cka": cka, "surface": surface, "layer": layer, "layers": layers}


@pytest.mark.parametrize("which", ["res", "vit"])
def test_a_saliency_grid_a_layer_cka_and_a_surface_compute_on_them(added, runner, wait_for_job, which):
    from lenscape.analysis import attribute, SaliencyConfig
    from lenscape.models.data import load_data
    from lenscape.models.zoo import load_model

    run_id, _ = added[which]
    out = _compute(runner, wait_for_job, run_id)
    grid, cka, surface = out["grid"], out["cka"], out["surface"]
    assert [r.error for r in grid] == ["", "", ""]
    assert all(r.attributions.shape[0] == 3 and np.isfinite(r.attributions).all() for r in grid)
    # Grad-CAM: on the ViT the first LayerNorm of the last block, whose tokens are reshaped to a map
    assert out["layer"] == ("blocks.1.norm1" if which == "vit" else "blocks.1.conv2")
    assert grid[2].attributions.shape == (3, 1, 8, 8) and float(np.abs(grid[2].attributions).sum()) > 0
    # the grid's gradients are Captum's Saliency on the same images, called here directly
    import captum.attr as ca

    lm = load_model(run_id)
    test = load_data(lm.data, "test")
    x = test.x(torch.arange(3))
    with torch.no_grad():
        target = lm.model(x).argmax(1)
    want = ca.Saliency(lm.model).attribute(x, target=target, abs=False)
    np.testing.assert_allclose(grid[0].attributions, want.numpy(), rtol=1e-4, atol=1e-6)
    assert torch.equal(attribute(lm.model, x, target, SaliencyConfig(method="gradient")), want)
    # CKA of a model with itself: 1 on the diagonal, a symmetric matrix over its blocks and logits
    values = np.asarray(cka.values)
    assert values.shape == (3, 3)
    np.testing.assert_allclose(np.diag(values), 1.0, atol=1e-5)
    np.testing.assert_allclose(values, values.T, atol=1e-5)
    # the 5×5 surface's centre is the model itself: its loss on the same 64 examples
    loss = np.asarray(surface.loss)
    assert loss.shape == (5, 5) and np.isfinite(loss).all()
    assert loss[2, 2] == pytest.approx(_loss_on(lm, surface), rel=1e-5)


def _loss_on(lm, surface) -> float:
    from lenscape.analysis.evaluation import evaluate
    from lenscape.models.data import load_data

    test = load_data(lm.data, "test").head(64)
    return evaluate(lm.model, test.images, test.labels).loss


def test_the_same_results_after_a_restart(added, runner, wait_for_job, lenscape_home, tmp_path):
    """A new process over the same workspace (a server restart) rebuilds both models from their
    references and computes the same maps, CKA and surface (into a store of its own, so that nothing
    is read back from this one's)."""
    here = {k: _compute(runner, wait_for_job, run_id) for k, (run_id, _) in added.items()}
    runner.shutdown()
    script = """
import json, sys, numpy as np
from pathlib import Path
from lenscape.backend.runner import open_backend
from lenscape.backend.jobs import JobStatus
sys.path.insert(0, {root!r})
from tests.models.test_custom_models import _compute

runner = open_backend(root=Path(sys.argv[2]))
def wait(job_id):
    assert runner.wait(job_id, 600) == JobStatus.DONE, runner.error(job_id)
    return runner.result(job_id)
out = {{}}
for k, run_id in json.loads(sys.argv[1]).items():
    r = _compute(runner, wait, run_id)
    out[k] = [[g.attributions.tolist() for g in r["grid"]], np.asarray(r["cka"].values).tolist(),
              np.asarray(r["surface"].loss).tolist()]
runner.shutdown()
print(json.dumps(out))
""".format(root=str(ROOT))
    env = {**os.environ, "LENSCAPE_HOME": str(lenscape_home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps({k: v[0] for k, v in added.items()}), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=str(ROOT),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    there = json.loads(done.stdout.strip().splitlines()[-1])
    for k, r in here.items():
        for got, want in zip(there[k][0], r["grid"]):
            np.testing.assert_array_equal(np.asarray(got, dtype=want.attributions.dtype), want.attributions)
        np.testing.assert_array_equal(np.asarray(there[k][1]), np.asarray(r["cka"].values))
        np.testing.assert_array_equal(np.asarray(there[k][2]), np.asarray(r["surface"].loss))


def test_a_model_trained_on_noisy_labels_tells_the_memorization_view_which(lenscape_home):
    """clean_labels: the Dataset gives the labels the model was trained on; the true ones mark the
    relabelled examples, which training_data (what every memorization job reads) then knows."""
    import lenscape
    from lenscape.models.zoo import load_model, training_data

    train, test = custom_nets.DigitsDataset("train"), custom_nets.DigitsDataset("test")
    clean = train.y.clone()
    flipped = torch.tensor([3, 10, 200])
    train.y[flipped] = (train.y[flipped] + 1) % 10
    run_id = lenscape.add_model(
        custom_nets.residual_cnn(width=4, blocks=1),
        (train, test),
        architecture=RES,
        kwargs={"width": 4, "blocks": 1},
        clean_labels=clean,
    )
    prepared = training_data(load_model(run_id))
    assert torch.nonzero(prepared.noise_mask).flatten().tolist() == [3, 10, 200]
    assert torch.equal(prepared.original_labels, clean) and torch.equal(prepared.train.labels, train.y)
    with pytest.raises(Exception, match="clean_labels"):
        lenscape.add_model(
            custom_nets.residual_cnn(width=4, blocks=2),
            (train, test),
            architecture=RES,
            kwargs={"width": 4, "blocks": 2},
            clean_labels=clean[:10],
        )


def test_cka_between_layers_of_two_different_architectures(lenscape_home, runner, wait_for_job):
    """The residual CNN's blocks against the ViT's, on the same data: a 3×3 matrix in (0, 1]."""
    import lenscape
    from lenscape.analysis import hidden_layers
    from lenscape.backend.jobs import job, ref
    from lenscape.backend.similarity_tasks import LayerMatrixConfig
    from lenscape.models.zoo import load_model

    data = custom_nets.DigitsDataset()
    torch.manual_seed(0)
    a = lenscape.add_model(custom_nets.residual_cnn(width=4, blocks=2), data, architecture=RES, kwargs={"width": 4})
    b = lenscape.add_model(custom_nets.tiny_vit(depth=2), data, architecture=VIT, kwargs={"depth": 2})
    ma, mb = load_model(a), load_model(b)
    ra, rb = ref(ma), ref(mb)
    cfg = LayerMatrixConfig(
        a=ra, b=rb, layers_a=tuple(hidden_layers(ma.model)), layers_b=tuple(hidden_layers(mb.model))
    )
    m = wait_for_job(runner.submit(job("layer_similarity", cfg, (ra, rb))))
    values = np.asarray(m.values)
    assert values.shape == (3, 3) and ((values > 0) & (values <= 1 + 1e-6)).all()
    assert m.rows[0].endswith("blocks.0") and m.cols[-1].endswith("head")


@pytest.mark.parametrize("which", ["res", "vit"])
def test_the_randomization_check_and_a_projection_compute_on_them(added, runner, wait_for_job, which):
    """The Saliency view's trust check (cascading randomization, Adebayo et al.) re-initializes the user's
    own layers, top first; the Similarity view's projection reads a block's activations (a ViT's tokens
    pooled) and its PCA is scikit-learn's own on them."""
    from sklearn.decomposition import PCA

    from lenscape.analysis import SaliencyConfig, evaluate
    from lenscape.analysis.embedding import ProjectionConfig
    from lenscape.backend.jobs import job, ref
    from lenscape.backend.saliency_tasks import RandomizationConfig
    from lenscape.backend.similarity_tasks import ProjectionJobConfig
    from lenscape.models.data import load_data
    from lenscape.models.zoo import load_model

    run_id, _ = added[which]
    lm = load_model(run_id)
    r = ref(lm)
    cfg = RandomizationConfig(model=r, indices=(0, 1, 2), methods=(SaliencyConfig(method="gradient"),))
    (rand,) = wait_for_job(runner.submit(job("randomization", cfg, (r,))))
    assert rand.layers[0] == "head" and any(n.startswith("blocks.1") for n in rand.layers)
    assert rand.maps.shape == (len(rand.layers) + 1, 3, 8, 8)
    assert rand.rank_corr.shape == (len(rand.layers), 3) and np.nanmax(rand.rank_corr) <= 1.0
    # once every layer is re-initialized the map no longer follows the trained model's
    assert np.nanmean(rand.rank_corr[-1]) < 0.9

    pc = ProjectionJobConfig(model=r, layer="blocks.1", projection=ProjectionConfig(method="pca"), n_examples=100)
    proj = wait_for_job(runner.submit(job("projection", pc, (r,))))
    acts = evaluate(lm.model, load_data(lm.data, "test").head(100).images, layers=["blocks.1"]).activations["blocks.1"]
    want = PCA(n_components=2, random_state=0).fit_transform(np.asarray(acts, dtype=np.float64))
    got = proj.projection.coords
    assert got.shape == (100, 2)
    for k in range(2):  # the same axes up to sign
        assert abs(np.corrcoef(got[:, k], want[:, k])[0, 1]) > 0.999
