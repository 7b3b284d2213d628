"""The one model worker: takes jobs from the store one at a time (the accelerator runs one
separation at a time) and records how each ended. The separator it calls keeps the model warm
between jobs; cancellation reaches the running separation through a threading.Event."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from bridge.allocator import return_freed_memory
from bridge.errors import Cancelled, StemBridgeError
from bridge.jobs.events import JobEvent
from bridge.jobs.store import CANCELLED, DONE, FAILED, Job, JobStore

log = logging.getLogger("bridge.worker")

Progress = Callable[[float, str], None]
# Runs one job to its stems.json path; raises Cancelled when `cancel` is set.
Runner = Callable[[Job, Progress, threading.Event], Path]

# Progress is reported on every stage change, else at most this often (seconds): enough for a
# progress bar, few enough writes and UDP packets.
PROGRESS_INTERVAL = 0.25
# Separation memory stays with the process between jobs (bridge/allocator.py: reusing it
# saves refaulting ~1.5 GB per segment); after each stretch this long without a job, the
# free part goes back (previews' too).
IDLE_RELEASE_S = 60.0


class Worker:
    def __init__(self, store: JobStore, runner: Runner, emit: Callable[[JobEvent], None],
                 warm: Callable[[], None] | None = None, idle_release_s: float = IDLE_RELEASE_S) -> None:
        self._store = store
        self._idle_release_s = idle_release_s
        self._runner = runner
        self._emit = emit
        self._warm = warm
        self._warming = False
        self._cond = threading.Condition()
        self._stopping = False
        self._current: Job | None = None
        self._cancel = threading.Event()
        self._cancel_reason = ""
        # daemon=True only so that a separation stuck past every timeout cannot keep the
        # process alive; normal shutdown joins it (see stop()).
        self._thread = threading.Thread(target=self._loop, name="stembridge-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """A job was queued."""
        with self._cond:
            self._cond.notify_all()

    @contextlib.contextmanager
    def admitting(self) -> Iterator[None]:
        """No job is claimed while this is held; the worker is woken when it ends.

        A job added and announced inside it is announced first: the worker, just done with
        another job, would otherwise start it and report progress before its `queued`."""
        with self._cond:
            yield
            self._cond.notify_all()

    @property
    def current(self) -> Job | None:
        return self._current

    def cancel(self, job_id: str) -> bool:
        """Ask the running job to stop; False if `job_id` is not the running job."""
        with self._cond:
            if self._current is None or self._current.id != job_id:
                return False
            self._cancel_reason = self._cancel_reason or "cancel"
            self._cancel.set()
            return True

    def stop(self, drain_timeout: float, cancel_grace: float = 10.0) -> bool:
        """Take no new job; let the running one finish within `drain_timeout`, else stop it
        and put it back in the queue. True if the thread ended."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if not self._thread.is_alive():
            return True
        if self._warming:
            # Loading the model cannot be interrupted and holds no job: do not wait for it
            # (the thread is a daemon thread and takes no job once it sees _stopping).
            return False
        self._thread.join(drain_timeout)
        if self._thread.is_alive():
            with self._cond:
                if self._current is not None:
                    log.info("job %s did not finish within %.0f s; re-queued for the next start",
                             self._current.id, drain_timeout)
                    self._cancel_reason = "shutdown"
                    self._cancel.set()
            self._thread.join(cancel_grace)
        if self._thread.is_alive():
            log.warning("the running separation ignored cancellation; it will be re-run at the next start")
            return False
        return True

    def _next(self) -> Job | None:
        with self._cond:
            while not self._stopping:
                job = self._store.claim_next()
                if job is not None:
                    self._current = job
                    self._cancel = threading.Event()
                    self._cancel_reason = ""
                    return job
                # Every idle period, not only the first: previews render while no job runs.
                if not self._cond.wait(self._idle_release_s):
                    # Outside the lock: a submit or cancel arriving meanwhile need not wait
                    # for the trim; the loop then looks at the store again.
                    self._cond.release()
                    try:
                        return_freed_memory()
                    finally:
                        self._cond.acquire()
            return None

    def _loop(self) -> None:
        if self._warm is not None:
            self._warming = True
            try:
                self._warm()
            except Exception as exc:  # the first job reports the real problem with its path
                log.warning("could not preload the model: %s", exc)
            finally:
                self._warming = False
        while (job := self._next()) is not None:
            event = None
            try:
                event = self._run(job)
            except Exception:  # the store itself failed: log it, keep serving
                log.exception("job %s: could not record its result", job.id)
            finally:
                with self._cond:
                    self._current = None
                    self._cond.notify_all()
            # Announced only once the job is no longer current, so whoever hears "done" or
            # "cancelled" and acts on it (cancels again, asks for status) sees the final state.
            if event is not None:
                self._emit(event)

    def _run(self, job: Job) -> JobEvent | None:
        """Run one job and record its end; returns the event announcing it."""
        log.info("job %s started: %s (%s)", job.id, job.source, job.quality)
        started = time.monotonic()
        reporter = _ProgressReporter(self._store, self._emit, job)
        try:
            manifest = self._runner(job, reporter, self._cancel)
        except Cancelled:
            if self._cancel_reason == "shutdown":
                self._store.requeue(job.id)
                return None
            cancelled = self._store.finish(job.id, CANCELLED)
            log.info("job %s cancelled", job.id)
            return JobEvent("cancelled", cancelled)
        except StemBridgeError as exc:
            failed = self._store.finish(job.id, FAILED, error=str(exc))
            log.info("job %s failed: %s", job.id, exc)
            return JobEvent("error", failed, message=str(exc))
        except Exception as exc:  # a bug must fail one job, not stop the daemon
            log.exception("job %s failed unexpectedly", job.id)
            message = f"internal error: {type(exc).__name__}: {exc}"
            failed = self._store.finish(job.id, FAILED, error=message)
            return JobEvent("error", failed, message=message)
        done = self._store.finish(job.id, DONE, manifest=manifest)
        log.info("job %s done in %.2f s: %s", job.id, time.monotonic() - started, manifest)
        return JobEvent("done", done, fraction=1.0, stage="done")


class _ProgressReporter:
    """The progress callback handed to the separator: throttled store writes and events."""

    def __init__(self, store: JobStore, emit: Callable[[JobEvent], None], job: Job) -> None:
        self._store = store
        self._emit = emit
        self._job = job
        self._stage = ""
        self._last = 0.0

    def __call__(self, fraction: float, stage: str) -> None:
        now = time.monotonic()
        if stage == self._stage and now - self._last < PROGRESS_INTERVAL:
            return
        self._stage, self._last = stage, now
        fraction = min(max(float(fraction), 0.0), 1.0)
        self._store.set_progress(self._job.id, fraction, stage)
        self._emit(JobEvent("progress", self._job, fraction=fraction, stage=stage))
