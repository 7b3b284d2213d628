"""The SQLite job store: order, transitions, crash recovery, reading from another process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.jobs.store import (CANCELLED, DONE, FAILED, MAX_ATTEMPTS, QUEUED, RUNNING, JobStore,
                               read_jobs)


@pytest.fixture
def store(tmp_path: Path):
    s = JobStore(tmp_path / "jobs.sqlite")
    yield s
    s.close()


def add(store: JobStore, name: str, quality: str = "render", **kw):
    return store.add(Path(f"/in/{name}.wav"), Path("/out"), quality, {"quality": quality}, "test", **kw)


def test_new_job_is_queued_with_its_fields(store: JobStore) -> None:
    job = add(store, "a", reply_to=("127.0.0.1", 9001))
    assert job.state == QUEUED and job.progress == 0.0
    assert job.source == Path("/in/a.wav") and job.output_root == Path("/out")
    assert job.options == {"quality": "render"} and job.reply_to == ("127.0.0.1", 9001)
    assert job.manifest is None and job.error is None and job.origin == "test"
    assert store.get(job.id) == job
    assert store.get("nope") is None


def test_preview_jobs_go_first_then_fifo(store: JobStore) -> None:
    r1, r2 = add(store, "r1"), add(store, "r2")
    p1, p2 = add(store, "p1", "preview"), add(store, "p2", "preview")
    order = [store.claim_next().id for _ in range(4)]
    assert order == [p1.id, p2.id, r1.id, r2.id]
    assert store.claim_next() is None
    assert {j.state for j in store.find()} == {RUNNING}


def test_transitions_record_result(store: JobStore) -> None:
    a, b, c = add(store, "a"), add(store, "b"), add(store, "c")
    store.claim_next()
    store.set_progress(a.id, 0.5, "separate")
    assert (store.get(a.id).progress, store.get(a.id).stage) == (0.5, "separate")
    done = store.finish(a.id, DONE, manifest=Path("/out/a/stems.json"))
    assert done.state == DONE and done.progress == 1.0 and done.manifest == Path("/out/a/stems.json")
    store.claim_next()
    failed = store.finish(b.id, FAILED, error="b.wav: not audio")
    assert failed.state == FAILED and failed.error == "b.wav: not audio"
    assert store.cancel_if_queued(c.id) is True
    assert store.get(c.id).state == CANCELLED
    assert store.cancel_if_queued(a.id) is False  # finished jobs stay as they are
    assert store.claim_next() is None


def test_jobs_survive_reopening(tmp_path: Path) -> None:
    first = JobStore(tmp_path / "jobs.sqlite")
    job = add(first, "a")
    first.close()
    again = JobStore(tmp_path / "jobs.sqlite")
    try:
        assert again.get(job.id) == job
    finally:
        again.close()


def test_recover_requeues_running_jobs_in_their_place(store: JobStore) -> None:
    a, b = add(store, "a"), add(store, "b")
    store.claim_next()
    store.set_progress(a.id, 0.7, "separate")
    requeued, failed = store.recover()
    assert [j.id for j in requeued] == [a.id] and failed == []
    assert store.get(a.id).state == QUEUED and store.get(a.id).progress == 0.0
    assert store.claim_next().id == a.id  # still ahead of b
    assert store.get(b.id).state == QUEUED


def test_job_that_keeps_killing_the_daemon_is_failed(store: JobStore) -> None:
    job = add(store, "a")
    for _ in range(MAX_ATTEMPTS - 1):
        assert store.claim_next().id == job.id
        requeued, _ = store.recover()
        assert [j.id for j in requeued] == [job.id]
    store.claim_next()
    requeued, failed = store.recover()
    assert requeued == [] and [j.id for j in failed] == [job.id]
    assert store.get(job.id).state == FAILED
    assert f"stopped {MAX_ATTEMPTS} times" in store.get(job.id).error


def test_requeue_after_drain(store: JobStore) -> None:
    job = add(store, "a")
    store.claim_next()
    store.requeue(job.id)
    assert store.get(job.id).state == QUEUED


def test_store_uses_wal(store: JobStore) -> None:
    db = sqlite3.connect(store.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_another_process_reads_while_the_store_is_open(store: JobStore) -> None:
    job = add(store, "a")
    store.claim_next()
    code = (
        "import sys; from pathlib import Path; from bridge.jobs.store import read_jobs;"
        "print(*[j.id + ':' + j.state for j in read_jobs(Path(sys.argv[1]))])"
    )
    out = subprocess.run([sys.executable, "-c", code, str(store.path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [f"{job.id}:running"]


def test_read_only_reader_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    s = JobStore(path)
    job = add(s, "a")
    s.close()
    assert [j.id for j in read_jobs(path)] == [job.id]
    assert [j.id for j in read_jobs(path, "nope")] == []
