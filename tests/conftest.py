"""Shared fixtures: a tiny random-weight HTDemucs in a local model folder, generated audio."""

from __future__ import annotations

import os
from pathlib import Path

# Tests never touch the network: a model missing locally must fail fast, not download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("STEMBRIDGE_OFFLINE", "1")

import numpy as np
import pytest

from bridge.modelfactory import make_model_repo


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local model folder (`--model-repo`) holding tiny random-weight stand-ins for
    htdemucs, htdemucs_ft and htdemucs_6s, loaded through demucs' own loader."""
    return make_model_repo(tmp_path_factory.mktemp("models"))


def multitone(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """A mix-like test signal: a bass tone, a mid tone and noise bursts, (frames, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    bass = 0.3 * np.sin(2 * np.pi * 55 * t)
    mid = 0.2 * np.sin(2 * np.pi * 440 * t + 0.5)
    bursts = 0.1 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 2 * t) > 0.7)
    mono = (bass + mid + bursts).astype(np.float32)
    if channels == 1:
        return mono[:, None]
    cols = [mono * (0.8 + 0.2 * c) + 0.01 * rng.standard_normal(t.size).astype(np.float32) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


@pytest.fixture
def daemon_with_sources(tmp_path: Path, model_repo: Path, monkeypatch: pytest.MonkeyPatch):
    """A daemon (not yet started), an OSC peer, and a folder of sources it may read."""
    from test_daemon_startup import DaemonProcess, OscPeer

    sources = tmp_path / "sources"
    sources.mkdir()
    monkeypatch.setenv("STEMBRIDGE_PATHS_ALLOWED_ROOTS", str(sources))
    daemon = DaemonProcess(tmp_path, model_repo)
    peer = OscPeer()
    yield daemon, peer, sources
    peer.close()
    daemon.stop()


@pytest.fixture
def make_clip(tmp_path: Path):
    """Write a generated clip: make_clip(name, seconds, rate, channels, subtype) -> Path."""
    import soundfile as sf

    def _make(name: str = "clip.wav", seconds: float = 3.0, rate: int = 44100, channels: int = 2,
              subtype: str | None = None, folder: Path | None = None, seed: int = 0) -> Path:
        path = (folder or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, multitone(seconds, rate, channels, seed), rate, subtype=subtype)
        return path

    return _make


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Every background thread a test starts (watchers, OSC servers, workers, previews) must
    be stopped and joined by the time the test ends."""
    import threading

    before = set(threading.enumerate())
    yield
    leaked = []
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=2.0)
        if thread.is_alive():
            leaked.append(thread.name)
    assert not leaked, f"threads left running: {', '.join(sorted(leaked))}"
