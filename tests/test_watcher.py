"""Watched folders on the real file system: inotify events, real WAV/AIFF/FLAC writers."""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.bounce_header import HeaderState, header_state
from bridge.errors import StartupError
from bridge.watch_rules import Pending, Timing, Trigger, Verdict, decide, is_stale, skip_reason
from bridge.watcher import FolderWatcher

RATE = 44100
WAIT = 10.0  # seconds a test waits for an expected report before failing


def tone(seconds: float, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    mono = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([mono] * channels, axis=1)


# --- pure rules -------------------------------------------------------------------------

@pytest.mark.parametrize("name, reason", [
    (".hidden.wav", "hidden name"),
    ("~mix.wav", "temporary name"),
    ("mix.wav.part", "temporary name"),
    ("mix.tmp", "temporary name"),
    ("mix.wav~", "temporary name"),
    ("mix.stembridge-tmp.wav", "temporary file of stembridge"),
    ("notes.txt", "not an audio file extension"),
    ("session.RPP", "not an audio file extension"),
])
def test_skip_reason_names(tmp_path: Path, name: str, reason: str) -> None:
    assert skip_reason(tmp_path / name, []) == reason


def test_skip_reason_accepts_audio_in_any_case(tmp_path: Path) -> None:
    for name in ("mix.wav", "Mix.WAV", "a b.aiff", "x.flac", "y.mp3"):
        assert skip_reason(tmp_path / name, []) is None, name


def test_skip_reason_output_folder_inside_watched(tmp_path: Path) -> None:
    out = tmp_path / "watched" / "stems"
    out.mkdir(parents=True)
    # A different spelling of the same folder (a symlink) is still recognised.
    (tmp_path / "alias").symlink_to(tmp_path / "watched")
    reason = skip_reason(tmp_path / "alias" / "stems" / "mix" / "mix_vocals.wav", [out.resolve()])
    assert reason is not None and reason.startswith("inside output folder")


def test_skip_reason_stem_set_and_hidden_folder(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "stems.json").write_text("{}")
    assert skip_reason(tmp_path / "set" / "mix_drums.wav", []) == "beside a stems.json (a stem set)"
    assert skip_reason(tmp_path / ".Trash" / "mix.wav", []) == "inside a hidden folder"


def test_stability_rule_waits_for_quiet_time() -> None:
    timing = Timing(close_events=False, stable=2.0, stale=30.0)
    entry = Pending(Trigger.MODIFIED)
    assert decide(entry, (10, 1, 7), now=100.0, timing=timing, reported=None) is Verdict.WAIT
    assert decide(entry, (20, 2, 7), now=101.5, timing=timing, reported=None) is Verdict.WAIT
    assert decide(entry, (20, 2, 7), now=103.0, timing=timing, reported=None) is Verdict.WAIT
    assert decide(entry, (20, 2, 7), now=103.6, timing=timing, reported=None) is Verdict.CHECK
    assert decide(entry, (20, 2, 7), now=104.0, timing=timing, reported=(20, 2, 7)) is Verdict.DROP


def test_close_event_rule() -> None:
    timing = Timing(close_events=True, stable=2.0, stale=30.0)
    writing = Pending(Trigger.MODIFIED)
    assert decide(writing, (1, 1, 1), 0.0, timing, None) is Verdict.WAIT
    assert decide(writing, (1, 1, 1), 29.0, timing, None) is Verdict.WAIT  # a slow writer
    assert decide(writing, (1, 1, 1), 30.0, timing, None) is Verdict.CHECK  # stale: hand it on
    assert decide(Pending(Trigger.SETTLED), (1, 1, 1), 0.0, timing, None) is Verdict.CHECK
    moved_in = Pending(Trigger.CREATED)
    assert decide(moved_in, (1, 1, 1), 0.0, timing, None) is Verdict.WAIT
    assert decide(moved_in, (1, 1, 1), 2.0, timing, None) is Verdict.CHECK
    assert decide(Pending(Trigger.SETTLED), None, 0.0, timing, None) is Verdict.DROP


def test_incomplete_headers_go_stale_sooner_once_closed() -> None:
    timing = Timing(close_events=True, stable=2.0, stale=30.0, closed_stale=5.0)
    closed, open_ = Pending(Trigger.SETTLED, changed_at=0.0), Pending(Trigger.MODIFIED, changed_at=0.0)
    assert not is_stale(closed, 4.9, timing) and is_stale(closed, 5.0, timing)
    assert not is_stale(open_, 29.9, timing) and is_stale(open_, 30.0, timing)
    # Without close events nothing proves the writer is gone: the long limit holds.
    assert not is_stale(closed, 29.9, Timing(close_events=False, stale=30.0))


# --- headers ----------------------------------------------------------------------------

@pytest.mark.parametrize("ext, fmt", [("wav", "WAV"), ("aiff", "AIFF"), ("wav", "RF64")])
def test_header_incomplete_while_libsndfile_writes(tmp_path: Path, ext: str, fmt: str) -> None:
    path = tmp_path / f"mix.{ext}"
    with sf.SoundFile(path, "w", RATE, 2, format=fmt) as fh:
        assert header_state(path) is HeaderState.INCOMPLETE
        fh.write(tone(0.5))
        fh.flush()
        assert header_state(path) is HeaderState.INCOMPLETE
    assert header_state(path) is HeaderState.COMPLETE
    data = path.read_bytes()
    truncated = tmp_path / f"cut.{ext}"
    truncated.write_bytes(data[: len(data) - 1000])
    assert header_state(truncated) is HeaderState.INCOMPLETE


def test_header_garbage_empty_and_flac(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not a RIFF file at all" * 4)
    assert header_state(garbage) is HeaderState.INVALID
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert header_state(empty) is HeaderState.INCOMPLETE
    assert header_state(tmp_path / "missing.wav") is HeaderState.INCOMPLETE
    flac = tmp_path / "mix.flac"
    sf.write(flac, tone(0.2), RATE)
    assert header_state(flac) is HeaderState.COMPLETE
    noise = tmp_path / "noise.flac"
    noise.write_bytes(os.urandom(2048))
    assert header_state(noise) is HeaderState.INCOMPLETE


# --- the watcher on real folders ------------------------------------------------------------

class Reports:
    """Collects on_ready calls; tests await them instead of sleeping."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Path] = queue.Queue()
        self.seen: list[Path] = []

    def __call__(self, path: Path) -> None:
        self.seen.append(path)
        self.queue.put(path)

    def next(self, timeout: float = WAIT) -> Path:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no bounce reported within {timeout} s; seen so far: {self.seen}") from None


@pytest.fixture
def watched(tmp_path: Path):
    folder = tmp_path / "bounces"
    out = folder / "Stems"  # the output folder inside the watched one: the risky layout
    out.mkdir(parents=True)
    reports = Reports()
    before = set(threading.enumerate())
    watchers: list[FolderWatcher] = []

    def make(**kwargs) -> FolderWatcher:
        kwargs.setdefault("stable_seconds", 0.5)
        kwargs.setdefault("stale_seconds", 1.5)
        kwargs.setdefault("poll_interval", 0.05)
        watcher = FolderWatcher([folder], [out], reports, **kwargs)
        watcher.start()
        watchers.append(watcher)
        return watcher

    yield folder, out, reports, make
    for watcher in watchers:
        watcher.stop()
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


def write_slowly(path: Path, chunks: int, pause: float, fmt: str = "WAV") -> None:
    """A real-time bounce: libsndfile writes in chunks and fixes the header on close."""
    with sf.SoundFile(path, "w", RATE, 2, format=fmt) as fh:
        for _ in range(chunks):
            fh.write(tone(0.25))
            fh.flush()
            time.sleep(pause)


def test_slow_bounce_reported_once_with_final_length(watched) -> None:
    folder, _, reports, make = watched
    make()
    path = folder / "slow.wav"
    write_slowly(path, chunks=8, pause=0.3)  # 2.4 s of writing, each pause longer than a poll
    assert reports.next() == path
    assert sf.info(str(path)).frames == 8 * int(0.25 * RATE)
    sentinel = folder / "after.wav"
    sf.write(sentinel, tone(0.1), RATE)
    assert reports.next() == sentinel
    assert reports.seen == [path, sentinel]


def test_temp_name_then_rename(watched) -> None:
    folder, _, reports, make = watched
    make()
    temp = folder / "mix.wav.part"
    write_slowly(temp, chunks=3, pause=0.1)
    final = folder / "mix.wav"
    os.rename(temp, final)
    assert reports.next() == final
    # Write into a hidden temp name, then move over the finished name: a re-bounce.
    hidden = folder / ".mix.wav"
    sf.write(hidden, tone(0.3), RATE)
    os.replace(hidden, final)
    assert reports.next() == final
    assert reports.seen == [final, final]


def test_rebounce_over_same_name_is_reported_again(watched) -> None:
    folder, _, reports, make = watched
    make()
    path = folder / "take.wav"
    sf.write(path, tone(0.2), RATE)
    assert reports.next() == path
    sf.write(path, tone(0.4), RATE)
    assert reports.next() == path


def test_own_outputs_hidden_and_non_audio_ignored(watched) -> None:
    folder, out, reports, make = watched
    make()
    (out / "mix").mkdir()
    sf.write(out / "mix" / "mix_vocals.wav", tone(0.1), RATE)
    other_set = folder / "old_set"
    other_set.mkdir()
    (other_set / "stems.json").write_text("{}")
    sf.write(other_set / "old_drums.wav", tone(0.1), RATE)
    sf.write(folder / ".hidden.wav", tone(0.1), RATE)
    sf.write(folder / "x.stembridge-tmp.wav", tone(0.1), RATE)
    (folder / "notes.txt").write_text("not audio")
    sentinel = folder / "real.wav"
    sf.write(sentinel, tone(0.1), RATE)
    assert reports.next() == sentinel
    assert reports.seen == [sentinel]


def test_garbage_reported_at_close_truncated_after_stale_timeout(watched) -> None:
    folder, _, reports, make = watched
    make()
    garbage = folder / "garbage.wav"
    garbage.write_bytes(b"not audio " * 100)
    assert reports.next() == garbage  # cannot become valid by growing: hand on now
    source = folder.parent / "full.wav"
    sf.write(source, tone(0.5), RATE)
    cut = folder / "cut.wav"
    started = time.monotonic()
    cut.write_bytes(source.read_bytes()[:20000])
    assert reports.next() == cut
    assert time.monotonic() - started >= 1.4  # waited out the stale timeout first


def test_moved_in_from_outside_the_watched_tree(watched) -> None:
    folder, _, reports, make = watched
    make()
    outside = folder.parent / "elsewhere.wav"
    sf.write(outside, tone(0.2), RATE)
    shutil.move(outside, folder / "arrived.wav")  # rename across watch boundary: created only
    assert reports.next() == folder / "arrived.wav"


def test_stability_rule_without_close_events(watched) -> None:
    """What macOS and Windows get: no close events, size/mtime must rest first."""
    folder, _, reports, make = watched
    make(close_events=False, stable_seconds=0.6)
    path = folder / "mac.aiff"
    started = time.monotonic()
    write_slowly(path, chunks=5, pause=0.3, fmt="AIFF")  # pauses shorter than the rest time
    finished = time.monotonic()
    assert reports.next() == path
    assert time.monotonic() - finished >= 0.5
    assert finished - started >= 1.4
    sentinel = folder / "next.wav"
    sf.write(sentinel, tone(0.1), RATE)
    assert reports.next() == sentinel
    assert reports.seen == [path, sentinel]


def test_callback_error_does_not_stop_watching(watched, tmp_path: Path) -> None:
    folder, _, reports, make = watched
    calls: list[Path] = []

    def flaky(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise RuntimeError("service down")
        reports(path)

    watcher = FolderWatcher([folder], [], flaky, stable_seconds=0.5, stale_seconds=1.5, poll_interval=0.05)
    with watcher:
        sf.write(folder / "first.wav", tone(0.1), RATE)
        sf.write(folder / "second.wav", tone(0.1), RATE)
        assert reports.next() == folder / "second.wav"
    assert calls == [folder / "first.wav", folder / "second.wav"]


def test_missing_folder_is_a_startup_error(tmp_path: Path) -> None:
    watcher = FolderWatcher([tmp_path / "nope"], [], lambda p: None)
    with pytest.raises(StartupError, match="cannot watch .*nope: not a folder"):
        watcher.start()
    watcher.stop()
