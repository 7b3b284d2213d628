"""Previews and preview-then-render on a real daemon: OSC round trip, automatic previews, and
an in-place replacement that a reader never sees as a mixed or partial set."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_daemon_startup import DaemonProcess
from test_osc_daemon import JOB_TIMEOUT, signal_frames
from test_osc_server import OscPeer

RATE = 44100


def start(tmp_path: Path, model_repo: Path, *env: tuple[str, str]) -> tuple[DaemonProcess, OscPeer]:
    process = DaemonProcess(tmp_path, model_repo)
    base = process.env

    process.env = lambda: {**base(), **dict(env)}  # type: ignore[method-assign]
    process.start()
    peer = OscPeer(process.port)
    return process, peer


def wait_for(peer: OscPeer, address: str, job_id: str | None = None) -> list:
    while True:
        got, params = peer.recv(JOB_TIMEOUT)
        if got == "/stembridge/error" and address != got:
            raise AssertionError(f"error: {params}")
        if got == address and (job_id is None or params[0] == job_id):
            return params


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "watch" / "song.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signal_frames(2.0), RATE, subtype="FLOAT")
    return path


def test_preview_round_trip_over_osc(tmp_path, model_repo, clip):
    daemon, daw = start(tmp_path, model_repo)
    try:
        daw.send("/stembridge/separate", str(clip), "quality=preview")
        job_id = wait_for(daw, "/stembridge/queued")[0]
        manifest = Path(wait_for(daw, "/stembridge/done", job_id)[1])

        daw.send("/stembridge/preview", job_id, "vocals.gain_db=-6", "drums.mute=1")
        reply, params = daw.recv(JOB_TIMEOUT)
        assert reply == "/stembridge/preview_ready" and params[0] == job_id
        preview = Path(params[1])
        assert preview == manifest.parent / "song_preview.wav"
        data = json.loads(manifest.read_text())
        assert data["preview"] == "song_preview.wav"
        stems = {name: sf.read(manifest.parent / f, always_2d=True)[0] for name, f in data["stems"].items()}
        expected = stems["bass"] + stems["other"] + stems["vocals"] * 10 ** (-6 / 20)
        np.testing.assert_allclose(sf.read(preview, always_2d=True)[0], expected, atol=1e-5)

        daw.send("/stembridge/preview", job_id, "vocals.fx=nosucheffect")
        reply, params = daw.recv(JOB_TIMEOUT)
        assert reply == "/stembridge/error" and "nosucheffect" in params[1]
        daw.send("/stembridge/preview", "/etc/hostname")
        reply, params = daw.recv(JOB_TIMEOUT)
        assert reply == "/stembridge/error" and "no such job" in params[1]
        daw.send("/stembridge/ping")
        assert daw.recv(JOB_TIMEOUT)[0] == "/stembridge/pong"  # still serving
    finally:
        daw.close()
        daemon.stop()


def test_automatic_preview_after_a_preview_separation(tmp_path, model_repo, clip):
    daemon, daw = start(tmp_path, model_repo, ("STEMBRIDGE_PREVIEW_AUTO", "1"),
                        ("STEMBRIDGE_PREVIEW_PRESET", "karaoke"))
    try:
        daw.send("/stembridge/separate", str(clip), "quality=preview")
        job_id = wait_for(daw, "/stembridge/queued")[0]
        manifest = Path(wait_for(daw, "/stembridge/done", job_id)[1])
        params = wait_for(daw, "/stembridge/preview_ready", job_id)
        assert Path(params[1]).exists()
        assert json.loads(manifest.read_text())["preview"] == Path(params[1]).name
    finally:
        daw.close()
        daemon.stop()


class SetReader(threading.Thread):
    """A DAW-side reader: stems.json, then every stem, then stems.json again. An observation
    counts only when the manifest was present and unchanged across the read; every counted
    observation must be one whole set (stems that null against the source)."""

    def __init__(self, folder: Path, source: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.folder = folder
        self.source = source
        self.stop = threading.Event()
        self.seen: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        manifest = self.folder / "stems.json"
        while not self.stop.is_set():
            try:
                before = manifest.read_text()
                data = json.loads(before)
                stems = [sf.read(self.folder / f, always_2d=True)[0] for f in data["stems"].values()]
                after = manifest.read_text()
            except (OSError, ValueError, RuntimeError):
                continue  # set being replaced or not there yet: a reader retries
            if before != after:
                continue
            residual = np.abs(sum(stems) - self.source).max()
            if any(s.shape != self.source.shape for s in stems) or residual > 1e-4:
                self.failures.append(f"{data['quality']}: shapes {[s.shape for s in stems]}, residual {residual}")
            if not self.seen or self.seen[-1] != data["quality"]:
                self.seen.append(data["quality"])


def test_preview_then_render_replaces_the_set_in_place(tmp_path, model_repo, clip):
    daemon, daw = start(tmp_path, model_repo)
    reader = None
    try:
        daw.send("/stembridge/separate", str(clip), "quality=preview", "then_render=1", "exact_sum=1")
        job_id = wait_for(daw, "/stembridge/queued")[0]
        first = Path(wait_for(daw, "/stembridge/done", job_id)[1])
        reader = SetReader(first.parent, sf.read(clip, always_2d=True)[0])
        reader.start()
        names = {p.name for p in first.parent.iterdir()}
        follow = wait_for(daw, "/stembridge/queued")[0]
        assert follow == f"{job_id}-render"
        second = Path(wait_for(daw, "/stembridge/done", follow)[1])
        assert second == first  # same folder, same file names
        assert {p.name for p in second.parent.iterdir()} == names
        assert json.loads(second.read_text())["quality"] == "render"
        deadline = time.monotonic() + 10
        while reader.seen[-1:] != ["render"] and time.monotonic() < deadline:
            time.sleep(0.05)  # the reader polls files; nothing to await
        reader.stop.set()
        reader.join(10)
        assert reader.failures == []
        assert reader.seen == ["preview", "render"]
        assert json.loads(second.read_text())["job_id"] == follow
    finally:
        if reader is not None:
            reader.stop.set()
        daw.close()
        daemon.stop()


def test_then_render_needs_a_preview(tmp_path, model_repo, clip):
    daemon, daw = start(tmp_path, model_repo)
    try:
        daw.send("/stembridge/separate", str(clip), "quality=render", "then_render=1")
        reply, params = daw.recv(JOB_TIMEOUT)
        assert reply == "/stembridge/error" and "then_render=1" in params[1]
    finally:
        daw.close()
        daemon.stop()
