"""The browser tests' two longest journeys, in a file of their own so that the suite's two workers
(pytest-xdist, a file per worker) run them beside the rest of tests/e2e/test_browser.py: the
memorization view from a model without label noise and its offer to every experiment, and the class
demo's tour of every view.

The server's workspace is the class demo a teacher prepares before class (`lenscape warm --preset
teaching`, run once per test run by conftest's `class_demo`, copied here): two digits CNN seeds and the
noisy digits MLP, with one result per view. Preparing it from Home's button in a fresh workspace is
tests/pages/test_tour.py's one-click test."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.browser import settle as _settle
from tests.browser import snap as _snap
from tests.browser import streamlit_server as _streamlit
from tests.browser import train_preset
from tests.e2e import test_browser as _browser


# a tied-dropout model trained for 10 epochs (a second or two) before the server starts: the Tied dropout
# tab's offer trains the 100-epoch recipe, a minute beside the other worker; the offer is checked, not run
TIED = ("digits-mlp-tied-dropout", 10)


@pytest.fixture(scope="module")
def home(class_demo, tmp_path_factory) -> Path:
    """The server's workspace: a copy of the class demo, with the tied-dropout model."""
    home = tmp_path_factory.mktemp("journeys-home")
    shutil.copytree(class_demo[0], home, dirs_exist_ok=True)
    train_preset(home, *TIED)
    return home


@pytest.fixture(scope="module")
def server(home):
    with _streamlit(home) as url:
        yield url


# the browser page and screenshot folder as tests/e2e/test_browser.py has them (over this module's server)
page, shots = _browser.page, _browser.shots


def test_memorization_from_the_offer_to_every_experiment(page, server, shots):
    """A model without label noise gets an explanation and an offer; the offered noisy model (the
    class demo's, so the offer finds it trained) opens, the overview and every experiment run on it;
    the Tied dropout tab offers its recipe, and a tied-dropout model compares kept and dropped."""
    from lenscape.models.training import preset, run_id_for

    page.goto(f"{server}/Memorization?model={run_id_for(preset('digits-cnn', seed=0))}")
    _settle(page)
    try:
        page.get_by_text("nothing memorized to analyse").first.wait_for(timeout=60_000)
    except Exception:
        page.screenshot(path=str(shots / "memorization-failed.png"), full_page=True)
        raise
    _snap(page, shots, "memorization-no-noise")
    start = time.perf_counter()
    page.get_by_role("button", name=preset("digits-mlp-noise10").describe(), exact=False).first.click()
    page.get_by_text("pick it above").first.wait_for(timeout=300_000)
    print(f"\nthe noisy preset (trained for the class demo): {time.perf_counter() - start:.1f} s")
    page.goto(f"{server}/Memorization?model={run_id_for(preset('digits-mlp-noise10'))}")
    _settle(page)
    page.get_by_role("button", name="Show what was memorized").click()
    page.get_by_role("button", name="Relabelled examples (.csv)").wait_for(timeout=120_000)
    print(f"\nto the overview: {time.perf_counter() - start:.1f} s")
    _snap(page, shots, "memorization-overview")
    # a memorized example opens in the Saliency view (training split) and starred in the embedding
    page.get_by_role("link", name="Saliency map of #").click()
    page.get_by_role("button", name="Predictions (.csv)").wait_for(timeout=120_000)
    assert "split=train" in page.url and "idx=" in page.url
    _snap(page, shots, "memorization-to-saliency")
    page.goto(f"{server}/Memorization?model={run_id_for(preset('digits-mlp-noise10'))}")
    _settle(page)
    # its other link, to the embedding with the example starred, is tests/pages/test_memorization_page.py's
    # (a UMAP of the training set: 12 s of this test, for the same page code)
    page.goto(f"{server}/Memorization?model={run_id_for(preset('digits-mlp-noise10'))}&tab=Retraining")
    _settle(page)
    _run_tab(page, shots, None, "Retrain the layers", "Retraining (.csv)", "memorization-retraining")
    _run_tab(page, shots, "Neuron flipping", "Flip the examples", "Neuron flipping (.csv)", "memorization-flipping")
    _run_tab(page, shots, "Rewinding", "Rewind each layer", "Layer rewinding (.csv)", "memorization-rewinding")
    _run_tab(
        page, shots, "Gradients", "Account for the gradients", "Gradient accounting (.csv)", "memorization-gradients"
    )
    page.get_by_role("tab", name="Tied dropout").click()
    _settle(page)
    page.get_by_text("was trained without example-tied dropout").first.wait_for()
    assert page.get_by_role("button", name=preset(TIED[0]).describe(), exact=False).first.is_visible()
    tied = run_id_for(preset(TIED[0], epochs=TIED[1]))
    page.goto(f"{server}/Memorization?model={tied}&tab=Tied+dropout")
    _settle(page)
    _run_tab(page, shots, None, "Compare kept and dropped", "Tied dropout (.csv)", "memorization-tied-dropout")


def _run_tab(pg, shots: Path, tab: str | None, button: str, download: str, shot: str) -> None:
    """Open `tab` (None: the open one), press `button`, wait for the result's `download` button, snap."""
    start = time.perf_counter()
    if tab:
        pg.get_by_role("tab", name=tab).click()
        _settle(pg)
    pg.get_by_role("button", name=button).click()
    pg.get_by_role("button", name=download).wait_for(timeout=300_000)
    print(f"\n{shot}: {time.perf_counter() - start:.1f} s")
    _snap(pg, shots, shot)


def test_class_demo_warmed_from_the_command_line_tours_every_view(page, server, shots, home, monkeypatch):
    """Home of a warmed workspace opens on the tour (nothing to prepare); each step draws, its link
    names the step's stored result, and two of the links (the first and the last view) are followed:
    the view opens on the same result. Every link's view is opened on its result in
    tests/pages/test_tour.py (test_each_step_s_link_opens_its_view_on_the_same_result)."""
    from lenscape.backend.teaching import tour_jobs

    page.goto(server)
    _settle(page)
    page.get_by_text("Integrated Gradients completeness error").wait_for(timeout=120_000)
    assert page.get_by_role("button", name="Prepare the class demo").count() == 0
    home_page = page.url
    monkeypatch.setenv("LENSCAPE_HOME", str(home))  # the server's workspace: the steps' stored jobs
    jobs = {key: j.key() for key, j in tour_jobs().items()}
    for key, label, shot, ready, view, there in (
        (
            "saliency",
            "1 · Which pixels",
            "tour-saliency",
            "Integrated Gradients completeness error",
            "Saliency",
            "Integrated Gradients completeness error",
        ),
        ("similarity", "2 · Do two seeds", "tour-similarity", "marks a value that does not beat", "Similarity", None),
        ("landscape", "3 · What lies between", "tour-landscape", "Solid: training set", "Loss landscape", None),
        ("level_sets", "4 · Where is the model blind", "tour-level-sets", "Outputs: predicted", "Level sets", None),
        (
            "memorization",
            "5 · What does memorizing",
            "tour-memorization",
            "Memorized examples",
            "Memorization",
            "Relabelled examples (.csv)",
        ),
    ):
        page.get_by_text(label).click()
        page.get_by_text(ready).first.wait_for(timeout=120_000)
        _snap(page, shots, shot)
        link = page.get_by_role("link", name=f"Explore this in the {view} view")
        assert f"job={jobs[key]}" in (link.get_attribute("href") or ""), (key, link.get_attribute("href"))
        if there is None:
            continue
        link.click()
        page.get_by_text(there).first.wait_for(timeout=60_000)
        _settle(page)
        _snap(page, shots, f"{shot}-explored")
        page.goto(home_page)
        _settle(page)
