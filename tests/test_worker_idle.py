"""The worker between jobs: after every idle stretch it hands free memory back (the real
glibc trim, observed through a wrapper), outside its lock, and it still takes the jobs that
arrive around and during those trims. Real SQLite job store; the runner writes a file."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest

from bridge.jobs import worker as worker_module
from bridge.jobs.events import JobEvent
from bridge.jobs.store import DONE, JobStore
from bridge.jobs.worker import Worker


def runner(job, progress, cancel) -> Path:
    manifest = Path(job.output_root) / f"{job.id}.json"
    manifest.write_text("{}")
    return manifest


@pytest.fixture
def store(tmp_path: Path):
    jobs = JobStore(tmp_path / "jobs.sqlite")
    yield jobs
    jobs.close()


def test_jobs_arriving_between_idle_trims_all_run(tmp_path, store, monkeypatch):
    trims = threading.Semaphore(0)
    real_trim = worker_module.return_freed_memory

    def counted_trim() -> None:
        real_trim()
        trims.release()

    monkeypatch.setattr(worker_module, "return_freed_memory", counted_trim)
    done: queue.Queue[str] = queue.Queue()
    worker = Worker(store, runner, lambda event: done.put(event.job.id) if event.kind == "done" else None,
                    idle_release_s=0.01)
    worker.start()
    try:
        for _ in range(5):
            assert trims.acquire(timeout=10), "no idle trim happened"
            job = store.add(tmp_path / "take.wav", tmp_path, "render", {}, "test")
            worker.notify()
            assert done.get(timeout=10) == job.id
    finally:
        assert worker.stop(drain_timeout=5)
    assert {job.state for job in store.find()} == {DONE}


def test_a_job_queued_during_a_trim_is_not_held_up_by_it(tmp_path, store, monkeypatch):
    in_trim, end_trim = threading.Event(), threading.Event()

    def slow_trim() -> None:
        in_trim.set()
        end_trim.wait(10)

    monkeypatch.setattr(worker_module, "return_freed_memory", slow_trim)
    events: queue.Queue[JobEvent] = queue.Queue()
    worker = Worker(store, runner, events.put, idle_release_s=0.01)
    worker.start()
    try:
        assert in_trim.wait(10)
        job = store.add(tmp_path / "take.wav", tmp_path, "render", {}, "test")
        notifier = threading.Thread(target=worker.notify)
        notifier.start()
        notifier.join(5)
        # The trim runs outside the worker's lock, so queuing a job never waits for it.
        assert not notifier.is_alive(), "notify() waited for the trim"
        end_trim.set()
        while (event := events.get(timeout=10)).kind != "done":
            pass
        assert event.job.id == job.id
    finally:
        end_trim.set()
        assert worker.stop(drain_timeout=5)
