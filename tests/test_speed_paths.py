"""Speed paths stay correct: reduced precision is close to fp32 and only on where chosen,
silence in a real file is skipped through the whole pipeline. (Timing lives in bench/.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.engine import Normalisation, SeparationParams, StreamSeparator
from bridge.models import load_model
from bridge.pipeline import EngineSettings, SeparationRequest, Separator
from bridge.presets import PRESETS, cpu_has_native_bf16, preset_for, resolve_precision
from conftest import multitone


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    noise = float(np.sum((reference - test) ** 2))
    return float(10 * np.log10(np.sum(reference ** 2) / noise)) if noise else float("inf")


def separate(bag, x: np.ndarray, precision: str) -> np.ndarray:
    sep = StreamSeparator(bag, "cpu", SeparationParams(shifts=0, overlap=0.10, precision=precision,
                                                       skip_silence=False))
    return np.concatenate(list(sep.separate([x], len(x), Normalisation(0.0, 0.1))), axis=1)


def test_bf16_output_is_float32_and_within_40_db_of_fp32(model_repo):
    bag = load_model("htdemucs", model_repo).model
    x = (np.random.default_rng(0).standard_normal((9 * 44100, 2)) * 0.1).astype(np.float32)
    full = separate(bag, x, "fp32")
    reduced = separate(bag, x, "bf16")
    assert reduced.dtype == np.float32 and reduced.shape == full.shape == (4, len(x), 2)
    snr = snr_db(full, reduced)
    # Finite: bf16 really ran; >= 40 dB: the precision target of the preview preset.
    assert 40.0 <= snr < 150.0, f"bf16 vs fp32 SNR {snr:.1f} dB"


def test_reduced_precision_only_where_chosen():
    assert PRESETS["render"].precision == "fp32"           # quality-affecting: opt-in for render
    assert preset_for("render", precision="bf16").precision == "bf16"
    assert PRESETS["preview"].precision == "auto"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("auto", "mps") == "fp32"       # emulated there: slower than fp32
    assert resolve_precision("fp32", "cuda") == "fp32"


def stems(manifest: Path) -> np.ndarray:
    data = json.loads(manifest.read_text())
    return np.stack([sf.read(str(manifest.parent / f), dtype="float32")[0] for f in data["stems"].values()])


def test_render_opt_in_bf16_changes_the_output_a_little(tmp_path, model_repo, make_clip):
    clip = make_clip("take.wav", seconds=4.0)
    separator = Separator(EngineSettings(device="cpu", model_repo=model_repo, cache_dir=tmp_path / "cache"))
    full = separator.run(SeparationRequest(clip, tmp_path / "fp32", quality="render", model="htdemucs"))
    reduced = separator.run(SeparationRequest(clip, tmp_path / "bf16", quality="render", model="htdemucs",
                                              precision="bf16"))
    # A different cache key (not the fp32 entry replayed), and close to fp32.
    snr = snr_db(stems(full), stems(reduced))
    assert 40.0 <= snr < 150.0, f"render bf16 vs fp32 SNR {snr:.1f} dB"


def test_half_silent_file_runs_the_model_on_fewer_segments(tmp_path, model_repo):
    """A bounce whose second half is digital silence: the preview pipeline's normalisation must
    still recognise the silence (it is not zero after normalising) and skip those segments."""
    seconds = 30
    dense = multitone(seconds, 44100, 2, seed=3).astype(np.float32)
    sparse = dense.copy()
    sparse[len(sparse) // 2:] = 0.0
    sf.write(str(tmp_path / "dense.wav"), dense, 44100, subtype="FLOAT")
    sf.write(str(tmp_path / "sparse.wav"), sparse, 44100, subtype="FLOAT")
    separator = Separator(EngineSettings(device="cpu", model_repo=model_repo, use_cache=False))
    model = separator.model("htdemucs").model.models[0]
    calls: list[int] = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        separator.run(SeparationRequest(tmp_path / "dense.wav", tmp_path / "out", quality="preview"))
        dense_calls = len(calls)
        calls.clear()
        manifest = separator.run(SeparationRequest(tmp_path / "sparse.wav", tmp_path / "out", quality="preview"))
    finally:
        handle.remove()
    # Preview (overlap 0.10, 7.8 s segments) on 30 s: 5 segments, the last 2 wholly silent.
    assert dense_calls == 5 and len(calls) == 3
    out = stems(manifest)
    assert np.all(out[:, int(22 * 44100):] == 0.0)
    assert np.any(out[:, : 44100 * 5] != 0.0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_all_silent_input_never_runs_the_model(model_repo, precision):
    bag = load_model("htdemucs", model_repo).model
    model = bag.models[0]
    calls: list[int] = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        x = np.zeros((10 * 44100, 2), np.float32)
        sep = StreamSeparator(bag, "cpu", SeparationParams(shifts=1, overlap=0.25, precision=precision))
        out = np.concatenate(list(sep.separate([x], len(x), Normalisation(0.0, 1e-8))), axis=1)
    finally:
        handle.remove()
    assert calls == [] and out.shape == (4, len(x), 2) and not np.any(out)
