"""The daemon's watch folder end to end: a bounce dropped by rename becomes stems; the
stems it writes inside the watched folder never become jobs themselves."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import soundfile as sf

from bridge.jobs.store import DONE, read_jobs
from test_daemon_startup import DaemonProcess


def drop(make_clip, watch: Path, name: str, seed: int) -> Path:
    # How many DAWs export: write under a temporary name, then rename into place.
    temp = make_clip(f".{name}.part.wav", seconds=1.0, folder=watch, seed=seed)
    final = watch / name
    os.replace(temp, final)
    return final


def test_dropped_bounces_become_stems_and_outputs_are_not_rewatched(tmp_path: Path, model_repo: Path,
                                                                      make_clip) -> None:
    daemon = DaemonProcess(tmp_path, model_repo)
    daemon.output = daemon.watch / "Stems"  # the output folder inside the watched one
    try:
        daemon.start()
        first = drop(make_clip, daemon.watch, "verse.wav", seed=1)
        first_id = daemon.wait_for(r"job (\w+) done", timeout=60).group(1)
        # A second bounce after the first set was published: had the daemon picked up its
        # own stems, those jobs would be queued before this one.
        drop(make_clip, daemon.watch, "chorus.wav", seed=2)
        daemon.wait_for(r"job (\w+) done", timeout=60)
        jobs = list(read_jobs(daemon.state / "jobs.sqlite"))
        assert [(j.source.name, j.state, j.origin) for j in jobs] == [
            ("verse.wav", DONE, "watch"), ("chorus.wav", DONE, "watch")]
        assert jobs[0].id == first_id
        manifest = json.loads((daemon.output / "verse" / "stems.json").read_text())
        assert manifest["source"] == str(first.resolve())
        for name in manifest["stems"].values():
            assert sf.info(str(daemon.output / "verse" / name)).frames == sf.info(str(first)).frames
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
    finally:
        daemon.stop()


def test_bounces_made_while_the_daemon_was_down_are_queued_at_the_next_start(tmp_path: Path, model_repo: Path,
                                                                               make_clip) -> None:
    daemon = DaemonProcess(tmp_path, model_repo)
    daemon.watch.mkdir(parents=True, exist_ok=True)
    make_clip("earlier.wav", seconds=1.0, folder=daemon.watch, seed=1)  # there before the first start
    try:
        daemon.start()
        # Logged before "serving on", which start() awaited.
        assert "first start: files already in the watched folders are left alone" in daemon.log()
        drop(make_clip, daemon.watch, "live.wav", seed=2)
        daemon.wait_for(r"job (\w+) done", timeout=60)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0

        drop(make_clip, daemon.watch, "missed.wav", seed=3)  # bounced while nothing watched
        daemon.start()
        assert "1 bounce(s) made while stembridge was not running: missed.wav" in daemon.log()
        daemon.wait_for(r"job (\w+) done", timeout=60)
        # earlier.wav predates the first start; live.wav was done in the first run.
        assert [(j.source.name, j.state) for j in read_jobs(daemon.state / "jobs.sqlite")] == [
            ("live.wav", DONE), ("missed.wav", DONE)]
        assert (daemon.output / "missed" / "stems.json").exists()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait_exit() == 0
    finally:
        daemon.stop()
