"""Choosing the workspace's data set, with a preview."""

from __future__ import annotations

import streamlit as st
import torch

from lenscape.models.data import DataSpec
from lenscape.errors import InvalidInputError
from lenscape.models.paths import user_path
from lenscape.ui.common import DATA_KEY, cached_data, plain, run_safely, show_data_set, to_url
from lenscape.ui.figures import montage_png
from lenscape.ui.url_widgets import flag, flag_text, number_in, one_of, url_widget

NAMES = {
    "digits": "scikit-learn digits (8×8, always available)",
    "mnist": "MNIST",
    "cifar10": "CIFAR-10",
    "blockmnist": "BlockMNIST (56×28, signal + null block)",
    "imagefolder": "My images (ImageFolder)",
}


def data_picker(key: str = "data") -> DataSpec | None:
    """Widgets → DataSpec (stored as the workspace data set), or None with an error shown. The
    address bar holds the data set and its options (?data=blockmnist&top=1, ?data=imagefolder&folder=...):
    a link reopens it."""
    current: DataSpec = st.session_state.get(DATA_KEY) or DataSpec()
    # a data set added from Python (lenscape.add_model) is listed while it is the workspace's: its id
    # comes from the current model, never from the page or a link
    names = [*NAMES, "saved"] if current.name == "saved" else list(NAMES)
    name = url_widget(
        "data",
        f"{key}.name",
        lambda: st.selectbox(
            "Data set",
            names,
            index=names.index(current.name),
            format_func=lambda n: NAMES.get(n, "Your data set (added from Python)"),
            key=f"{key}.name",
        ),
        None,
        one_of(names),
    )  # always named, the default too
    for other, params in OPTION_PARAMS.items():  # options of the other data sets leave the link
        for param, widget in params.items() if other != name else ():
            to_url(param, f"{key}.{widget}", None)
    opts: dict = {}
    if name == "blockmnist":
        c = st.columns(4)
        first = url_widget(
            "digit0",
            f"{key}.a",
            lambda: c[0].number_input("Class 0 digit", 0, 9, current.block_classes[0], key=f"{key}.a"),
            0,
            number_in(0, 9),
        )
        second = url_widget(
            "digit1",
            f"{key}.b",
            lambda: c[1].number_input("Class 1 digit", 0, 9, current.block_classes[1], key=f"{key}.b"),
            1,
            number_in(0, 9),
        )
        opts["block_classes"] = (first, second)
        opts["block_top_only"] = url_widget(
            "top",
            f"{key}.top",
            lambda: c[2].checkbox("BlockMNIST-Top (signal always on top)", current.block_top_only, key=f"{key}.top"),
            False,
            flag,
            flag_text,
        )
        opts["block_patch"] = url_widget(
            "patch",
            f"{key}.patch",
            lambda: c[3].number_input("Null patch side (px)", 0, 28, current.block_patch, key=f"{key}.patch"),
            8,
            number_in(0, 28),
        )
    if name == "imagefolder":
        c = st.columns([3, 1])
        _folder_from_url(key)
        opts["folder"] = (
            c[0]
            .text_input(
                "Folder (class sub-folders, or train/ and test/ with class sub-folders)",
                current.folder,
                key=f"{key}.folder",
            )
            .strip()
        )
        to_url("folder", f"{key}.folder", opts["folder"] or None)
        opts["image_size"] = url_widget(
            "size",
            f"{key}.size",
            lambda: c[1].number_input("Resize to (px, 0 = keep)", 0, 512, current.image_size, key=f"{key}.size"),
            0,
            number_in(0, 512),
        )
        if not opts["folder"]:
            st.info("Enter the path of a folder of images on the machine running Lenscape.")
            return None
    if name == "saved":
        opts["folder"] = current.folder
    spec = run_safely(lambda: DataSpec(name=name, **opts), "Data set")
    if spec is None:
        return None
    if run_safely(lambda: cached_data(spec, "train"), f"Loading {spec.label}") is None:
        return None
    show_data_set(spec)
    return spec


# the link's parameters of each data set's options: {data set: {param: widget}}
OPTION_PARAMS = {
    "blockmnist": {"digit0": "a", "digit1": "b", "top": "top", "patch": "patch"},
    "imagefolder": {"folder": "folder", "size": "size"},
}


def _folder_from_url(key: str) -> None:
    """A link's ?folder= fills the folder box, once per value, if it passes the check a typed path
    passes (models.paths.user_path: inside the allowed roots); else it is reported and ignored."""
    value = st.query_params.get("folder")
    if value is None or st.session_state.get(f"_url.{key}.folder") == value:
        return
    st.session_state[f"_url.{key}.folder"] = value
    try:
        user_path(value, "the link's image folder")
    except InvalidInputError as exc:
        st.warning(f"{plain(exc)} It is ignored.")
        return
    st.session_state[f"{key}.folder"] = value


def data_widgets(spec: DataSpec, key: str = "data") -> dict:
    """data_picker's widget values that pick `spec` (a reopened result's data set)."""
    values = {DATA_KEY: spec, f"{key}.name": spec.name}
    if spec.name == "blockmnist":
        values.update(
            {
                f"{key}.a": spec.block_classes[0],
                f"{key}.b": spec.block_classes[1],
                f"{key}.top": spec.block_top_only,
                f"{key}.patch": spec.block_patch,
            }
        )
    if spec.name == "imagefolder":
        values.update({f"{key}.folder": spec.folder, f"{key}.size": spec.image_size})
    return values


def data_preview(spec: DataSpec, n: int = 16) -> None:
    train, test = cached_data(spec, "train"), cached_data(spec, "test")
    c, h, w = train.input_shape
    st.caption(
        f"{len(train):,} training and {len(test):,} test images of {c}×{h}×{w} · "
        f"{train.num_classes} classes: {plain(', '.join(train.classes[:12]))}{' …' if train.num_classes > 12 else ''}"
    )
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
    titles = [train.classes[int(train.labels[i])] for i in idx]
    if train.signal_top is not None:
        titles = [f"{t} {'top' if train.signal_top[i] else 'bottom'}" for t, i in zip(titles, idx)]
    # one PNG, not a 16-panel Plotly figure: the browser draws it at once (a data-set switch re-rendered the
    # figure's panels for about a second in headless Chromium)
    images = train.x(idx).numpy()
    st.image(
        montage_png([images[:8], images[8:]], [titles[:8], titles[8:]], tile=120),
        caption="title: label, then where the signal block is (top or bottom)"
        if train.signal_top is not None
        else None,
    )
