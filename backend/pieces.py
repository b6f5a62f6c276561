"""Independent pieces of a job, run here one after another or on a Ray cluster side by side.

A job made of independent pieces (DiffROAR's retrainings, a landscape's tiles, ...) hands them to
``ctx.map(fn, pieces)``; the runner decides where they run:

- ``LocalPieces`` (the local runner): in this thread, in order, on the job's device.
- ``RayPieces`` (``LENSCAPE_RAY_ADDRESS`` set): one Ray task per piece, with the CPUs/GPUs each
  piece asks for. Large inputs go to the workers by reference: ``ctx.share(obj)`` puts them in Ray's
  object store once, and every piece that names the handle gets the same object, not a copy pickled
  per task. A worker that dies mid-piece is replaced and the piece retried (``RETRIES``); after that
  the job fails with a message that says so, and nothing is stored.

Rules for a piece function, so that both give bit-identical results: a module-level function
``fn(*args, device) -> value`` that depends only on its arguments (seed its generators from them),
returns something picklable and small (numbers, arrays), and loads models only with the safe loaders
(``models.zoo.load_model``), never by unpickling. Results come back in the order of the pieces.
Progress is the fraction of pieces done; a cancel stops the pieces not finished.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from backend.jobs import JobCancelled

RETRIES = 2          # extra tries of a piece whose worker process died (Ray's max_retries)


@dataclass(frozen=True)
class Resources:
    """What one piece asks of a Ray node: CPUs and, where it can use one, a GPU share."""

    cpus: float = 1.0
    gpus: float = 0.0


class LocalPieces:
    """Pieces run in the job's thread, one after another, on the job's device."""

    where = "local"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def share(self, obj: Any) -> Any:
        return obj

    def map(self, fn: Callable, pieces: Sequence[tuple], report: Callable[[int, int], None],
            cancelled: Callable[[], bool], resources: Resources) -> list:
        out = []
        for i, args in enumerate(pieces):
            if cancelled():
                raise JobCancelled("cancelled")
            out.append(_call(fn, args, self.device))
            report(i + 1, len(pieces))
        return out


class PieceFailed(RuntimeError):
    """A piece raised, or its worker died more often than it may be retried."""


class RayPieces:
    """Pieces as Ray tasks on the cluster the runner connected to."""

    where = "ray"

    def __init__(self, gpu_per_piece: float = 0.0) -> None:
        import ray

        self._ray = ray
        self._remote = ray.remote(_ray_call)
        self.gpu_per_piece = gpu_per_piece

    def share(self, obj: Any) -> Any:
        return self._ray.put(obj)

    def map(self, fn: Callable, pieces: Sequence[tuple], report: Callable[[int, int], None],
            cancelled: Callable[[], bool], resources: Resources) -> list:
        ray = self._ray
        gpus = resources.gpus if self._cluster_gpus() else 0.0
        task = self._remote.options(num_cpus=resources.cpus, num_gpus=gpus, max_retries=RETRIES,
                                    retry_exceptions=False)
        refs = [task.remote(fn, *args) for args in pieces]
        index = {r: i for i, r in enumerate(refs)}
        out: list = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                if cancelled():
                    raise JobCancelled("cancelled")
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2, fetch_local=True)
                for r in ready:
                    out[index[r]] = _unwrap(ray, r)
                if ready:
                    report(len(refs) - len(pending), len(refs))
        except BaseException:
            for r in pending:
                ray.cancel(r, force=True)
            raise
        return out

    def _cluster_gpus(self) -> float:
        return cluster_summary()["gpus"]


def _unwrap(ray, ref) -> Any:
    from ray.exceptions import RayTaskError, WorkerCrashedError

    try:
        return ray.get(ref)
    except WorkerCrashedError as exc:
        raise PieceFailed(f"a Ray worker died while computing a piece, {RETRIES + 1} times; the job stops "
                          f"here and stores nothing ({type(exc).__name__})") from None
    except RayTaskError as exc:          # the piece itself raised: re-raise its own error
        cause = exc.as_instanceof_cause()
        raise (cause.cause if getattr(cause, "cause", None) is not None else cause) from None


def _call(fn: Callable, args: tuple, device: torch.device) -> Any:
    return fn(*args, device=device)


def _ray_call(fn: Callable, *args: Any) -> Any:
    """A piece on a Ray worker: on the GPU Ray gave it, if any."""
    import ray

    device = torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")
    return _call(fn, args, device)


# ---------------------------------------------------------------------------------------------
# Connecting to a cluster


def ray_address() -> str | None:
    """LENSCAPE_RAY_ADDRESS: "auto" (a running cluster), "ray://host:port", or "local" (start one
    here); unset or empty: no Ray."""
    value = os.environ.get("LENSCAPE_RAY_ADDRESS", "").strip()
    return value or None


def connect(address: str, workers: int | None = None) -> dict:
    """Connect to (or start, for "local") a Ray cluster; returns what it offers. The workers get
    this checkout on their import path and the LENSCAPE_* settings (on a multi-node cluster, install
    Lenscape on every node instead: see the README)."""
    import re

    if not (address in ("local", "auto") or re.fullmatch(r"(ray://)?[\w.\-]+:\d+", address)):
        raise ValueError(f"a Ray address is 'local', 'auto', 'ray://host:port' or 'host:port'; got {address!r}")
    return _RAY_THREAD.submit(_connect, address, workers).result()


def _connect(address: str, workers: int | None) -> dict:
    import ray

    if ray.is_initialized() and _CONNECTED.get("address") not in (None, address):
        raise RuntimeError(f"this process is connected to the Ray cluster {_CONNECTED['address']!r}; restart the "
                           f"app to use {address!r}")
    if not ray.is_initialized():
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p),
                            **{k: v for k, v in os.environ.items() if k.startswith("LENSCAPE_") and k != "LENSCAPE_RAY_ADDRESS"}}}
        started = time.perf_counter()
        if address == "local":
            ray.init(num_cpus=workers, include_dashboard=False, runtime_env=env, logging_level="ERROR",
                     log_to_driver=False)
        else:
            ray.init(address=address, runtime_env=env, logging_level="ERROR", log_to_driver=False)
        _CONNECTED.update(address=address, seconds=time.perf_counter() - started)
    return _summary()


def cluster_summary() -> dict:
    """Nodes, CPUs and GPUs of the cluster this process is connected to."""
    return _RAY_THREAD.submit(_summary).result()


def _summary() -> dict:
    import ray

    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"nodes": len(nodes), "cpus": float(res.get("CPU", 0.0)), "gpus": float(res.get("GPU", 0.0))}


# Ray's cluster-state calls hang once the thread that called ray.init has ended (seen with Ray 2.60:
# Streamlit runs each script run on a new thread), so ray.init and those calls run on this one
# long-lived thread.
_RAY_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lenscape-ray")
_CONNECTED: dict = {}
