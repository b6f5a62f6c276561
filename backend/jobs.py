"""Jobs: what to compute (kind + config + model fingerprints + data) and the key that names it.

A job kind is a plain function `fn(ctx, config) -> result` registered with `@job_kind`. The
key hashes the kind, the source code of the function's module (so a code change recomputes),
the model fingerprints, the data selection and the config.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from backend.codec import to_jsonable

JOB_KINDS: dict[str, Callable[[JobContext, Any], Any]] = {}


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


def job_kind(name: str) -> Callable:
    def register(fn: Callable) -> Callable:
        JOB_KINDS[name] = fn
        return fn
    return register


def code_version(kind: str) -> str:
    fn = JOB_KINDS[kind]
    source = inspect.getsource(sys.modules[fn.__module__])
    return hashlib.sha256(source.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Job:
    kind: str
    config: Any
    fingerprints: tuple[str, ...] = ()
    data: Any = None                  # the data selection (a DataSpec, indices, ...)
    label: str = ""                   # what the user sees in job lists

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise KeyError(f"unknown job kind {self.kind!r}; known: {sorted(JOB_KINDS)}")

    def key(self) -> str:
        payload = {"kind": self.kind, "code": code_version(self.kind), "fingerprints": list(self.fingerprints),
                   "data": to_jsonable(self.data), "config": to_jsonable(self.config)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class JobContext:
    """Handed to a running job: where to report progress, and how it learns of a cancel."""

    job_id: str
    device: torch.device
    workdir: Any                                   # a folder the job may write into (Path)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[Progress], None] = lambda p: None

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress; raises JobCancelled if a cancel was requested."""
        self.check_cancelled()
        self.on_progress(Progress(min(max(float(fraction), 0.0), 1.0), message))

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise JobCancelled(f"job {self.job_id} was cancelled")
