"""Bring your own model, in the browser (issue 25): a residual CNN the zoo does not know, added from a
script with lenscape.add_model (a plain Dataset, its class names), opens in every view of a server
started afterwards; each view computes on it. Screenshots in test-artifacts/screenshots/own-*."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import browser_page, settle, snap, streamlit_server
from tests.browser import screenshots_dir

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import torch, lenscape
from tests import custom_nets
torch.manual_seed(0)
net = custom_nets.residual_cnn(width=8, blocks=2)
data = custom_nets.DigitsDataset()
opt = torch.optim.Adam(net.parameters(), lr=0.01)
for epoch in range(4):  # a second or two: a trained model, as a researcher's would be
    for idx in torch.randperm(len(data)).split(64):
        loss = torch.nn.functional.cross_entropy(net(data.x[idx]), data.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
net.eval()
vit = custom_nets.tiny_vit(depth=2)
opt = torch.optim.Adam(vit.parameters(), lr=0.003)
for epoch in range(4):
    for idx in torch.randperm(len(data)).split(64):
        loss = torch.nn.functional.cross_entropy(vit(data.x[idx]), data.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
vit.eval()
print(lenscape.add_model(vit, custom_nets.DigitsDataset(), name="my tiny ViT",
                         architecture="tests.custom_nets:tiny_vit", kwargs={"depth": 2}))
print(lenscape.add_model(net, custom_nets.DigitsDataset(), name="my residual CNN",
                         architecture="tests.custom_nets:residual_cnn", kwargs={"width": 8, "blocks": 2}))
"""


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    home = tmp_path_factory.mktemp("own-model-home")
    env = {**os.environ, "LENSCAPE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    vit_id, run_id = done.stdout.strip().splitlines()[-2:]
    with streamlit_server(home) as url, browser_page() as page:
        yield url, page, run_id, vit_id


def test_a_model_added_from_a_script_opens_in_every_view(own):
    url, page, run_id, _ = own
    shots = screenshots_dir()
    try:
        _every_view(url, page, run_id, shots)
    except Exception:
        page.screenshot(path=str(shots / "own-failed.png"), full_page=True)
        raise


def _every_view(url, page, run_id, shots) -> None:
    page.goto(f"{url}/Models?model={run_id}")
    settle(page)
    page.get_by_role("tab", name="Workspace models").click()
    page.get_by_text("Confusion matrix").wait_for(timeout=120_000)
    page.get_by_text("tests.custom_nets:residual_cnn").first.wait_for()  # the code it is rebuilt from
    snap(page, shots, "own-models")

    page.goto(f"{url}/Saliency?model={run_id}")
    settle(page)
    page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=180_000)
    page.get_by_text("true digit").first.wait_for()  # the data set's class names
    snap(page, shots, "own-saliency")

    page.goto(f"{url}/Level_sets?model={run_id}")
    settle(page)
    page.get_by_text("p0 =").first.wait_for(timeout=120_000)
    settle(page)
    page.get_by_role("button", name="Run level set traversal").click()
    page.get_by_text("Path and metrics").first.wait_for(timeout=300_000)
    snap(page, shots, "own-level-sets")

    _layer_cka(page, url, run_id, shots, "own-similarity")

    page.goto(f"{url}/Loss_landscape?model={run_id}")
    settle(page)
    page.get_by_label("Points per axis").fill("5")
    page.get_by_label("Points per axis").press("Enter")
    settle(page)
    page.get_by_label("Examples (0 = all)").fill("200")
    page.get_by_label("Examples (0 = all)").press("Enter")
    settle(page)
    page.get_by_text("forward passes").first.wait_for()
    page.get_by_role("button", name="Compute surface").click()
    page.get_by_text("Loss at the model").wait_for(timeout=180_000)
    page.wait_for_timeout(1000)
    snap(page, shots, "own-landscape")

    page.goto(f"{url}/Memorization?model={run_id}")
    settle(page)
    page.get_by_text("nothing memorized to analyse").first.wait_for(timeout=60_000)
    snap(page, shots, "own-memorization")


def test_a_vision_transformer_added_from_a_script_gets_grad_cam_and_layer_similarity(own):
    """The tiny ViT's saliency maps with Grad-CAM on its last block's tokens (reshaped to a map), and its
    encoder blocks in the layer × layer CKA."""
    url, page, _, vit_id = own
    shots = screenshots_dir()
    try:
        page.goto(f"{url}/Saliency?model={vit_id}")
        settle(page)
        page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=180_000)
        methods = page.locator("[data-testid='stMultiSelect']").filter(has_text="Methods").first
        methods.locator("input").click()
        page.get_by_role("option", name="Grad-CAM").first.click()
        page.keyboard.press("Escape")
        settle(page)
        page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=180_000)
        settle(page)
        # every method drew: a method that fails is said in an error with a Retry, and there is none
        errors = page.locator("[data-testid='stAlertContentError']")
        assert errors.count() == 0, errors.all_inner_texts()
        page.get_by_text("Method settings").click()
        settle(page)
        # the layer Grad-CAM reads: the last block's first LayerNorm, its tokens a 4×4 map of patches
        layer = page.locator("[data-testid='stSelectbox']").filter(has_text="Grad-CAM layer").first
        shown = layer.evaluate(  # the chosen option: text, or an input's value, as Streamlit versions draw it
            "e => e.innerText + ' ' + [...e.querySelectorAll('input')].map(i => i.value + ' ' + i.placeholder).join(' ')"
        )
        assert "blocks.1.norm1 (4×4)" in shown, shown
        snap(page, shots, "own-vit-saliency")
        _layer_cka(page, url, vit_id, shots, "own-vit-similarity")
    except Exception:
        page.screenshot(path=str(shots / "own-vit-failed.png"), full_page=True)
        raise


def _layer_cka(page, url: str, run_id: str, shots, shot: str) -> None:
    """The Similarity page's layer × layer CKA of `run_id`, computed; its blocks are named; snapped as `shot`."""
    page.goto(f"{url}/Similarity?model={run_id}")
    settle(page)
    page.get_by_role("button", name="Compute").first.click()
    page.get_by_text("marks a value that does not beat").wait_for(timeout=180_000)
    page.get_by_text("blocks.1").first.wait_for()
    snap(page, shots, shot)
