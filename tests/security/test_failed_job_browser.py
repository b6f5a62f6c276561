"""Finding 12 in the browser: a job that fails is shown once, with its message and a Retry, and the
page does not submit it again by itself (it used to, every 5-10 s, forever). The job here is the one
that decodes an image folder holding an image of another size, whose message is good."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from tests.browser import screenshots_dir, settle, snap


VIEWPORT = {"width": 1400, "height": 1400}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("failed-job-home")
    folder = home / "images"
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (folder / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / cls / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(folder / "dogs" / "odd.png")
    return home


def _runs(home) -> list[tuple]:
    """(status, started) of every decoding job the server ran."""
    from lenscape.backend.store import ResultStore

    return [(r["status"], r["started"]) for r in ResultStore(home / "store").list(kind="prepare_data")]


POLL_MS = 1000  # ui.jobs.job_panel's poll_seconds


def _script_runs_ended(page) -> int:
    """Script runs (whole page or fragment) the page has seen end (tests/browser.py counts them)."""
    return page.evaluate("() => window.__runs.ended")


def _rerun(page) -> None:
    """Rerun the page as a user would: Streamlit's R key, pressed outside any text box."""
    page.locator("[data-testid='stMainBlockContainer'] h1").first.click()
    page.keyboard.press("r")
    settle(page)


def _errors(page, text: str):
    return page.locator("[data-testid='stAlertContentError']").filter(has_text=text)


def test_a_failed_job_is_shown_once_with_retry_and_not_resubmitted(page, server, home):
    page.goto(f"{server}/Models")
    settle(page)
    page.locator("[data-testid='stSelectbox']").filter(has_text="Data set").first.click()
    page.get_by_role("option", name="My images (ImageFolder)").click()
    settle(page)
    box = page.get_by_label("Folder (class sub-folders, or train/ and test/ with class sub-folders)")
    box.fill(str(home / "images"))
    box.press("Enter")
    _errors(page, "differ in size").first.wait_for(timeout=90_000)
    settle(page)
    first = _runs(home)
    assert [s for s, _ in first] == ["FAILED"], first
    # The old page resubmitted it every 5-10 s: its job panel polled, saw the failure, reran the page,
    # and the rerun submitted the job again. Now nothing on the page polls once the job has failed (no
    # script run over three cycles of the job panel's 1 s poll), and a rerun does not start it again.
    ended = _script_runs_ended(page)
    page.wait_for_timeout(3 * POLL_MS)
    assert _script_runs_ended(page) == ended, "the page still reruns by itself after the failure"
    for _ in range(2):
        ended = _script_runs_ended(page)
        _rerun(page)
        assert _script_runs_ended(page) > ended  # the page did run again
        assert _runs(home) == first, "a rerun of the page started the failed job again"
    assert _errors(page, "differ in size").count() == 1
    assert "odd.png" in _errors(page, "differ in size").first.inner_text()
    snap(page, screenshots_dir(), "security-failed-job-once")

    page.get_by_role("button", name="Retry").first.click()
    deadline = time.time() + 60
    while _runs(home) == first and time.time() < deadline:
        time.sleep(0.5)
    again = _runs(home)
    assert len(again) == 1 and again[0][0] in ("QUEUED", "RUNNING", "FAILED") and again[0][1] != first[0][1]
    deadline = time.time() + 90  # it fails again, and says so once
    while time.time() < deadline and not (_runs(home)[0][0] == "FAILED" and _errors(page, "differ in size").count()):
        page.wait_for_timeout(500)
    settle(page)
    # on a loaded machine the page may still be redrawing after the failure (the panel's last poll
    # reruns the whole page): the message must be there once that ends
    try:
        _errors(page, "differ in size").first.wait_for(timeout=30_000)
        settle(page)
    except Exception:
        page.screenshot(path=str(screenshots_dir() / "security-failed-job-retry-failed.png"), full_page=True)
        alerts = page.locator("[data-testid^='stAlertContent']").all_inner_texts()
        raise AssertionError(f"no 'differ in size' message after the retry failed; alerts: {alerts}") from None
    assert _runs(home)[0][0] == "FAILED" and _errors(page, "differ in size").count() == 1
