"""The result store: result files on disk (atomic write + sha256) indexed in SQLite.

An entry whose file is missing or fails its checksum is dropped, so the job computes again
instead of returning something untrustworthy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, NoReturn

from lenscape.backend.codec import decode, encode
from lenscape.errors import WorkspaceDamaged, WorkspaceNotWritable

COLUMNS = (
    "id",
    "kind",
    "label",
    "config",
    "fingerprints",
    "data",
    "status",
    "message",
    "created",
    "started",
    "finished",
    "seconds",
    "device",
    "versions",
    "error",
    "checksum",
    "owner",
    "code",
)


class CorruptResult(Exception):
    """A stored result is missing, fails its checksum or cannot be decoded; it has been dropped."""


def is_damaged(exc: sqlite3.DatabaseError) -> bool:
    """A file that is not (or no longer) an SQLite database, as opposed to one we may not write."""
    return not isinstance(exc, sqlite3.OperationalError) or "not a database" in str(exc)


def damaged_index(db: Path, exc: Exception) -> WorkspaceDamaged:
    return WorkspaceDamaged(
        f"Lenscape's job index {db} is damaged ({exc}). Move it aside (for example to "
        "index.sqlite.damaged) and restart the app: models are kept, and results are computed "
        "again when asked for."
    )


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "results").mkdir(parents=True, exist_ok=True)
        self.db = self.root / "index.sqlite"
        try:
            with closing(self._connect()) as con, con:
                con.execute("PRAGMA journal_mode=WAL")
                cols = ", ".join(f"{c} {'TEXT PRIMARY KEY' if c == 'id' else ''}" for c in COLUMNS)
                con.execute(f"CREATE TABLE IF NOT EXISTS jobs ({cols})")
                have = {r["name"] for r in con.execute("PRAGMA table_info(jobs)")}
                for c in COLUMNS:  # a store from before a column was added
                    if c not in have:
                        con.execute(f"ALTER TABLE jobs ADD COLUMN {c}")
        except sqlite3.DatabaseError as exc:
            if is_damaged(exc):
                raise damaged_index(self.db, exc) from None
            raise

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Store errors as a user can act on them: a damaged index, or one that takes no writes."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if is_damaged(exc):
                raise damaged_index(self.db, exc) from None
            raise WorkspaceNotWritable(
                f"Lenscape cannot write its job index {self.db} ({exc}): is the workspace's "
                "disk full? Free some space and try again."
            ) from None

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db, timeout=30)
        con.row_factory = sqlite3.Row
        return con

    def path(self, job_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", job_id or ""):  # a job id is a name, never a path
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / "results" / f"{job_id}.npz"

    def upsert(self, job_id: str, **fields: Any) -> None:
        fields = {k: json.dumps(v) if isinstance(v, (dict, list, tuple)) else v for k, v in fields.items()}
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown store columns {sorted(unknown)}")
        names = ["id", *fields]
        sets = ", ".join(f"{k}=excluded.{k}" for k in fields) or "id=id"
        with closing(self._connect()) as con, con:
            con.execute(
                f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
                f"ON CONFLICT(id) DO UPDATE SET {sets}",
                [job_id, *fields.values()],
            )

    def get(self, job_id: str) -> dict | None:
        with closing(self._connect()) as con:
            row = con.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return dict(row) if row else None

    def list(self, kind: str | None = None) -> list[dict]:
        query = "SELECT * FROM jobs"
        args: tuple[str, ...] = ()
        if kind:
            query, args = query + " WHERE kind=?", (kind,)
        with closing(self._connect()) as con:
            return [dict(r) for r in con.execute(query + " ORDER BY created DESC", args)]

    def put_result(self, job_id: str, result: Any) -> str:
        return self.put_raw(job_id, encode(result))

    def put_raw(self, job_id: str, raw: bytes, **fields: Any) -> str:
        """Store encoded result bytes as they are (atomically: a reader sees the old file or the new
        one), then index them with `fields` in one write; nothing is left behind if either fails."""
        digest = hashlib.sha256(raw).hexdigest()
        fd, tmp = tempfile.mkstemp(dir=self.root / "results", prefix=f".{os.getpid()}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(job_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:
            self.upsert(job_id, checksum=digest, **fields)
        except BaseException:
            self.path(job_id).unlink(missing_ok=True)
            raise
        return digest

    def has_valid_result(self, job_id: str) -> bool:
        try:
            self._verified_bytes(job_id)
            return True
        except CorruptResult:
            return False

    def get_result(self, job_id: str) -> Any:
        """The stored result; CorruptResult (and the entry dropped) if it is missing, fails its
        checksum, or cannot be decoded by today's code (a config it now refuses, a type it lost)."""
        raw = self._verified_bytes(job_id)
        try:
            return decode(raw)
        except Exception as exc:
            self._drop(job_id, f"the stored result could not be read back ({type(exc).__name__}: {exc})")

    def _verified_bytes(self, job_id: str) -> bytes:
        row = self.get(job_id)
        path = self.path(job_id)
        if not row or row["status"] != "DONE" or not path.exists():
            self._drop(job_id, "the result file is missing")
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != row["checksum"]:
            self._drop(job_id, "the result file failed its checksum")
        return raw

    def _drop(self, job_id: str, why: str) -> NoReturn:
        self.path(job_id).unlink(missing_ok=True)
        if self.get(job_id):
            self.upsert(job_id, status="CORRUPT", error=why, finished=time.time())
        raise CorruptResult(f"job {job_id}: {why}; it will be computed again")

    def delete(self, job_id: str) -> None:
        self.path(job_id).unlink(missing_ok=True)
        with closing(self._connect()) as con, con:
            con.execute("DELETE FROM jobs WHERE id=?", (job_id,))
