"""Turns job events into OSC notifications for the job's requester and the subscribers.

Runs on the worker's thread (and the submitter's for `queued`), so it never blocks: a UDP
send either goes out or is dropped. Subscribers are a bounded set; the oldest is dropped when
a new one arrives, so a DAW that restarted on another port does not hold a slot forever.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

from bridge.jobs.events import JobEvent
from bridge.osc import protocol

log = logging.getLogger("bridge.osc")

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]

_FINAL_KINDS = ("done", "error", "cancelled")
_MAX_WATCHED_JOBS = 256  # jobs with extra recipients (cancellers); bounded like everything here


class Notifier:
    def __init__(self, send: Send, max_subscribers: int = 16, progress_interval: float = 0.1) -> None:
        self._send = send
        self._max_subscribers = max_subscribers
        self._progress_interval = progress_interval
        self._lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._subscribers: collections.OrderedDict[Address, None] = collections.OrderedDict()
        self._last_progress: dict[str, float] = {}
        # Peers that asked about one job (cancel) and should hear how it ends.
        self._extra: collections.OrderedDict[str, set[Address]] = collections.OrderedDict()

    # -- subscribers ---------------------------------------------------------------------
    def subscribe(self, peer: Address) -> Address | None:
        """Add `peer`; returns the subscriber dropped to make room, if any."""
        with self._lock:
            self._subscribers[peer] = None
            self._subscribers.move_to_end(peer)
            if len(self._subscribers) > self._max_subscribers:
                dropped, _ = self._subscribers.popitem(last=False)
                log.info("subscriber limit (%d) reached: dropped %s:%d", self._max_subscribers, *dropped)
                return dropped
        return None

    def unsubscribe(self, peer: Address) -> bool:
        with self._lock:
            if peer not in self._subscribers:
                return False
            del self._subscribers[peer]
            return True

    def subscribers(self) -> list[Address]:
        with self._lock:
            return list(self._subscribers)

    def follow(self, job_id: str, peer: Address) -> None:
        """Also tell `peer` how job `job_id` ends (used for the peer that cancels it)."""
        with self._lock:
            self._extra.setdefault(job_id, set()).add(peer)
            self._extra.move_to_end(job_id)
            while len(self._extra) > _MAX_WATCHED_JOBS:
                self._extra.popitem(last=False)

    def unfollow(self, job_id: str, peer: Address) -> None:
        with self._lock:
            peers = self._extra.get(job_id)
            if peers is not None:
                peers.discard(peer)
                if not peers:
                    del self._extra[job_id]

    # -- the service listener --------------------------------------------------------------
    def __call__(self, event: JobEvent) -> None:
        job = event.job
        if event.kind == "queued":
            # This is also the requester's reply to /stembridge/separate: the service emits it
            # before the worker can start the job, so it always precedes progress and done.
            message = protocol.encode(protocol.QUEUED, job.id, str(job.source))
            self._deliver(message, self._recipients(event))
        elif event.kind == "progress":
            if self._progress_due(job.id):
                message = protocol.encode(protocol.PROGRESS, job.id, float(event.fraction), event.stage)
                self._deliver(message, self._recipients(event))
        elif event.kind == "preview_ready":
            message = protocol.encode(protocol.PREVIEW_READY, job.id, event.message)
            self._deliver(message, self._recipients(event))
        elif event.kind in _FINAL_KINDS:
            if event.kind == "done":
                manifest = job.manifest or ""
                message = protocol.encode(protocol.DONE, job.id, str(manifest))
            elif event.kind == "error":
                message = protocol.encode(protocol.ERROR, job.id, event.message or job.error or "failed")
            else:
                message = protocol.encode(protocol.CANCELLED, job.id)
            recipients = self._recipients(event)
            with self._lock:
                self._last_progress.pop(job.id, None)
                self._extra.pop(job.id, None)
            self._deliver(message, recipients)

    def _progress_due(self, job_id: str) -> bool:
        """At most one progress message per job per interval: a fast job must not flood a DAW."""
        now = time.monotonic()
        with self._lock:
            last = self._last_progress.get(job_id)
            if last is not None and now - last < self._progress_interval:
                return False
            self._last_progress[job_id] = now
            return True

    def _recipients(self, event: JobEvent) -> list[Address]:
        job = event.job
        with self._lock:
            peers = list(self._subscribers)
            extra = sorted(self._extra.get(job.id, ()))
        if job.reply_to is not None:
            peers.insert(0, (str(job.reply_to[0]), int(job.reply_to[1])))
        peers.extend(extra)
        return list(dict.fromkeys(peers))  # each peer once, requester first

    def _deliver(self, message: bytes, peers: list[Address]) -> None:
        # One message reaches all its peers before the next starts: `queued` (sent on the
        # submitter's thread) must not be overtaken by the worker's first progress for some
        # peers. UDP sends do not block for long, so holding the lock across them is cheap.
        with self._deliver_lock:
            for peer in peers:
                try:
                    self._send(message, peer)
                except OSError as exc:  # an unreachable peer must not break the worker
                    log.debug("notification to %s:%d failed: %s", peer[0], peer[1], exc)
