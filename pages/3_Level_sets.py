import streamlit as st

from lenscape.ui.common import page_setup
from lenscape.ui.level_sets import TEACHING, level_sets

page_setup("Level sets")
st.title("Level sets")
st.markdown(
    "How far can an image move while the model's confidence stays put? Level Set Traversal walks from a "
    "source image to images of other classes inside the source class's equi-confidence level set "
    "(Balasubramanian et al. 2023)."
)
with st.expander("What am I looking at?"):
    st.markdown(TEACHING)
level_sets()
