import streamlit as st

from lenscape.backend.tasks import train_jobs
from lenscape.ui.common import backend, page_setup, page_tabs
from lenscape.ui.data import data_picker, data_preview
from lenscape.ui.jobs import job_panel, submit
from lenscape.ui.loading import import_form
from lenscape.ui.summary import model_picker, reopen_summary, show_model
from lenscape.ui.training import show_trained, train_form

page_setup("Models")
st.title("Models")
st.markdown(
    "Pick a data set, then train a model on it or import one of your own. Every model is kept in "
    "the workspace with a checkpoint per epoch, so the views can rewind, compare seeds and follow training."
)

reopen_summary("models.summary", "models.data")  # a result reopened from the Runs page
spec = data_picker("models.data")
if spec is None:
    st.stop()
with st.expander("Preview of the data set", expanded=True):
    data_preview(spec)

train_tab, load_tab, summary_tab = page_tabs(["Train", "Import", "Workspace models"])
if train_tab.open:
    with train_tab:
        request = train_form(spec, key="models.train")
        if request:
            cfg, seeds = request
            submit("models.train_jobs", train_jobs(cfg, seeds), keep_replaced=True)
        elif not st.session_state.get("models.train_jobs"):  # a refresh or another tab: re-attach
            st.session_state["models.train_jobs"] = backend().running("train")
        job_panel("models.train_jobs", show_trained)
if load_tab.open:
    with load_tab:
        import_form(spec, key="models.load")
if summary_tab.open:
    with summary_tab:
        model = model_picker("models.summary")
        if model is not None:
            show_model(model)
