import pandas as pd
import streamlit as st

from lenscape.backend.device import describe_device
from lenscape.models.paths import data_root, home_dir
from lenscape.models.data import DataSpec
from lenscape.ui.common import DATA_KEY, MODEL_KEY, backend, model_options, model_row, page_setup, plain
from lenscape.ui.summary import test_accuracy
from lenscape.ui.tour import class_demo


def home() -> None:
    page_setup("Home")
    st.title("Lenscape")
    st.markdown(
        "An interactive lab for looking inside PyTorch vision classifiers. Load or train a model on the "
        "**Models** page, then explore it through five views, each taken from a research paper. Heavy "
        "computations run as background jobs with progress bars, and every result is cached, so a second "
        "look is instant."
    )

    class_demo()

    st.subheader("What each view answers")
    st.table(
        pd.DataFrame(
            [
                (
                    "Saliency",
                    "Which input pixels does the prediction depend on, and can the map be trusted?",
                    "Shah, Jain & Netrapalli 2021",
                ),
                (
                    "Level sets",
                    "How far can an input move while the model's confidence stays the same?",
                    "Balasubramanian et al. 2023",
                ),
                (
                    "Memorization",
                    "Where in the network are mislabeled training examples memorized?",
                    "Maini et al. 2023",
                ),
                (
                    "Similarity",
                    "Do two networks (seeds, widths, checkpoints) learn the same representation?",
                    "Raghu et al. 2017; Morcos et al. 2018; Kornblith et al. 2019",
                ),
                ("Loss landscape", "What does the loss look like around the trained weights?", "Li et al. 2018"),
            ],
            columns=["View", "Question", "Paper"],
        ).set_index("View")
    )

    st.subheader("Workspace")
    runs = model_options()
    current = st.session_state.get(MODEL_KEY)
    spec = st.session_state.get(DATA_KEY)
    if spec is None and (runs.get(current) or {}).get("data"):  # the current model's
        spec = DataSpec.from_dict(runs[current]["data"])
    st.markdown(f"**Data set:** {plain(spec.label) if spec else 'none chosen yet (the Models page picks one)'}")
    if runs:
        st.dataframe(
            pd.DataFrame(
                [
                    {"": "▶" if r["run_id"] == current else "", **model_row(r), "test acc": test_accuracy(r)}
                    for r in runs.values()
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={
                "": st.column_config.TextColumn(width=24),
                "model": st.column_config.TextColumn(width="medium"),
                **{
                    c: st.column_config.Column(width="small")
                    for c in ("data set", "architecture", "source", "epochs", "label noise", "adversarial", "seed")
                },
                "test acc": st.column_config.NumberColumn(format="percent", width="small"),
                "created": st.column_config.DatetimeColumn(format="MM-DD HH:mm", width="small"),
            },
        )
    else:
        st.info("No models yet. Go to **Models** to train one in a few seconds on the built-in digits data.")
    left, right = st.columns(2)
    with left:
        st.subheader("Go to")
        for page, label in VIEWS:
            st.page_link(page, label=label, icon=":material/arrow_forward:")
    with right:
        st.subheader("Compute")
        info = describe_device(backend().device)
        st.markdown(
            f"**Device:** {info['kind']} — {info['name']}" + (f", {info['memory_gb']} GiB" if info["memory_gb"] else "")
        )
        st.caption(
            f"Data root: `{data_root()}` (set `LENSCAPE_DATA` to change it). "
            f"Workspace: `{home_dir()}` (set `LENSCAPE_HOME`)."
        )


VIEWS = [
    ("pages/1_Models.py", "Models: train or import"),
    ("pages/2_Saliency.py", "Saliency: maps and whether to trust them"),
    ("pages/3_Level_sets.py", "Level sets: walk inside a confidence level set"),
    ("pages/4_Memorization.py", "Memorization: where mislabeled examples are memorized"),
    ("pages/5_Similarity.py", "Similarity: CKA, CCA and projections"),
    ("pages/6_Loss_landscape.py", "Loss landscape: surfaces, interpolation, trajectory"),
    ("pages/7_Runs.py", "Runs: every model and result, bundles to share"),
]


nav = st.navigation(
    [
        st.Page(home, title="Home", icon=":material/home:", default=True),
        st.Page("pages/1_Models.py", title="Models", icon=":material/neurology:"),
        st.Page("pages/2_Saliency.py", title="Saliency", icon=":material/gradient:"),
        st.Page("pages/3_Level_sets.py", title="Level sets", icon=":material/conversion_path:"),
        st.Page("pages/4_Memorization.py", title="Memorization", icon=":material/psychology:"),
        st.Page("pages/5_Similarity.py", title="Similarity", icon=":material/compare:"),
        st.Page("pages/6_Loss_landscape.py", title="Loss landscape", icon=":material/landscape:"),
        st.Page("pages/7_Runs.py", title="Runs", icon=":material/history:"),
    ]
)
nav.run()
