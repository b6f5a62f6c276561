"""A real `streamlit run` server visited by headless Chromium (Debian's, driven by Playwright).

Every page is opened and used as a user would, no exception element may appear, and a screenshot
of each page is saved into the folder printed. The workspace is trained from the command line
before the server starts (two digits MLP seeds), and each test opens the model it needs by link
(`?model=<run id>`), so the tests pass in any order and alone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.browser import browser_page, screenshots_dir, train_preset
from tests.browser import settle as _settle
from tests.browser import snap as _snap
from tests.browser import streamlit_server as _streamlit

# BlockMNIST is built from MNIST (LENSCAPE_DATA; tests/conftest.py points it at ../shared/data)
HAS_MNIST = (Path(os.environ.get("LENSCAPE_DATA", "")) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


PRETRAINED = ("digits-mlp", 4, (0, 1))  # preset, epochs, seeds: trained before the server starts


@pytest.fixture(scope="module")
def seeds() -> list[str]:
    """Run ids of the pre-trained digits MLP seeds."""
    from lenscape.models.training import preset, run_id_for

    name, epochs, which = PRETRAINED
    return [run_id_for(preset(name, epochs=epochs, seed=s)) for s in which]


@pytest.fixture(scope="module")
def e2e_home(tmp_path_factory) -> Path:
    """The server's workspace (LENSCAPE_HOME)."""
    return tmp_path_factory.mktemp("e2e-home")


@pytest.fixture(scope="module")
def server(e2e_home, seeds):
    train_preset(e2e_home, *PRETRAINED)
    assert all((e2e_home / "runs" / r / "run.json").exists() for r in seeds)
    with _streamlit(e2e_home) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with browser_page() as pg:
        yield pg


@pytest.fixture(scope="module")
def shots() -> Path:
    return screenshots_dir()


def test_home_page(page, server, shots):
    page.goto(server)
    _settle(page)
    page.get_by_text("What each view answers").wait_for(timeout=30_000)
    assert page.get_by_text("Compute").first.is_visible()
    _snap(page, shots, "home")


def test_models_page_trains_a_model(page, server, shots):
    page.goto(f"{server}/Models")
    _settle(page)
    # the form shows the fields that apply: widths for an MLP, PGD settings and p_gen/p_mem when chosen
    page.get_by_label("MLP widths", exact=True).wait_for(timeout=60_000)  # a fresh server's first page draw
    assert page.get_by_label("MLP widths", exact=True).is_visible() and page.get_by_label("PGD norm").count() == 0
    for box, field in (("Adversarial training (PGD)", "ε"), ("Example-tied dropout", "p_gen")):
        assert page.get_by_label(field, exact=True).count() == 0
        page.get_by_text(box).click()
        page.get_by_label(field, exact=True).wait_for(timeout=30_000)
        page.get_by_text(box).click()
        _settle(page)
        assert page.get_by_label(field, exact=True).count() == 0
    seeds = page.get_by_label("Seeds (e.g. 0 or 0-4)")
    seeds.fill("0-1")
    seeds.press("Enter")
    _settle(page)
    page.get_by_role("button", name="Train").click()
    page.get_by_text("Trained 2 models").wait_for(timeout=180_000)
    _snap(page, shots, "models-train")
    page.get_by_role("tab", name="Workspace models").click()
    page.get_by_text("Confusion matrix").wait_for(timeout=120_000)
    _snap(page, shots, "models-summary")


def test_saliency_page_draws_maps_and_runs_the_randomization_check(page, server, shots, seeds):
    page.goto(f"{server}/Saliency?model={seeds[0]}")
    _settle(page)
    page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=120_000)
    _snap(page, shots, "saliency-maps")
    assert page.get_by_text("Deploy", exact=True).count() == 0  # client.toolbarMode = minimal
    for name, magic in (("Grid (.png)", b"\x89PNG"), ("Grid (.pdf)", b"%PDF")):
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name=name).click()
        assert Path(download.value.path()).read_bytes().startswith(magic)
    page.get_by_text("All", exact=True).first.click()  # sign: all, red-white-green
    page.get_by_text("heat map beside it").click()
    page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=60_000)
    _snap(page, shots, "saliency-maps-signed")
    # the state is in the address bar: a reload (or the link, shared) comes back to the same grid
    assert "sign=all" in page.url and "show=heat" in page.url, page.url
    page.reload()
    page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=120_000)
    _settle(page)
    assert page.get_by_role("radio", name="All", exact=True).is_checked()
    assert page.get_by_role("radio", name="heat map beside it").is_checked()
    # models side by side: lettered column groups on the same images, with a legend of what differs
    page.locator("[data-testid='stMultiSelect']").filter(has_text="Compare with (same data set)").click()
    page.get_by_role("option", name=f"{PRETRAINED[1]} ep · seed 1").first.click()  # the other pre-trained seed
    page.keyboard.press("Escape")
    page.get_by_text("differs in: seed 1").wait_for(timeout=120_000)
    page.get_by_text("Integrated Gradients completeness error").first.wait_for(timeout=120_000)
    _snap(page, shots, "saliency-compare")
    page.get_by_role("tab", name="Randomization check").click()
    page.get_by_role("button", name="Run the randomization check").wait_for()
    _settle(page)
    images = page.get_by_label("Images", exact=True)
    images.fill("3")
    images.press("Enter")
    _settle(page)
    page.get_by_role("tab", name="Maps").click()  # the randomization tab is not drawn
    _settle(page)
    page.get_by_role("tab", name="Randomization check").click()
    page.get_by_role("button", name="Run the randomization check").wait_for()
    _settle(page)
    assert page.get_by_label("Images", exact=True).input_value() == "3"  # and keeps its settings
    page.get_by_role("button", name="Run the randomization check").click()
    page.get_by_text("Map strips").wait_for(timeout=120_000)
    _snap(page, shots, "saliency-randomization")


@pytest.mark.skipif(not HAS_MNIST, reason="BlockMNIST is built from MNIST: needs it in LENSCAPE_DATA")
def test_saliency_blockmnist_check_trains_the_zoo_and_plots_null_mass(page, server, shots):
    page.goto(f"{server}/Saliency")
    _settle(page)
    page.get_by_role("tab", name="BlockMNIST check").click()
    # the standard MLP alone: the robust one trains 7-step PGD, four times as long (its null mass against
    # the standard one's is tests/pages/test_saliency_page.py's)
    recipes = page.locator("[data-testid='stMultiSelect']").filter(has_text="Recipes").first
    recipes.locator("input").click()
    page.keyboard.press("Backspace")
    page.keyboard.press("Escape")
    _settle(page)
    chosen = recipes.text_content() or ""
    assert "blockmnist-mlp" in chosen and "robust" not in chosen
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text("Trained 1 model:").wait_for(timeout=300_000)
    _settle(page)
    page.get_by_role("tab", name="BlockMNIST check").click()
    page.get_by_role("button", name="Compute null mass").click()
    page.get_by_text("Example maps").wait_for(timeout=120_000)
    assert page.get_by_text("Trained 1 model:").is_visible()  # the outcome stays in view
    assert page.get_by_text("Compare with (same data set)").count() == 0  # no picker that does not apply here
    _snap(page, shots, "saliency-blockmnist")


def test_similarity_page_heatmap(page, server, shots, seeds):
    page.goto(f"{server}/Similarity?model={seeds[0]}")  # model B: the newest other digits model
    _settle(page)
    page.get_by_role("button", name="Compute").first.click()
    page.get_by_text("marks a value that does not beat").wait_for()
    _snap(page, shots, "similarity-layers")
    page.get_by_role("tab", name="Projection").click()
    # the two digits seeds side by side (the default pick may be a BlockMNIST model from an earlier test)
    picker = page.locator("[data-testid='stMultiSelect']").filter(has_text="Models (side by side)")
    picker.locator("input").click()
    page.keyboard.press("Backspace")
    for _ in range(2):
        page.keyboard.press("Escape")
        _settle(page)
        picker.locator("input").click()
        page.get_by_role("option", name="Digits").first.click()
    page.keyboard.press("Escape")
    _settle(page)
    page.get_by_role("button", name="Project").click()
    page.get_by_text("neighbours 15").nth(1).wait_for()
    _settle(page)
    # Hover a real point with the mouse: its image must appear under the plot.
    iframe = page.locator("iframe[src*='hover_scatter']")
    frame = page.frame_locator("iframe[src*='hover_scatter']")
    frame.locator(".plot .main-svg").first.wait_for()
    # A rerun that redraws the page after the job ends can move the iframe and drop a mark drawn before
    # it, as it would for a user, who moves the mouse again: so settle, locate the point afresh and hover
    # again, up to three times.
    for attempt in range(3):
        _settle(page)
        x, y = frame.locator(".plot").first.evaluate("""gd => {
            const fl = gd._fullLayout, tr = gd._fullData[0], r = gd.getBoundingClientRect();
            return [r.left + fl._size.l + fl.xaxis.l2p(tr.x[0]), r.top + fl._size.t + fl.yaxis.l2p(tr.y[0])];
        }""")
        box = iframe.bounding_box()
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.move(box["x"] + x, box["y"] + y)
        preview = frame.locator(".preview[data-panel='0'][data-example]")
        preview.wait_for(timeout=10_000)  # the nearest point is point 0 or one drawn on top of it
        shown = preview.get_attribute("data-example")
        assert f"#{shown} · class" in preview.inner_text()
        sprite = preview.locator(".tile").evaluate("el => el.style.backgroundImage")
        assert "files/" in sprite and ".png" in sprite, sprite
        # The other seed's panel shows the same example (same data set) and marks it with an arrow.
        linked = frame.locator(f".preview[data-panel='1'][data-example='{shown}']")
        linked.wait_for(timeout=10_000)
        try:
            frame.locator(".plot").nth(1).locator(f"text=#{shown}").first.wait_for(timeout=10_000)
            break
        except Exception:
            if attempt == 2:
                page.screenshot(path=str(shots / "similarity-projection-failed.png"), full_page=True)
                raise
    _snap(page, shots, "similarity-projection")


def test_similarity_seeds_training_and_all_metrics_tabs(page, server, shots, seeds):
    page.goto(f"{server}/Similarity?model={seeds[0]}")
    _settle(page)
    for tab, button, done, name in (
        ("Seeds (N × N)", "Compute", "marks a value that does not beat", "similarity-seeds"),
        ("Over training", "Compute", "Dotted lines: each layer's final state", "similarity-training"),
        ("All metrics", "Compute all metrics", "Table (.csv)", "similarity-all-metrics"),
    ):
        page.get_by_role("tab", name=tab).click()
        page.get_by_role("button", name=button, exact=True).filter(visible=True).click()
        page.get_by_text(done).filter(visible=True).first.wait_for()  # hidden tabs hold the same text
        _snap(page, shots, name)


@pytest.mark.skipif(not HAS_MNIST, reason="BlockMNIST is built from MNIST: needs it in LENSCAPE_DATA")
def test_models_page_blockmnist_preview_and_import_tab(page, server, shots):
    page.goto(f"{server}/Models")
    _settle(page)
    selectbox = page.locator("[data-testid='stSelectbox']").first
    try:
        selectbox.wait_for(timeout=30_000)
    except Exception:  # seen twice in ~10 runs: the page drew its title but not its widgets; a reload draws them
        page.screenshot(path=str(shots / "models-stalled.png"), full_page=True)
        page.reload()
        _settle(page)
    selectbox.click()
    page.get_by_role("option", name="BlockMNIST (56×28, signal + null block)").click()
    page.get_by_text("12,665 training and 2,115 test images").wait_for()  # the preview is open by default
    page.get_by_text("title: label, then where the signal block is").wait_for()  # under the preview montage
    size = page.locator("[data-testid='stImage'] img").first.evaluate(  # once the image has loaded
        "i => (i.complete && i.naturalWidth) ? [i.naturalWidth, i.naturalHeight]"
        " : new Promise(r => i.addEventListener('load', () => r([i.naturalWidth, i.naturalHeight])))"
    )
    assert size == [8 * (60 + 4) + 4, 2 * (120 + 16 + 4) + 4]  # 56×28 tiles kept tall: 120 × 60
    _snap(page, shots, "models-blockmnist-preview")
    page.get_by_role("tab", name="Import").click()
    page.get_by_role("button", name="Import").wait_for(timeout=30_000)
    _snap(page, shots, "models-import")


def test_import_the_captum_lenet_on_cifar10_scores_its_published_accuracy(page, server, shots):
    lenet = Path(os.environ.get("LENSCAPE_DATA", "")) / "models" / "cifar10_lenet_captum_tutorial.pt"
    if not lenet.exists():
        pytest.skip("needs shared/data/models")
    page.goto(f"{server}/Models")
    _settle(page)
    page.locator("[data-testid='stSelectbox']").first.click()
    page.get_by_role("option", name="CIFAR-10").click()
    page.get_by_text("50,000 training and 10,000 test images").wait_for(timeout=180_000)
    page.get_by_role("tab", name="Import").click()
    page.get_by_text("A file on this machine").click()
    _settle(page)
    path = page.get_by_label("Path")
    path.fill(str(lenet))
    path.press("Enter")
    page.get_by_text("match LeNet (Captum tutorial)").wait_for()  # suggested from the file's keys and shapes
    _settle(page)
    mean = page.locator("input[aria-label='Input mean (per channel)']").filter(visible=True)
    assert [mean.nth(i).input_value() for i in range(mean.count())] == ["0.5, 0.5, 0.5"]
    page.get_by_role("button", name="Import", exact=True).click()
    page.get_by_text("is the current model").wait_for()
    _snap(page, shots, "models-import-lenet")
    page.get_by_role("tab", name="Workspace models").click()
    page.get_by_text("58.42%").wait_for(timeout=180_000)  # 49.53 % with CIFAR's own statistics
    _snap(page, shots, "models-lenet-summary")
    page.goto(f"{server}/Saliency")
    _settle(page)
    sidebar = page.locator("[data-testid='stSidebar']")
    sidebar.get_by_text("CIFAR-10").wait_for()
    sidebar.get_by_text("current: cifar10_lenet_captum_tutorial").wait_for()
    page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=180_000)
    _snap(page, shots, "saliency-lenet")
    # Home and Runs list the imported model with the accuracy its summary measured (they said "None")
    for where in ("", "/Runs"):
        page.goto(f"{server}{where}")
        _settle(page)
        grid = page.locator("[data-testid='stDataFrame']").first
        from playwright.sync_api import expect

        # the grid draws on a canvas; its accessible copy holds the values, filled a moment after it appears
        expect(grid).to_contain_text("cifar10_lenet_captum_tutorial", timeout=60_000)
        text = grid.text_content() or ""
        assert "0.5842" in text, (where, text[:300])


def test_a_pickle_that_would_run_code_is_refused_at_upload(page, server, shots, tmp_path):
    import io

    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    buf = io.BytesIO()
    torch.save({"fc1.weight": torch.zeros(2), "x": Payload()}, buf)
    page.goto(f"{server}/Models?tab=Import")
    _settle(page)
    page.get_by_role("tab", name="Import").click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        files=[{"name": "evil.pt", "mimeType": "application/octet-stream", "buffer": buf.getvalue()}]
    )
    page.get_by_text("was refused").first.wait_for(timeout=60_000)
    _snap(page, shots, "models-import-pickle-refused")
    assert not marker.exists()  # the server never ran the pickle's code


def test_loss_landscape_surface_in_3d_and_trajectory(page, server, shots, seeds):
    page.goto(f"{server}/Loss_landscape?model={seeds[0]}")
    _settle(page)
    page.get_by_label("Points per axis").fill("9")
    page.get_by_label("Points per axis").press("Enter")
    _settle(page)
    page.get_by_label("Examples (0 = all)").fill("360")
    page.get_by_label("Examples (0 = all)").press("Enter")
    _settle(page)
    page.get_by_text("forward passes").first.wait_for()
    page.get_by_role("button", name="Compute surface").click()
    page.get_by_text("Loss at the model").wait_for(timeout=180_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)  # the WebGL surface draws after the plot's frame
    _snap(page, shots, "landscape-surface-3d")
    page.get_by_role("tab", name="Trajectory").click()
    _settle(page)
    page.get_by_role("button", name="Compute trajectory").click()
    page.get_by_text("1st PC").first.wait_for(timeout=180_000)
    _snap(page, shots, "landscape-trajectory")


def test_level_sets_traversal(page, server, shots, seeds):
    page.goto(f"{server}/Level_sets?model={seeds[0]}")
    _settle(page)
    page.get_by_text("p0 =").first.wait_for(timeout=120_000)
    _settle(page)
    page.get_by_role("button", name="Run level set traversal").click()
    page.get_by_text("Path and metrics").first.wait_for(timeout=300_000)
    _snap(page, shots, "level-sets")
    # the second seed side by side on the same source and targets
    page.get_by_text("Compare with a second model").click()
    _settle(page)
    page.get_by_text("p0 =").first.wait_for(timeout=120_000)
    _settle(page)
    page.get_by_role("button", name="Run level set traversal").click()
    page.get_by_role("heading", name="Side by side").first.wait_for(timeout=300_000)
    page.get_by_text("Comparison (.csv)").first.wait_for(timeout=60_000)
    page.get_by_role("button", name="Path images (.png)").nth(1).wait_for(timeout=60_000)  # one per model
    _snap(page, shots, "level-sets-compare")


def test_runs_page_lists_results_and_a_bundle_reopens_after_import(page, server, shots, seeds, e2e_home, tmp_path):
    """A saliency result exported as a bundle, deleted, imported through the page and reopened."""
    from lenscape.backend.bundles import export_bundle
    from lenscape.backend.store import ResultStore

    page.goto(f"{server}/Saliency?model={seeds[0]}&idx=1,2")
    _settle(page)
    page.get_by_role("button", name="Predictions (.csv)").wait_for(timeout=120_000)
    store = ResultStore(e2e_home / "store")
    job_id = next(
        j["id"] for j in store.list("saliency") if j["status"] == "DONE" and '"indices": [1, 2]' in j["config"]
    )
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(export_bundle(store, job_id, e2e_home / "runs"))
    store.delete(job_id)
    page.goto(f"{server}/Runs")
    _settle(page)
    page.get_by_text("Results", exact=True).wait_for()
    _snap(page, shots, "runs")
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(bundle))
    page.get_by_text("Imported saliency maps").wait_for(timeout=60_000)
    page.get_by_text("No stored results yet").wait_for(state="detached", timeout=30_000)  # listed above now
    _snap(page, shots, "runs-imported")
    assert store.get(job_id)["status"] == "DONE"
    page.get_by_role("link", name="Reopen it in its view").click()
    page.get_by_role("button", name="Predictions (.csv)").wait_for(timeout=60_000)  # from the store
    assert "idx=1%2C2" in page.url or "idx=1,2" in page.url
    page.get_by_text("imported from a reproducibility bundle, computed elsewhere").wait_for()  # said, not hidden
    _snap(page, shots, "runs-reopened")
    page.get_by_role("button", name="Compute here").click()  # computed here instead: no longer the bundle's
    deadline = time.time() + 120
    while time.time() < deadline and (store.get(job_id) or {}).get("owner") in ("bundle", None):
        time.sleep(0.5)
    assert store.get(job_id)["owner"] != "bundle"
    page.get_by_role("button", name="Predictions (.csv)").wait_for(timeout=120_000)


def test_what_you_saw_comes_back(page, server, shots, seeds, e2e_home):
    """Issue 23: a result reopened by the Runs page's link is shown at once with the settings that
    made it (a 1-D line came back as the 2-D form, without its result); nine saliency methods read
    well; the Models page estimates CIFAR-10's default recipe before training."""
    from urllib.parse import urlencode

    from lenscape.backend.store import ResultStore
    from lenscape.ui.runs import reopen_link

    page.goto(f"{server}/Loss_landscape?model={seeds[1]}")
    _settle(page)
    # a model opened by link is the current one, its data set in the sidebar (it read "none chosen yet")
    assert "Data set: Digits" in page.locator("[data-testid='stSidebar']").inner_text()
    # the interpolation starts at the final checkpoints of two seeds (A started at initialization)
    page.get_by_role("tab", name="Interpolation").click()
    _settle(page)
    thumbs = page.locator("[data-testid='stSliderThumbValue']")  # the two checkpoint sliders
    assert [thumbs.nth(i).inner_text() for i in range(2)] == [str(PRETRAINED[1])] * 2
    page.get_by_role("tab", name="Random directions").click()
    _settle(page)
    page.get_by_text("1 (a line)").click()
    _settle(page)
    for label, value in (("Points per axis", "7"), ("Examples (0 = all)", "200")):
        page.get_by_label(label).fill(value)
        page.get_by_label(label).press("Enter")
        _settle(page)
    page.get_by_role("button", name="Compute line").click()
    page.get_by_role("button", name="Line (.csv)").wait_for(timeout=180_000)
    store = ResultStore(e2e_home / "store")
    row = next(
        j
        for j in store.list("landscape_surface")
        if j["status"] == "DONE" and '"dims": 1' in j["config"] and '"resolution": 7' in j["config"]
    )
    view, params = reopen_link(row)
    before = {j["id"] for j in store.list()}
    page.goto(f"{server}/{view.split('_', 1)[1].removesuffix('.py')}?{urlencode(params)}")
    page.get_by_role("button", name="Line (.csv)").wait_for(timeout=60_000)  # at once: nothing to press
    _settle(page)
    assert page.get_by_role("radio", name="1 (a line)").is_checked()
    assert page.get_by_label("Points per axis").input_value() == "7"
    assert {j["id"] for j in store.list()} == before  # nothing computed again
    _snap(page, shots, "reopened-line")

    nine = ",".join(
        (
            "gradient",
            "loss_gradient",
            "gradient_x_input",
            "smoothgrad",
            "vargrad",
            "integrated_gradients",
            "guided_backprop",
            "deeplift",
            "occlusion",
        )
    )
    page.goto(f"{server}/Saliency?model={seeds[0]}&methods={nine}")
    _settle(page)
    page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=300_000)
    page.wait_for_timeout(1000)
    _snap(page, shots, "saliency-nine-methods")

    page.goto(f"{server}/Models?data=cifar10")
    _settle(page)
    page.get_by_text("images × 30 epochs").first.wait_for(timeout=180_000)  # the time, before training
    _snap(page, shots, "models-cifar10-estimate")
