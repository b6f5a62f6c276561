"""Jobs: what to compute (kind + config + model fingerprints + data) and the key that names it.

How to add a job kind
---------------------
A job kind is a plain function ``fn(ctx: JobContext, config: MyConfig) -> MyResult``. Four rules,
each checked by ``Registry.register`` (and by tests/backend/test_job_kinds.py for every kind the app
ships):

1. **Decorate it** with ``@job_kind("name")`` (``lane="long"`` for work of minutes, such as training,
   so it never holds up the short jobs a page waits on).
2. **Register it explicitly**: add it to ``KINDS`` in ``backend/kinds.py``. Nothing registers by being
   imported.
3. **Its config is a frozen dataclass of JSON-able fields** (numbers, strings, booleans, None, tuples,
   nested frozen dataclasses such as ``ModelRef``) that **validates itself in ``__post_init__``**, raising
   ``InvalidInputError`` with a message a user can act on. The config is hashed into the job's key, so
   equal configs must mean equal work; refer to models with ``ModelRef`` (``ref(lm)``), never with a
   loaded model.
4. **Its result is storable**, and its return annotation says so: arrays, tensors, numbers, strings,
   lists, tuples, dicts, or dataclasses defined in ``analysis``, ``models`` or ``backend`` made of these.
   Results are written with ``backend.codec`` (never pickled) and read back in a later process.

Inside, report progress with ``ctx.progress(fraction, message)`` (it raises ``JobCancelled`` when the
user cancels, which is how a job stops), run on ``ctx.device``, draw random numbers only from a
``torch.Generator`` seeded from the config (concurrent jobs share the global RNG), and raise
``InvalidInputError`` for bad input.

Submit it with ``job("name", config, models=(ref,...), label="what the user sees")`` and
``runner.submit(...)`` (pages use ``ui.jobs.submit``). The key hashes the kind, its code version, the
model fingerprints, the data selection and the config.

Code versions: what invalidates stored results
----------------------------------------------
A kind's code version hashes the code of the maths it runs: its own module and every Lenscape module
it imports, directly or not (``analysis/``, the architectures, data loading, training), each as its
syntax tree without docstrings, so comments, docstrings and formatting change nothing. It does *not*
follow the plumbing (``PLUMBING``: the job system, the store, the codec, the runners, bundles, paths,
the UI), so a fix there keeps every stored result, the class demo's included.

**Bump the version** when a kind's results change in a way no hash of its code can see: a new default
in a library it calls, a data file that changed, a bug fixed in plumbing that had leaked into results.
Write ``@job_kind("name", version=2)`` (one more than before): every stored result of that kind is then
computed again when next asked for, and results of other kinds are kept.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import json
import threading
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch

from lenscape.backend.codec import own_module, to_jsonable
from lenscape.errors import InvalidInputError

LANES = ("short", "long")


class JobStatus(str, Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class Progress:
    fraction: float = 0.0
    message: str = ""


class NotReady(Exception):
    """The job has not finished yet."""


class JobFailed(Exception):
    """The job raised; the message is the error it raised."""


class JobCancelled(Exception):
    """The job was cancelled (raised inside the job to stop it, and by result())."""


class UnknownJob(KeyError):
    """No job with this id was submitted or stored."""


# ---------------------------------------------------------------------------------------------
# Models in configs


@dataclass(frozen=True, kw_only=True)
class ModelRef:
    """A model as a job config names it: a run, one of its checkpoints, and that checkpoint's
    fingerprint (so new weights under an old name never share results)."""

    run_id: str
    epoch: int
    fingerprint: str

    def __post_init__(self) -> None:
        if not self.run_id or not self.fingerprint:
            raise InvalidInputError(f"a model reference needs a run id and a fingerprint; got {self}")
        if int(self.epoch) < 0:
            raise InvalidInputError(f"a checkpoint's epoch is 0 or more; got {self.epoch}")


def ref(lm: Any) -> ModelRef:
    """The reference of a loaded model (a models.zoo.LoadedModel)."""
    return ModelRef(run_id=lm.run_id, epoch=lm.epoch, fingerprint=lm.fingerprint)


# ---------------------------------------------------------------------------------------------
# Job kinds and their registry


@dataclass(frozen=True)
class JobKind:
    name: str
    fn: Callable[[JobContext, Any], Any]
    config_type: type
    result_type: Any
    lane: str
    module: str
    version: int = 1


def job_kind(name: str, *, lane: str = "short", version: int = 1) -> Callable:
    """Mark `fn(ctx, config) -> result` as the job kind `name`. It does not register it: add it
    to backend/kinds.py's KINDS. `version`: bump it to recompute the kind's stored results when its
    maths changed in a way its code's hash cannot see (module docstring)."""
    if lane not in LANES:
        raise ValueError(f"lane must be one of {LANES}; got {lane!r}")
    if not (isinstance(version, int) and version >= 1):
        raise ValueError(f"version must be a positive int; got {version!r}")

    def mark(fn: Callable) -> Callable:
        fn.__job_kind__ = (name, lane, version)  # type: ignore[attr-defined]
        return fn

    return mark


class Registry:
    """The job kinds a runner knows, by name."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}
        self._lock = threading.Lock()

    def register(self, *fns: Callable) -> None:
        for fn in fns:
            kind = describe_kind(fn)
            with self._lock:
                known = self._kinds.get(kind.name)
                if known and known.fn is not fn and known.module != kind.module:
                    raise ValueError(f"job kind {kind.name!r} is taken by {known.module}.{known.fn.__name__}")
                self._kinds[kind.name] = kind

    def unregister(self, *fns: Callable) -> None:
        """Forget the kinds of `fns` (a test's own kinds, once the test is over); a name now held
        by another function is left alone."""
        for fn in fns:
            name = describe_kind(fn).name
            with self._lock:
                if name in self._kinds and self._kinds[name].fn is fn:
                    del self._kinds[name]

    def __getitem__(self, name: str) -> JobKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise KeyError(
                f"unknown job kind {name!r}; registered: {sorted(self._kinds)} (add it to backend/kinds.py)"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._kinds

    def names(self) -> list[str]:
        return sorted(self._kinds)


REGISTRY = Registry()


def describe_kind(fn: Callable) -> JobKind:
    """Check the four rules (module docstring) and describe the kind; raises TypeError on a breach."""
    mark = getattr(fn, "__job_kind__", None)
    where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
    if not mark:
        raise TypeError(f"{where} is not decorated with @job_kind(name)")
    name, lane, version = mark
    params = list(inspect.signature(fn).parameters)
    if len(params) != 2:
        raise TypeError(f"job kind {name!r} ({where}) must take (ctx, config); it takes {params}")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise TypeError(f"job kind {name!r}: its annotations do not resolve ({exc})") from None
    cfg_type, result_type = hints.get(params[1]), hints.get("return")
    if not (isinstance(cfg_type, type) and dataclasses.is_dataclass(cfg_type) and _frozen(cfg_type)):
        raise TypeError(f"job kind {name!r}: its config must be annotated as a frozen dataclass; got {cfg_type!r}")
    problems = _jsonable_type_problems(cfg_type, f"{cfg_type.__name__}")
    if problems:
        raise TypeError(f"job kind {name!r}: the config has fields that are not JSON-able: {problems}")
    if result_type is None:
        raise TypeError(f"job kind {name!r}: annotate the result type (-> ...) so it can be checked as storable")
    problems = _storable_type_problems(result_type, "result")
    if problems:
        raise TypeError(f"job kind {name!r}: the result cannot be stored safely: {problems}")
    return JobKind(name, fn, cfg_type, result_type, lane, fn.__module__, version)


_JSON_SCALARS = (int, float, str, bool, type(None))


def _frozen(cls: type) -> bool:
    return bool(getattr(cls, "__dataclass_params__").frozen)  # noqa: B009 - not in the type stubs


def _jsonable_type_problems(tp: Any, where: str) -> list[str]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _JSON_SCALARS:
        return []
    if origin is typing.Literal:
        return [] if all(isinstance(a, _JSON_SCALARS) for a in args) else [f"{where}: {tp}"]
    if origin in (typing.Union, types.UnionType) or origin is tuple:
        return [p for a in args if a is not Ellipsis for p in _jsonable_type_problems(a, where)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not _frozen(tp):
            return [f"{where}: {tp.__name__} is not frozen"]
        hints = typing.get_type_hints(tp)
        return [p for f in dataclasses.fields(tp) for p in _jsonable_type_problems(hints[f.name], f"{where}.{f.name}")]
    return [f"{where}: {tp!r}"]


def _storable_type_problems(tp: Any, where: str) -> list[str]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _JSON_SCALARS or tp in (np.ndarray, torch.Tensor):
        return []
    if origin is typing.Literal:
        return []
    if origin in (typing.Union, types.UnionType, tuple, list, dict) or tp in (list, tuple, dict):
        return [p for a in args if a is not Ellipsis for p in _storable_type_problems(a, where)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not own_module(tp.__module__):
            return [f"{where}: {tp.__module__}.{tp.__name__} is not a Lenscape type"]
        hints = typing.get_type_hints(tp)
        return [p for f in dataclasses.fields(tp) for p in _storable_type_problems(hints[f.name], f"{where}.{f.name}")]
    return [f"{where}: {tp!r}"]


# ---------------------------------------------------------------------------------------------
# Code versions


# Modules whose code decides how jobs run, are stored and shown, not what they compute: no kind's
# code version follows them (module docstring). Everything else of ours a kind imports counts.
PLUMBING = frozenset(
    {
        "lenscape",
        "lenscape.errors",
        "lenscape.backend",
        "lenscape.backend.jobs",
        "lenscape.backend.codec",
        "lenscape.backend.store",
        "lenscape.backend.runner",
        "lenscape.backend.pieces",
        "lenscape.backend.limits",
        "lenscape.backend.kinds",
        "lenscape.backend.cluster",
        "lenscape.backend.bundles",
        "lenscape.backend.bundle_checks",
        "lenscape.backend.device",
        "lenscape.backend.teaching",
        "lenscape.models",
        "lenscape.models.paths",
        "lenscape.models.checkpoints",
        "lenscape.models.loading",
    }
)


@functools.lru_cache(maxsize=None)
def code_version(kind: str) -> str:
    """A hash of the kind's `version` and of the maths it runs: its module and every Lenscape module
    it imports, transitively, but not the plumbing; each as a syntax tree without docstrings.
    Computed once per process: the code that runs is the code that was imported."""
    spec = REGISTRY[kind]
    modules = module_closure(spec.module)
    h = hashlib.sha256(f"version {spec.version}\n".encode())
    for name in sorted(modules):
        h.update(f"{name}\n".encode())
        h.update(modules[name])
    return h.hexdigest()[:12]


def module_closure(module: str) -> dict[str, bytes]:
    """{module name: normalized code} of `module` and every Lenscape module it imports (at the top or
    inside functions), followed transitively, leaving out and not following `PLUMBING`."""
    seen: dict[str, bytes] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name in PLUMBING:
            continue
        source = _read_source(name)
        if source is None:
            continue
        seen[name] = normalized_code(source)
        todo.extend(m for m in _own_imports(source, name) if m not in seen)
    return seen


def _read_source(module: str) -> bytes | None:
    path = _source_path(module)
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


@functools.lru_cache(maxsize=1024)
def normalized_code(source: bytes) -> bytes:
    """The module's syntax tree without docstrings (no comments, no layout): what it computes."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False).encode()


def _source_path(module: str) -> str | None:
    if not own_module(module):
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec and spec.origin and spec.origin.endswith(".py") else None


@functools.lru_cache(maxsize=1024)
def _own_imports(source: bytes, module: str) -> frozenset[str]:
    out: set[str] = set()
    package = module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in [*parts, base] if p)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from analysis import saliency`
    return frozenset(m for m in out if own_module(m))


# ---------------------------------------------------------------------------------------------
# Jobs


@dataclass(frozen=True)
class Job:
    kind: str
    config: Any
    fingerprints: tuple[str, ...] = ()
    data: Any = None  # the data selection (a DataSpec, indices, ...)
    label: str = ""  # what the user sees in job lists

    def __post_init__(self) -> None:
        spec = REGISTRY[self.kind]
        if not isinstance(self.config, spec.config_type):
            raise TypeError(
                f"job kind {self.kind!r} takes a {spec.config_type.__name__} config; got {type(self.config).__name__}"
            )

    @property
    def lane(self) -> str:
        return REGISTRY[self.kind].lane

    def key(self) -> str:
        payload = {
            "kind": self.kind,
            "code": code_version(self.kind),
            "fingerprints": list(self.fingerprints),
            "data": to_jsonable(self.data),
            "config": to_jsonable(self.config),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def job(kind: str, config: Any, models: tuple[ModelRef, ...] = (), label: str = "", data: Any = None) -> Job:
    """A job over `models` (their fingerprints go into the key)."""
    return Job(kind, config, fingerprints=tuple(m.fingerprint for m in models), data=data, label=label or kind)


def stage(ctx: JobContext, lo: float, hi: float, what: str = "") -> Callable[[float, str], None]:
    """A progress callback for one stage of a job: its [0, 1] maps to [lo, hi] of the job's bar."""

    def report(fraction: float, message: str = "") -> None:
        ctx.progress(lo + (hi - lo) * fraction, f"{what}: {message}" if what else message)

    return report


@dataclass
class JobContext:
    """Handed to a running job: where to report progress, and how it learns of a cancel."""

    job_id: str
    device: torch.device
    workdir: Any  # a folder the job may write into (Path)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[Progress], None] = lambda p: None

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress; raises JobCancelled if a cancel was requested."""
        self.check_cancelled()
        self.on_progress(Progress(min(max(float(fraction), 0.0), 1.0), message))

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled(f"job {self.job_id} was cancelled")

    # independent pieces (backend/pieces.py): here one after another, or as Ray tasks side by side
    pieces: Any = None  # LocalPieces or RayPieces; None: local

    def share(self, obj: Any) -> Any:
        """A handle to pass to many pieces: on Ray, `obj` goes into the object store once."""
        return obj if self.pieces is None else self.pieces.share(obj)

    def share_model(self, lm: Any) -> Any:
        """A handle to a LoadedModel for pieces (backend.pieces.payload_model turns it into the model):
        here the model itself, on Ray a safetensors payload in the object store."""
        from lenscape.backend.pieces import LocalPieces

        return (self.pieces or LocalPieces(self.device)).share_model(lm)

    def map(
        self, fn: Callable, pieces: Any, what: str = "", lo: float = 0.0, hi: float = 1.0, resources: Any = None
    ) -> list:
        """[fn(*args, device=...) for args in pieces], run where the runner runs pieces; the job's
        progress goes from `lo` to `hi` as pieces finish; a cancel stops the rest."""
        from lenscape.backend.pieces import LocalPieces, Resources

        runner = self.pieces or LocalPieces(self.device)
        pieces = list(pieces)

        def report(done: float, total: int, message: str = "") -> None:
            if total == 1:  # one piece: its own words are the job's
                text = message or what
            else:
                text = f"{what} ({int(done)}/{total} pieces done)".strip() + (f" · {message}" if message else "")
            self.progress(lo + (hi - lo) * done / max(total, 1), text)

        if not pieces:
            return []
        self.check_cancelled()
        return runner.map(fn, pieces, report, self.cancel_event.is_set, resources or Resources())
