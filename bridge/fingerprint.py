"""What identifies a source's audio, and Demucs' normalisation of it.

The identity is a SHA-256 over every decoded sample (not the file's bytes: the same audio in
another container or header is the same separation). Decoding and hashing a long source costs
more than everything else on a cache hit, so the hash is remembered per file, keyed by the
file's inode, size, modification and change times: any write to the file changes its change
time (which no program can set back), so a remembered hash is never served for new audio.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from bridge.atomic import write_bytes_atomic
from bridge.audio import AudioInfo, read_blocks
from bridge.engine import Normalisation
from bridge.errors import Cancelled


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("separation cancelled")


def audio_hash(info: AudioInfo, cancel: threading.Event | None = None) -> str:
    digest = hashlib.sha256(f"{info.sample_rate}:{info.channels}:".encode())
    for block in read_blocks(info):
        _check(cancel)
        digest.update(np.ascontiguousarray(block).data)
    return digest.hexdigest()


def normalisation(info: AudioInfo, cancel: threading.Event | None = None,
                  min_silence: float = 1.0) -> tuple[Normalisation, list[tuple[int, int]]]:
    """Mean and standard deviation of the mono mix, as demucs.api computes them, and the runs
    of digital silence (every channel exactly zero) of at least `min_silence` seconds, as
    [start, end) frame ranges: DAW bounces often carry long silences the model can skip."""
    total = total_sq = 0.0
    count = 0
    silences: list[tuple[int, int]] = []
    run_start: int | None = None
    shortest = int(min_silence * info.sample_rate)

    def close(end: int) -> None:
        if run_start is not None and end - run_start >= shortest:
            silences.append((run_start, end))

    for block in read_blocks(info):
        _check(cancel)
        mono = block.mean(axis=1, dtype=np.float64)
        total += float(mono.sum())
        total_sq += float(np.dot(mono, mono))
        sound = np.flatnonzero(np.any(block != 0, axis=1))
        if sound.size == 0:
            run_start = count if run_start is None else run_start
        else:
            close(count + int(sound[0]))
            gaps = np.flatnonzero(np.diff(sound) > shortest)
            for gap in gaps:
                run_start = count + int(sound[gap]) + 1
                close(count + int(sound[gap + 1]))
            last = int(sound[-1])
            run_start = count + last + 1 if last + 1 < len(block) else None
        count += mono.size
    close(count)
    mean = total / count
    variance = max(total_sq / count - mean * mean, 0.0) * count / max(count - 1, 1)
    return Normalisation(mean, variance ** 0.5 + 1e-8), silences


def sounding_intervals(silences: list[tuple[int, int]], frames: int, rate: int, model_rate: int,
                       model_frames: int, margin: float = 0.05) -> list[tuple[int, int]]:
    """The complement of `silences` (source frames) at the model's rate. Each silence is
    shrunk by `margin` seconds at both ends, so a resampler's ringing around the edges of the
    sound stays inside what the model sees."""
    scale = model_rate / rate
    pad = int(margin * rate)
    intervals = []
    position = 0
    for start, end in silences:
        # No ringing comes from beyond the file's ends: silence there needs no margin.
        start, end = (start + pad if start > 0 else 0), (end - pad if end < frames else frames)
        if end <= start:
            continue
        intervals.append((position, start))
        position = end
    intervals.append((position, frames))
    return [(int(a * scale), min(model_frames, int(np.ceil(b * scale)))) for a, b in intervals if b > a]


class HashMemo:
    """Remembered audio hashes, one small file per source file state; the `keep` most
    recently used are kept (a forgotten one costs its source one decode)."""

    def __init__(self, root: Path, keep: int = 2000) -> None:
        self.root = Path(root)
        self.keep = keep

    def _entry(self, path: Path) -> Path:
        stat = os.stat(path)
        state = f"{Path(path).resolve()}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
        return self.root / hashlib.sha256(state.encode()).hexdigest()[:32]

    def hash_of(self, info: AudioInfo, cancel: threading.Event | None = None) -> str:
        entry = self._entry(info.path)
        try:
            remembered = entry.read_text().strip()
            if len(remembered) == 64:
                os.utime(entry)  # recently used: kept longest
                return remembered
        except OSError:
            pass
        value = audio_hash(info, cancel)
        try:
            write_bytes_atomic(entry, value.encode())
            self.prune()
        except OSError:  # a read-only cache only costs the next run a decode
            pass
        return value

    def prune(self) -> int:
        """Forget the least recently used memos beyond `keep`; returns how many went."""
        memos = []
        for memo in self.root.iterdir():
            if not memo.name.startswith("."):   # skip writes in progress
                try:
                    memos.append((memo.stat().st_mtime_ns, memo))
                except FileNotFoundError:
                    pass
        surplus = len(memos) - self.keep
        if surplus <= 0:
            return 0
        for _, memo in sorted(memos)[:surplus]:
            memo.unlink(missing_ok=True)
        return surplus
