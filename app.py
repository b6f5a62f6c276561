import pandas as pd
import streamlit as st

from backend.device import describe_device
from models.paths import data_root, home_dir
from ui.common import DATA_KEY, MODEL_KEY, backend, model_options, page_setup



def home() -> None:
    page_setup("Home")
    st.title("Lenscape")
    st.markdown(
        "An interactive lab for looking inside PyTorch vision classifiers. Load or train a model on the "
        "**Models** page, then explore it through five views, each taken from a research paper. Heavy "
        "computations run as background jobs with progress bars, and every result is cached, so a second "
        "look is instant."
    )

    st.subheader("What each view answers")
    st.table(pd.DataFrame(
        [("Saliency", "Which input pixels does the prediction depend on, and can the map be trusted?",
          "Shah, Jain & Netrapalli 2021"),
         ("Level sets", "How far can an input move while the model's confidence stays the same?",
          "Balasubramanian et al. 2023"),
         ("Memorization", "Where in the network are mislabeled training examples memorized?", "Maini et al. 2023"),
         ("Similarity", "Do two networks (seeds, widths, checkpoints) learn the same representation?",
          "Raghu et al. 2017; Morcos et al. 2018; Kornblith et al. 2019"),
         ("Loss landscape", "What does the loss look like around the trained weights?", "Li et al. 2018")],
        columns=["View", "Question", "Paper"]).set_index("View"))

    left, right = st.columns(2)
    with left:
        st.subheader("Workspace")
        spec = st.session_state.get(DATA_KEY)
        st.markdown(f"**Data set:** {spec.label if spec else 'none chosen yet (the Models page picks one)'}")
        runs = model_options()
        if runs:
            current = st.session_state.get(MODEL_KEY)
            rows = [{"": "▶" if rid == current else "", "model": r["name"], "source": r.get("source", ""),
                     "epochs": len(r.get("metrics", [])),
                     "test acc": f"{r['metrics'][-1]['test_acc']:.1%}" if r.get("metrics") else "—"}
                    for rid, r in runs.items()]
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        else:
            st.info("No models yet. Go to **Models** to train one in a few seconds on the built-in digits data.")
        st.page_link("pages/1_Models.py", label="Models: train or import", icon=":material/arrow_forward:")
        st.page_link("pages/2_Saliency.py", label="Saliency: maps and whether to trust them",
                     icon=":material/arrow_forward:")
        st.page_link("pages/3_Level_sets.py", label="Level sets: walk inside a confidence level set",
                     icon=":material/arrow_forward:")
        st.page_link("pages/4_Memorization.py", label="Memorization: where mislabeled examples are memorized",
                     icon=":material/arrow_forward:")
        st.page_link("pages/5_Similarity.py", label="Similarity: CKA, CCA and projections",
                     icon=":material/arrow_forward:")
        st.page_link("pages/6_Loss_landscape.py", label="Loss landscape: surfaces, interpolation, trajectory",
                     icon=":material/arrow_forward:")
    with right:
        st.subheader("Compute")
        info = describe_device(backend().device)
        st.markdown(f"**Device:** {info['kind']} — {info['name']}" +
                    (f", {info['memory_gb']} GiB" if info["memory_gb"] else ""))
        st.caption(f"Data root: `{data_root()}` (set `LENSCAPE_DATA` to change it). "
                   f"Workspace: `{home_dir()}` (set `LENSCAPE_HOME`).")


nav = st.navigation([st.Page(home, title="Home", icon=":material/home:", default=True),
                     st.Page("pages/1_Models.py", title="Models", icon=":material/neurology:"),
                     st.Page("pages/2_Saliency.py", title="Saliency", icon=":material/gradient:"),
                     st.Page("pages/3_Level_sets.py", title="Level sets", icon=":material/conversion_path:"),
                     st.Page("pages/4_Memorization.py", title="Memorization", icon=":material/psychology:"),
                     st.Page("pages/5_Similarity.py", title="Similarity", icon=":material/compare:"),
                     st.Page("pages/6_Loss_landscape.py", title="Loss landscape", icon=":material/landscape:")])
nav.run()
