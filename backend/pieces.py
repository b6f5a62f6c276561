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
returns something picklable (numbers, arrays, a run's files), gets models as a ``ModelPayload``
(never by unpickling), and asks for pinned ``Resources.threads`` where its bits depend on the thread
count. Results come back in the order of the pieces.
Progress is the fraction of pieces done, finer where a piece reports its own (``piece_progress``);
a cancel stops the pieces not finished (on Ray, running ones too: their tasks are killed).

Models travel as a ``ModelPayload`` (architecture + safetensors bytes, put in the object store once);
a worker rebuilds the model from it with the safe loader and keeps it for the next piece.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lenscape.backend.jobs import JobCancelled

RETRIES = 2  # extra tries of a piece whose worker process died (Ray's max_retries)


@dataclass(frozen=True)
class Resources:
    """What one piece asks of a Ray node: CPUs and, where it can use one, a GPU share. `threads`
    pins the piece's torch threads on a CPU, on either runner, for pieces whose bits depend on it
    (training: a weight gradient sums over the batch in per-thread parts); None leaves the runner's
    own (a Ray worker asking for one CPU runs one thread)."""

    cpus: float = 1.0
    gpus: float = 0.0
    threads: int | None = None


class LocalPieces:
    """Pieces run in the job's thread, one after another, on the job's device."""

    where = "local"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def share(self, obj: Any) -> Any:
        return obj

    def share_model(self, lm) -> ModelPayload:
        """The job's own loaded model, as it is: pieces here run in the job's thread, one at a time,
        so nothing is serialized and rebuilt."""
        return ModelPayload(lm.run_id, lm.epoch, lm.name, lm.fingerprint, lm.arch.to_dict(), b"", live=lm.model)

    def map(
        self,
        fn: Callable,
        pieces: Sequence[tuple],
        report: Callable[[float, int, str], None],
        cancelled: Callable[[], bool],
        resources: Resources,
    ) -> list:
        out, n = [], len(pieces)
        for i, args in enumerate(pieces):
            if cancelled():
                raise JobCancelled("cancelled")

            def within(fraction: float, message: str = "", i=i) -> None:
                if cancelled():  # a long piece (a training) stops at its next report
                    raise JobCancelled("cancelled")
                report(i + min(max(fraction, 0.0), 1.0), n, message)

            with _threads(resources.threads, self.device):
                out.append(_call(fn, args, self.device, within))
            report(i + 1, n, "")
        return out


class PieceFailed(RuntimeError):
    """A piece raised, or its worker died more often than it may be retried."""


class RayPieces:
    """Pieces as Ray tasks on the cluster the runner connected to."""

    where = "ray"

    def __init__(self) -> None:
        import ray

        self._ray = ray
        self._remote = ray.remote(_ray_call)
        self._board()  # started now, so it is up by the first job

    def share(self, obj: Any) -> Any:
        return self._ray.put(obj)

    def share_model(self, lm) -> Any:
        return self._ray.put(model_payload(lm))

    def map(
        self,
        fn: Callable,
        pieces: Sequence[tuple],
        report: Callable[[float, int, str], None],
        cancelled: Callable[[], bool],
        resources: Resources,
    ) -> list:
        ray = self._ray
        gpus = resources.gpus if self._cluster_gpus() else 0.0
        task = self._remote.options(num_cpus=resources.cpus, num_gpus=gpus, max_retries=RETRIES, retry_exceptions=False)
        board, call = self._board(), f"{os.getpid()}-{next(_CALLS)}"
        refs = [task.remote(fn, board, call, i, resources.threads, *args) for i, args in enumerate(pieces)]
        index = {r: i for i, r in enumerate(refs)}
        out: list = [None] * len(refs)
        pending, finished, board_view = list(refs), set(), _BoardView(ray, board, call)
        try:
            while pending:
                if cancelled():
                    raise JobCancelled("cancelled")
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2, fetch_local=True)
                for r in ready:
                    out[index[r]] = _unwrap(ray, r)
                    finished.add(index[r])
                partial, message = board_view.partial(finished)
                report(len(finished) + partial, len(refs), message)
        except BaseException:
            for r in pending:
                ray.cancel(r, force=True)
            raise
        finally:
            board.forget.remote(call)
        return out

    def _board(self):
        """The cluster's progress board: one small actor per app process and Ray session, made on
        first use and shared by every runner of the process."""
        key = self._ray.get_runtime_context().get_job_id()
        with _BOARD_LOCK:
            if _BOARD.get("key") != key:
                _BOARD.update(key=key, board=self._ray.remote(num_cpus=0)(ProgressBoard).remote())
            return _BOARD["board"]

    def _cluster_gpus(self) -> float:
        from lenscape.backend.cluster import cluster_summary  # late: cluster imports this module

        return cluster_summary()["gpus"]


class _BoardView:
    """What the board last said of one map call's pieces, read without ever waiting on it: a board
    that is slow to start or answer costs the fine-grained bar, never the job's time."""

    def __init__(self, ray, board, call: str) -> None:
        self.ray, self.board, self.call = ray, board, call
        self.seen: dict[int, tuple[float, str, float]] = {}
        self.asking = None

    def partial(self, finished: set) -> tuple[float, str]:
        """The pieces still running: the sum of their own fractions, and the latest message."""
        if self.asking is None:
            self.asking = self.board.read.remote(self.call)
        ready, _ = self.ray.wait([self.asking], timeout=0)
        if ready:
            try:
                self.seen = self.ray.get(self.asking)
            except Exception:  # a lost board: keep what it said last
                pass
            self.asking = None
        running = {i: v for i, v in self.seen.items() if i not in finished}
        latest = max(running.values(), key=lambda v: v[2], default=(0.0, "", 0.0))
        return sum(v[0] for v in running.values()), latest[1]


def _unwrap(ray, ref) -> Any:
    from ray.exceptions import RayTaskError, WorkerCrashedError

    try:
        return ray.get(ref)
    except WorkerCrashedError as exc:
        raise PieceFailed(
            f"a Ray worker died while computing a piece, {RETRIES + 1} times; the job stops "
            f"here and stores nothing ({type(exc).__name__})"
        ) from None
    except RayTaskError as exc:  # the piece itself raised: re-raise its own error
        cause = exc.as_instanceof_cause()
        raise (cause.cause if getattr(cause, "cause", None) is not None else cause) from None


def _call(fn: Callable, args: tuple, device: torch.device, within: Callable[..., None]) -> Any:
    _PIECE.report = within
    try:
        return fn(*args, device=device)
    finally:
        _PIECE.report = None


def concat(parts: Sequence, name: str):
    """Field `name` of consecutive pieces' results, concatenated: arrays end to end, lists joined."""
    values = [getattr(p, name) for p in parts]
    return [v for vs in values for v in vs] if isinstance(values[0], list) else np.concatenate(values)


def piece_progress(fraction: float, message: str = "") -> None:
    """Called from inside a piece: how far it has got (0 to 1). Outside a piece it does nothing;
    in a local piece of a cancelled job it raises JobCancelled."""
    report = getattr(_PIECE, "report", None)
    if report is not None:
        report(fraction, message)


_PIECE = threading.local()
_BOARD: dict = {}
_BOARD_LOCK = threading.Lock()
_CALLS = iter(range(1, 1 << 62))


class ProgressBoard:
    """A Ray actor: pieces post (fraction, message) under their map call; the driver reads them."""

    def __init__(self) -> None:
        self.calls: dict[str, dict[int, tuple[float, str, float]]] = {}

    def post(self, call: str, piece: int, fraction: float, message: str) -> None:
        self.calls.setdefault(call, {})[piece] = (fraction, message, time.time())

    def read(self, call: str) -> dict[int, tuple[float, str, float]]:
        return self.calls.get(call, {})

    def forget(self, call: str) -> None:
        self.calls.pop(call, None)


@contextmanager
def _threads(n: int | None, device: torch.device):
    """torch's intra-op threads and NumPy's BLAS threads set to `n` for a piece on the CPU, and put
    back after."""
    if not n or torch.device(device).type != "cpu":
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def _ray_call(fn: Callable, board, call: str, piece: int, threads: int | None, *args: Any) -> Any:
    """A piece on a Ray worker: on the GPU Ray gave it, if any; its own progress goes to the board
    (at most a few posts a second)."""
    import ray

    device = torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")
    last = [0.0]

    def within(fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or fraction >= 1.0:
            last[0] = now
            board.post.remote(call, piece, min(max(float(fraction), 0.0), 1.0), message)

    with _threads(threads, device):
        return _call(fn, args, device, within)


# ---------------------------------------------------------------------------------------------
# Models as the workers get them


@dataclass(frozen=True)
class ModelPayload:
    """A model for pieces: its architecture and weights as safetensors bytes. Share it once
    (``ctx.share_model(lm)``); each Ray worker rebuilds the model with the safe loader (nothing
    is unpickled from the bytes), checks the fingerprint, and keeps it for the next piece. Locally
    the payload carries the job's loaded model itself (`live`, never serialized)."""

    run_id: str
    epoch: int
    name: str
    fingerprint: str
    arch: dict
    weights: bytes
    live: Any = field(default=None, compare=False, repr=False)


def model_payload(lm) -> ModelPayload:
    """The payload of a LoadedModel (models.zoo)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in lm.model.state_dict().items()}
    return ModelPayload(lm.run_id, lm.epoch, lm.name, lm.fingerprint, lm.arch.to_dict(), save(state))


def payload_model(payload: ModelPayload, device: torch.device | str) -> torch.nn.Module:
    """The payload's model on `device`, in eval mode: built once per thread and kept (the last
    few), so a worker's pieces of one job pay for it once. Pieces must leave its weights as they
    found them (they may move them and put them back)."""
    if payload.live is not None:
        return payload.live
    key = (payload.fingerprint, str(device))
    cache = _MODELS.__dict__.setdefault("cache", OrderedDict())
    if key not in cache:
        cache[key] = _build(payload).to(device).eval()
        while len(cache) > 4:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def _build(payload: ModelPayload) -> torch.nn.Module:
    from lenscape.models.architectures import ArchSpec
    from lenscape.models.checkpoints import model_fingerprint
    from lenscape.models.loading import model_from_state, read_state_dict

    spec = ArchSpec.from_dict(payload.arch)
    if spec.builder:
        # The user's own architecture: the app built it (after models.custom.check_trusted) before it sent
        # the payload, and only the person who starts the server chooses the cluster, so a worker builds what
        # the app sends. Workers never read the workspace, where the trusted references are kept.
        from lenscape.models.custom import pending

        with pending(spec.builder, spec.builder_kwargs):
            model = model_from_state(spec, read_state_dict(payload.weights, payload.name))
    else:
        model = model_from_state(spec, read_state_dict(payload.weights, payload.name))
    if model_fingerprint(model) != payload.fingerprint:
        raise PieceFailed(
            f"{payload.name}: the weights a piece received do not match fingerprint "
            f"{payload.fingerprint}; refusing to compute with them"
        )
    return model


_MODELS = threading.local()
