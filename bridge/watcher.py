"""Watched export folders: turn finished bounces into paths for `on_ready`, once per write.

Two threads. watchdog's observer thread only records "this path had this kind of event" in a
dict (coalescing floods of modify events, so memory is bounded by the number of distinct paths).
A checker thread owns every decision (`bridge.watch_rules`) and reads headers
(`bridge.bounce_header`); reading files there, never in the event handler, keeps our own reads
from feeding back as events.
"""

from __future__ import annotations

import collections
import importlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from bridge.bounce_header import HeaderState, header_state
from bridge.errors import StartupError
from bridge.watch_rules import (
    Pending,
    Signature,
    Timing,
    Trigger,
    Verdict,
    decide,
    is_stale,
    signature,
    skip_reason,
)

log = logging.getLogger(__name__)

# Only write-side events: opens and no-write closes (ours included) never reach the handler.
_EVENT_TYPES = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent]
_REMEMBERED_WRITES = 4096  # per-path signatures already reported; old ones are forgotten
# watchdog holds each IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO, and its reader
# sleeps out the whole hold even when the pair arrived at once: half a second added to every
# bounce a DAW renames into place. The kernel queues both halves of a rename back to back and
# they arrive in one read, so a few milliseconds still pair them; an unpaired one is still
# seen, as a created file (only the destination matters here).
_RENAME_PAIRING_HOLD = 0.005


def _shorten_rename_pairing_hold() -> None:
    if not sys.platform.startswith("linux"):  # inotify only; elsewhere its modules may not import
        return
    for module_name, class_name in (("watchdog.observers.inotify_move_event_grouper", "InotifyMoveEventGrouper"),
                                    ("watchdog.observers.inotify_buffer", "InotifyBuffer")):  # watchdog < 7
        try:
            holder = getattr(importlib.import_module(module_name), class_name)
        except Exception:  # another watchdog layout: keep its hold, lose only the speed-up
            continue
        if getattr(holder, "delay", 0) > _RENAME_PAIRING_HOLD:
            holder.delay = _RENAME_PAIRING_HOLD


def platform_has_close_events() -> bool:
    """inotify (Linux) reports close-after-write; FSEvents and Windows do not."""
    return sys.platform.startswith("linux")


class _Recorder(FileSystemEventHandler):
    """Runs on watchdog's thread: record and wake, nothing else."""

    def __init__(self, record: Callable[[Path, Trigger], None], close_events: bool) -> None:
        self._record = record
        self._close_events = close_events

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            path, trigger = event.dest_path, Trigger.SETTLED
        elif isinstance(event, FileClosedEvent):
            path, trigger = event.src_path, Trigger.SETTLED
        elif isinstance(event, FileCreatedEvent):
            path, trigger = event.src_path, Trigger.CREATED
        elif isinstance(event, FileModifiedEvent):
            path, trigger = event.src_path, Trigger.MODIFIED
        else:
            return
        if not self._close_events:
            # Without close events a rename or close proves nothing: use stability alone.
            trigger = Trigger.MODIFIED
        self._record(Path(os.fsdecode(path)), trigger)


class FolderWatcher:
    """Watch `folders` (recursively) and call `on_ready(path)` for each finished bounce.

    `close_events=None` picks the platform's rule; tests pass False to exercise the
    stability rule that macOS and Windows use. `on_ready` runs on the checker thread.
    """

    def __init__(self, folders: list[Path], ignore: list[Path], on_ready: Callable[[Path], None], *,
                 close_events: bool | None = None, stable_seconds: float = 2.0,
                 stale_seconds: float = 30.0, closed_stale_seconds: float = 5.0,
                 poll_interval: float = 0.25) -> None:
        self._folders = [Path(f) for f in folders]
        self._ignore = [Path(os.path.realpath(p)) for p in ignore]
        self._on_ready = on_ready
        if close_events is None:
            close_events = platform_has_close_events()
        self._timing = Timing(close_events=close_events, stable=stable_seconds, stale=stale_seconds,
                              closed_stale=closed_stale_seconds)
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._incoming: dict[Path, Trigger] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._observer: Observer | None = None
        self._checker: threading.Thread | None = None

    def start(self) -> None:
        if self._observer is not None:
            raise RuntimeError("FolderWatcher already started")
        for folder in self._folders:
            if not folder.is_dir():
                raise StartupError(f"cannot watch {folder}: not a folder")
        # Created only now: on Linux an Observer starts watchdog's inotify reader thread, which
        # a refused start-up must not leave behind.
        _shorten_rename_pairing_hold()
        observer = Observer()
        recorder = _Recorder(self._record, self._timing.close_events)
        for folder in self._folders:
            try:
                observer.schedule(recorder, str(folder), recursive=True, event_filter=_EVENT_TYPES)
            except OSError as exc:
                observer.unschedule_all()
                raise StartupError(f"cannot watch {folder}: {exc.strerror or exc}") from exc
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._checker = threading.Thread(target=self._check_loop, name="stembridge-watch-check", daemon=True)
        self._checker.start()
        log.info("watching %s (%s rule)", ", ".join(map(str, self._folders)),
                 "close-event" if self._timing.close_events else f"{self._timing.stable:g} s stability")

    def stop(self) -> None:
        """Stop both threads and wait for them. Safe to call twice or before start."""
        self._stopping.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        if self._checker is not None:
            self._checker.join()

    def __enter__(self) -> "FolderWatcher":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def consider(self, paths: list[Path]) -> None:
        """Judge existing files as if they had just appeared (found at start-up): each is
        reported once it is finished, like any bounce."""
        for path in paths:
            self._record(path, Trigger.CREATED)

    def _record(self, path: Path, trigger: Trigger) -> None:
        with self._lock:
            self._incoming[path] = trigger  # the latest event says what the writer did last
        self._wake.set()

    def _check_loop(self) -> None:
        pending: dict[Path, Pending] = {}
        reported: collections.OrderedDict[Path, Signature] = collections.OrderedDict()
        while not self._stopping.is_set():
            # With nothing pending there is nothing to poll: sleep until an event.
            self._wake.wait(self._poll_interval if pending else None)
            self._wake.clear()
            with self._lock:
                incoming, self._incoming = self._incoming, {}
            for path, trigger in incoming.items():
                self._admit(pending, path, trigger)
            now = time.monotonic()
            for path, entry in list(pending.items()):
                if self._stopping.is_set():
                    return
                if self._ready(path, entry, now, reported.get(path)):
                    del pending[path]
                    reported[path] = entry.sig  # type: ignore[assignment]
                    reported.move_to_end(path)
                    while len(reported) > _REMEMBERED_WRITES:
                        reported.popitem(last=False)
                    self._report(path)
                elif path in pending and entry.sig is None:
                    del pending[path]

    def _admit(self, pending: dict[Path, Pending], path: Path, trigger: Trigger) -> None:
        entry = pending.get(path)
        if entry is not None:
            entry.trigger = trigger
            return
        reason = skip_reason(path, self._ignore)
        if reason:
            log.debug("ignoring %s: %s", path, reason)
            return
        pending[path] = Pending(trigger)

    def _ready(self, path: Path, entry: Pending, now: float, reported: Signature | None) -> bool:
        verdict = decide(entry, signature(path), now, self._timing, reported)
        if verdict is Verdict.DROP:
            entry.sig = None  # tells the loop to forget it
            return False
        if verdict is Verdict.WAIT:
            return False
        state = header_state(path)
        if state is HeaderState.INCOMPLETE:
            if not is_stale(entry, now, self._timing):
                return False
            log.warning("%s: header still incomplete after %.0f s unchanged; queuing it so the "
                        "problem is reported", path, now - entry.changed_at)
        # The header read took time: if the file moved on meanwhile, judge it again later.
        return signature(path) == entry.sig

    def _report(self, path: Path) -> None:
        log.info("bounce ready: %s", path)
        try:
            self._on_ready(path)
        except Exception:  # one bad callback must not stop the watcher
            log.exception("handling %s failed", path)
