import streamlit as st

from lenscape.ui.common import page_setup
from lenscape.ui.jobs import my_jobs_section
from lenscape.ui.runs import import_section, models_section, results_section

page_setup("Runs")
st.title("Runs")
st.markdown(
    "Everything this workspace holds: the models with their training curves, and every stored result "
    "with what computed it, on which device, in how long. Reopen a result in its view, tag and filter, "
    "delete what you no longer need, or export a result as a reproducibility bundle that another Lenscape "
    "imports and reopens."
)
with st.expander("What is in a bundle?"):
    st.markdown(
        "- `manifest.json`: the job's kind, settings, model fingerprints, data selection, seeds (the models' "
        "recipes), library versions, device, when and how long, and the result's checksum\n"
        "- `result.npz`: the result itself, as stored\n"
        "- each model's `run.json` and checkpoint (safetensors)\n\n"
        "Importing checks everything before writing anything: only these entries, of bounded size; names "
        "that are plain names; a job id that follows from the kind, models and settings; a result that is "
        "what its kind computes, with these settings; the checksum; and each checkpoint's fingerprint, "
        "recomputed from its weights. Nothing already here is replaced: the same bundle twice changes "
        "nothing, and other weights or another result under an existing name are refused."
    )
st.subheader("Your running jobs")
my_jobs_section()
st.subheader("Models")
models_section()
st.subheader("Results")
results_section()
st.subheader("Import")
import_section()
