"""Bounces that landed while no daemon watched: found at start-up, so none is lost.

The watcher only sees changes made while it runs. At start the daemon looks through its
watched folders for audio files changed since the previous run began that no job has read
since, and hands them to the watcher, which applies its usual rules (writing finished,
header complete) before queuing them. The very first start queues nothing: an export folder
full of earlier bounces is not a backlog to split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Mapping

from bridge.atomic import write_bytes_atomic
from bridge.watch_rules import skip_reason

MARK_FILE = "watching-since"   # in the state folder: when the previous run started watching


def previous_start(state_dir: Path) -> float | None:
    """When the previous run started watching, or None on the first start (or an unreadable mark)."""
    try:
        return float((state_dir / MARK_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def record_start(state_dir: Path, started: float) -> None:
    write_bytes_atomic(state_dir / MARK_FILE, f"{started!r}\n".encode())


def missed_bounces(folders: list[Path], ignore: list[Path], since: float,
                   last_queued: Mapping[str, float]) -> Iterator[Path]:
    """Candidate bounces under `folders` changed after `since` and not queued since.

    `last_queued` maps a resolved source path to the time its latest job was queued. A file's
    change time is the later of its mtime and ctime: a bounce moved or copied in keeps its
    old mtime, but the move itself sets the ctime.
    """
    ignore = [Path(os.path.realpath(p)) for p in ignore]
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            here = Path(os.path.realpath(root))
            # Not into our own outputs or hidden folders: they can hold thousands of files.
            dirs[:] = [d for d in dirs if not d.startswith(".") and here / d not in ignore]
            for name in files:
                path = Path(root) / name
                if skip_reason(path, ignore):
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                changed = max(st.st_mtime, st.st_ctime)
                if changed <= since:
                    continue
                queued = last_queued.get(os.path.realpath(path))
                if queued is not None and queued >= changed:
                    continue
                yield path
