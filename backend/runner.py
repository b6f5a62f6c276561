"""The job system's one contract, `Runner`, and its two implementations: `LocalRunner` (jobs run on
worker threads off the Streamlit script thread) and `RayRunner` (the same, with a job's pieces on a
Ray cluster). Pages and the command line use only what `Runner` declares: the UI never reaches
into the store.

Contract (every runner): submit(job) -> id, attaching to a running job or returning a stored
result at once; status, progress, result (raises NotReady, JobFailed, JobCancelled), cancel; and
the stored jobs' records (`record`, `records`, `forget`, `stored_bytes`).

Two lanes, each with its own workers: "long" jobs (training, DiffROAR) never hold up the "short"
ones a page waits on. A stored result that cannot be read back (bad checksum, or a format today's
code refuses) is a miss: it is dropped, logged, and computed again. Submitting with a `watcher`
(a page's session and widget) ties the job to it: `release(job_id, watcher)` cancels a job nobody
watches any more (a superseded auto-submitted job), while anonymous submissions are never released.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sqlite3
import threading
import time
import traceback
from collections import OrderedDict
from contextlib import closing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from lenscape.backend.codec import encode, to_jsonable
from lenscape.backend.jobs import (
    LANES,
    REGISTRY,
    Job,
    JobCancelled,
    JobContext,
    JobFailed,
    JobStatus,
    NotReady,
    Progress,
    UnknownJob,
    code_version,
)
from lenscape.backend.store import CorruptResult, ResultStore


@runtime_checkable
class Runner(Protocol):
    """What every runner offers the app, the command line and the notebook API."""

    device: torch.device
    device_label: str  # stored with each job ("cuda:0", "ray (...)")
    notice: str  # something about where jobs run that every page should say ("" if none)
    pieces: Any  # where a job's independent pieces run: None in its own thread (backend/pieces.py)

    def where(self) -> str:
        """Where jobs run, for the sidebar."""
        ...

    def submit(self, job: Job, watcher: str | None = None) -> str:
        """The job's id; computes it unless it runs, is stored, or failed (see `retry`)."""
        ...

    def retry(self, job_id: str, watcher: str | None = None) -> None:
        """Let a failed or cancelled job run again."""
        ...

    def release(self, job_id: str, watcher: str) -> None:
        """`watcher` no longer waits on the job: it is cancelled if nobody else does."""
        ...

    def status(self, job_id: str) -> JobStatus:
        """Raises UnknownJob for an id neither running nor stored."""
        ...

    def progress(self, job_id: str) -> Progress: ...

    def result(self, job_id: str) -> Any:
        """The stored result; raises NotReady, JobFailed or JobCancelled."""
        ...

    def error(self, job_id: str) -> str | None: ...

    def cancel(self, job_id: str) -> None: ...

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus: ...

    def running(self, kind: str | None = None) -> list[str]:
        """Ids of the queued or running jobs (of one kind), oldest first."""
        ...

    def watched_by(self, session: str) -> dict[str, set[str]]:
        """{job id: watchers} of the running jobs a browser tab waits on."""
        ...

    def record(self, job_id: str) -> dict | None:
        """The stored job's row (kind, label, status, config as JSON, fingerprints, seconds, ...)."""
        ...

    def records(self, kind: str | None = None) -> list[dict]:
        """Every stored job's row (of one kind), newest first."""
        ...

    def forget(self, job_id: str) -> None:
        """Delete a stored job and its result (it is computed again when next asked for)."""
        ...

    def stored_bytes(self, job_id: str) -> int:
        """The size of the job's stored result file, 0 if none."""
        ...

    def export_bundle(self, job_id: str) -> bytes:
        """A reproducibility bundle (zip bytes) of a stored result and the models it used."""
        ...

    def import_bundle(self, data: bytes) -> dict:
        """File a bundle's result and models here, all or nothing; returns its manifest."""
        ...

    def shutdown(self) -> None: ...


@dataclass
class _Active:
    job: Job
    status: JobStatus = JobStatus.QUEUED
    progress: Progress = field(default_factory=Progress)
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    watchers: set = field(default_factory=set)


ANONYMOUS = "<anonymous>"
INTERRUPTED = "interrupted: the app stopped while it ran"
log = logging.getLogger("lenscape.runner")


def library_versions() -> dict:
    import numpy

    return {"torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


class LocalRunner:
    def __init__(
        self,
        store: ResultStore,
        device: torch.device | None = None,
        workers: int = 1,
        long_workers: int = 1,
        cache_entries: int = 64,
    ) -> None:
        from lenscape.backend.device import choose_device

        self.store = store
        self.device = device or choose_device()
        self._owner = f"{platform.node()}:{os.getpid()}"
        self._pools = {
            lane: ThreadPoolExecutor(max_workers=n, thread_name_prefix=f"lenscape-{lane}")
            for lane, n in zip(LANES, (workers, long_workers))
        }
        self._lock = threading.RLock()
        self._active: dict[str, _Active] = {}
        self._jobs: dict[str, Job] = {}  # every job submitted here: to recompute
        self._results: OrderedDict[str, tuple[str | None, Any]] = OrderedDict()  # id -> (checksum, decoded)
        self._retry: set[str] = set()  # failed jobs a user asked to run again
        self._unsynced: dict[str, dict] = {}  # rows the store refused when their job ended
        self._cache_entries = cache_entries
        self.pieces: Any = None  # a job's independent pieces run in its thread (backend/pieces.py)
        self.notice = ""  # something about where jobs run that every page should say
        self.device_label = str(self.device)  # stored with each job
        self._mark_interrupted()

    def where(self) -> str:
        """Where jobs run, for the sidebar."""
        return f"this machine ({self.device})"

    def _mark_interrupted(self) -> None:
        """Jobs left QUEUED/RUNNING by a process that is gone will never finish: say so."""
        for row in self.store.list():
            if row["status"] in ("QUEUED", "RUNNING") and not _owner_alive(row.get("owner") or ""):
                self.store.upsert(row["id"], status="FAILED", error=INTERRUPTED)

    def submit(self, job: Job, watcher: str | None = None) -> str:
        """The job's id; computes it unless it is running, stored (and readable), or failed: a
        failed job keeps its error until `retry` (a page's rerun never starts it again)."""
        from lenscape.backend.limits import check_config

        check_config(job.config)  # the server's limits, whatever the page let through
        job_id = job.key()
        with self._lock:
            self._jobs[job_id] = job
            self._sync()
            active = self._active.get(job_id)
            if active and active.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                active.watchers.add(watcher or ANONYMOUS)
                return job_id
            with self.store.writing():
                if self._stored(job_id) or self._failed(job_id):
                    return job_id
                self._retry.discard(job_id)
                self.store.upsert(
                    job_id,
                    kind=job.kind,
                    label=job.label,
                    config=to_jsonable(job.config),
                    fingerprints=list(job.fingerprints),
                    data=to_jsonable(job.data),
                    status="QUEUED",
                    message="",
                    created=time.time(),
                    started=None,
                    finished=None,
                    error=None,
                    device=self.device_label,
                    versions=library_versions(),
                    owner=self._owner,
                    code=code_version(job.kind),
                )
            active = self._active[job_id] = _Active(job, watchers={watcher or ANONYMOUS})
            self._pools[job.lane].submit(self._run, job_id, active)
        return job_id

    def _failed(self, job_id: str) -> bool:
        """True if the job failed and nobody asked to retry it since."""
        if job_id in self._retry:
            return False
        active = self._active.get(job_id)
        if active:
            return active.status == JobStatus.FAILED
        row = self.store.get(job_id)
        # a job the app's stop cut short did not fail: the same work asked for again runs
        return row is not None and row["status"] == "FAILED" and row["error"] != INTERRUPTED

    def retry(self, job_id: str, watcher: str | None = None) -> None:
        """Let a failed (or cancelled) job run again: now, if this runner knows the job (for
        `watcher`), else at its next submit."""
        with self._lock:
            self._retry.add(job_id)
            job = self._jobs.get(job_id)
            active = self._active.get(job_id)
            if active and active.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                return
        if job is not None:
            self.submit(job, watcher=watcher)

    def _stored(self, job_id: str) -> bool:
        """True if a readable result is stored; an unreadable one is dropped (and logged)."""
        row = self.store.get(job_id)
        if not row or row["status"] != "DONE":
            return False
        try:
            self._load(job_id)
            return True
        except CorruptResult as exc:
            log.warning("recomputing: %s", exc)
            return False

    def _load(self, job_id: str) -> Any:
        row = self.store.get(job_id) or {}
        with self._lock:
            hit = self._results.get(job_id)
            if hit and hit[0] == row.get("checksum"):
                self._results.move_to_end(job_id)
                return hit[1]
        value = self.store.get_result(job_id)  # raises CorruptResult (dropped) if unreadable
        with self._lock:
            self._results[job_id] = (row.get("checksum"), value)
            while len(self._results) > self._cache_entries:
                self._results.popitem(last=False)
        return value

    def release(self, job_id: str, watcher: str) -> None:
        """`watcher` no longer wants this job; cancel it if nobody else does."""
        with self._lock:
            active = self._active.get(job_id)
            if not active or active.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                return
            active.watchers.discard(watcher)
            if not active.watchers:
                active.cancel.set()

    def _run(self, job_id: str, active: _Active) -> None:
        workdir = self.store.root / "work" / job_id
        ctx = JobContext(
            job_id, self.device, workdir, active.cancel, lambda p: setattr(active, "progress", p), pieces=self.pieces
        )
        started = time.time()
        try:
            ctx.check_cancelled()
            active.status = JobStatus.RUNNING
            self.store.upsert(job_id, status="RUNNING", started=started)
            result = REGISTRY[active.job.kind].fn(ctx, active.job.config)
            ctx.check_cancelled()
            try:
                self.store.put_raw(job_id, encode(result), status=JobStatus.DONE.value)
            except (OSError, sqlite3.Error) as exc:
                raise OSError(
                    f"the result could not be stored ({type(exc).__name__}: {exc}); is the workspace's disk full?"
                ) from exc
            self._finish(job_id, active, JobStatus.DONE, started)
        except JobCancelled:
            self.store.path(job_id).unlink(missing_ok=True)
            self._finish(job_id, active, JobStatus.CANCELLED, started)
        except BaseException as exc:  # a job's failure must never take the app down
            self._finish(
                job_id,
                active,
                JobStatus.FAILED,
                started,
                error=f"{type(exc).__name__}: {exc}",
                trace=traceback.format_exc(),
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _finish(
        self,
        job_id: str,
        active: _Active,
        status: JobStatus,
        started: float,
        error: str | None = None,
        trace: str | None = None,
    ) -> None:
        """The job's end, in memory first: a store that cannot be written (a full disk) must not
        leave it RUNNING; its row is written when the store takes writes again."""
        now = time.time()
        active.error = error
        active.status = status
        fields = dict(
            status=status.value,
            finished=now,
            seconds=now - started,
            error=error,
            message=trace or active.progress.message,
        )
        try:
            self.store.upsert(job_id, **fields)
        except Exception as exc:  # noqa: BLE001 - sqlite's disk I/O error, a full disk
            log.error(
                "job %s ended %s but its row could not be written (%s); kept to write later", job_id, status.value, exc
            )
            with self._lock:
                self._unsynced[job_id] = fields
        active.done.set()

    def _sync(self) -> None:
        """Write the rows of jobs that ended while the store took no writes."""
        for job_id, fields in list(self._unsynced.items()):
            try:
                self.store.upsert(job_id, **fields)
                self._unsynced.pop(job_id, None)
            except Exception:  # noqa: BLE001 - still failing: try at the next submit
                return

    def status(self, job_id: str) -> JobStatus:
        active = self._active.get(job_id)
        if active:
            return active.status
        row = self.store.get(job_id)
        if not row:
            raise UnknownJob(job_id)
        if row["status"] == "CORRUPT":
            return JobStatus.FAILED
        return JobStatus(row["status"])

    def progress(self, job_id: str) -> Progress:
        active = self._active.get(job_id)
        if active:
            return active.progress
        if self.status(job_id) == JobStatus.DONE:
            return Progress(1.0, "done")
        return Progress()

    def result(self, job_id: str) -> Any:
        status = self.status(job_id)
        if status in (JobStatus.QUEUED, JobStatus.RUNNING):
            raise NotReady(job_id)
        if status == JobStatus.CANCELLED:
            raise JobCancelled(f"job {job_id} was cancelled")
        if status == JobStatus.FAILED:
            raise JobFailed(self.error(job_id) or "the job failed")
        try:
            return self._load(job_id)
        except CorruptResult as exc:
            log.warning("recomputing: %s", exc)
            with self._lock:
                self._active.pop(job_id, None)
                job = self._jobs.get(job_id)
            if job is None:
                raise JobFailed(str(exc)) from None
            self.submit(job)
            raise NotReady(job_id) from None

    def error(self, job_id: str) -> str | None:
        active = self._active.get(job_id)
        if active and active.error:  # known here even when the store cannot be read
            return active.error
        row = self.store.get(job_id)
        return row["error"] if row else None

    def running(self, kind: str | None = None) -> list[str]:
        """Ids of this runner's queued or running jobs (of one kind), oldest first."""
        return [
            i
            for i, a in list(self._active.items())
            if a.status in (JobStatus.QUEUED, JobStatus.RUNNING) and (kind is None or a.job.kind == kind)
        ]

    def watched_by(self, session: str) -> dict[str, set[str]]:
        """{job id: this session's watchers} of the queued or running jobs a session (a browser
        tab: watchers are "<session>:<widget>") waits on."""
        out = {}
        for job_id, a in list(self._active.items()):
            mine = {w for w in a.watchers if w.startswith(f"{session}:")}
            if mine and a.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                out[job_id] = mine
        return out

    def cancel(self, job_id: str) -> None:
        active = self._active.get(job_id)
        if active and active.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            active.cancel.set()

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Block until the job ends (tests, CLI); returns its status."""
        active = self._active.get(job_id)
        if active:
            active.done.wait(timeout)
        return self.status(job_id)

    def record(self, job_id: str) -> dict | None:
        return self.store.get(job_id)

    def records(self, kind: str | None = None) -> list[dict]:
        return self.store.list(kind=kind)

    def forget(self, job_id: str) -> None:
        self.store.delete(job_id)

    def stored_bytes(self, job_id: str) -> int:
        path = self.store.path(job_id)
        return path.stat().st_size if path.exists() else 0

    def export_bundle(self, job_id: str) -> bytes:
        from lenscape.backend.bundles import export_bundle

        return export_bundle(self.store, job_id)

    def import_bundle(self, data: bytes) -> dict:
        from lenscape.backend.bundles import import_bundle

        return import_bundle(self.store, data)

    def shutdown(self) -> None:
        for active in self._active.values():
            active.cancel.set()
        for pool in self._pools.values():
            pool.shutdown(wait=True)


def _owner_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    return host == platform.node() and pid.isdigit() and process_alive(int(pid))


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (another user's process counts as running)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class RayRunner(LocalRunner):
    """The local runner's contract, with every job's independent pieces (ctx.map) run as Ray tasks
    on a cluster: the job itself coordinates from a thread here (its lane, dedupe by job id, progress
    as the fraction of pieces done, cancel, the store), the pieces compute there."""

    def __init__(
        self,
        store: ResultStore,
        address: str,
        device: torch.device | None = None,
        workers: int = 1,
        long_workers: int | None = None,
        ray_workers: int | None = None,
        **kwargs,
    ) -> None:
        from lenscape.backend.cluster import connect, exposed_ports, warm_up
        from lenscape.backend.pieces import RayPieces

        self.address = address
        self.cluster = connect(address, ray_workers)
        warm_up()  # workers start importing now, not when the first job comes
        # long jobs (a training run is one piece) only coordinate here: as many side by side as the
        # cluster has GPUs (or CPUs), so the seeds of a multi-seed request train in parallel
        long_workers = long_workers or max(1, min(16, int(self.cluster["gpus"] or self.cluster["cpus"])))
        super().__init__(store, device=device, workers=workers, long_workers=long_workers, **kwargs)
        self.pieces = RayPieces()
        self.device_label = (
            f"ray ({self.address}: {self.cluster['cpus']:g} CPUs, {self.cluster['gpus']:g} GPUs; driver {self.device})"
        )
        if address == "local" and (open_ports := exposed_ports()):
            self.notice = (
                f"The Ray instance started here listens on {', '.join(open_ports[:3])}"
                f"{' …' if len(open_ports) > 3 else ''}: other machines on this network can reach it "
                "(Ray 2.60 binds every interface). On a shared network, firewall these ports or leave "
                "LENSCAPE_RAY_ADDRESS unset."
            )
            log.warning(self.notice)

    def where(self) -> str:
        from lenscape.backend.cluster import cluster_summary

        c = self.cluster = cluster_summary()
        return (
            f"Ray cluster ({'started here' if self.address == 'local' else self.address}): {c['nodes']} node"
            f"{'s' if c['nodes'] != 1 else ''}, {c['cpus']:g} CPUs, {c['gpus']:g} GPUs"
        )


def open_backend(root: Path | None = None, workers: int = 1, address: str | None = None) -> Runner:
    """The runner over the workspace's store (LENSCAPE_HOME/store), with the app's job kinds
    registered: on the Ray cluster `address` names (default: LENSCAPE_RAY_ADDRESS; "" for none),
    else here."""
    from lenscape.backend.cluster import RayUnavailable, ray_address
    from lenscape.backend.kinds import register_all
    from lenscape.models.paths import home_dir, runs_dir

    register_all()
    check_writable(root)
    store = ResultStore(root or home_dir() / "store")
    sweep_leftovers(store.root, runs_dir())
    address = ray_address() if address is None else address.strip()
    if address:
        try:
            return RayRunner(store, address, workers=workers)
        except RayUnavailable as exc:  # jobs run here instead; every page's sidebar says why
            log.error("%s; jobs run on this machine", exc)
            runner = LocalRunner(store, workers=workers)
            runner.notice = f"LENSCAPE_RAY_ADDRESS={address!r} was not used: {exc}. Jobs run on this machine."
            return runner
    return LocalRunner(store, workers=workers)


def sweep_leftovers(store_root: Path, runs_root: Path) -> None:
    """What a process that died (or whose disk filled) left half-written: a run folder being
    installed (runs/.<id>.incoming-PID), a bundle being checked (store/.bundle-PID-*), a result
    being written (store/results/.PID-*.tmp). Only a dead process's, so live writes are kept."""
    patterns = (
        (runs_root, ".*.incoming-*", lambda n: n.rpartition("-")[2]),
        (store_root, ".bundle-*-*", lambda n: n.split("-")[1]),
        (store_root / "results", ".*-*.tmp", lambda n: n[1:].split("-")[0]),
    )
    for folder, pattern, pid_of in patterns:
        for path in folder.glob(pattern):
            pid = pid_of(path.name)
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def check_writable(root: Path | None = None) -> None:
    """Raise WorkspaceNotWritable, saying what to do, when the workspace cannot be written."""
    import sqlite3
    import tempfile

    from lenscape.backend.store import damaged_index, is_damaged
    from lenscape.models.paths import home_dir

    where = root or home_dir() / "store"
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, prefix=".probe-"):
            pass
        with closing(sqlite3.connect(where / "index.sqlite", timeout=5)) as con, con:
            con.execute("CREATE TABLE IF NOT EXISTS probe (x)")
            con.execute("DROP TABLE probe")
    except sqlite3.DatabaseError as exc:
        if is_damaged(exc):
            raise damaged_index(where / "index.sqlite", exc) from None
        raise _not_writable(where, exc) from None
    except OSError as exc:
        raise _not_writable(where, exc) from None


def _not_writable(where: Path, exc: Exception) -> Exception:
    from lenscape.errors import WorkspaceNotWritable

    return WorkspaceNotWritable(
        f"Lenscape cannot write to its workspace {where} ({type(exc).__name__}: {exc}). Models, results and "
        "caches live there: set LENSCAPE_HOME to a folder you can write to and restart the app."
    )
