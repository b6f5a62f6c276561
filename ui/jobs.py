"""The job panel: progress bars with cancel while jobs run, results (or errors) when they end.

It polls in a fragment, so only the panel reruns while a job is going; a refresh or a second
tab finds the same job ids (they are keys of the work, not of the session) and re-attaches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from lenscape.backend.jobs import Job, JobCancelled, JobFailed, JobStatus, NotReady
from lenscape.errors import InvalidInputError
from lenscape.ui.common import backend, plain

RUNNING = (JobStatus.QUEUED, JobStatus.RUNNING)


def job_ids(state_key: str) -> list[str]:
    ids = st.session_state.get(state_key) or []
    return [ids] if isinstance(ids, str) else list(ids)


def _watcher(state_key: str) -> str:
    """Who waits on the jobs under `state_key`: this browser session's widget."""
    return f"{session_id()}:{state_key}"


def _cancelled() -> set[str]:
    """Ids of the jobs this tab's user cancelled: the page does not submit them again by itself."""
    return st.session_state.setdefault("_lenscape.cancelled", set())


def cancel(runner, job_id: str) -> None:
    """Cancel a job (for every tab that waits on it: theirs then show it cancelled, with Retry); this
    tab does not submit it again by itself."""
    _cancelled().add(job_id)
    runner.cancel(job_id)


def session_id() -> str:
    """This browser tab's id (a watcher of the jobs it submits is "<id>:<widget>")."""
    import uuid

    return st.session_state.setdefault("_lenscape.session", uuid.uuid4().hex)


def submit(state_key: str, jobs: Job | list[Job], keep_replaced: bool = False) -> list[str]:
    """Submit `jobs` for the widget under `state_key` and remember their ids there. The jobs they
    replace are released: cancelled unless another session waits on them too, or `keep_replaced`
    (minutes of work a user started on purpose, like training)."""
    runner, watcher = backend(), _watcher(state_key)
    stopped = _cancelled()
    try:  # a job this tab cancelled stays cancelled on reruns, until its Retry
        ids = [
            j.key() if j.key() in stopped else runner.submit(j, watcher=watcher)
            for j in ([jobs] if isinstance(jobs, Job) else jobs)
        ]
    except InvalidInputError as exc:  # over the server's limits, a workspace that takes no writes
        st.error(plain(exc))
        st.stop()
    if not keep_replaced:
        for old in set(job_ids(state_key)) - set(ids):
            runner.release(old, watcher)
    st.session_state[state_key] = ids
    return ids


def predictions(lm, state_key: str, split: str = "test"):
    """(N, C) probabilities of `lm` over a split from the "predict" job, or None while it runs (its
    progress bar is drawn)."""
    from lenscape.backend.jobs import job, ref
    from lenscape.backend.saliency_tasks import PredictConfig

    r = ref(lm)
    (job_id,) = submit(
        state_key, job("predict", PredictConfig(model=r, split=split), (r,), f"{split} predictions of {lm.name}")
    )
    if backend().status(job_id) != JobStatus.DONE:
        job_panel(state_key, lambda _: None)
        return None
    return backend().result(job_id)


def any_running(state_key: str) -> bool:
    runner = backend()
    return any(_status(runner, i) in RUNNING for i in job_ids(state_key))


def _status(runner, job_id: str) -> JobStatus | None:
    try:
        return runner.status(job_id)
    except KeyError:
        return None


def failed(runner, job_id: str, message: str, state_key: str, level: str = "error") -> None:
    """A failed (or cancelled) job's message, once, with a Retry button: the job runs again only when asked."""
    cols = st.columns([6, 1])
    getattr(cols[0], level)(message)
    if cols[1].button("Retry", key=f"retry.{job_id}", icon=":material/refresh:"):
        _cancelled().discard(job_id)
        runner.retry(job_id, watcher=_watcher(state_key))
        st.rerun()


def imported(runner, job_id: str, label: str) -> None:
    """Say that a result came from a bundle (computed elsewhere: its numbers are the exporter's
    claim), with a button that computes it here instead."""
    cols = st.columns([5, 2])
    cols[0].caption(f"{label}: imported from a reproducibility bundle, computed elsewhere and not checked here.")
    if cols[1].button("Compute here", key=f"recompute.{job_id}", icon=":material/refresh:"):
        runner.forget(job_id)
        st.rerun()


def job_panel(state_key: str, show: Callable[[list[Any]], None], poll_seconds: float = 1.0) -> None:
    """Draw the jobs under `state_key`; once all are done, call `show(results)`."""
    if not job_ids(state_key):
        return

    @st.fragment(run_every=poll_seconds if any_running(state_key) else None)
    def panel() -> None:
        runner, ids = backend(), job_ids(state_key)
        results, running = [], False
        for job_id in ids:
            status = _status(runner, job_id)
            row = runner.record(job_id) or {}
            label = plain(row.get("label") or job_id)  # names models: shown as Markdown
            if status in RUNNING:
                running = True
                prog = runner.progress(job_id)
                cols = st.columns([6, 1])
                cols[0].progress(prog.fraction, text=f"{label} — {prog.message or status.value.lower()}")
                if cols[1].button("Cancel", key=f"cancel.{job_id}"):
                    cancel(runner, job_id)
                continue
            try:
                results.append(runner.result(job_id))
                if row.get("owner") == "bundle":
                    imported(runner, job_id, label)
            except NotReady:  # its stored result could not be read back: computing it again
                running = True
                st.progress(0.0, text=f"{label} — computing again (the stored result could not be read)")
                continue
            except JobCancelled:
                failed(runner, job_id, f"{label}: cancelled; nothing was kept.", state_key, level="warning")
            except JobFailed as exc:
                failed(runner, job_id, f"{label} failed: {plain(exc)}", state_key)
            except KeyError:
                st.warning(f"{label}: no such job any more.")
        if not running and st.session_state.get(f"{state_key}.polling"):
            st.session_state[f"{state_key}.polling"] = False
            st.rerun()  # the whole page: the job's result may change what the page shows
        st.session_state[f"{state_key}.polling"] = running
        if not running and results:
            show(results)

    panel()


def my_jobs_section() -> None:
    """This browser tab's queued and running jobs, each with Cancel. Polls while any runs."""

    @st.fragment(run_every=2.0 if backend().watched_by(session_id()) else None)
    def section() -> None:
        _my_jobs()

    section()


def _my_jobs() -> None:
    runner = backend()
    session = session_id()
    mine = runner.watched_by(session)
    if not mine:
        st.caption("No job of yours is running.")
        return
    for job_id in mine:
        row = runner.record(job_id) or {}
        prog = runner.progress(job_id)
        cols = st.columns([6, 1])
        cols[0].progress(prog.fraction, text=f"{plain(row.get('label') or job_id)} — {plain(prog.message or 'queued')}")
        if cols[1].button("Cancel", key=f"runs.cancel.{job_id}"):
            cancel(runner, job_id)
            st.rerun()


# ---------------------------------------------------------------------------------------------
# Reopening a stored result in its view (the Runs page's "Reopen in its view": ?job=<id>)


def linked_job(kinds: str | tuple[str, ...]) -> tuple[str, Any] | None:
    """(job id, its config) when this page was opened with ?job=<id> naming a stored job of one of
    `kinds`, the first time this session sees that id; else None. The config is rebuilt through
    its own checks (a link is outside input). The caller sets its widgets from the config before
    drawing them and shows the job with `attach`, so nothing is computed again."""
    import json

    from lenscape.backend.bundle_checks import rebuild

    job_id = st.query_params.get("job")
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    if not job_id or st.session_state.get("_reopened") == job_id:
        return None
    row = backend().record(job_id)
    if row is None or row.get("kind") not in kinds:
        return None
    st.session_state["_reopened"] = job_id
    try:
        config = rebuild(json.loads(row.get("config") or "null"))
    except (InvalidInputError, ValueError) as exc:
        st.warning(f"The stored job's settings could not be read back ({plain(exc)}); showing the page as it is.")
        return None
    return job_id, config


def attach(state_key: str, ids: str | list[str]) -> None:
    """Show stored jobs in the panel under `state_key` as if this session had submitted them (a
    job shown is kept when the section submits it again: same widgets, same id)."""
    st.session_state[state_key] = [ids] if isinstance(ids, str) else list(ids)


def reopen(state_key: str, kinds: str | tuple[str, ...], widgets: Callable[[Any], dict[str, Any]]) -> Any | None:
    """At the top of a section, before its widgets: when the page was opened on a stored job of
    `kinds` (linked_job), set the widgets to `widgets(config)` ({widget key: value}) and show the
    stored result in the panel under `state_key`. Returns the config, or None."""
    hit = linked_job(kinds)
    if hit is None:
        return None
    job_id, config = hit
    for key, value in widgets(config).items():
        st.session_state[key] = value
    attach(state_key, job_id)
    # from here on the widgets' own parameters hold the view: a reload after a change must not bring
    # the stored job's settings back
    if "job" in st.query_params:
        del st.query_params["job"]
    return config
