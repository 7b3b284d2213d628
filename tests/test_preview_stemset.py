"""Reading stem sets and writing previews (bridge.preview.stemset).

Also the helpers the other preview tests import: stem sets made of real audio files and a
stems.json written the way the separator publishes them (bridge.wavio for WAV with its bext
chunk, bridge.manifest for the manifest)."""

from __future__ import annotations

from pathlib import Path

import json

import numpy as np
import pytest
import soundfile as sf

from bridge.errors import InputError
from bridge.manifest import MANIFEST_NAME, read_manifest, write_manifest
from bridge.preview.stemset import open_stem_set, preview_path, read_stem, write_preview
from bridge.wavio import read_time_reference, write_wav

RATE = 44100
STEMS = ("drums", "bass", "other", "vocals")


def tone(freq: float, seconds: float, rate: int = RATE, channels: int = 2, amp: float = 0.25) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    mono = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def noise_stems(seconds: float = 0.5, rate: int = RATE, channels: int = 2, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * rate))
    return {name: (0.1 * rng.standard_normal((frames, channels))).astype(np.float32) for name in STEMS}


def make_stem_set(folder: Path, stems: dict[str, np.ndarray], rate: int = RATE, clip: str = "song",
                  ext: str = "wav", bit_depth: str = "32f", time_reference: int | None = 123456) -> Path:
    """Write stems as `<folder>/<clip>/<clip>_<stem>.<ext>` plus stems.json; returns the manifest."""
    out = folder / clip
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    first = next(iter(stems.values()))
    for name, audio in stems.items():
        file = out / f"{clip}_{name}.{ext}"
        if ext == "wav":
            write_wav(file, audio, rate, bit_depth, time_reference)
        else:
            sf.write(file, audio, rate, subtype={"16": "PCM_16", "24": "PCM_24"}[bit_depth])
        files[name] = file.name
    manifest = out / MANIFEST_NAME
    write_manifest(manifest, {
        "version": 1, "job_id": "job123", "source": str(folder / f"{clip}.wav"), "source_hash": "0" * 64,
        "sample_rate": rate, "frames": first.shape[0], "channels": first.shape[1],
        "time_reference": time_reference, "model": "htdemucs", "quality": "preview", "device": "cpu",
        "stems": files, "preview": None, "created": "2024-01-01T00:00:00+00:00",
    })
    return manifest


def blocks_of(audio: np.ndarray, size: int = 1000):
    for start in range(0, len(audio), size):
        yield audio[start:start + size]


def test_open_stem_set_from_folder_or_manifest(tmp_path: Path) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    for target in (manifest, manifest.parent):
        stem_set = open_stem_set(target)
        assert stem_set.manifest_path == manifest
        assert set(stem_set.files) == set(STEMS)
        assert stem_set.frames == int(0.5 * RATE) and stem_set.channels == 2
    assert preview_path(stem_set) == manifest.parent / "song_preview.wav"


def test_read_stem_is_interleaved_float32(tmp_path: Path) -> None:
    stems = noise_stems()
    stem_set = open_stem_set(make_stem_set(tmp_path, stems))
    audio = read_stem(stem_set, "bass")
    assert audio.dtype == np.float32 and audio.flags.c_contiguous
    np.testing.assert_array_equal(audio, stems["bass"])


def test_stem_with_other_length_than_manifest_is_refused(tmp_path: Path) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    write_wav(manifest.parent / "song_bass.wav", np.zeros((100, 2), np.float32), RATE)
    with pytest.raises(InputError, match=r"song_bass\.wav: stem is 44100 Hz, 100 frames.*manifest says"):
        read_stem(open_stem_set(manifest), "bass")


def test_stem_outside_the_folder_is_refused(tmp_path: Path) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    data = json.loads(manifest.read_text())
    data["stems"]["bass"] = "../elsewhere.wav"
    manifest.write_text(json.dumps(data))
    with pytest.raises(InputError, match="outside the set's folder"):
        open_stem_set(manifest)


def test_missing_manifest_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="stems.json: no such manifest"):
        open_stem_set(tmp_path)


def test_wav_preview_keeps_format_and_time_reference_and_is_recorded(tmp_path: Path) -> None:
    manifest = make_stem_set(tmp_path, noise_stems(), bit_depth="24", time_reference=987654)
    stem_set = open_stem_set(manifest)
    mix = noise_stems(seed=5)["drums"]
    path = write_preview(stem_set, blocks_of(mix))
    info = sf.info(path)
    assert (info.samplerate, info.frames, info.channels, info.subtype) == (RATE, len(mix), 2, "PCM_24")
    assert read_time_reference(path) == 987654
    assert read_manifest(manifest)["preview"] == "song_preview.wav"
    # Only the preview and the stems remain: no temporary files left behind.
    assert sorted(p.name for p in manifest.parent.iterdir()) == sorted(
        ["stems.json", "song_preview.wav"] + [f"song_{s}.wav" for s in STEMS])


def test_flac_preview_for_flac_stems_is_clipped_not_wrapped(tmp_path: Path) -> None:
    manifest = make_stem_set(tmp_path, noise_stems(), ext="flac", bit_depth="16", time_reference=None)
    loud = np.full((int(0.5 * RATE), 2), 1.5, np.float32)
    path = write_preview(open_stem_set(manifest), blocks_of(loud))
    assert path.name == "song_preview.flac"
    back, _ = sf.read(path, dtype="float32")
    assert back.min() > 0.99  # an int overflow would have wrapped to negative


def test_replacing_a_preview_hands_the_old_file_to_retire(tmp_path: Path) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    stem_set = open_stem_set(manifest)
    first = noise_stems(seed=7)["vocals"]
    write_preview(stem_set, blocks_of(first))
    retired: list[Path] = []
    path = write_preview(stem_set, blocks_of(first * 0.5), retire=retired.append)
    assert len(retired) == 1 and retired[0].name.startswith(".song_preview.wav")
    np.testing.assert_array_equal(sf.read(retired[0], dtype="float32")[0], first)
    np.testing.assert_array_equal(sf.read(path, dtype="float32")[0], first * 0.5)
