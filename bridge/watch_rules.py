"""Pure decisions of the watched folder: which paths are bounces, and when one is finished.

Kept free of threads and watchdog so every rule can be tested with plain values.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from pathlib import Path

from bridge.atomic import TEMP_MARKER  # in our own temporary names; also skipped in folder names
from bridge.audio import AUDIO_EXTENSIONS  # what the engine decodes is what the watcher takes
from bridge.manifest import MANIFEST_NAME

# Suffixes browsers, sync tools and DAWs use while a file is still being written.
_TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".bak", "~")


def skip_reason(path: Path, ignore: list[Path]) -> str | None:
    """Why `path` must not become a job, or None if it is a candidate bounce.

    `ignore` holds resolved folders (our output roots); paths are compared resolved so an
    output folder inside a watched folder is recognised whatever spelling reached us.
    """
    name = path.name
    lower = name.lower()
    if TEMP_MARKER in str(path):
        return "temporary file of stembridge"
    if name.startswith("."):
        return "hidden name"
    if name.startswith("~") or (name.startswith("#") and name.endswith("#")):
        return "temporary name"
    if lower.endswith(_TEMP_SUFFIXES):
        return "temporary name"
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        return "not an audio file extension"
    resolved = _resolve(path)
    for folder in ignore:
        if resolved == folder or folder in resolved.parents:
            return f"inside output folder {folder}"
    if any(part.startswith(".") for part in resolved.parent.parts[1:]):
        return "inside a hidden folder"
    if (resolved.parent / MANIFEST_NAME).exists():
        return "beside a stems.json (a stem set)"
    return None


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return Path(os.path.abspath(path))


Signature = tuple[int, int, int]  # (size, mtime_ns, inode): changes with every write


def signature(path: Path) -> Signature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class Trigger(enum.Enum):
    CREATED = "created"    # appeared; may be a finished file moved in from another folder
    MODIFIED = "modified"  # someone is writing: wait for their close
    SETTLED = "settled"    # closed after writing, or renamed into place


class Verdict(enum.Enum):
    WAIT = "wait"      # look again later
    CHECK = "check"    # time to read the header
    DROP = "drop"      # gone, or this exact write was already reported


@dataclasses.dataclass
class Pending:
    """One candidate path between its first event and its report."""

    trigger: Trigger
    sig: Signature | None = None
    changed_at: float = 0.0   # monotonic time the signature last changed


@dataclasses.dataclass(frozen=True)
class Timing:
    """`stable`: seconds a file must stay unchanged when no close event can be relied on.
    `stale`: seconds after which an unchanged file whose header never completed is handed
    on anyway, so a truncated or empty bounce produces an error instead of silence.
    `closed_stale`: the same once its writer closed it: nobody is writing, so a shorter wait
    (a writer that closes and reopens later costs one error job, then the real one)."""

    close_events: bool
    stable: float = 2.0
    stale: float = 30.0
    closed_stale: float = 5.0


def decide(entry: Pending, sig: Signature | None, now: float, timing: Timing,
           reported: Signature | None) -> Verdict:
    """Advance `entry` to the file's current signature and say what to do next."""
    if sig is None or sig == reported:
        return Verdict.DROP
    if sig != entry.sig:
        entry.sig = sig
        entry.changed_at = now
    quiet = now - entry.changed_at
    if timing.close_events:
        if entry.trigger is Trigger.SETTLED:
            return Verdict.CHECK
        if entry.trigger is Trigger.CREATED and quiet >= timing.stable:
            return Verdict.CHECK  # moved in from outside the watched tree: no close comes
        return Verdict.CHECK if quiet >= timing.stale else Verdict.WAIT
    return Verdict.CHECK if quiet >= timing.stable else Verdict.WAIT


def is_stale(entry: Pending, now: float, timing: Timing) -> bool:
    """Unchanged for so long that nobody is still writing it, complete header or not."""
    limit = timing.stale
    if timing.close_events and entry.trigger is Trigger.SETTLED:
        limit = min(timing.stale, timing.closed_stale)
    return now - entry.changed_at >= limit
