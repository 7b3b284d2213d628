"""JobService: the one door through which jobs enter, are cancelled and are observed.

The watcher and the OSC server call `submit`/`cancel`/`jobs`; the OSC notifier registers as a
listener. Requests are validated here, once, whatever their origin: the path must name an
existing file inside the allowed roots, the options must be valid separation options.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from bridge.atomic import TEMP_MARKER
from bridge.config import Config
from bridge.errors import ConfigError, InputError
from bridge.jobs.events import JobEvent
from bridge.jobs.store import QUEUED, RUNNING, Job, JobStore
from bridge.jobs.worker import Progress, Runner, Worker

__all__ = ["Job", "JobEvent", "JobService", "clean_partial_outputs"]

log = logging.getLogger("bridge.jobs")

Listener = Callable[[JobEvent], None]


class JobService:
    def __init__(self, config: Config, store: JobStore, runner: Runner | None = None) -> None:
        self.config = config
        self.store = store
        self.roots = tuple(Path(p).resolve() for p in (*config.paths_watch, *config.paths_allowed_roots))
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()
        if runner is None:
            runner = SeparatorRunner(config)
        self._worker = Worker(store, runner, self._emit, warm=getattr(runner, "warm", None))

    # -- lifecycle (the daemon calls these) ------------------------------------------------
    def recover(self) -> None:
        """Put back in the queue what a crash left running, minus its temporary files."""
        requeued, failed = self.store.recover()
        for job in requeued:
            removed = clean_partial_outputs(job)
            log.info("job %s was interrupted; re-queued%s", job.id,
                     f" ({removed} partial files removed)" if removed else "")
        for job in failed:
            clean_partial_outputs(job)
            log.warning("job %s: %s", job.id, job.error)

    def start(self) -> None:
        """Start the worker: queued jobs (recovered ones first, in their places) begin."""
        self._worker.start()

    def stop(self, drain_timeout: float) -> bool:
        return self._worker.stop(drain_timeout)

    # -- the interface the watcher and the OSC server use ------------------------------------
    def submit(self, source: Path, options: dict[str, str], origin: str,
               reply_to: tuple[str, int] | None = None) -> Job:
        """Validate and queue a separation. Raises InputError (path) or ConfigError (options)."""
        resolved = self._check_source(Path(source))
        options = dict(options)
        request = self._request(resolved, options)
        with self._worker.admitting():
            job = self.store.add(resolved, self.config.paths_output, request.quality, options, origin, reply_to)
            log.info("job %s queued (%s): %s", job.id, origin, resolved)
            self._emit(JobEvent("queued", job))
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or ask the running one to stop. The `cancelled`
        event follows when it has stopped (a running job may still end as done if it was
        already publishing). Unknown or finished job → ConfigError."""
        job = self.store.get(job_id)
        if job is None:
            raise ConfigError(f"no job with id {job_id!r}")
        if self.store.cancel_if_queued(job_id):
            job = self.store.get(job_id)
            assert job is not None
            log.info("job %s cancelled before it started", job_id)
            self._emit(JobEvent("cancelled", job))
            return job
        if self._worker.cancel(job_id):
            return self.store.get(job_id) or job
        job = self.store.get(job_id) or job
        raise ConfigError(f"already {job.state}; only queued or running jobs can be cancelled")

    def jobs(self, job_id: str | None = None) -> list[Job]:
        """All jobs in submission order, or the one with `job_id` ([] if unknown)."""
        return self.store.find(job_id)

    def running(self) -> Job | None:
        return self._worker.current

    def pending(self) -> list[Job]:
        return self.store.find(states=(QUEUED, RUNNING))

    def add_listener(self, listener: Listener) -> None:
        """`listener(event)` is called from the worker thread (and the submitter's thread for
        `queued`, while the worker waits to be able to start that job); it must not block.
        Exceptions it raises are logged and ignored."""
        with self._listeners_lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def announce(self, event: JobEvent) -> None:
        """Tell every listener about something that happened to a job outside the worker
        (an automatic preview is ready)."""
        self._emit(event)

    # -- internals ----------------------------------------------------------------------------
    def _emit(self, event: JobEvent) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # one broken listener must not stop the worker
                log.exception("job listener %r failed on %s", listener, event.kind)
        if event.kind == "done":
            follow = self._follow_with_render(event.job)
            if follow is not None:
                # Heard after the preview's `done`; the worker (this thread) starts it next.
                self._emit(JobEvent("queued", follow))
                self._worker.notify()

    def _follow_with_render(self, job: Job) -> Job | None:
        """A preview asked for `then_render=1`: queue the render that replaces its stem set in
        place (same folder, same file names). Its id is `<preview id>-render`, so the second
        /stembridge/done tells the requester which set it replaces."""
        if job.quality != "preview" or job.options.get("then_render", "0").lower() not in ("1", "true", "yes", "on"):
            return None
        options = {**job.options, "quality": "render"}
        options.pop("then_render")
        follow_id = f"{job.id}-render"
        if self.store.get(follow_id) is not None:
            return None  # already queued (a recovered preview finishing again)
        follow = self.store.add(job.source, job.output_root or self.config.paths_output, "render", options,
                                "then_render", job.reply_to, job_id=follow_id)
        log.info("job %s queued (render after preview %s)", follow.id, job.id)
        return follow

    def _check_source(self, source: Path) -> Path:
        if not source.is_absolute():
            raise InputError(source, "the path must be absolute (the daemon does not share your working folder)")
        resolved = source.resolve()
        # Resolve before checking, so a symlink or `..` cannot lead outside the roots.
        if not any(resolved.is_relative_to(root) for root in self.roots):
            roots = ", ".join(str(r) for r in self.roots)
            raise InputError(source, f"outside the allowed folders ({roots}); add its folder to paths.allowed_roots")
        if not resolved.exists():
            raise InputError(source, "no such file")
        if not resolved.is_file():
            raise InputError(source, "not a file")
        return resolved

    def _request(self, source: Path, options: dict[str, str]):  # -> pipeline.SeparationRequest
        return make_request(self.config, source, self.config.paths_output, options)


def make_request(config: Config, source: Path, output_root: Path, options: dict[str, str],
                 job_id: str | None = None):
    """The SeparationRequest for a job: the configured defaults under the job's options."""
    from bridge.pipeline import SeparationRequest  # torch-heavy: only when a job is made

    merged = {"quality": config.engine_quality, **options}
    if config.engine_model and "model" not in merged:
        merged["model"] = config.engine_model
    if config.engine_dawproject and "dawproject" not in merged:
        merged["dawproject"] = "1"
    return SeparationRequest.from_options(source, output_root, merged, job_id=job_id)


class SeparatorRunner:
    """Runs jobs with one `bridge.pipeline.Separator`, created on first use and then kept,
    so the model stays loaded (warm) between jobs."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._separator = None

    def separator(self):  # -> pipeline.Separator
        if self._separator is None:
            from bridge.pipeline import EngineSettings, Separator

            self._separator = Separator(EngineSettings(
                device=self.config.engine_device, model_repo=self.config.engine_model_repo,
                cache_dir=self.config.engine_cache_dir, use_cache=self.config.engine_use_cache,
            ))
        return self._separator

    def warm(self) -> None:
        """Load the engine and the model watched-folder jobs use and run it once, so the first
        bounce waits for neither."""
        self.separator().warm_up(self.config.engine_quality, self.config.engine_model)

    def __call__(self, job: Job, progress: Progress, cancel: threading.Event) -> Path:
        request = make_request(self.config, job.source, job.output_root or self.config.paths_output,
                               job.options, job_id=job.id)
        return self.separator().run(request, progress=progress, cancel=cancel)


def clean_partial_outputs(job: Job) -> int:
    """Remove the temporary files an interrupted run of `job` left in its output root
    (the pipeline tags them `<name>.stembridge-tmp-<job id>`). Returns how many."""
    root = job.output_root
    if root is None or not root.is_dir():
        return 0
    removed = 0
    for path in root.rglob(f"*{TEMP_MARKER}-{job.id}*"):
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
