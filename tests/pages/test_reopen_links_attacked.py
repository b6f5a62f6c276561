"""?job= is outside input (a link anyone can send): a crafted id, an id of another view's job, or markup
neither breaks the page nor computes anything; a stored job's settings still come from its own
config, rebuilt through its checks."""

import pytest

from apphelpers import ROOT_APP
from lenscape.backend.jobs import job, ref
from lenscape.models.zoo import load_model
from streamlit.testing.v1 import AppTest


@pytest.mark.parametrize("crafted", ["' OR 1=1 --", "<img src=x onerror=alert(1)>", "../../etc/passwd", "x" * 5000])
def test_a_crafted_job_id_is_ignored(trained_run, runner, crafted):
    (rec,) = trained_run("digits-mlp", label_noise=0.1, epochs=2)
    before = {r["id"] for r in runner.store.list()}
    at = AppTest.from_file(ROOT_APP, default_timeout=120)
    at.query_params.update({"model": rec["run_id"], "open": "Overview", "job": crafted})
    at.switch_page("pages/4_Memorization.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "mem.ov.job" not in at.session_state
    assert {r["id"] for r in runner.store.list()} == before


def test_a_job_of_another_view_does_not_set_this_one(trained_run, runner, wait_for_job):
    from lenscape.backend.memorization_tasks import SweepConfig

    (rec,) = trained_run("digits-mlp", label_noise=0.1, epochs=2)
    r = ref(load_model(rec["run_id"]))
    other = runner.submit(job("memorization_overview", SweepConfig(model=r, stride=2), (r,), "overview"))
    wait_for_job(other)
    at = AppTest.from_file(ROOT_APP, default_timeout=120)
    at.query_params.update({"model": rec["run_id"], "open": "Rewinding", "job": other})
    at.switch_page("pages/4_Memorization.py").run()
    assert not at.exception and not at.error
    assert "mem.rw.job" not in at.session_state and "mem.ov.job" not in at.session_state
