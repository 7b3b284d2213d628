"""A progress line for terminals; silent when stderr is piped (logs and scripts stay clean)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._last = -1.0

    def __call__(self, fraction: float, stage: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if fraction < 1.0 and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = int(width * min(max(fraction, 0.0), 1.0))
        elapsed = now - self.started
        eta = f" ETA {elapsed / fraction - elapsed:4.0f}s" if 0.05 < fraction < 1.0 else ""
        self.stream.write(f"\r{self.label[:32]:32} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{fraction * 100:5.1f}% {stage:<10}{eta}   ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
