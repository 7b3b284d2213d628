"""Default previews after separations, for the daemon (`preview.auto` in the config).

A job listener must not block (it runs on the worker thread that emits job events), so
`AutoPreview` only queues finished jobs and renders them on its own thread. Start it, add it
as a listener, and stop it (it drains nothing: queued previews are dropped) on shutdown.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Callable

from bridge.errors import StemBridgeError
from bridge.jobs.events import JobEvent
from bridge.preview.render import PreviewRenderer

log = logging.getLogger(__name__)

_STOP = object()


class AutoPreview:
    """Renders `preset` (None: every stem at unity) after each job of one of `qualities`
    finishes, then calls `on_ready(job_id, path)` or `on_error(job_id, message)`."""

    def __init__(self, renderer: PreviewRenderer, on_ready: Callable[[str, Path], None],
                 on_error: Callable[[str, str], None] | None = None, preset: str | None = None,
                 qualities: tuple[str, ...] = ("preview",), max_pending: int = 16) -> None:
        self._renderer = renderer
        self._on_ready = on_ready
        self._on_error = on_error
        self._preset = preset
        self._qualities = qualities
        # Bounded: a burst of finished jobs must not pile up audio work without limit.
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("AutoPreview already started")
        self._thread = threading.Thread(target=self._run, name="stembridge-auto-preview", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Drop what is queued, let a running render finish, join the thread."""
        if self._thread is None:
            return
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def __call__(self, event: JobEvent) -> None:
        job = event.job
        if event.kind != "done" or job.quality not in self._qualities or job.manifest is None:
            return
        try:
            self._queue.put_nowait((job.id, job.manifest))
        except queue.Full:
            log.warning("auto preview for job %s skipped: %d previews already waiting", job.id, self._queue.maxsize)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            job_id, manifest = item  # type: ignore[misc]
            try:
                path = self._renderer.render(manifest, [], self._preset)
            except StemBridgeError as exc:
                log.warning("auto preview for job %s failed: %s", job_id, exc)
                if self._on_error is not None:
                    self._on_error(job_id, str(exc))
                continue
            except Exception:  # a bug in one preview must not end previews for the session
                log.exception("auto preview for job %s failed", job_id)
                continue
            self._on_ready(job_id, path)
