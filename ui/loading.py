"""Importing a model: an uploaded file, a file on this machine, or a torchvision classifier."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lenscape.backend.tasks import summary_job_for
from lenscape.models.architectures import ArchSpec, default_normalization
from lenscape.models.data import DataSpec
from lenscape.errors import InvalidInputError
from lenscape.models.loading import (
    model_from_state,
    read_model_file,
    read_state_dict,
    suggest_architecture,
    has_timm,
    timm_pretrained,
    timm_recipe,
    torchvision_names,
    torchvision_pretrained,
    torchvision_recipe,
)
from lenscape.models.paths import user_path
from lenscape.models.zoo import AlreadyImported, import_model
from lenscape.ui.common import adopt_model, cached_data, plain, run_model, run_safely
from lenscape.ui.jobs import submit
from lenscape.ui.summary import JOB_KEY as SUMMARY_JOB
from lenscape.ui.training import ARCH_LABELS, parse_widths

SOURCES = ("Upload a file", "A file on this machine", "torchvision classifier by name", "timm classifier by name")
TV = "torchvision:"  # an architecture option naming a torchvision classifier


def _option(fields: dict) -> str:
    """The architecture option for ArchSpec fields."""
    return f"{TV}{fields['torchvision_name']}" if fields["name"] == "torchvision" else fields["name"]


def arch_label(option: str) -> str:
    return f"torchvision {option.removeprefix(TV)}" if option.startswith(TV) else ARCH_LABELS[option]


def import_form(spec: DataSpec, key: str = "load") -> None:
    st.caption(
        "Weights are read as safetensors or with `torch.load(weights_only=True)`: a file that would "
        "run code when unpickled is refused, never executed."
    )
    st.caption(
        "**Your own architecture?** A page never names code. Whoever starts the server adds it: "
        '`lenscape.add_model(net, data=..., architecture="mypkg.nets:build_net")` in Python, or '
        "`lenscape app --model mypkg.nets:build_net --weights w.safetensors --data /path/to/images`. "
        "Exported `torch.export` archives (.pt2) are not accepted: loading one can run code in it."
    )
    sources = SOURCES if has_timm() else SOURCES[:3]
    source = st.radio("Source", sources, horizontal=True, key=f"{key}.source")
    if not has_timm():
        st.caption('timm\'s classifiers are offered here too once timm is installed: `pip install "lenscape[timm]"`.')
    raw, filename, tv_name, timm_name, download = None, "", "", "", False
    if source == SOURCES[0]:
        up = st.file_uploader(
            "Model file (.safetensors, .pt, .pth, .bin)",
            key=f"{key}.file",
            type=["safetensors", "pt", "pth", "bin", "ckpt"],
        )
        raw, filename = (up.getvalue(), up.name) if up else (None, "")
    elif source == SOURCES[1]:
        path = st.text_input("Path", key=f"{key}.path").strip()
        filename = path
    elif source == SOURCES[2]:
        tv_name, download, filename = _by_name("torchvision", f"{key}.tv")
    else:
        timm_name, download, filename = _by_name("timm", f"{key}.timm")
    train = run_safely(lambda: cached_data(spec, "train"), f"Loading {spec.label}")
    if train is None:
        return
    arch_name, fields, widths, readable = "torchvision", {"name": "torchvision"}, "", True
    if timm_name:
        arch_name, fields = "timm", {"name": "timm", "timm_name": timm_name}
    elif not tv_name:
        suggested = _suggestion(raw, filename, train.input_shape, train.num_classes)
        readable, fields = suggested is not False, suggested or {}
        options = [*ARCH_LABELS, *(f"{TV}{n}" for n in torchvision_names())]
        found = _option(fields) if fields else ""
        c = st.columns(3)
        choice = c[0].selectbox(
            "Architecture",
            options,
            options.index(found) if found else 0,
            format_func=arch_label,
            key=f"{key}.arch.{found}",
            help="Lenscape's own, or any torchvision classifier.",
        )
        if choice != found:
            fields = (
                {"name": "torchvision", "torchvision_name": choice.removeprefix(TV)}
                if choice.startswith(TV)
                else {"name": choice}
            )
        arch_name = fields["name"]
        if arch_name == "mlp":
            shown = ", ".join(map(str, fields.get("widths", (256, 256))))
            widths = c[1].text_input("MLP widths", shown, key=f"{key}.widths.{shown}")
        if arch_name == "cnn":
            fields["batchnorm"] = c[2].checkbox(
                "CNN with BatchNorm", fields.get("batchnorm", False), key=f"{key}.bn.{fields.get('batchnorm', '')}"
            )
    recipe = _recipe(tv_name or fields.get("torchvision_name") or "", timm_name)
    classes = tuple(train.classes)
    if recipe is not None:
        if len(recipe.classes) == train.num_classes:
            classes = recipe.classes
        st.caption(_recipe_caption(recipe, train))
    mean, std = _normalization_fields(arch_name, train, key, recipe)
    name = st.text_input(
        "Name in the workspace",
        key=f"{key}.name",
        placeholder=Path(filename).stem or tv_name or timm_name or "my model",
    )
    if st.button("Import", type="primary", key=f"{key}.run", disabled=not readable):

        def run() -> dict:
            extra = {"widths": parse_widths(widths)} if widths else {}
            arch = ArchSpec(
                **{"torchvision_name": tv_name, **fields, **extra},
                in_shape=train.input_shape,
                num_classes=train.num_classes,
                mean=mean,
                std=std,
            )
            if download:
                state = torchvision_pretrained(tv_name) if tv_name else timm_pretrained(timm_name)
            else:
                state = _read(raw, filename)
            label = name or Path(filename).stem or tv_name or timm_name
            try:
                return import_model(model_from_state(arch, state), arch, label, spec, classes, source="imported")
            except AlreadyImported as exc:
                st.info(f"{plain(exc)}; it is now the current model.")
                return exc.record

        rec = run_safely(run, "Import")
        if rec:
            adopt_model(rec)
            if (lm := run_model(rec)) is not None:  # its test accuracy, for the tables (Home, Runs)
                submit(SUMMARY_JOB, summary_job_for(lm))
            st.success(
                f"**{plain(rec['name'])}** ({plain(rec['run_id'])}) is the current model: see its accuracy under "
                "**Workspace models**, or open a view."
            )


def _by_name(library: str, key: str) -> tuple[str, bool, str]:
    """(model name, whether to download the library's weights, else the weights file's path) for a
    classifier of `library` picked by name."""
    c = st.columns(2)
    name = c[0].text_input(f"{library} model name", "resnet18", key=key).strip()
    download = c[1].radio("Weights", [f"download {library}'s", "from a file on this machine"], key=f"{key}w")
    path = "" if download.startswith("download") else st.text_input("Weights file path", key=f"{key}path").strip()
    return name, download.startswith("download"), path


def _suggestion(raw: bytes | None, filename: str, in_shape, num_classes: int) -> dict | None | bool:
    """Read the chosen file (if any) and say which built-in architecture its keys and shapes fit:
    their ArchSpec fields, None (no file, or no match), or False (the file cannot be read; said why)."""
    if raw is None and not filename:
        return None
    try:
        if raw is not None:
            fields = _match(raw, Path(filename).name or "upload", tuple(in_shape), num_classes)
        else:  # keyed by path, time and size: the file is read once, not on every rerun
            path = user_path(filename, "the file")
            if not path.is_file():
                return None
            stat = path.stat()
            fields = _match_file(str(path), stat.st_mtime_ns, stat.st_size, tuple(in_shape), num_classes)
    except InvalidInputError as exc:
        st.error(f"Import: {plain(exc)}")
        return False
    if fields:
        st.caption(
            f"The file's tensors match **{arch_label(_option(fields))}** for "
            f"{'×'.join(map(str, in_shape))} inputs and {num_classes} classes; it is preselected."
        )
    else:
        st.warning(
            f"The file's names and shapes match none of the built-in or torchvision architectures for "
            f"{'×'.join(map(str, in_shape))} inputs and {num_classes} classes: pick one, and the import "
            "will list what does not fit."
        )
    return fields


@st.cache_data(max_entries=4, show_spinner="Reading the file…")
def _match(raw: bytes, name: str, in_shape: tuple, num_classes: int) -> dict | None:
    return suggest_architecture(read_state_dict(raw, name), in_shape, num_classes)


@st.cache_data(max_entries=4, show_spinner="Reading the file…")
def _match_file(path: str, mtime_ns: int, size: int, in_shape: tuple, num_classes: int) -> dict | None:
    return suggest_architecture(read_state_dict(read_model_file(path), Path(path).name), in_shape, num_classes)


def _recipe(tv_name: str, timm_name: str = ""):
    """torchvision's or timm's recipe for the named classifier (class names, normalization, sizes), or
    None; a timm name that timm does not know is said."""
    try:
        if timm_name:
            return timm_recipe(timm_name)
        return torchvision_recipe(tv_name) if tv_name else None
    except InvalidInputError as exc:
        if timm_name:
            st.warning(plain(exc))
        return None


def _recipe_caption(recipe, train) -> str:
    """What torchvision's weights metadata says, and whether this data set fits it."""
    names = (
        f"its {len(recipe.classes):,} class names ({plain(', '.join(recipe.classes[:3]))}, …) name the outputs"
        if len(recipe.classes) == train.num_classes
        else f"its {len(recipe.classes):,} classes do not match this data set's {train.num_classes}, whose names are kept"
    )
    size = train.input_shape[-1]
    fit = (
        ""
        if size == recipe.image_size
        else f" This data set gives {size}-px images: an image folder opened at {recipe.image_size} px matches it."
    )
    norm = (
        "its mean and std are filled in below"
        if len(recipe.mean) == len(train.mean)
        else f"its {len(recipe.mean)}-channel mean and std do not fit this {len(train.mean)}-channel data set"
    )
    if not recipe.classes:
        names = f"its classes are not ImageNet's: this data set's {train.num_classes} names are kept"
    library = "timm" if recipe.weights.startswith("timm ") else "torchvision"
    return (
        f"{library}'s recipe ({plain(recipe.weights)}): {recipe.image_size}-px crops of images resized to "
        f"{recipe.resize} px; {norm}; {names}.{fit}"
    )


def _normalization_fields(arch_name: str, train, key: str, recipe=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std the model expects, defaulting to the architecture's known recipe."""
    mean, std = default_normalization(arch_name, tuple(train.mean), tuple(train.std))
    if recipe is not None and len(recipe.mean) == len(mean):
        mean, std = recipe.mean, recipe.std
    fmt = lambda v: ", ".join(f"{x:.4g}" for x in v)  # noqa: E731
    c = st.columns(2)
    help_ = (
        "What the model was trained with, applied inside it to [0, 1] pixels. Defaults: the recipe the "
        "architecture is known by (the tutorial LeNet: 0.5 and 0.5), ImageNet's for torchvision models, "
        "else this data set's statistics (what Lenscape's own training uses). A wrong value costs accuracy."
    )
    texts = (
        c[0].text_input("Input mean (per channel)", fmt(mean), key=f"{key}.mean.{arch_name}", help=help_),
        c[1].text_input("Input std (per channel)", fmt(std), key=f"{key}.std.{arch_name}", help=help_),
    )
    try:
        return tuple(tuple(float(v) for v in t.replace(" ", "").split(",") if v) for t in texts)
    except ValueError:
        st.error(f"mean and std look like '0.5, 0.5, 0.5'; got {plain(repr(texts[0]))} and {plain(repr(texts[1]))}")
        return mean, std


def _read(raw: bytes | None, filename: str):
    if raw is None:
        if not filename:
            raise InvalidInputError("choose a file first")
        raw = read_model_file(filename, "the file")
    return read_state_dict(raw, Path(filename).name or "upload")
