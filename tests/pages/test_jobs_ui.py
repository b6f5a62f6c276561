"""ui.jobs.submit: a page's new job replaces (and cancels) the one it supersedes, unless another
session waits on it or the page keeps replaced jobs (training)."""

import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import GATES, gated_job
from lenscape.backend.jobs import JobStatus


@pytest.fixture(autouse=True)
def own_kinds(register_kinds):
    register_kinds(gated_job)


def _script():
    import streamlit as st

    from apphelpers import GateConfig
    from lenscape.backend.jobs import job
    from lenscape.ui.jobs import submit

    n = st.number_input("n", value=0, key="n")
    keep = st.checkbox("keep", key="keep")
    submit("probe", job("test_gated", GateConfig(name=f"{st.session_state.get('prefix', 'g')}{n}")), keep_replaced=keep)


def _ids(at):
    return list(at.session_state["probe"])


def test_a_superseded_job_is_cancelled_and_a_kept_one_is_not():
    from lenscape.ui.common import backend

    at = AppTest.from_function(_script, default_timeout=30)
    at.session_state["prefix"] = "sup"
    at.run()
    (first,) = _ids(at)
    at.number_input(key="n").set_value(1).run()
    (second,) = _ids(at)
    assert second != first
    runner = backend()
    for name in ("sup0", "sup1"):
        GATES.setdefault(name, __import__("threading").Event()).set()
    assert runner.wait(first, 10) == JobStatus.CANCELLED
    assert runner.wait(second, 10) == JobStatus.DONE and runner.result(second) == "sup1"

    at.checkbox(key="keep").check().run()  # a page that keeps what it replaces (training)
    at.session_state["prefix"] = "keep"
    at.number_input(key="n").set_value(2).run()
    (kept,) = _ids(at)
    at.number_input(key="n").set_value(3).run()
    GATES.setdefault("keep2", __import__("threading").Event()).set()
    GATES.setdefault("keep3", __import__("threading").Event()).set()
    assert runner.wait(kept, 10) == JobStatus.DONE


def test_a_job_another_session_waits_on_is_not_cancelled():
    from lenscape.ui.common import backend

    one = AppTest.from_function(_script, default_timeout=30)
    two = AppTest.from_function(_script, default_timeout=30)
    for at in (one, two):
        at.session_state["prefix"] = "shared"
        at.run()
    shared = _ids(one)[0]
    assert _ids(two) == [shared]  # the same work: one job
    one.number_input(key="n").set_value(1).run()  # session one moves on; session two still waits
    for name in ("shared0", "shared1"):
        GATES.setdefault(name, __import__("threading").Event()).set()
    assert backend().wait(shared, 10) == JobStatus.DONE
