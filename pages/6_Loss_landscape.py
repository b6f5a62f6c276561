import streamlit as st

from lenscape.ui.common import eligible_runs, page_setup, page_tabs
from lenscape.ui.landscape import TEACHING, curvature_tab, directions_tab, interpolation_tab, trajectory_tab

page_setup("Loss landscape")
st.title("Loss landscape")
st.markdown(
    "What does the loss look like around the trained weights, and along the way training took? "
    "Filter-normalized random planes, interpolations between checkpoints, the training trajectory and "
    'curvature, after Li et al. (2018), "Visualizing the Loss Landscape of Neural Nets".'
)
with st.expander("What am I looking at?"):
    st.markdown(TEACHING)
if not eligible_runs():
    st.info("No models yet: train one on the **Models** page (a digits MLP takes seconds).")
    st.stop()
tabs = page_tabs(["Random directions", "Interpolation", "Trajectory", "Curvature"])
for tab, draw in zip(tabs, (directions_tab, interpolation_tab, trajectory_tab, curvature_tab)):
    if tab.open:
        with tab:
            draw()
