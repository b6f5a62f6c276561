"""Shared page pieces: the backend singleton, the sidebar, cached data and models, errors."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import streamlit as st

from backend.device import describe_device
from backend.runner import LocalRunner, open_backend
from models.data import DataSpec, ImageData, load_data
from models.errors import InvalidInputError
from models.zoo import LoadedModel, list_runs, load_model

MODEL_KEY = "workspace.model"
DATA_KEY = "workspace.data"


@st.cache_resource(show_spinner=False)
def backend() -> LocalRunner:
    """One runner per server process: every tab and every rerun attaches to the same jobs."""
    return open_backend()


@st.cache_resource(show_spinner="Loading data…", max_entries=6)
def cached_data(spec: DataSpec, split: str) -> ImageData:
    return load_data(spec, split)


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def cached_model(run_id: str, epoch: int | None, fingerprint: str) -> LoadedModel:
    """`fingerprint` is part of the cache key so replaced weights are never served stale."""
    return load_model(run_id, epoch, device=backend().device)


def page_setup(title: str, icon: str = ":material/lens_blur:") -> None:
    st.set_page_config(page_title=f"{title} · Lenscape", page_icon=icon, layout="wide")
    sidebar()


def sidebar() -> None:
    with st.sidebar:
        info = describe_device(backend().device)
        mem = f" · {info['memory_gb']} GiB" if info["memory_gb"] else ""
        st.caption(f"**Compute:** {info['kind']} — {info['name']}{mem}")
        # slots, so that a picker further down this run can show its fresh choice here
        st.session_state["_sidebar.data_slot"] = st.empty()
        st.session_state["_sidebar.model_slot"] = st.empty()
    show_workspace()


def show_workspace() -> None:
    """Fill the sidebar's data-set and model lines from the session's current choices."""
    runs = model_options()
    current = runs.get(st.session_state.get(MODEL_KEY) or "")
    spec = st.session_state.get(DATA_KEY)
    if spec is None and current and current.get("data"):
        spec = DataSpec.from_dict(current["data"])
    if (slot := st.session_state.get("_sidebar.data_slot")) is not None:
        slot.caption(f"**Data set:** {spec.label if spec else 'none chosen yet'}")
    if (slot := st.session_state.get("_sidebar.model_slot")) is not None:
        slot.caption(f"**Models in workspace:** {len(runs)}" + (f" · current: {current['name']}" if current else ""))


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
    if st.session_state.get(MODEL_KEY) in ids:
        st.session_state[key] = st.session_state[MODEL_KEY]
    elif st.session_state.get(key) not in ids:
        st.session_state.pop(key, None)
    choice = st.selectbox(label, ids, key=key, on_change=lambda: st.session_state.update({MODEL_KEY: st.session_state[key]}),
                          **kwargs)
    adopt_model(runs[choice])
    return choice


def run_safely(fn: Callable[[], Any], what: str) -> Any:
    """Run `fn`; show bad input as an error message and anything else as a bug report. The page
    keeps working either way."""
    try:
        return fn()
    except InvalidInputError as exc:
        st.error(f"{what}: {exc}")
    except Exception as exc:  # an unexpected failure: show it, keep the app alive
        st.error(f"{what} failed unexpectedly: {type(exc).__name__}: {exc}")
        with st.expander("Details"):
            st.code(traceback.format_exc())
    return None


def model_options() -> dict[str, dict]:
    return {r["run_id"]: r for r in list_runs()}
