"""End to end: a real `stembridge serve` process with the tiny model, real folders, real UDP.

A subscriber socket hears every job; tests await its notifications instead of sleeping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_daemon_startup import DaemonProcess
from test_osc_server import OscPeer

RATE = 44100
JOB_TIMEOUT = 60.0


@pytest.fixture
def running(tmp_path: Path, model_repo: Path):
    process = DaemonProcess(tmp_path, model_repo)
    # Output inside the watched folder: the layout most likely to loop on its own stems.
    process.output = process.watch / "Stems"
    process.start("--output", str(process.output), "--quality", "preview")
    surface = OscPeer(process.port)
    surface.send("/stembridge/subscribe")
    assert surface.recv()[0] == "/stembridge/subscribed"
    yield process, surface
    surface.close()
    process.stop()


def next_job_end(peer: OscPeer) -> tuple[str, list]:
    """Skip queued/progress; return the first done or error notification."""
    while True:
        address, params = peer.recv(JOB_TIMEOUT)
        if address in ("/stembridge/done", "/stembridge/error"):
            return address, params


def queued_then_end(peer: OscPeer) -> tuple[list, tuple[str, list]]:
    address, params = peer.recv(JOB_TIMEOUT)
    assert address == "/stembridge/queued", (address, params)
    end = next_job_end(peer)
    assert end[1][0] == params[0]
    return params, end


def signal_frames(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    mono = (0.2 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 880 * t)).astype(np.float32)
    return np.stack([mono, 0.9 * mono], axis=1)


def test_slow_bounce_then_rename_bounce_each_processed_once(running) -> None:
    daemon, surface = running
    slow = daemon.watch / "slow.wav"
    audio = signal_frames(2.0)
    with sf.SoundFile(slow, "w", RATE, 2, subtype="PCM_24") as fh:  # a real-time bounce
        for start in range(0, len(audio), RATE // 4):
            fh.write(audio[start:start + RATE // 4])
            fh.flush()
            time.sleep(0.35)
    (queued, slow_path), (address, params) = queued_then_end(surface)
    assert (address, slow_path) == ("/stembridge/done", str(slow.resolve()))
    manifest = json.loads(Path(params[1]).read_text())
    assert manifest["frames"] == len(audio) and manifest["sample_rate"] == RATE
    for stem in manifest["stems"].values():
        assert sf.info(str(Path(params[1]).parent / stem)).frames == len(audio)

    temp = daemon.watch / "take2.wav.part"
    sf.write(temp, signal_frames(1.0), RATE, format="WAV")
    os.rename(temp, daemon.watch / "take2.wav")
    (_, path), (address, params) = queued_then_end(surface)
    assert (address, path) == ("/stembridge/done", str((daemon.watch / "take2.wav").resolve()))
    # Neither the stems written inside the watched folder nor the temp name became jobs.
    surface.send("/stembridge/status")
    jobs = [m for m in surface.recv_until("/stembridge/jobs_end") if m[0] == "/stembridge/job"]
    assert [(m[1][1], Path(m[1][3]).name) for m in jobs] == [("done", "stems.json"), ("done", "stems.json")]


def test_garbage_empty_truncated_report_errors_and_next_bounce_works(running) -> None:
    daemon, surface = running
    (daemon.watch / "garbage.wav").write_bytes(b"not a wave file " * 64)
    _, (address, params) = queued_then_end(surface)
    assert address == "/stembridge/error" and "garbage.wav" in params[1]

    good = daemon.watch.parent / "good.wav"
    sf.write(good, signal_frames(1.0), RATE)
    (daemon.watch / "cut.wav").write_bytes(good.read_bytes()[:30000])
    (daemon.watch / "empty.wav").write_bytes(b"")
    os.replace(good, daemon.watch / "good.wav")
    # The good one goes at once; the two whose header never completes are handed on once
    # closed and unchanged for a few seconds, so the user hears why they made no stems.
    names: dict[str, str] = {}
    ends: dict[str, tuple[str, str]] = {}
    while len(ends) < 3:
        address, params = surface.recv(JOB_TIMEOUT)
        if address == "/stembridge/queued":
            names[params[0]] = Path(params[1]).name
        elif address in ("/stembridge/done", "/stembridge/error"):
            ends[names[params[0]]] = (address, params[1])
    assert ends["good.wav"][0] == "/stembridge/done"
    for name in ("cut.wav", "empty.wav"):
        address, message = ends[name]
        assert address == "/stembridge/error" and name in message, (name, message)


def test_osc_requests_errors_and_a_separation(running, make_clip) -> None:
    daemon, surface = running
    daw = OscPeer(daemon.port)
    try:
        daw.send("/stembridge/separate", 7, types="i")
        assert daw.recv() == ("/stembridge/error", ["", "/stembridge/separate: argument 1 must be a string, got an integer 7"])
        daw.send("/stembridge/bogus")
        assert daw.recv()[1][1].startswith("unknown address '/stembridge/bogus'")
        outside = make_clip("outside.wav", seconds=0.5)
        daw.send("/stembridge/separate", str(outside))
        address, params = daw.recv()
        assert address == "/stembridge/error" and "outside the allowed folders" in params[1]
        daw.send("/stembridge/separate", str(daemon.watch / "nope.wav"))
        assert daw.recv()[1][1].endswith("nope.wav: no such file")

        # A file already in the watched folder, requested by OSC with options.
        clip = make_clip("req.wav", seconds=1.0, folder=daemon.root / "staging")
        target = daemon.watch / "sub" / "req.wav"
        target.parent.mkdir()
        os.replace(clip, target)
        queued_then_end(surface)  # the watcher's own job for it
        daw.send("/stembridge/separate", str(target), "quality=preview", "stems=4")
        address, params = daw.recv()
        assert address == "/stembridge/queued"
        job_id = params[0]
        address, params = next_job_end(daw)
        assert (address, params[0]) == ("/stembridge/done", job_id)
        assert json.loads(Path(params[1]).read_text())["quality"] == "preview"
        daw.send("/stembridge/ping")
        assert daw.recv()[0] == "/stembridge/pong"
    finally:
        daw.close()

    # The shell route a DAW without OSC takes: `stembridge send --wait` prints the manifest.
    send = [sys.executable, "-m", "bridge.cli", "send", "--port", str(daemon.port)]
    waited = subprocess.run(send + ["--wait", "/stembridge/separate", str(target), "stems=4"],
                            capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert waited.returncode == 0, waited.stderr
    lines = waited.stdout.splitlines()
    assert lines[0].startswith("/stembridge/queued ") and lines[-1].startswith("/stembridge/done ")
    finished_id = lines[-1].split()[1]
    refused = subprocess.run(send + ["/stembridge/cancel", finished_id], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1
    assert refused.stderr == f"stembridge: error: job {finished_id}: already done; " \
        "only queued or running jobs can be cancelled\n"
