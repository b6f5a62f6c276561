"""Limits on the work one job may ask for, enforced by the runner on every submission (a page's own
widgets are only a convenience: a crafted link or session could ask for anything the config type
accepts). Whoever starts the server sets them, in LENSCAPE_LIMITS ("images=5000,job_seconds=3600");
a page user cannot.

Two kinds of limit:
- sizes read off the config (images, Integrated Gradients steps, noise samples, grid points, ...),
  checked on every config field of that name, nested configs included;
- the estimated seconds of a landscape grid or line, from a timed probe pass of the model
  (`seconds_per_example`), checked by the job before it starts.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from lenscape.backend.codec import to_jsonable
from lenscape.errors import InvalidInputError


@dataclass(frozen=True)
class Limits:
    images: int = 2_000  # images in one saliency grid, level-set request, projection...
    examples: int = 60_000  # examples evaluated per point (n_examples, probe, ...; 0 = all is checked too)
    ig_steps: int = 1_000  # Integrated Gradients steps
    noise_samples: int = 500  # SmoothGrad / VarGrad samples per image
    grid_side: int = 101  # points per axis of a landscape surface or convexity map
    line_points: int = 1_001  # points of a 1-D interpolation
    iterations: int = 10_000  # LST steps, power/Lanczos iterations, neurons flipped, PGD steps
    restarts: int = 20  # random restarts of an eigenvalue search
    methods: int = 20  # attribution methods in one request
    batch: int = 1_024  # examples per forward pass (memory)
    epochs: int = 1_000  # training epochs of one run
    width: int = 16_384  # units of an MLP layer, channels of a CNN layer
    job_seconds: float = 3_600.0  # estimated seconds of a landscape grid or line


# config field (as named in the JSON form, under the config type's name, or "*" for any) -> limit
SIZE_FIELDS: dict[tuple[str, str], str] = {
    ("*", "indices"): "images",
    ("*", "targets"): "images",
    ("*", "examples"): "images",
    ("*", "n_images"): "images",
    ("*", "n_clean"): "images",
    ("*", "n_examples"): "examples",
    ("*", "probe"): "examples",
    ("*", "train_subset"): "examples",
    ("*", "max_eval"): "examples",
    ("SaliencyConfig", "n_steps"): "ig_steps",
    ("SaliencyConfig", "n_samples"): "noise_samples",
    ("*", "resolution"): "grid_side",
    ("InterpolationConfig", "points"): "line_points",
    ("LSTConfig", "steps"): "iterations",
    ("*", "iters"): "iterations",
    ("*", "max_steps"): "iterations",
    ("PGDConfig", "steps"): "iterations",
    ("*", "restarts"): "restarts",
    ("*", "methods"): "methods",
    ("*", "batch_size"): "batch",
    ("TrainConfig", "epochs"): "epochs",
    ("*", "widths"): "width",
    ("*", "channels"): "width",
}
LARGEST = {"width"}  # these limits bound each element of a list, not its length


def limits() -> Limits:
    """The server's limits: the defaults, with LENSCAPE_LIMITS's values over them."""
    text = os.environ.get("LENSCAPE_LIMITS", "").strip()
    if not text:
        return Limits()
    known = {f.name: f.type for f in fields(Limits)}
    values: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = item.partition("=")
        if name.strip() not in known:
            raise InvalidInputError(f"LENSCAPE_LIMITS names an unknown limit {name.strip()!r}; known: {sorted(known)}")
        try:
            values[name.strip()] = float(value) if name.strip() == "job_seconds" else int(value)
        except ValueError:
            raise InvalidInputError(f"LENSCAPE_LIMITS: {item!r} is not name=number") from None
    return replace(Limits(), **values)


def check_config(config: Any, lim: Limits | None = None) -> None:
    """InvalidInputError naming the first field of `config` (nested configs included) over its limit."""
    lim = lim or limits()
    _walk(to_jsonable(config), "config", lim)


def _walk(node: Any, where: str, lim: Limits) -> None:
    if isinstance(node, list):
        for i, v in enumerate(node):
            _walk(v, f"{where}[{i}]", lim)
        return
    if not isinstance(node, dict):
        return
    type_name = str(node.get("__type__", "")).rpartition(":")[2]
    method = node.get("method")
    for key, value in node.items():
        limit = SIZE_FIELDS.get((type_name, key)) or SIZE_FIELDS.get(("*", key))
        if limit and _applies(type_name, key, method):
            if isinstance(value, list):
                size = (
                    max((v for v in value if isinstance(v, (int, float))), default=0)
                    if limit in LARGEST
                    else len(value)
                )
            else:
                size = value
            if isinstance(size, (int, float)) and size > getattr(lim, limit):
                raise InvalidInputError(
                    f"{where}.{key} = {size:,} is over this server's limit of "
                    f"{getattr(lim, limit):,} ({limit}); whoever runs the server sets it "
                    "in LENSCAPE_LIMITS"
                )
        _walk(value, f"{where}.{key}", lim)


def _applies(type_name: str, key: str, method: Any) -> bool:
    """A SaliencyConfig's steps count only for IG, its samples only for the noise methods."""
    if type_name != "SaliencyConfig":
        return True
    return {"n_steps": method == "integrated_gradients", "n_samples": method in ("smoothgrad", "vargrad")}.get(
        key, True
    )


# ---------------------------------------------------------------------------------------------
# Time


_PROBES: dict[tuple[str, str], float] = {}
_PROBE_LOCK = threading.Lock()


def seconds_per_example(lm, device: torch.device | str = "cpu", batch: int = 64) -> float:
    """Seconds of one example's forward pass on this model, measured by a timed probe pass over a
    batch of random inputs on `device` (once per model and device). Measured, not read from the run's
    record: a record's timings may come from another machine, or from a crafted bundle."""
    key = (lm.fingerprint, str(device))
    with _PROBE_LOCK:
        if key in _PROBES:
            return _PROBES[key]
    model = lm.model
    x = torch.rand(batch, *lm.arch.in_shape, device=next(model.parameters()).device)
    times = []
    with torch.no_grad():
        model(x)  # warm-up: first-call allocations are not the cost per example
        for _ in range(3):  # the best of three: a busy machine only ever adds time
            start = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    per = min(times) / batch
    with _PROBE_LOCK:
        _PROBES[key] = per
    return per


def check_seconds(what: str, seconds: float, lim: Limits | None = None) -> None:
    lim = lim or limits()
    if seconds > lim.job_seconds:
        raise InvalidInputError(
            f"{what} would take about {seconds:,.0f} s here; this server's limit is "
            f"{lim.job_seconds:,.0f} s (job_seconds in LENSCAPE_LIMITS). Lower the resolution "
            "or the number of examples."
        )
