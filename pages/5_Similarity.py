import streamlit as st

from lenscape.ui.common import page_setup, page_tabs
from lenscape.ui.similarity import all_metrics, convergence, layer_matrix, models_with_data, projection, seed_matrix

page_setup("Similarity")
st.title("Similarity")
st.markdown(
    "Do two networks learn the same representation? Compare layers across models, seeds and training "
    "time with CKA (Kornblith et al. 2019), CCA, SVCCA (Raghu et al. 2017) and PWCCA (Morcos et al. 2018), "
    "and look at one layer's activations in 2-D."
)
with st.expander("What am I looking at?"):
    st.markdown(
        "- **Heat maps**: each cell compares one layer of model A (rows) with one of model B (columns) on the same "
        "test images; 1 means the same representation up to the metric's invariances. Between two seeds of one "
        "recipe, a bright diagonal means corresponding layers learn the same thing.\n"
        "- **Baselines**: every number is shown against the same comparison with a randomly initialized network; "
        "a value that does not beat it (✗) says nothing about learning.\n"
        "- **Over training**: each layer's similarity to its own final state. Layers that reach 1 early converged "
        "early (SVCCA found lower layers converge first).\n"
        "- **Projection**: UMAP or PCA of one layer's activations; points close together are represented alike. "
        "Hover a point to see its image; with two models side by side, the same example is marked in the other."
    )
if not models_with_data():
    st.info("No models yet: train two seeds of one recipe on the **Models** page (seeds '0-1').")
    st.stop()
tabs = page_tabs(["Layers × layers", "Seeds (N × N)", "Over training", "All metrics", "Projection"])
for tab, draw in zip(tabs, (layer_matrix, seed_matrix, convergence, all_metrics, projection)):
    if tab.open:
        with tab:
            draw()
