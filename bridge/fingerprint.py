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


def normalisation(info: AudioInfo, cancel: threading.Event | None = None) -> Normalisation:
    """Mean and standard deviation of the mono mix, as demucs.api computes them."""
    total = total_sq = 0.0
    count = 0
    for block in read_blocks(info):
        _check(cancel)
        mono = block.mean(axis=1, dtype=np.float64)
        total += float(mono.sum())
        total_sq += float(np.dot(mono, mono))
        count += mono.size
    mean = total / count
    variance = max(total_sq / count - mean * mean, 0.0) * count / max(count - 1, 1)
    return Normalisation(mean, variance ** 0.5 + 1e-8)


class HashMemo:
    """Remembered audio hashes, one small file per source file state."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _entry(self, path: Path) -> Path:
        stat = os.stat(path)
        state = f"{Path(path).resolve()}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
        return self.root / hashlib.sha256(state.encode()).hexdigest()[:32]

    def hash_of(self, info: AudioInfo, cancel: threading.Event | None = None) -> str:
        entry = self._entry(info.path)
        try:
            remembered = entry.read_text().strip()
            if len(remembered) == 64:
                return remembered
        except OSError:
            pass
        value = audio_hash(info, cancel)
        try:
            write_bytes_atomic(entry, value.encode())
        except OSError:  # a read-only cache only costs the next run a decode
            pass
        return value
