import streamlit as st

from lenscape.ui.common import model_select, page_setup, page_tabs
from lenscape.ui.memorization import (
    TEACHING,
    TIED_PRESET,
    flipping,
    gradients,
    noisy_or_offer,
    overview,
    retraining,
    rewinding,
    tied_dropout,
    train_offer,
)

page_setup("Memorization")
st.title("Memorization")
st.markdown(
    "Where in a network are mislabeled training examples memorized, and can it be moved out of the way? "
    "Five experiments from Maini et al. (2023), on a model trained with a fraction of flipped labels."
)
with st.expander("What am I looking at?"):
    st.markdown("\n".join(f"- {t}" for t in TEACHING.values()))
lm = model_select("mem.model", empty="No models yet.")
if lm is None:
    train_offer(("digits-mlp-noise10", TIED_PRESET), "mem.first", "Train one with 10% flipped labels (about a minute):")
    st.stop()
if noisy_or_offer(lm, "mem"):
    tabs = page_tabs(["Overview", "Gradients", "Rewinding", "Retraining", "Neuron flipping", "Tied dropout"])
    for tab, view in zip(tabs, (overview, gradients, rewinding, retraining, flipping, tied_dropout)):
        if tab.open:
            with tab:
                view(lm)
