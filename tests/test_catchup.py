"""Start-up catch-up rules, on real files: which files count as bounces missed while no
daemon watched."""

from __future__ import annotations

import os
import time
from pathlib import Path

from bridge.catchup import missed_bounces, previous_start, record_start


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")
    return path


def names(paths) -> list[str]:
    return sorted(p.name for p in paths)


def test_only_new_unqueued_candidate_bounces_are_missed(tmp_path: Path) -> None:
    watch, out = tmp_path / "watch", tmp_path / "watch" / "Stems"
    new = touch(watch / "new.wav")
    touch(watch / "sub" / "deeper.aiff")
    queued = touch(watch / "queued.wav")
    touch(watch / ".hidden.wav")
    touch(watch / "take.wav.part")
    touch(watch / "notes.txt")
    touch(out / "new" / "new_vocals.wav")           # our own output folder
    touch(watch / ".cache" / "inside_hidden.wav")
    now = time.time()
    last_queued = {os.path.realpath(queued): now + 1.0, os.path.realpath(new): now - 3600.0}
    found = list(missed_bounces([watch], [out], now - 60.0, last_queued))
    # new.wav was queued once, an hour before this write: it is missed again.
    assert names(found) == ["deeper.aiff", "new.wav"]
    assert list(missed_bounces([watch], [out], now + 60.0, {})) == []  # nothing changed since


def test_a_moved_in_bounce_with_an_old_mtime_counts_by_its_ctime(tmp_path: Path) -> None:
    moved = touch(tmp_path / "watch" / "moved.wav")
    os.utime(moved, (time.time() - 86400, time.time() - 86400))  # e.g. a Finder copy keeps the mtime
    assert names(missed_bounces([tmp_path / "watch"], [], time.time() - 60.0, {})) == ["moved.wav"]


def test_start_mark_round_trips_and_is_absent_on_the_first_start(tmp_path: Path) -> None:
    assert previous_start(tmp_path) is None
    record_start(tmp_path, 1234.5)
    assert previous_start(tmp_path) == 1234.5
    (tmp_path / "watching-since").write_text("garbage")
    assert previous_start(tmp_path) is None
