"""What listeners (the OSC notifier, logs) hear about jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.jobs.store import Job

EventKind = Literal["queued", "progress", "done", "error", "cancelled", "preview_ready"]


@dataclass(frozen=True)
class JobEvent:
    kind: EventKind
    job: Job
    fraction: float = 0.0
    stage: str = ""
    message: str = ""        # error text; for preview_ready, the preview's path
