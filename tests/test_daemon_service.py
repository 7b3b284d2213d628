"""JobService in-process with the real separator and tiny model: validation, events, cancel,
drain on stop, cleanup of an interrupted job's temporary files."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.errors import ConfigError, InputError
from bridge.jobs.events import JobEvent
from bridge.jobs.service import JobService, clean_partial_outputs
from bridge.jobs.store import CANCELLED, DONE, FAILED, QUEUED, JobStore


@pytest.fixture
def service(tmp_path: Path, model_repo: Path):
    watch, sources = tmp_path / "watch", tmp_path / "sources"
    watch.mkdir()
    sources.mkdir()
    config = load_config(env={}, flags={
        "paths.watch": ([watch], "--watch"), "paths.allowed_roots": ([sources], "test"),
        "paths.output": (tmp_path / "stems", "--output"), "paths.state_dir": (tmp_path / "state", "test"),
        "engine.model_repo": (model_repo, "--model-repo"), "engine.device": ("cpu", "--device"),
        "engine.cache_dir": (tmp_path / "cache", "--cache-dir"), "engine.quality": ("preview", "--quality"),
    })
    config.paths_state_dir.mkdir()
    store = JobStore(config.sqlite_path)
    svc = JobService(config, store)
    svc.recover()
    events: queue.Queue[JobEvent] = queue.Queue()
    svc.add_listener(events.put)
    svc.events = events  # type: ignore[attr-defined]
    yield svc
    svc.stop(drain_timeout=0)
    store.close()


def next_event(service: JobService, kind: str, job_id: str, timeout: float = 60.0) -> JobEvent:
    while True:
        event = service.events.get(timeout=timeout)  # type: ignore[attr-defined]
        if event.kind == kind and event.job.id == job_id:
            return event


def sources(service: JobService) -> Path:
    return service.config.paths_allowed_roots[0]


def test_submit_rejects_bad_paths_with_the_reason(service: JobService, tmp_path: Path, make_clip) -> None:
    outside = make_clip("outside.wav", seconds=0.5, folder=tmp_path / "elsewhere")
    with pytest.raises(InputError, match="outside the allowed folders"):
        service.submit(outside, {}, "test")
    sneaky = sources(service) / ".." / "elsewhere" / "outside.wav"
    with pytest.raises(InputError, match="outside the allowed folders"):
        service.submit(sneaky, {}, "test")
    (sources(service) / "link.wav").symlink_to(outside)
    with pytest.raises(InputError, match="outside the allowed folders"):
        service.submit(sources(service) / "link.wav", {}, "test")
    with pytest.raises(InputError, match="no such file"):
        service.submit(sources(service) / "missing.wav", {}, "test")
    with pytest.raises(InputError, match="must be absolute"):
        service.submit(Path("clip.wav"), {}, "test")
    with pytest.raises(InputError, match="not a file"):
        service.submit(sources(service), {}, "test")
    assert service.jobs() == []


def test_submit_rejects_bad_options(service: JobService, make_clip) -> None:
    clip = make_clip("a.wav", seconds=0.5, folder=sources(service))
    with pytest.raises(ConfigError, match="quality"):
        service.submit(clip, {"quality": "ultra"}, "test")
    with pytest.raises(ConfigError, match="colour"):
        service.submit(clip, {"colour": "red"}, "test")
    assert service.jobs() == []


def test_job_runs_to_done_with_events_in_order(service: JobService, make_clip) -> None:
    clip = make_clip("a.wav", seconds=1.0, folder=sources(service))
    service.start()
    job = service.submit(clip, {"quality": "preview"}, "test", reply_to=("127.0.0.1", 9999))
    assert job.state == QUEUED and job.quality == "preview" and job.reply_to == ("127.0.0.1", 9999)
    kinds = []
    while True:
        event = service.events.get(timeout=60)  # type: ignore[attr-defined]
        kinds.append(event.kind)
        if event.kind in ("done", "error"):
            break
    assert kinds[0] == "queued" and kinds[-1] == "done" and "progress" in kinds, kinds
    done = service.jobs(job.id)[0]
    assert done.state == DONE and done.progress == 1.0
    assert done.manifest is not None and done.manifest.is_file()
    assert event.job.manifest == done.manifest


def test_bad_audio_fails_the_job_and_the_next_one_still_runs(service: JobService, make_clip) -> None:
    garbage = sources(service) / "garbage.wav"
    garbage.write_bytes(b"RIFF....WAVEfmt not really audio" * 10)
    good = make_clip("good.wav", seconds=1.0, folder=sources(service))
    service.start()
    bad_job = service.submit(garbage, {}, "test")
    good_job = service.submit(good, {}, "test")
    error = next_event(service, "error", bad_job.id)
    assert "garbage.wav" in error.message
    assert service.jobs(bad_job.id)[0].state == FAILED
    next_event(service, "done", good_job.id)


def test_cancel_queued_and_running(service: JobService, make_clip) -> None:
    long_clip = make_clip("long.wav", seconds=120.0, folder=sources(service), seed=1)
    short = make_clip("short.wav", seconds=1.0, folder=sources(service), seed=2)
    service.start()
    running = service.submit(long_clip, {}, "test")
    queued = service.submit(short, {}, "test")

    assert service.cancel(queued.id).state == CANCELLED
    next_event(service, "cancelled", queued.id, timeout=5)
    next_event(service, "progress", running.id)
    service.cancel(running.id)
    event = next_event(service, "cancelled", running.id, timeout=10)
    assert event.job.state == CANCELLED
    assert not (service.config.paths_output / "long").exists()
    assert [p for p in service.config.paths_output.rglob("*") if p.is_file()] == []

    with pytest.raises(ConfigError, match="already cancelled"):
        service.cancel(running.id)
    with pytest.raises(ConfigError, match="no job with id 'nope'"):
        service.cancel("nope")


def test_stop_requeues_a_job_that_does_not_finish_in_time(service: JobService, make_clip) -> None:
    long_clip = make_clip("long.wav", seconds=120.0, folder=sources(service), seed=1)
    service.start()
    job = service.submit(long_clip, {}, "test")
    next_event(service, "progress", job.id)
    assert service.stop(drain_timeout=0.1) is True
    assert service.jobs(job.id)[0].state == QUEUED


def test_a_failing_listener_does_not_stop_the_worker(service: JobService, make_clip) -> None:
    def broken(event: JobEvent) -> None:
        raise RuntimeError("listener bug")

    service.add_listener(broken)
    service.start()
    job = service.submit(make_clip("a.wav", seconds=1.0, folder=sources(service)), {}, "test")
    next_event(service, "done", job.id)


def test_clean_partial_outputs_removes_only_that_jobs_temp_files(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    try:
        job = store.add(Path("/in/a.wav"), tmp_path / "out", "render", {}, "test")
        folder = tmp_path / "out" / "a"
        folder.mkdir(parents=True)
        mine = folder / f".a_vocals.wav.stembridge-tmp-{job.id}"
        other = folder / ".b_vocals.wav.stembridge-tmp-0123456789ab"
        kept = folder / "a_drums.wav"
        for path in (mine, other, kept):
            path.write_bytes(b"x")
        assert clean_partial_outputs(job) == 1
        assert not mine.exists() and other.exists() and kept.exists()
    finally:
        store.close()


def test_listener_is_called_from_the_worker_thread(service: JobService, make_clip) -> None:
    threads: list[str] = []
    service.add_listener(lambda event: threads.append(threading.current_thread().name))
    service.start()
    job = service.submit(make_clip("a.wav", seconds=1.0, folder=sources(service)), {}, "test")
    next_event(service, "done", job.id)
    assert threads[0] == threading.current_thread().name  # queued: the submitter's thread
    assert threads[-1] == "stembridge-worker"


def test_queued_is_announced_before_the_worker_can_start_that_job(service: JobService, make_clip) -> None:
    """A DAW's reply to /stembridge/separate is the `queued` event; the worker, finishing
    another job at that moment, must not start the new one (and report its progress) first."""
    first_clip = make_clip("first.wav", seconds=1.0, folder=sources(service), seed=1)
    second_clip = make_clip("second.wav", seconds=1.0, folder=sources(service), seed=2)
    first_running, second_added, second_started = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def hold(event: JobEvent) -> None:
        name = event.job.source.name
        if name == "first.wav" and event.kind == "progress" and not first_running.is_set():
            first_running.set()
            second_added.wait(10)  # the worker finishes the first job only once the second is in the store
        elif name == "second.wav" and event.kind == "queued":
            second_added.set()
            # Long enough for the worker to finish the first job and start this one, if it could.
            second_started.wait(2.0)
            order.append("queued")
        elif name == "second.wav" and event.kind != "queued":
            order.append(event.kind)
            second_started.set()

    service.add_listener(hold)
    service.start()
    service.submit(first_clip, {}, "test")
    assert first_running.wait(60)
    second = service.submit(second_clip, {}, "test")
    next_event(service, "done", second.id)
    assert order[0] == "queued" and order[-1] == "done", order
