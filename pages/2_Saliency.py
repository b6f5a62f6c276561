import streamlit as st

from lenscape.ui.common import page_setup, page_tabs
from lenscape.ui.saliency import maps
from lenscape.ui.saliency_checks import blockmnist_check, diffroar, randomization

page_setup("Saliency")
st.title("Saliency")
st.markdown(
    "Which input pixels does a prediction depend on, and can the map be trusted? Maps come from "
    "Captum; the checks follow Shah, Jain & Netrapalli (2021) and Adebayo et al. (2018)."
)
with st.expander("What am I looking at?"):
    st.markdown(
        "- **Maps**: each cell overlays one method's attribution on the image. Absolute values show *how much* a "
        "pixel matters (bright = more); signed values (red/blue) show whether raising it raises or lowers the "
        "explained class's score.\n"
        "- **BlockMNIST check**: every image is a digit block plus a fixed, label-free patch block. A map that "
        'puts its top-k mass on the patch highlights something the label does not depend on ("feature '
        'leakage"): the paper finds this for standard models and not for adversarially trained ones. The dashed '
        "line is what a uniform map would score.\n"
        "- **DiffROAR**: retrain on images that keep only the top-k (or only the bottom-k) attributed pixels. If "
        "the map ranks pixels well, top-k training wins: DiffROAR(k) > 0. A random map scores about 0; below 0 "
        "means the map ranks the *least* useful pixels first.\n"
        "- **Randomization check** (Adebayo et al. 2018): re-initialize layers from the output down, all of them "
        "cumulatively or one at a time. Maps that stay the same do not depend on what the model learned, so they "
        'cannot explain it. "The same" is judged against two baselines measured in the same run: how much maps '
        "of *different* images already agree, and how much two random networks' maps agree.\n"
        "- **Why mostly-zero maps score ρ near 1**: Integrated Gradients from a black baseline is zero wherever the "
        "image is black (most of an MNIST digit's background), whatever the weights. Those pixels tie at the lowest "
        "rank in every map, original or randomized, so the rank correlation stays high. Read such a method's "
        "curve against its baselines, or choose a non-black baseline."
    )

# only the open tab runs; each view picks its models (the BlockMNIST check: those trained on BlockMNIST)
tabs = page_tabs(["Maps", "BlockMNIST check", "DiffROAR", "Randomization check"])
for tab, view in zip(tabs, (maps, blockmnist_check, diffroar, randomization)):
    if tab.open:
        with tab:
            view()
