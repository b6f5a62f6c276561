"""Importing a model: an uploaded file, a file on this machine, or a torchvision classifier."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from models.architectures import IMAGENET_MEAN, IMAGENET_STD, ArchSpec
from models.data import DataSpec
from models.errors import InvalidInputError
from models.loading import model_from_state, read_state_dict, torchvision_pretrained
from models.zoo import import_model
from ui.common import MODEL_KEY, cached_data, run_safely
from ui.training import ARCH_LABELS, parse_widths

SOURCES = ("Upload a file", "A file on this machine", "torchvision classifier by name")


def import_form(spec: DataSpec, key: str = "load") -> None:
    st.caption("Weights are read as safetensors or with `torch.load(weights_only=True)`: a file that would "
               "run code when unpickled is refused, never executed.")
    source = st.radio("Source", SOURCES, horizontal=True, key=f"{key}.source")
    raw, filename, tv_name, download = None, "", "", False
    if source == SOURCES[0]:
        up = st.file_uploader("Model file (.safetensors, .pt, .pth, .bin)", key=f"{key}.file",
                              type=["safetensors", "pt", "pth", "bin", "ckpt"])
        raw, filename = (up.getvalue(), up.name) if up else (None, "")
    elif source == SOURCES[1]:
        path = st.text_input("Path", key=f"{key}.path").strip()
        filename = path
    else:
        c = st.columns(2)
        tv_name = c[0].text_input("torchvision model name", "resnet18", key=f"{key}.tv").strip()
        download = c[1].radio("Weights", ["download torchvision's", "from a file on this machine"],
                              key=f"{key}.tvw") == "download torchvision's"
        if not download:
            filename = st.text_input("Weights file path", key=f"{key}.tvpath").strip()
    arch_name, widths, batchnorm = "torchvision", "", False
    if not tv_name:
        c = st.columns(3)
        arch_name = c[0].selectbox("Architecture", list(ARCH_LABELS), format_func=ARCH_LABELS.get, key=f"{key}.arch")
        widths = c[1].text_input("MLP widths", "256, 256", key=f"{key}.widths")
        batchnorm = c[2].checkbox("CNN with BatchNorm", key=f"{key}.bn")
    name = st.text_input("Name in the workspace", key=f"{key}.name",
                         placeholder=Path(filename).stem or tv_name or "my model")
    if st.button("Import", type="primary", key=f"{key}.run"):
        def run() -> dict:
            train = cached_data(spec, "train")
            if tv_name:
                rgb = train.input_shape[0] == 3  # torchvision's weights expect ImageNet normalization
                arch = ArchSpec(name="torchvision", torchvision_name=tv_name, in_shape=train.input_shape,
                                num_classes=train.num_classes, mean=IMAGENET_MEAN if rgb else train.mean,
                                std=IMAGENET_STD if rgb else train.std)
                state = torchvision_pretrained(tv_name) if download else _read(raw, filename)
            else:
                arch = ArchSpec(name=arch_name, in_shape=train.input_shape, num_classes=train.num_classes,
                                mean=train.mean, std=train.std, widths=parse_widths(widths), batchnorm=batchnorm)
                state = _read(raw, filename)
            model = model_from_state(arch, state)
            label = name or Path(filename).stem or tv_name
            return import_model(model, arch, label, spec, train.classes, source="imported")
        rec = run_safely(run, "Import")
        if rec:
            st.session_state[MODEL_KEY] = rec["run_id"]
            st.success(f"Imported **{rec['name']}** ({rec['run_id']}); it is now the current model.")


def _read(raw: bytes | None, filename: str):
    if raw is None:
        if not filename:
            raise InvalidInputError("choose a file first")
        path = Path(filename).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"{path} is not a file")
        raw = path.read_bytes()
    return read_state_dict(raw, Path(filename).name or "upload")
