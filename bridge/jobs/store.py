"""Durable job store: one SQLite database (WAL) in the state folder.

States: queued → running → done | failed | cancelled. Every transition is one committed
transaction, so a crash at any instant leaves each job in a state a restart can act on:
`recover()` puts jobs that were running back in the queue. The queue order is preview jobs
before render jobs, first in first out within each.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINAL_STATES = (DONE, FAILED, CANCELLED)
PRIORITY = {"preview": 0, "render": 1}
# A job that was running when the daemon died this many times is failed instead of re-run:
# it may be what kills the daemon (out of memory), and must not crash it forever.
MAX_ATTEMPTS = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    source      TEXT NOT NULL,
    output_root TEXT NOT NULL,
    state       TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    quality     TEXT NOT NULL,
    options     TEXT NOT NULL,
    origin      TEXT NOT NULL,
    reply_host  TEXT,
    reply_port  INTEGER,
    progress    REAL NOT NULL DEFAULT 0,
    stage       TEXT NOT NULL DEFAULT '',
    manifest    TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created     REAL NOT NULL,
    updated     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority, seq);
"""


@dataclass(frozen=True)
class Job:
    """An immutable snapshot of one job; the store holds the truth."""

    id: str
    source: Path
    state: str
    progress: float
    stage: str
    quality: str
    options: dict[str, str]
    manifest: Path | None
    error: str | None
    reply_to: tuple[str, int] | None
    origin: str = ""
    output_root: Path | None = None
    attempts: int = 0
    created: float = 0.0
    updated: float = 0.0
    seq: int = field(default=0, compare=False)


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], source=Path(row["source"]), state=row["state"], progress=row["progress"],
        stage=row["stage"], quality=row["quality"], options=json.loads(row["options"]),
        manifest=Path(row["manifest"]) if row["manifest"] else None, error=row["error"],
        reply_to=(row["reply_host"], row["reply_port"]) if row["reply_host"] else None,
        origin=row["origin"], output_root=Path(row["output_root"]), attempts=row["attempts"],
        created=row["created"], updated=row["updated"], seq=row["seq"],
    )


def new_job_id() -> str:
    # Short enough to type into `stembridge send /stembridge/cancel ID`, long enough to be unique.
    return uuid.uuid4().hex[:12]


class JobStore:
    """Thread-safe access to the jobs table: one connection, serialised by a lock (the
    daemon's write rate is a few rows a second; readers in other processes use WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a transition reported to a client must survive a power cut, not only a crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    def add(self, source: Path, output_root: Path, quality: str, options: dict[str, str], origin: str,
            reply_to: tuple[str, int] | None = None, job_id: str | None = None) -> Job:
        now = time.time()
        job_id = job_id or new_job_id()
        host, port = reply_to if reply_to else (None, None)
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, source, output_root, state, priority, quality, options, origin,"
                " reply_host, reply_port, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (job_id, str(source), str(output_root), QUEUED, PRIORITY[quality], quality,
                 json.dumps(options, sort_keys=True), origin, host, port, now, now),
            )
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def find(self, job_id: str | None = None, states: tuple[str, ...] = STATES) -> list[Job]:
        marks = ",".join("?" * len(states))
        query = f"SELECT * FROM jobs WHERE state IN ({marks})"
        params: list[object] = list(states)
        if job_id is not None:
            query += " AND id = ?"
            params.append(job_id)
        with self._tx() as db:
            rows = db.execute(query + " ORDER BY seq", params).fetchall()
        return [_job(r) for r in rows]

    def last_queued_by_source(self) -> dict[str, float]:
        """For every source path: when its latest job was queued."""
        with self._tx() as db:
            rows = db.execute("SELECT source, MAX(created) FROM jobs GROUP BY source").fetchall()
        return {row[0]: float(row[1]) for row in rows}

    def claim_next(self) -> Job | None:
        """Move the first queued job (preview first, then oldest) to running."""
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = ? ORDER BY priority, seq LIMIT 1", (QUEUED,)
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, progress = 0, stage = '',"
                " updated = ? WHERE id = ?", (RUNNING, time.time(), row["id"]),
            )
        return self.get(row["id"])

    def set_progress(self, job_id: str, fraction: float, stage: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET progress = ?, stage = ?, updated = ? WHERE id = ? AND state = ?",
                       (fraction, stage, time.time(), job_id, RUNNING))

    def finish(self, job_id: str, state: str, manifest: Path | None = None, error: str | None = None) -> Job:
        """Record a final state (done, failed or cancelled)."""
        assert state in FINAL_STATES, state
        progress_sql = ", progress = 1.0" if state == DONE else ""
        with self._tx() as db:
            db.execute(
                f"UPDATE jobs SET state = ?, manifest = ?, error = ?, updated = ?{progress_sql} WHERE id = ?",
                (state, str(manifest) if manifest else None, error, time.time(), job_id),
            )
        return self.get(job_id)  # type: ignore[return-value]

    def cancel_if_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; False if it is no longer queued."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state = ?, updated = ? WHERE id = ? AND state = ?",
                             (CANCELLED, time.time(), job_id, QUEUED))
        return cur.rowcount == 1

    def requeue(self, job_id: str) -> None:
        """Put a running job back at its place in the queue (shutdown while it ran)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = ?, progress = 0, stage = '', updated = ? WHERE id = ?",
                       (QUEUED, time.time(), job_id))

    def recover(self) -> tuple[list[Job], list[Job]]:
        """At start-up: jobs left running by a crash are re-queued, or failed after
        MAX_ATTEMPTS. Returns (requeued, failed)."""
        now = time.time()
        with self._tx() as db:
            rows = db.execute("SELECT id, attempts FROM jobs WHERE state = ?", (RUNNING,)).fetchall()
            for row in rows:
                if row["attempts"] >= MAX_ATTEMPTS:
                    db.execute(
                        "UPDATE jobs SET state = ?, error = ?, updated = ? WHERE id = ?",
                        (FAILED, f"the daemon stopped {row['attempts']} times while running this job; not retried",
                         now, row["id"]),
                    )
                else:
                    db.execute("UPDATE jobs SET state = ?, progress = 0, stage = '', updated = ? WHERE id = ?",
                               (QUEUED, now, row["id"]))
        jobs = [self.get(row["id"]) for row in rows]
        return [j for j in jobs if j and j.state == QUEUED], [j for j in jobs if j and j.state == FAILED]


class _Transaction:
    """`with store._tx() as db:` — the lock plus BEGIN IMMEDIATE/COMMIT (ROLLBACK on error)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()


def read_jobs(path: Path, job_id: str | None = None) -> Iterator[Job]:
    """Read jobs from another process without writing (the `status` command): the daemon
    may be running and holds the only write connection."""
    db = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=5.0)
    db.row_factory = sqlite3.Row
    try:
        query, params = "SELECT * FROM jobs", ()
        if job_id is not None:
            query, params = query + " WHERE id = ?", (job_id,)
        for row in db.execute(query + " ORDER BY seq", params).fetchall():
            yield _job(row)
    finally:
        db.close()
