"""Small helpers shared by test modules (reading stem sets, measuring nulls)."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import torch

from bridge.lowprecision import modules_that_run


def read(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    return data, rate


def load_set(manifest: Path) -> tuple[dict, dict[str, np.ndarray]]:
    data = json.loads(Path(manifest).read_text())
    stems = {name: read(Path(manifest).parent / file)[0] for name, file in data["stems"].items()}
    return data, stems


def relative_db(residual: np.ndarray, reference: np.ndarray) -> float:
    """Residual RMS relative to the reference's, in dB."""
    num = np.sqrt(np.mean(np.square(residual)))
    den = np.sqrt(np.mean(np.square(reference)))
    return float(20 * np.log10(max(num, 1e-30) / den))


@contextlib.contextmanager
def model_calls(*models: torch.nn.Module) -> Iterator[list[int]]:
    """Count forward calls of `models` while the block runs (one entry per call), including
    calls of the bf16 weight copies that bf16 jobs on CPU run in their place (made here, ahead
    of the engine, which then reuses them)."""
    calls: list[int] = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1))
               for model in models for m in modules_that_run(model)]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def await_line(lines: "queue.Queue[str | None]", pattern: str, timeout: float, what: str,
               seen: list[str] | None = None) -> re.Match[str]:
    """Take lines from a reader thread's queue until one matches `pattern`; None marks the
    end of the stream. Fails with what was seen instead of waiting forever."""
    deadline = time.monotonic() + timeout
    seen = [] if seen is None else seen
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"{what}: no line matching {pattern!r} within {timeout} s; got {seen}") from None
        if line is None:
            raise AssertionError(f"{what} ended before {pattern!r}; got {seen}")
        seen.append(line)
        if match := re.search(pattern, line):
            return match
