"""StemBridge's WAV writer, read back by libsndfile and sox: plain RIFF, and RF64 past 4 GiB."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge import wavio
from bridge.bounce_header import HeaderState, header_state
from bridge.wavio import read_time_reference, write_wav

RATE = 48000


def signal(frames: int = 4801, channels: int = 2) -> np.ndarray:
    return (np.random.default_rng(1).standard_normal((frames, channels)) * 0.25).astype(np.float32)


def chunk_ids(path: Path) -> list[bytes]:
    with open(path, "rb") as handle:
        return [chunk_id for chunk_id, _, _ in wavio.iter_chunks(handle)]


def sox_frames(path: Path) -> int:
    return int(subprocess.run(["soxi", "-s", str(path)], capture_output=True, text=True, check=True).stdout)


needs_sox = pytest.mark.skipif(shutil.which("soxi") is None, reason="needs sox (soxi)")


def test_a_plain_wav_reserves_room_for_ds64_and_reads_back(tmp_path):
    audio = signal()
    path = tmp_path / "plain.wav"
    write_wav(path, audio, RATE, "32f", time_reference=RATE * 61)
    head = path.read_bytes()[:12]
    assert head[:4] == b"RIFF" and struct.unpack("<I", head[4:8])[0] == path.stat().st_size - 8
    assert chunk_ids(path) == [b"JUNK", b"fmt ", b"fact", b"bext", b"data"]
    data, rate = sf.read(path, dtype="float32")
    assert rate == RATE
    np.testing.assert_array_equal(data, audio)
    assert read_time_reference(path) == RATE * 61
    assert header_state(path) is HeaderState.COMPLETE


@pytest.mark.parametrize("depth, subtype", [("32f", "FLOAT"), ("24", "PCM_24"), ("16", "PCM_16")])
def test_past_the_riff_limit_the_file_becomes_rf64(tmp_path, monkeypatch, depth, subtype):
    """The 4 GiB limit, lowered so that a small file crosses it: the same close() path a
    three-hour stem takes."""
    monkeypatch.setattr(wavio, "MAX_RIFF_BYTES", 4096)
    audio = signal()
    path = tmp_path / f"long_{depth}.wav"
    write_wav(path, audio, RATE, depth, time_reference=RATE * 3600 * 5)
    raw = path.read_bytes()
    assert raw[:4] == b"RF64" and struct.unpack("<I", raw[4:8])[0] == 0xFFFFFFFF
    assert raw[12:16] == b"ds64"
    riff_size, data_size, frames, table = struct.unpack("<QQQI", raw[20:48])
    width = {"32f": 4, "24": 3, "16": 2}[depth]
    assert (riff_size, data_size, frames, table) == (len(raw) - 8, len(audio) * 2 * width, len(audio), 0)
    assert chunk_ids(path)[:4] == [b"ds64", b"fmt "] + ([b"fact", b"bext"] if depth == "32f" else [b"bext", b"data"])
    info = sf.info(str(path))
    assert (info.format, info.subtype, info.frames) == ("RF64", subtype, len(audio))
    data, _ = sf.read(path, dtype="float32")
    np.testing.assert_allclose(data, audio, atol=2.0 / 32768 if depth == "16" else 1e-6)
    assert read_time_reference(path) == RATE * 3600 * 5
    assert header_state(path) is HeaderState.COMPLETE


@needs_sox
def test_sox_reads_both_kinds(tmp_path, monkeypatch):
    audio = signal()
    write_wav(tmp_path / "plain.wav", audio, RATE, "24")
    monkeypatch.setattr(wavio, "MAX_RIFF_BYTES", 4096)
    write_wav(tmp_path / "rf64.wav", audio, RATE, "24")
    assert sox_frames(tmp_path / "plain.wav") == len(audio)
    assert sox_frames(tmp_path / "rf64.wav") == len(audio)
