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


# A job kind for page tests: it waits at a gate until the test opens it.
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from backend.jobs import REGISTRY, job_kind  # noqa: E402

GATES: dict[str, threading.Event] = {}


@dataclass(frozen=True)
class GateConfig:
    name: str


@job_kind("test_gated")
def gated_job(ctx, cfg: GateConfig) -> str:
    gate = GATES.setdefault(cfg.name, threading.Event())
    while not gate.wait(0.02):
        ctx.progress(0.5, "waiting at the gate")      # raises JobCancelled once cancelled
    return cfg.name


REGISTRY.register(gated_job)


def open_tab(at: AppTest, label: str) -> AppTest:
    """Open a page's tab (pages render only the open one), as a click on it would."""
    at.session_state["tab"] = label
    return at.run()
