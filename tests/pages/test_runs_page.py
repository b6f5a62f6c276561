"""The Runs page over a real workspace: models and results listed, filters, tags, overlaid curves,
reopen links, a bundle exported and imported again, and deletion."""

from streamlit.testing.v1 import AppTest

from apphelpers import ROOT_APP

from lenscape.analysis.saliency import SaliencyConfig
from lenscape.backend.jobs import job, ref
from lenscape.backend.saliency_tasks import GridConfig
from lenscape.models.zoo import list_runs, load_model


def _select(at: AppTest, table: int, rows: list[int]) -> AppTest:
    """Tick `rows` of the page's table number `table` (its key changes with the filters and rows shown)."""
    at.session_state[at.dataframe[table].key] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    return at.run()


def _confirm(at: AppTest, key: str) -> AppTest:
    """Tick the delete confirmation of table `key` (its key belongs to the selection it confirms)."""
    (box,) = [c for c in at.checkbox if c.key.startswith(f"{key}.sure.")]
    return box.check().run()


def _open() -> AppTest:
    at = AppTest.from_file(ROOT_APP, default_timeout=60)
    at.switch_page("pages/7_Runs.py")
    return at.run()


def test_models_and_results_listed_filtered_tagged_reopened_and_deleted(trained_run, runner, wait_for_job):
    recs = trained_run("digits-mlp", seeds=(0, 1), epochs=2)
    lm = load_model(recs[0]["run_id"])
    r = ref(lm)
    job_id = runner.submit(
        job(
            "saliency",
            GridConfig(model=r, indices=(2, 7), methods=(SaliencyConfig(method="gradient"),)),
            (r,),
            "saliency maps of seed 0",
        )
    )
    wait_for_job(job_id)
    at = _open()
    assert not at.exception, at.exception
    models, results = at.dataframe[0].value, at.dataframe[1].value
    assert sorted(models["run id"]) == sorted(x["run_id"] for x in recs) and models["test acc"].between(0.5, 1).all()
    assert sorted(results["kind"]) == ["saliency", "train", "train"]  # the trainings are results too
    row = list(results["job id"]).index(job_id)
    assert "seed 0 @ 2" in results["models"][row] and results["status"][row] == "DONE"
    at.text_input(key="runs.models.text").set_value("seed 1").run()
    assert list(at.dataframe[0].value["run id"]) == [recs[1]["run_id"]]
    at.text_input(key="runs.models.text").set_value("").run()

    _select(at, 0, [0, 1])
    assert len(at.get("plotly_chart")) == 1  # the two runs' curves, overlaid
    at.text_input(key="runs.models.newtags").set_value("baseline, demo").run()
    at.button(key="runs.models.tagit").click().run()
    assert set(at.dataframe[0].value["tags"]) == {"baseline, demo"}

    at.multiselect(key="runs.results.kind").set_value(["saliency"]).run()
    assert list(at.dataframe[1].value["job id"]) == [job_id]
    _select(at, 1, [0])
    (link,) = [e.proto for e in at.get("page_link") if e.proto.label == "Reopen in its view"]
    assert link.page.endswith("Saliency") and f"job={job_id}" in link.query_string and "open=Maps" in link.query_string
    assert [b.label for b in at.get("download_button")] == ["Reproducibility bundle (.zip)"]

    _confirm(at, "runs.results")
    at.button(key="runs.results.delete").click().run()
    assert runner.store.get(job_id) is None
    _select(at, 0, [1])
    _confirm(at, "runs.models")
    at.button(key="runs.models.delete").click().run()
    assert len(list_runs()) == 1 and not at.exception


def test_training_curves_axes_say_what_the_numbers_are():
    """Issue 23, 7: accuracies of 98.6-99.2% get a decimal (not '99% 99% 99%'), the loss axis its own
    round ticks (not the accuracy grid's 0.314/0.858), epochs whole numbers."""
    from lenscape.ui.runs import overlay_curves, percent_axis

    runs = [
        {
            "name": f"seed {s}",
            "metrics": [{"epoch": e, "test_acc": 0.986 + 0.002 * e, "train_loss": 0.3 / e} for e in (1, 2, 3, 4)],
        }
        for s in (0, 1)
    ]
    fig = overlay_curves(runs)
    assert fig.layout.yaxis.tickformat == ".1%" and fig.layout.yaxis2.tickmode == "auto"
    assert fig.layout.xaxis.dtick == 1
    assert percent_axis([0.5, 0.9])["tickformat"] == ".0%" and percent_axis([0.9981, 0.9986])["tickformat"] == ".2%"
    single = percent_axis([0.9967])
    assert single["range"][0] < 0.9967 < single["range"][1] and single["tickformat"] == ".1%"
