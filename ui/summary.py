"""The model summary: layers, accuracy, confusion matrix, sample predictions, training curves."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lenscape.analysis.summary import ModelSummary
from lenscape.backend.jobs import ModelRef, job
from lenscape.backend.tasks import SummaryJobConfig, summary_job_for
from lenscape.models.data import DataSpec
from lenscape.models.zoo import LoadedModel, delete_run
from lenscape.ui.common import (
    MODEL_KEY,
    backend,
    cached_data,
    from_url,
    model_options,
    model_select,
    plain,
    run_safely,
    to_url,
)
from lenscape.ui.data import data_widgets
from lenscape.ui.figures import CONFIG, confusion_heatmap, image_grid, training_curves
from lenscape.ui.jobs import job_panel, reopen, submit
from lenscape.ui.url_widgets import one_of

JOB_KEY = "models.summary_job"


def test_accuracy(rec: dict) -> float | None:
    """A model's test accuracy: its last epoch's from training, else (an imported model) the one its
    stored summary measured, the figure the Models page shows; None before that summary is computed."""
    metrics = rec.get("metrics") or []
    if metrics:
        return metrics[-1].get("test_acc")
    if not rec.get("data") or not rec.get("checkpoints"):
        return None
    last = max(rec["checkpoints"], key=lambda c: c["epoch"])
    r = ModelRef(run_id=rec["run_id"], epoch=last["epoch"], fingerprint=last["fingerprint"])
    job_id = job("model_summary", SummaryJobConfig(model=r), (r,), data=DataSpec.from_dict(rec["data"])).key()
    row = backend().record(job_id)
    return _summary_accuracy(job_id) if row and row.get("status") == "DONE" else None


@st.cache_data(max_entries=256, show_spinner=False)
def _summary_accuracy(job_id: str) -> float | None:
    """A stored summary's test accuracy (a job's result never changes under its id)."""
    try:
        return float(backend().result(job_id).test_acc)
    except Exception:  # noqa: BLE001 - unreadable or gone: no figure rather than a broken table
        return None


def reopen_summary(key: str = "summary", data_key: str = "data") -> None:
    """At the top of the Models page: a reopened summary picks its model and checkpoint, and the
    model's data set in the data picker."""

    def widgets(c) -> dict:
        rec, run = model_options()[c.model.run_id], c.model.run_id
        data = data_widgets(DataSpec.from_dict(rec["data"]), data_key) if rec.get("data") else {}
        return {**data, MODEL_KEY: run, f"{key}.model": run, f"{key}.model.epoch.{run}": int(c.model.epoch)}

    reopen(JOB_KEY, "model_summary", widgets)


def model_picker(key: str = "summary") -> LoadedModel | None:
    """The model and its checkpoint, both in the address bar (?model=...&epoch=2; the last one is left out)."""
    runs = model_options()
    run = st.query_params.get("model") or st.session_state.get(MODEL_KEY)
    if run in runs:
        from_url("epoch", f"{key}.model.epoch.{run}", one_of([c["epoch"] for c in runs[run]["checkpoints"]]))
    lm = model_select(
        f"{key}.model", needs_data=False, pick_epoch=True, empty="No models yet: train one above, or import one."
    )
    if lm is not None:
        last = max(c["epoch"] for c in lm.record["checkpoints"])
        to_url("epoch", f"{key}.model.epoch.{lm.run_id}", None if lm.epoch == last else lm.epoch)
    return lm


def show_model(lm: LoadedModel) -> None:
    rec = lm.record
    n_params = sum(p.numel() for p in lm.model.parameters())
    c = st.columns(4)
    c[0].metric("Parameters", f"{n_params:,}")
    c[1].metric("Architecture", lm.arch.label)
    c[2].metric("Input", "×".join(map(str, lm.arch.in_shape)))
    c[3].metric("Checkpoints", len(rec["checkpoints"]))
    if lm.arch.builder:
        st.caption(
            f"Your own architecture, rebuilt in every job from {plain(lm.arch.builder)} with keyword "
            f"arguments {plain(lm.arch.builder_kwargs)} (named by whoever runs this server)."
        )
    if rec.get("noise"):
        st.caption(
            f"Label noise: {len(rec['noise']['indices']):,} training labels changed "
            f"({rec['noise']['fraction']:.0%}"
            + (f", noise seed {rec['noise']['seed']})." if rec["noise"].get("seed") is not None else ", as given).")
        )
    if rec.get("metrics"):
        st.plotly_chart(training_curves(rec["metrics"], "Training curves"), config=CONFIG, key=f"tc.{lm.run_id}")
    if lm.data is not None:
        submit(JOB_KEY, summary_job_for(lm))
        job_panel(JOB_KEY, lambda results: _show_summary(lm, results[0]))
    with st.expander("Delete this model"):
        if st.button("Delete it from the workspace (checkpoints included)", key=f"delete.{lm.run_id}"):
            run_safely(lambda: delete_run(lm.run_id), "Delete")
            st.session_state.pop(MODEL_KEY, None)
            st.rerun()


def _show_summary(lm: LoadedModel, s: ModelSummary) -> None:
    c = st.columns(2)
    c[0].metric("Train accuracy", f"{s.train_acc:.2%}", help="On the labels it was trained with (noisy ones included).")
    c[1].metric("Test accuracy", f"{s.test_acc:.2%}")
    left, right = st.columns([1, 1])
    with left:
        st.markdown("**Layers** (`named_modules()` paths, output shape for one image)")
        st.dataframe(pd.DataFrame(s.layers), hide_index=True, width="stretch")
    with right:
        st.markdown("**Confusion matrix** (test set)")
        st.plotly_chart(confusion_heatmap(s.confusion, s.classes), config=CONFIG, key=f"cm.{lm.run_id}")
    test = cached_data(lm.data, "test")
    titles = [
        f"{s.classes[p.argmax()]} {p.max():.0%}{'' if p.argmax() == y else ' ✗ ' + s.classes[y]}"
        for p, y in zip(s.sample_probs, s.sample_labels)
    ]
    st.markdown("**Sample test predictions** (predicted class and confidence; ✗ marks a mistake with the true class)")
    h, w = lm.arch.in_shape[1:]
    st.plotly_chart(
        image_grid(test.x(s.sample_index).numpy(), titles, cols=8, height_per_row=210 if h > w else 140),
        config=CONFIG,
        key=f"samples.{lm.run_id}",
        width="content",
    )
