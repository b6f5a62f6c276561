"""Choosing the workspace's data set, with a preview."""

from __future__ import annotations

import streamlit as st
import torch

from models.data import DataSpec
from ui.common import DATA_KEY, cached_data, from_url, plain, run_safely, show_data_set, to_url
from ui.figures import montage_png

NAMES = {"digits": "scikit-learn digits (8×8, always available)", "mnist": "MNIST", "cifar10": "CIFAR-10",
         "blockmnist": "BlockMNIST (56×28, signal + null block)", "imagefolder": "My images (ImageFolder)"}


def data_picker(key: str = "data") -> DataSpec | None:
    """Widgets → DataSpec (stored as the workspace data set), or None with an error shown."""
    names = list(NAMES)
    # a link names the data set (?data=mnist): it becomes the workspace's, which the picker starts from
    if from_url("data", DATA_KEY, lambda v: DataSpec(name=names[names.index(v)])):   # ValueError: not one
        st.session_state.pop(f"{key}.name", None)
    current: DataSpec = st.session_state.get(DATA_KEY) or DataSpec()
    name = st.selectbox("Data set", names, index=names.index(current.name), format_func=NAMES.get,
                        key=f"{key}.name")
    to_url("data", DATA_KEY, name)               # the address bar names the data set: a link reopens it
    opts: dict = {}
    if name == "blockmnist":
        c = st.columns(4)
        opts["block_classes"] = (c[0].number_input("Class 0 digit", 0, 9, current.block_classes[0], key=f"{key}.a"),
                                 c[1].number_input("Class 1 digit", 0, 9, current.block_classes[1], key=f"{key}.b"))
        opts["block_top_only"] = c[2].checkbox("BlockMNIST-Top (signal always on top)", current.block_top_only,
                                               key=f"{key}.top")
        opts["block_patch"] = c[3].number_input("Null patch side (px)", 0, 28, current.block_patch, key=f"{key}.patch")
    if name == "imagefolder":
        c = st.columns([3, 1])
        opts["folder"] = c[0].text_input("Folder (class sub-folders, or train/ and test/ with class sub-folders)",
                                         current.folder, key=f"{key}.folder").strip()
        opts["image_size"] = c[1].number_input("Resize to (px, 0 = keep)", 0, 512, current.image_size,
                                               key=f"{key}.size")
        if not opts["folder"]:
            st.info("Enter the path of a folder of images on the machine running Lenscape.")
            return None
    spec = run_safely(lambda: DataSpec(name=name, **opts), "Data set")
    if spec is None:
        return None
    if run_safely(lambda: cached_data(spec, "train"), f"Loading {spec.label}") is None:
        return None
    show_data_set(spec)
    return spec


def data_widgets(spec: DataSpec, key: str = "data") -> dict:
    """data_picker's widget values that pick `spec` (a reopened result's data set)."""
    values = {DATA_KEY: spec, f"{key}.name": spec.name}
    if spec.name == "blockmnist":
        values.update({f"{key}.a": spec.block_classes[0], f"{key}.b": spec.block_classes[1],
                       f"{key}.top": spec.block_top_only, f"{key}.patch": spec.block_patch})
    if spec.name == "imagefolder":
        values.update({f"{key}.folder": spec.folder, f"{key}.size": spec.image_size})
    return values


def data_preview(spec: DataSpec, n: int = 16) -> None:
    train, test = cached_data(spec, "train"), cached_data(spec, "test")
    c, h, w = train.input_shape
    st.caption(f"{len(train):,} training and {len(test):,} test images of {c}×{h}×{w} · "
               f"{train.num_classes} classes: {plain(', '.join(train.classes[:12]))}{' …' if train.num_classes > 12 else ''}")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
    titles = [train.classes[int(train.labels[i])] for i in idx]
    if train.signal_top is not None:
        titles = [f"{t} {'top' if train.signal_top[i] else 'bottom'}" for t, i in zip(titles, idx)]
    # one PNG, not a 16-panel Plotly figure: the browser draws it at once (a data-set switch re-rendered the
    # figure's panels for about a second in headless Chromium)
    images = train.x(idx).numpy()
    st.image(montage_png([images[:8], images[8:]], [titles[:8], titles[8:]], tile=120),
             caption="title: label, then where the signal block is (top or bottom)" if train.signal_top is not None else None)
