"""Publishing files so that a DAW never sees a half-written one.

Everything is written under a hidden temporary name in the destination folder (same file
system, so the final rename is atomic), flushed to disk, then renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

TEMP_MARKER = ".stembridge-tmp"


def temp_name_for(final: Path, tag: str) -> Path:
    """A hidden sibling of `final` that watchers and DAWs ignore; `tag` (a job id) lets a
    restarted daemon find and remove the leftovers of an interrupted job."""
    return final.with_name(f".{final.name}{TEMP_MARKER}-{tag}")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, final: Path) -> None:
    """Flush `temp` and rename it to `final` (replacing an older version atomically)."""
    fsync_file(temp)
    os.replace(temp, final)


def fsync_all(paths: list[Path]) -> None:
    """Flush several files at once: their disk writes overlap instead of queueing."""
    if len(paths) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(paths))) as pool:
            list(pool.map(fsync_file, paths))
    elif paths:
        fsync_file(paths[0])


def write_bytes_atomic(final: Path, data: bytes) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}", suffix=TEMP_MARKER, dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, final)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on `folder`, across threads and processes (flock on the
    folder itself: no lock file in a folder a DAW reads). Publishing a stem set and recording
    a preview in it take it, so neither sees the other half done. Where the file system
    cannot lock (some network shares), it goes on without."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the lock
