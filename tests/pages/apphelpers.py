"""Helpers for AppTest page tests."""

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
ROOT_APP = str(ROOT / "app.py")
MODELS_PAGE = str(ROOT / "pages" / "1_Models.py")


def shown(markdown: str) -> str:
    """What a reader sees of Markdown that names user text through ui.common.plain(): the text
    without its backslash escapes and invisible link breakers."""
    import re

    return re.sub(r"\\(.)", r"\1", markdown.replace("\u2060", ""))


def run_until(at: AppTest, done, timeout: float = 120) -> AppTest:
    """Rerun the page (as the job panel's polling would) until `done(at)` or the timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        at.run()
        if done(at):
            return at
        time.sleep(0.3)
    raise AssertionError(f"timed out; errors: {[e.value for e in at.error]}")


# A job kind for page tests: it waits at a gate until the test opens it. A test module that uses it
# registers it for its tests (the register_kinds fixture).
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from lenscape.backend.jobs import job_kind  # noqa: E402

GATES: dict[str, threading.Event] = {}


@dataclass(frozen=True)
class GateConfig:
    name: str


@job_kind("test_gated")
def gated_job(ctx, cfg: GateConfig) -> str:
    gate = GATES.setdefault(cfg.name, threading.Event())
    while not gate.wait(0.02):
        ctx.progress(0.5, "waiting at the gate")  # raises JobCancelled once cancelled
    return cfg.name


def open_tab(at: AppTest, label: str) -> AppTest:
    """Open a page's tab (pages render only the open one), as a click on it would."""
    at.session_state["tab"] = label
    return at.run()


# Reopening a stored result from the Runs page (issue 23, 1): the tests of every view use these.


def open_reopen_link(runner, job_id: str) -> AppTest:
    """The page the Runs page's "Reopen in its view" link names, opened through the app's navigation."""
    from lenscape.ui.runs import reopen_link

    page, params = reopen_link(runner.store.get(job_id))
    at = AppTest.from_file(ROOT_APP, default_timeout=120)  # links need the app's navigation
    for k, v in params.items():
        at.query_params[k] = v
    return at.switch_page(page).run()


def result_labels(at: AppTest) -> list[str]:
    return [e.label for kind in ("download_button", "metric") for e in at.get(kind)]


def assert_reopened(runner, job_id: str, state_key: str, widgets: dict, shown: str, reruns: int = 0) -> AppTest:
    """Open the link; the widgets hold `widgets`, the panel shows the stored job (`shown` is the label
    of a download button or metric its result draws), and the store has no new or running job.
    `reruns`: page runs after the first (a view that picks its images once predictions are in)."""
    before = {r["id"]: r["status"] for r in runner.store.list()}
    at = open_reopen_link(runner, job_id)
    for _ in range(reruns):
        at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    for key, value in widgets.items():
        got = at.session_state[key]
        assert (list(got) if isinstance(got, (list, tuple)) else got) == value, (key, got, value)
    assert at.session_state[state_key] == [job_id]
    assert shown in result_labels(at), result_labels(at)
    after = {r["id"]: r["status"] for r in runner.store.list()}
    assert after == before, set(after) ^ set(before)
    return at
