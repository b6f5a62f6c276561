"""The Similarity and Loss-landscape pages' pickers, bound to the address bar so that a reload or a
shared link reproduces the view: a model with its checkpoint, model B of a pair (by default another
seed of A's recipe), the seeds of a recipe, and any widget whose value decides a result.

Parameters are named "<tab>.<setting>" (two tabs of a page often have a setting of the same name)
and left out at their default; the model the view is about is ?model=, as on every page. A link's
text is outside input: each value is checked against what its widget accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from lenscape.models.zoo import LoadedModel
from lenscape.ui.common import MODEL_KEY, eligible_runs, from_url, model_select, to_url
from lenscape.ui.url_widgets import _same, one_of

NO_DEFAULT = object()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def param(key: str, name: str) -> str:
    """A setting's parameter: "<tab>.<name>" (section key "sim.layers" → "layers.<name>")."""
    return f"{key.split('.', 1)[1]}.{name}"


def read(name: str, key: str, convert: Callable[[str], Any] = str) -> bool:
    """from_url, unless this session wrote parameter `name` for another widget: a picker keyed by
    model whose model changed since (the new one starts at its own default). True if it set `key`."""
    if st.session_state.get(f"_pickers.{name}", key) != key:
        return False
    return from_url(name, key, convert)


def write(name: str, key: str, value: Any, default: Any = NO_DEFAULT) -> None:
    """Parameter `name` holds widget `key`'s value (left out at `default`)."""
    to_url(name, key, None if _same(value, default) else _text(value))
    st.session_state[f"_pickers.{name}"] = key


def bound(
    name: str, key: str, convert: Callable[[str], Any], draw: Callable[[], Any], default: Any = NO_DEFAULT
) -> Any:
    """Draw a widget (`draw`, keyed `key`) bound to parameter `name` both ways: a link's value sets
    it first (once per value, checked by `convert`), and its value is written back."""
    read(name, key, convert)
    value = draw()
    write(name, key, value, default)
    return value


# ---------------------------------------------------------------------------------------------
# Models


def recipe(record: dict) -> dict | None:
    """A run's training recipe: its config without the seed (None for an imported model)."""
    cfg = record.get("config")
    return {k: v for k, v in cfg.items() if k != "seed"} if isinstance(cfg, dict) else None


def recipe_seeds(run_id: str, runs: dict[str, dict]) -> list[str]:
    """`run_id` and the other runs among `runs` of its recipe (same config but the seed), by seed."""
    mine = recipe(runs[run_id]) if run_id in runs else None
    if mine is None:
        return [run_id] if run_id in runs else []
    others = sorted(
        (r for r, rec in runs.items() if r != run_id and recipe(rec) == mine), key=lambda r: runs[r].get("seed") or 0
    )
    return [run_id, *others]


def _shown_run(key: str, current: bool, runs: dict[str, dict]) -> str | None:
    """The run picker `key` is about to show (current_model_select's order: a new ?model=, then the
    workspace's current model)."""
    if current:
        url = st.query_params.get("model")
        if url in runs and st.session_state.get("_url.model") != url:
            return url
        return st.session_state.get(MODEL_KEY) if st.session_state.get(MODEL_KEY) in runs else None
    return st.session_state.get(key) if st.session_state.get(key) in runs else None


def pick_model(
    key: str,
    label: str,
    *,
    name: str = "model",
    epoch_param: str | None = None,
    current: bool = False,
    min_checkpoints: int = 1,
    **kwargs,
) -> LoadedModel | None:
    """ui.common.model_select bound to the address bar: parameter `name` holds the run (a `current`
    picker's is ?model=, which current_model_select keeps), `epoch_param` its checkpoint (a slider
    is drawn when given; left out at the last checkpoint)."""
    runs = eligible_runs(min_checkpoints=min_checkpoints)
    if not current and st.query_params.get(name) in runs:  # another tab's model is no error here
        read(name, key)
    run = _shown_run(key, current, runs)
    if epoch_param and run is not None:
        read(epoch_param, f"{key}.epoch.{run}", one_of([c["epoch"] for c in runs[run]["checkpoints"]]))
    lm = model_select(
        key, label, pick_epoch=epoch_param is not None, current=current, min_checkpoints=min_checkpoints, **kwargs
    )
    if lm is not None:
        if not current:
            write(name, key, lm.run_id)
        if epoch_param:
            last = runs[lm.run_id]["checkpoints"][-1]["epoch"]
            write(epoch_param, f"{key}.epoch.{lm.run_id}", lm.epoch, last)
    return lm


def pick_b(key: str, label: str, a: LoadedModel, name: str, epoch_param: str | None = None) -> LoadedModel | None:
    """Model B of a pair with A. Its default (and its choice again when A changes to another data
    set): another seed of A's recipe, at its last checkpoint (two solutions of one recipe); else the
    newest other model of A's data set; else A's own initialization (a caption says so)."""
    runs = eligible_runs()
    b, url = st.session_state.get(key), st.query_params.get(name)
    from_link = url in runs and st.session_state.get(f"_url.{key}") != url
    same = [r for r in runs if r != a.run_id and runs[r].get("data") == a.record.get("data")]
    if not from_link and (b not in runs or runs[b].get("data") != a.record.get("data")):
        seeds = [r for r in recipe_seeds(a.run_id, runs) if r != a.run_id]
        st.session_state[key] = (seeds or same or [a.run_id])[0]
        if not same and epoch_param:
            st.session_state[f"{key}.epoch.{a.run_id}"] = runs[a.run_id]["checkpoints"][0]["epoch"]
    lm = pick_model(key, label, name=name, epoch_param=epoch_param, like=a)
    if lm is not None and not same:
        st.caption(
            "No other model of this data set yet: train a second seed of this recipe on the Models page "
            "to compare two solutions."
        )
    return lm


def set_picker(key: str, ref, current: bool = False) -> dict[str, Any]:
    """The widget values that show a stored job's ModelRef in picker `key` (for ui.jobs.reopen):
    the run, its checkpoint, and for a `current` picker the workspace's current model."""
    values = {key: ref.run_id, f"{key}.epoch.{ref.run_id}": int(ref.epoch)}
    return {MODEL_KEY: ref.run_id, **values} if current else values


def penultimate(layers: list[str]) -> str:
    """The last hidden layer before the logits (hidden_layers' order ends with the logits layer):
    where seeds of one recipe are compared; the first layers look alike even for random networks."""
    return layers[-2] if len(layers) > 1 else layers[-1]
