"""Shared page pieces: the backend singleton, the sidebar, cached data and models, errors."""

from __future__ import annotations

import gc
import html
import importlib.util
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from lenscape.backend.device import describe_device
from lenscape.backend.runner import Runner, open_backend
from lenscape.models.data import DataSpec, ImageData, is_prepared, load_data
from lenscape.errors import InvalidInputError, WorkspaceNotWritable
from lenscape.models.zoo import LoadedModel, list_runs, load_model

MODEL_KEY = "workspace.model"
DATA_KEY = "workspace.data"


# Every ASCII punctuation character: each Markdown construct (links, images, autolinks, emphasis,
# HTML, headings, lists) and Streamlit's own (`:color[...]`, `:material/...:`, `:emoji:`, `$` LaTeX)
# needs at least one, unescaped; CommonMark lets a backslash escape any of them.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# GFM also turns bare addresses into links after parsing, escapes or not (http://…, www.…, a@b.c),
# unless a letter-like character comes right before: a word joiner (U+2060, invisible) is put there.
_BARE_LINK = re.compile(r"(?i)(?=https?://|www\.|@)")
WORD_JOINER = "\u2060"


def plain(text: object) -> str:
    """`text` as Markdown that shows exactly its characters: for anything a user chose (model and run
    names, tags, labels, file and folder names, class names, link parameters, error messages that
    quote them) put into st.markdown, st.caption, messages, or a widget, tab or expander label.
    Line breaks become spaces; a bare address gets an invisible word joiner so it is not a link."""
    flat = _BARE_LINK.sub(WORD_JOINER, " ".join(str(text).splitlines()))
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", flat)


def timestamp(seconds: object):
    """A table's time from seconds since 1970; None for what is not one (a damaged record)."""
    import pandas as pd  # late: pandas costs a page that draws no table

    try:
        return pd.to_datetime(float(seconds), unit="s") if seconds else None
    except (TypeError, ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return None


def plot_text(text: object) -> str:
    """`text` for a Plotly title, legend or annotation, which read a little HTML: shown as is."""
    return html.escape(str(text), quote=False)


def backend() -> Runner:
    """One runner per server process: every tab and every rerun attaches to the same jobs. Jobs
    run here, or on the Ray cluster that whoever started the server named (LENSCAPE_RAY_ADDRESS)."""
    from lenscape.backend.cluster import ray_address

    return _backend(ray_address() or "")


@st.cache_resource(show_spinner="Connecting to the Ray cluster…")
def _backend(address: str) -> Runner:
    return open_backend(address=address)


@st.cache_resource(show_spinner="Loading data…", max_entries=6)
def _cached_data(spec: DataSpec, split: str) -> ImageData:
    return load_data(spec, split)


def cached_data(spec: DataSpec, split: str) -> ImageData:
    """A data set's split, loaded once per process. Image folders not decoded yet are decoded by a
    job (progress bar, the page waits for it and reruns); nothing heavy runs on the page's thread."""
    if not is_prepared(spec):
        _prepare(spec)
    return _cached_data(spec, split)


def _prepare(spec: DataSpec) -> None:
    from lenscape.backend.jobs import JobStatus
    from lenscape.backend.tasks import prepare_data_job_for
    from lenscape.ui.jobs import job_panel, submit

    key = f"data.prepare.{spec.key()}"
    (job_id,) = submit(key, prepare_data_job_for(spec))
    if backend().status(job_id) == JobStatus.DONE and not is_prepared(spec):
        backend().forget(job_id)  # the cache was removed since: decode again
        submit(key, prepare_data_job_for(spec))
    st.info(
        f"{plain(spec.label)}: its images are decoded once into a tensor file, so later loads take a fraction "
        "of a second. The page continues when this is done."
    )
    job_panel(key, lambda results: None)
    st.stop()


@dataclass(frozen=True)
class TrainingSplit:
    """The examples a model was trained on (a recipe's subset; index i is training example i in
    every view), their true labels in `data`, and the labels it was trained with."""

    data: ImageData  # true labels
    trained_labels: np.ndarray  # (N,) the labels used in training (flipped ones included)
    relabelled: np.ndarray  # (N,) bool: the label was flipped (all False without label noise)


@st.cache_resource(show_spinner="Loading the training set…", max_entries=4)
def _training_split(run_id: str, fingerprint: str, _lm: LoadedModel) -> TrainingSplit:
    from lenscape.models.zoo import training_data

    prepared = training_data(_lm)
    mask = prepared.noise_mask.numpy() if prepared.noise_mask is not None else np.zeros(len(prepared.train), dtype=bool)
    return TrainingSplit(prepared.train.with_labels(prepared.original_labels), prepared.train.labels.numpy(), mask)


def training_split(lm: LoadedModel) -> TrainingSplit:
    """`lm`'s training examples, loaded once per process (see TrainingSplit)."""
    if lm.data is not None:
        cached_data(lm.data, "train")  # image folders are decoded by a job first
    return _training_split(lm.run_id, lm.fingerprint, lm)


def from_url(param: str, key: str, convert: Callable[[str], Any] = str) -> bool:
    """A link's query parameter `param` sets widget `key`, once per value (the widget rules after
    that). True when it did just now."""
    value = st.query_params.get(param)
    if value is None or st.session_state.get(f"_url.{key}") == value:
        return False
    st.session_state[f"_url.{key}"] = value
    try:
        st.session_state[key] = convert(value)
    except (TypeError, ValueError):
        st.warning(f"The link's {param}={plain(repr(value))} was not understood and is ignored.")
        return False
    return True


def page_tabs(labels: list[str]) -> list:
    """The page's tabs. Only the open one runs (on_change="rerun"); the open one is in the URL
    (?tab=...). A link from another page names the tab to open as ?open=...: the browser drops a
    "tab" parameter on the way, as the page it leaves has its own tabs bound to that name."""
    wanted = st.query_params.get("open") or st.query_params.get("tab")
    if "open" in st.query_params:
        del st.query_params["open"]
    if wanted in labels and st.session_state.get("tab") != wanted:
        st.session_state["tab"] = wanted
    elif st.session_state.get("tab") not in labels:
        st.session_state.pop("tab", None)
    return st.tabs(labels, key="tab", on_change="rerun", bind="query-params")


def to_url(param: str, key: str, value: Any) -> None:
    """Keep `param` in the address bar in step with widget `key` (so a reload or a shared link
    restores it), without making from_url apply it again."""
    text = "" if value is None else str(value)
    if st.query_params.get(param, "") != text:
        if text:
            st.query_params[param] = text
        else:
            del st.query_params[param]
    st.session_state[f"_url.{key}"] = text or None


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def cached_model(run_id: str, epoch: int | None, fingerprint: str) -> LoadedModel:
    """`fingerprint` is part of the cache key so replaced weights are never served stale."""
    return load_model(run_id, epoch, device=backend().device)


# Widgets whose value a user sets and expects to find again: their serde classes. Buttons, uploads,
# chart and table selections, tabs and expanders are left to Streamlit (their state cannot be set).
KEPT_WIDGETS = {
    "CheckboxSerde",
    "ColorPickerSerde",
    "DateInputSerde",
    "DateTimeInputSerde",
    "MultiSelectSerde",
    "NumberInputSerde",
    "RadioSerde",
    "SelectSliderSerde",
    "SelectboxSerde",
    "SliderSerde",
    "TextAreaSerde",
    "TextInputSerde",
    "TimeInputSerde",
    "_MultiSelectButtonGroupSerde",
    "_SingleSelectButtonGroupSerde",
}


def keep_widget_values() -> None:
    """Streamlit forgets a widget's value in every run that does not draw it: a closed tab (only the
    open one runs) or another page would reset its settings. Re-assigning the value at the top of
    each run keeps it (Streamlit's documented remedy), for the value widgets in KEPT_WIDGETS; one
    whose options no longer hold the value falls back to its default. Uses Streamlit's widget
    metadata to tell the widget kinds apart; if that changes, widgets simply reset as before."""
    try:
        from streamlit.runtime.state import get_session_state

        state = get_session_state()._state
        kept: set = st.session_state.setdefault("_kept_widgets", set())
        for key in list(st.session_state.keys()):
            if not isinstance(key, str) or key.startswith("_") or key == "tab" or key in kept:
                continue
            wid = state._key_id_mapper.get_id_from_key(key, None)
            meta = state._new_widget_state.widget_metadata.get(wid) if wid else None
            serde = getattr(getattr(meta, "deserializer", None), "__self__", None)
            if type(serde).__name__ in KEPT_WIDGETS:
                kept.add(key)
    except Exception:  # noqa: BLE001 - Streamlit's internals moved: keep nothing
        return
    for key in kept:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


_frozen_with_modules = 0  # len(sys.modules) when freeze_long_lived last froze


def freeze_long_lived() -> None:
    """Put what imports made (modules, classes, functions: half a million objects once torch, plotly
    and scipy are loaded) out of the cyclic garbage collector's way.

    Streamlit runs a full collection after every script run, a job panel's 1-second polls included
    (`runner.postScriptGC`, on by default, to keep memory from building up). Over everything those
    imports made, each took about 0.3 s of CPU: most of the server's CPU in the browser tests, and a
    third of a second on every click. Frozen objects are still freed by reference counting, and
    Streamlit's collection still clears what runs leave in cycles; only cycles among objects alive at
    a freeze that later become garbage are kept. A run that imported more modules freezes again,
    after a full collection (a few times per server: once per page's first imports)."""
    global _frozen_with_modules
    if len(sys.modules) != _frozen_with_modules:
        _frozen_with_modules = len(sys.modules)
        gc.collect()
        gc.freeze()


def page_setup(title: str, icon: str = ":material/lens_blur:") -> None:
    st.set_page_config(page_title=f"{title} · Lenscape", page_icon=icon, layout="wide")
    freeze_long_lived()
    keep_widget_values()
    try:
        backend()
    except WorkspaceNotWritable as exc:  # nothing works without a workspace: say so and stop here
        st.title("Lenscape")
        st.error(str(exc))
        st.stop()
    sidebar()


def sidebar() -> None:
    with st.sidebar:
        runner = backend()
        info = describe_device(runner.device)
        mem = f" · {info['memory_gb']} GiB" if info["memory_gb"] else ""
        st.caption(f"**Compute:** {info['kind']} — {info['name']}{mem}")
        if runner.pieces is not None:
            st.caption(f"**Jobs' pieces run on:** {runner.where()}")
        if runner.notice:
            st.warning(plain(runner.notice))
        with st.expander("Run jobs on a Ray cluster"):
            st.caption(
                "Training seeds, DiffROAR, landscapes, saliency, similarity and neuron flipping can spread "
                "over a Ray cluster. Whoever starts the server chooses it, with `LENSCAPE_RAY_ADDRESS` "
                "(`auto`, `host:port`, or `local`): a page cannot change where jobs run."
            )
            if importlib.util.find_spec("ray") is None:
                st.caption(
                    "Ray is not installed here. Whoever runs the server installs it with "
                    '`pip install "lenscape[cluster]"` (in a checkout: `.venv/bin/pip install -e ".[cluster]"`).'
                )
        # slots, so that a picker further down this run can show its fresh choice here
        st.session_state["_sidebar.data_slot"] = st.empty()
        st.session_state["_sidebar.model_slot"] = st.empty()
    show_workspace()


def show_workspace() -> None:
    """Fill the sidebar's data-set and model lines from the session's current choices. A link that
    names a model (?model=) makes it current, with its data set, on every page (once per link)."""
    runs = model_options()
    url = st.query_params.get("model")
    if url in runs and st.session_state.get("_url.model") != url:
        st.session_state[MODEL_KEY] = st.session_state["_url.model"] = url
        if runs[url].get("data"):
            st.session_state[DATA_KEY] = DataSpec.from_dict(runs[url]["data"])
    current = runs.get(st.session_state.get(MODEL_KEY) or "")
    spec = st.session_state.get(DATA_KEY)
    if spec is None and current and current.get("data"):
        spec = DataSpec.from_dict(current["data"])
    if (slot := st.session_state.get("_sidebar.data_slot")) is not None:
        slot.caption(f"**Data set:** {plain(spec.label) if spec else 'none chosen yet'}")
    if (slot := st.session_state.get("_sidebar.model_slot")) is not None:
        slot.caption(
            f"**Models in workspace:** {len(runs)}" + (f" · current: {plain(current['name'])}" if current else "")
        )


def show_data_set(spec: DataSpec | None) -> None:
    st.session_state[DATA_KEY] = spec
    show_workspace()


def adopt_model(record: dict) -> None:
    """Make a run the workspace's current model (and its data set the current one), everywhere:
    the sidebar now, and every model picker bound with `current_model_select` from here on."""
    st.session_state[MODEL_KEY] = record["run_id"]
    if record.get("data"):
        st.session_state[DATA_KEY] = DataSpec.from_dict(record["data"])
    show_workspace()


def current_model_select(label: str, runs: dict[str, dict], key: str, **kwargs) -> str:
    """A selectbox over `runs` bound both ways to the current model: it shows the current model
    (whoever set it: an import, a finished training, another page) and choosing in it sets it."""
    ids = list(runs)
    url = st.query_params.get("model")
    if url in ids and st.session_state.get("_url.model") != url:  # a shared link names the model: once
        st.session_state[MODEL_KEY] = st.session_state["_url.model"] = url
    if st.session_state.get(MODEL_KEY) in ids:
        st.session_state[key] = st.session_state[MODEL_KEY]
    elif st.session_state.get(key) not in ids:
        st.session_state.pop(key, None)
    choice = st.selectbox(
        label, ids, key=key, on_change=lambda: st.session_state.update({MODEL_KEY: st.session_state[key]}), **kwargs
    )
    adopt_model(runs[choice])
    if st.query_params.get("model") != choice:  # the link in the address bar reopens this model
        st.query_params["model"] = st.session_state["_url.model"] = choice
    return choice


def run_safely(fn: Callable[[], Any], what: str) -> Any:
    """Run `fn`; show bad input as an error message and anything else as a bug report. The page
    keeps working either way."""
    try:
        return fn()
    except InvalidInputError as exc:
        st.error(f"{plain(what)}: {plain(exc)}")
    except Exception as exc:  # an unexpected failure: show it, keep the app alive
        st.error(f"{plain(what)} failed unexpectedly: {type(exc).__name__}: {plain(exc)}")
        with st.expander("Details"):
            st.code(traceback.format_exc())
    return None


def model_row(r: dict) -> dict:
    """One workspace model as a table row (Home, the Runs page): what it is, how it was made, how good."""
    metrics = r.get("metrics") or []
    cfg = r.get("config") or {}
    return {
        "model": r["name"],
        "data set": (r.get("data") or {}).get("name", "—"),
        "architecture": _arch_label(r.get("arch") or {}),
        "source": r.get("source", ""),
        "epochs": len(metrics),
        "test acc": metrics[-1].get("test_acc") if metrics else None,
        "label noise": cfg.get("label_noise") or 0.0,
        "adversarial": "PGD" if cfg.get("adversarial") else "",
        "seed": r.get("seed"),
        "created": timestamp(r.get("created")),
        "run id": r["run_id"],
    }


def model_options() -> dict[str, dict]:
    return {r["run_id"]: r for r in list_runs()}


def eligible_runs(
    needs_data: bool = True, min_checkpoints: int = 1, data: dict | DataSpec | None = None
) -> dict[str, dict]:
    """Workspace runs, newest first, that have a data set (if asked), enough checkpoints, and
    (if given) the data set `data` (a run record's "data" or a DataSpec)."""
    want = data if data is None or isinstance(data, DataSpec) else DataSpec.from_dict(data)
    return {
        r: rec
        for r, rec in model_options().items()
        if (not needs_data or rec.get("data"))
        and len(rec.get("checkpoints", ())) >= min_checkpoints
        and (want is None or (rec.get("data") and DataSpec.from_dict(rec["data"]) == want))
    }


def run_model(rec: dict, epoch: int | None = None) -> LoadedModel | None:
    """A run's model at `epoch` (default: its last checkpoint), loaded once per process and keyed
    by the checkpoint's fingerprint; a load failure is shown, not raised."""
    ckpts = {c["epoch"]: c for c in rec["checkpoints"]}
    entry = ckpts[max(ckpts)] if epoch is None or epoch not in ckpts else ckpts[epoch]
    return run_safely(
        lambda: cached_model(rec["run_id"], entry["epoch"], entry["fingerprint"]), f"Loading {rec['name']}"
    )


def _run_label(runs: dict[str, dict]) -> Callable[[str], str]:
    return lambda r: runs[r]["name"]


def model_select(
    key: str,
    label: str = "Model",
    *,
    needs_data: bool = True,
    min_checkpoints: int = 1,
    pick_epoch: bool = False,
    data: dict | None = None,
    current: bool = True,
    like: LoadedModel | None = None,
    first_epoch: bool = False,
    empty: str = "",
) -> LoadedModel | None:
    """Pick a workspace model (and, with `pick_epoch`, one of its checkpoints) and load it.

    `current` binds the picker to the workspace's current model both ways (see
    current_model_select); otherwise the default is the current model where it fits, or, given
    `like`, the newest other model of `like`'s data set (model B of a pair). `data` keeps only
    models of that data set; a model with fewer than `min_checkpoints` checkpoints is not offered.
    Returns None (with a message) when none fits."""
    runs = eligible_runs(needs_data, min_checkpoints, data)
    if not runs:
        st.info(
            empty
            or (
                "No model fits here yet: train one on the **Models** page"
                + (f" (this needs {min_checkpoints} checkpoints or more)." if min_checkpoints > 1 else ".")
            )
        )
        return None
    fmt = _run_label(runs)
    if current:
        run_id = current_model_select(label, runs, key, format_func=fmt)
    else:
        ids = list(runs)
        if st.session_state.get(key) not in ids:
            st.session_state.pop(key, None)
        default = st.session_state.get(MODEL_KEY) if st.session_state.get(MODEL_KEY) in ids else ids[0]
        if like is not None:
            same = [r for r in ids if r != like.run_id and runs[r].get("data") == like.record.get("data")]
            default = same[0] if same else next((r for r in ids if r != like.run_id), ids[0])
        run_id = st.selectbox(label, ids, index=ids.index(default), key=key, format_func=fmt)
    epoch = None
    if pick_epoch:
        epochs = [c["epoch"] for c in runs[run_id]["checkpoints"]]
        if len(epochs) > 1:
            epoch = st.select_slider(
                f"{label}: checkpoint (epoch; 0 = initialization)",
                epochs,
                epochs[0] if first_epoch else epochs[-1],
                key=f"{key}.epoch.{run_id}",
            )
    return run_model(runs[run_id], epoch)


def models_select(
    key: str,
    label: str = "Models",
    *,
    default: int = 1,
    max_selections: int | None = None,
    same_data: bool = True,
    needs_data: bool = True,
    data: DataSpec | None = None,
) -> list[LoadedModel]:
    """Pick several workspace models and load them at their last checkpoints. The default is the
    newest `default` models (of the newest model's data set, unless `same_data` is False); pages
    check that the picked ones share a data set where they must."""
    runs = eligible_runs(needs_data, data=data)
    if not runs:
        st.info(
            f"No models {'trained on ' + plain(data.label) + ' ' if data else ''}yet: train one on the **Models** page."
        )
        return []
    current = st.session_state.get(MODEL_KEY)
    order = [current, *[r for r in runs if r != current]] if current in runs else list(runs)
    first = runs[order[0]].get("data")  # the current model's data set, else the newest model's
    preferred = [r for r in order if not same_data or runs[r].get("data") == first][:default]
    picked = st.multiselect(
        label, list(runs), preferred, key=key, format_func=_run_label(runs), max_selections=max_selections
    )
    return [lm for r in picked if (lm := run_model(runs[r])) is not None]


def _arch_label(arch: dict) -> str:
    """The architecture's name in a list of runs (a record's fields are outside input: text only)."""
    for field in ("torchvision_name", "builder", "name"):
        value = arch.get(field)
        if isinstance(value, str) and value:
            return value
    return "—"
