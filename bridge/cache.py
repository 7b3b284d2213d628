"""Content-addressed stem cache.

The key covers every decoded sample of the source and every parameter that changes the
separation (model and its weights, shifts, overlap, segment, precision, silence skipping,
the stems asked for). Entries hold the stems at the model's rate, so another output format,
bit depth, naming or a preview never separates again.

An entry is a folder `<root>/<key[:2]>/<key>/` with one `<stem>.npy` (frames, 2) float32 per
stem and `entry.json` (shape, a CRC-32 per stem, the device that made them). It is written
under a temporary name and renamed whole. Reads verify the CRCs as they stream, so a damaged
entry is detected before anything made from it is published; it is then deleted and
recomputed. The cache is kept under a size cap by evicting the least recently used entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

log = logging.getLogger(__name__)
ENTRY_FILE = "entry.json"
BLOCK = 1 << 16


class CacheCorrupt(Exception):
    """A cache entry failed verification; it must be recomputed."""


def cache_key(audio_hash: str, parameters: dict) -> str:
    text = json.dumps({"audio": audio_hash, **parameters}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    stems: list[str]
    frames: int
    samplerate: int
    crc: dict[str, int]
    # The device that made the stems; entries are shared across devices (the key leaves it
    # out: the same model and settings give the same stems to float rounding). None for
    # entries written before it was recorded.
    device: str | None = None

    def blocks(self, block_frames: int = BLOCK) -> Iterator[list[np.ndarray]]:
        """Yield blocks as one (n, 2) array per stem, verifying each stem's CRC as it goes;
        CacheCorrupt on a mismatch, before the last block is handed out."""
        try:
            arrays = [np.load(self.path / f"{stem}.npy", mmap_mode="r") for stem in self.stems]
        except (OSError, ValueError) as exc:
            raise CacheCorrupt(f"{self.path}: {exc}") from None
        if any(a.shape != (self.frames, 2) or a.dtype != np.float32 for a in arrays):
            raise CacheCorrupt(f"{self.path}: stem shapes differ from the entry record")
        crcs = [0] * len(arrays)
        for start in range(0, self.frames, block_frames):
            parts = [np.asarray(a[start:start + block_frames]) for a in arrays]
            for index, part in enumerate(parts):
                crcs[index] = zlib.crc32(part.data, crcs[index])
            if start + block_frames >= self.frames:
                bad = [s for s, c in zip(self.stems, crcs) if c != self.crc.get(s)]
                if bad:
                    raise CacheCorrupt(f"{self.path}: checksum mismatch for {', '.join(bad)}")
            yield parts


class EntryWriter:
    """Tees separated blocks into a new entry; `commit()` publishes it, `abort()` drops it."""

    def __init__(self, cache: "StemCache", key: str, stems: list[str], frames: int, samplerate: int,
                 device: str | None = None) -> None:
        self.cache = cache
        self.device = device
        self.key = key
        self.stems = stems
        self.frames = frames
        self.samplerate = samplerate
        self.final = cache.entry_path(key)
        self.temp = self.final.parent / f".{key}.tmp-{uuid.uuid4().hex[:8]}"
        self.temp.mkdir(parents=True)
        self.arrays = [np.lib.format.open_memmap(self.temp / f"{stem}.npy", mode="w+", dtype=np.float32,
                                                 shape=(frames, 2)) for stem in stems]
        self.crcs = [0] * len(stems)
        self.position = 0

    def tee(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            n = len(block[0])
            for index, array in enumerate(self.arrays):
                part = np.ascontiguousarray(block[index], dtype=np.float32)
                array[self.position:self.position + n] = part
                self.crcs[index] = zlib.crc32(part.data, self.crcs[index])
            self.position += n
            yield block

    def commit(self) -> CacheEntry:
        if self.position != self.frames:
            self.abort()
            raise ValueError(f"cache entry got {self.position} of {self.frames} frames")
        for array in self.arrays:
            array.flush()
        del self.arrays
        record = {"stems": self.stems, "frames": self.frames, "samplerate": self.samplerate,
                  "crc": dict(zip(self.stems, self.crcs)), "device": self.device}
        (self.temp / ENTRY_FILE).write_text(json.dumps(record))
        if self.final.exists():
            shutil.rmtree(self.final, ignore_errors=True)
        os.replace(self.temp, self.final)
        self.cache.evict()
        return CacheEntry(self.final, self.stems, self.frames, self.samplerate, record["crc"], self.device)

    def abort(self) -> None:
        self.arrays = []
        shutil.rmtree(self.temp, ignore_errors=True)


class StemCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    def entry_path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str) -> CacheEntry | None:
        folder = self.entry_path(key)
        try:
            record = json.loads((folder / ENTRY_FILE).read_text())
            entry = CacheEntry(folder, list(record["stems"]), int(record["frames"]), int(record["samplerate"]),
                               {k: int(v) for k, v in record["crc"].items()}, record.get("device"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("cache entry %s is damaged; recomputing", folder)
            self.remove(key)
            return None
        os.utime(folder / ENTRY_FILE)  # least-recently-used order follows this mtime
        return entry

    def writer(self, key: str, stems: list[str], frames: int, samplerate: int,
               device: str | None = None) -> EntryWriter:
        return EntryWriter(self, key, stems, frames, samplerate, device)

    def remove(self, key: str) -> None:
        shutil.rmtree(self.entry_path(key), ignore_errors=True)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, folder) of every complete entry."""
        found = []
        for record in self.root.glob(f"*/*/{ENTRY_FILE}"):
            folder = record.parent
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            found.append((record.stat().st_mtime, size, folder))
        return found

    def evict(self) -> list[Path]:
        """Delete least recently used entries until the cache fits under its cap."""
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, folder in entries:
            if total <= self.max_bytes:
                break
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
            removed.append(folder)
        if removed:
            log.info("cache: evicted %d entries to stay under %.1f GB", len(removed), self.max_bytes / 1e9)
        return removed
