"""Speed paths stay correct: reduced precision is close to fp32 and only on where chosen,
silence in a real file is skipped through the whole pipeline. (Timing lives in bench/.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from bridge import side_by_side
from bridge.engine import Normalisation, SeparationParams, StreamSeparator, even_span, segment_offsets
from bridge.lowprecision import (_attention, _conv_by_taps, _pointwise_conv, has_few_outputs, has_plain_layout,
                                 is_pointwise, reduced_precision_copy)
from bridge.models import load_model
from bridge.pipeline import EngineSettings, SeparationRequest, Separator
from bridge.presets import PRESETS, cpu_has_native_bf16, preset_for, resolve_precision
from conftest import multitone
from helpers import model_calls


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


def test_bf16_on_cpu_runs_a_bf16_weight_copy_and_leaves_the_model_fp32(model_repo):
    """The fast bf16 path runs a cached copy with bf16 weights; fp32 jobs keep using the
    untouched original."""
    bag = load_model("htdemucs", model_repo).model
    model = bag.models[0]
    x = (np.random.default_rng(1).standard_normal((9 * 44100, 2)) * 0.1).astype(np.float32)
    copy = reduced_precision_copy(model, torch.bfloat16)
    assert copy is reduced_precision_copy(model, torch.bfloat16)   # made once
    ran: list[str] = []
    handles = [copy.register_forward_hook(lambda *_: ran.append("bf16")),
               model.register_forward_hook(lambda *_: ran.append("fp32"))]
    try:
        separate(bag, x, "bf16")
        bf16_calls = list(ran)
        ran.clear()
        separate(bag, x, "fp32")
    finally:
        for handle in handles:
            handle.remove()
    assert bf16_calls == ["bf16", "bf16"] and ran == ["fp32", "fp32"]  # 9 s: two segments each
    assert {p.dtype for p in copy.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_reduced_precision_only_where_chosen():
    assert PRESETS["render"].precision == "fp32"           # quality-affecting: opt-in for render
    assert preset_for("render", precision="bf16").precision == "bf16"
    assert PRESETS["preview"].precision == "auto"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("auto", "mps") == "fp32"       # emulated there: slower than fp32
    assert resolve_precision("auto", "cuda") == "fp32"      # bf16 autocast measured slower there
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_precision("bf16", "cuda") == "bf16"


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
    with model_calls(model) as calls:
        separator.run(SeparationRequest(tmp_path / "dense.wav", tmp_path / "out", quality="preview"))
        dense_calls = len(calls)
        calls.clear()
        manifest = separator.run(SeparationRequest(tmp_path / "sparse.wav", tmp_path / "out", quality="preview"))
    # Preview on 30 s: 4 evenly spread 7.8 s segments; the sounding first half needs only 2,
    # and nothing runs on the silence.
    assert dense_calls == 4 and len(calls) == 2
    out = stems(manifest)
    assert np.all(out[:, int(15.2 * 44100):] == 0.0)
    assert np.any(out[:, : 44100 * 5] != 0.0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_all_silent_input_never_runs_the_model(model_repo, precision):
    bag = load_model("htdemucs", model_repo).model
    with model_calls(bag.models[0]) as calls:
        x = np.zeros((10 * 44100, 2), np.float32)
        sep = StreamSeparator(bag, "cpu", SeparationParams(shifts=1, overlap=0.25, precision=precision))
        out = np.concatenate(list(sep.separate([x], len(x), Normalisation(0.0, 1e-8))), axis=1)
    assert calls == [] and out.shape == (4, len(x), 2) and not np.any(out)


def test_islands_of_sound_in_silence_get_a_segment_each(tmp_path, model_repo):
    """A 60 s bounce with two short hits in silence: two model calls, the hits separated, the
    silence around them exact digital silence, and the stems still sum to the source."""
    audio = np.zeros((60 * 44100, 2), np.float32)
    burst = multitone(1.0, 44100, 2, seed=5).astype(np.float32)
    audio[10 * 44100: 11 * 44100] = burst
    audio[40 * 44100: 41 * 44100] = burst
    sf.write(str(tmp_path / "hits.wav"), audio, 44100, subtype="FLOAT")
    separator = Separator(EngineSettings(device="cpu", model_repo=model_repo, use_cache=False))
    with model_calls(separator.model("htdemucs").model.models[0]) as calls:
        manifest = separator.run(SeparationRequest(tmp_path / "hits.wav", tmp_path / "out", quality="preview",
                                                   exact_sum=True))
    assert len(calls) == 2
    out = stems(manifest)
    assert np.any(out[:, 10 * 44100: 11 * 44100] != 0.0)
    assert np.all(out[:, : 5 * 44100] == 0.0) and np.all(out[:, 46 * 44100:] == 0.0)
    assert np.all(out[:, 25 * 44100: 35 * 44100] == 0.0)
    np.testing.assert_allclose(out.sum(axis=0), audio, atol=1e-5)


def test_silence_runs_are_found_across_blocks(tmp_path):
    from bridge.audio import probe
    from bridge.fingerprint import normalisation, sounding_intervals

    audio = multitone(20.0, 48000, 2, seed=2).astype(np.float32)
    audio[48000 * 3: 48000 * 9] = 0.0          # 6 s: found
    audio[48000 * 12: 48000 * 12 + 24000] = 0.0  # 0.5 s: too short to matter
    audio[48000 * 17:] = 0.0                   # trailing 3 s: found
    sf.write(str(tmp_path / "gaps.wav"), audio, 48000, subtype="FLOAT")
    _, silences = normalisation(probe(tmp_path / "gaps.wav"))
    assert silences == [(48000 * 3, 48000 * 9), (48000 * 17, 48000 * 20)]
    active = sounding_intervals(silences, 48000 * 20, 48000, 44100, 44100 * 20)
    margin = int(0.05 * 44100)
    assert active[0] == (0, 3 * 44100 + margin)
    assert abs(active[1][0] - (9 * 44100 - margin)) <= 1 and abs(active[1][1] - (17 * 44100 + margin)) <= 1
    assert len(active) == 2


@pytest.mark.parametrize("overlap", [0.05, 0.25, 0.5])
def test_even_span_is_the_longest_input_that_many_segments_cover(overlap):
    segment_length = 343980  # htdemucs' 7.8 s at 44.1 kHz
    stride = int((1 - overlap) * segment_length)
    for count in range(1, 6):
        span = even_span(count, segment_length, stride)
        assert len(segment_offsets(span, segment_length, stride, "even")) == count
        assert len(segment_offsets(span + 1, segment_length, stride, "even")) == count + 1


def test_warm_up_runs_the_calls_the_cpu_runs_side_by_side_and_writes_nothing(tmp_path, model_repo):
    """As many calls as the CPU runs at once (two on two cores): run side by side, they
    prepare the kernels for that and for a lone call."""
    separator = Separator(EngineSettings(device="cpu", model_repo=model_repo, cache_dir=tmp_path / "cache"))
    side_by_side_calls = side_by_side.most_calls(torch.device("cpu"))
    with model_calls(separator.model("htdemucs").model.models[0]) as calls:
        separator.warm_up("preview")
    assert calls == [1] * side_by_side_calls
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))
    # A bag of four (render's htdemucs_ft) is warmed through its first model only, not all four.
    with model_calls(*separator.model("htdemucs_ft").model.models) as calls:
        separator.warm_up("render")
    assert calls == [1] * side_by_side_calls


@pytest.mark.parametrize("cross", [False, True])
def test_explicit_attention_equals_torch_multihead_attention(cross):
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(64, 4, batch_first=True).eval()
    assert has_plain_layout(attention)
    query = torch.randn(2, 50, 64)
    key = torch.randn(2, 30, 64) if cross else query
    with torch.inference_mode():
        expected, _ = attention(query, key, key, need_weights=False)
        got, weights = _attention(attention, query, key, key, need_weights=False)
    assert weights is None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv", [
    torch.nn.Conv1d(48, 6, 3, padding=1),                         # a residual branch's first layer
    torch.nn.Conv1d(48, 6, 3, padding=2, dilation=2),             # its dilated second layer
    torch.nn.Conv1d(16, 5, 5, padding=6, dilation=3, bias=False),
], ids=["plain", "dilated", "wide-no-bias"])
@pytest.mark.parametrize("batch, length", [(1, 300), (3, 57), (2, 4), (2, 1)])
def test_convolution_by_taps_equals_torch_convolution(conv, batch, length):
    """Every length, including ones shorter than the kernel's reach, where taps fall off both ends."""
    torch.manual_seed(0)
    assert has_few_outputs(conv)
    x = torch.randn(batch, conv.in_channels, length)
    with torch.inference_mode():
        torch.testing.assert_close(_conv_by_taps(conv, x), conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv, shape", [
    (torch.nn.Conv1d(6, 96, 1), (1, 6, 333)),
    (torch.nn.Conv1d(6, 96, 1, bias=False), (4, 6, 50)),
    (torch.nn.Conv2d(48, 96, 1), (1, 48, 9, 17)),
    (torch.nn.Conv2d(48, 96, 1), (2, 48, 9, 17)),
])
def test_pointwise_convolution_as_a_product_equals_torch_convolution(conv, shape):
    torch.manual_seed(0)
    assert is_pointwise(conv)
    x = torch.randn(*shape)
    with torch.inference_mode():
        torch.testing.assert_close(_pointwise_conv(conv, x), conv(x), rtol=1e-5, atol=1e-5)


def test_only_convolutions_the_products_compute_exactly_are_replaced():
    assert not is_pointwise(torch.nn.Conv1d(6, 96, 1, stride=2))
    assert not is_pointwise(torch.nn.Conv1d(6, 96, 1, padding=1))
    assert not is_pointwise(torch.nn.Conv1d(6, 96, 1, groups=2))
    assert not has_few_outputs(torch.nn.Conv1d(48, 96, 3, padding=1))     # many outputs: oneDNN is as fast
    assert not has_few_outputs(torch.nn.Conv1d(48, 6, 3, padding=0))      # not 'same' padded
    assert not has_few_outputs(torch.nn.Conv1d(48, 6, 4, padding=2))      # even kernel
    assert not has_few_outputs(torch.nn.Conv1d(48, 6, 3, padding=1, padding_mode="reflect"))
    assert not has_few_outputs(torch.nn.Conv2d(48, 6, 3, padding=1))


def test_bf16_copy_computes_small_convolutions_as_products(model_repo):
    model = load_model("htdemucs", model_repo).model.models[0]
    copy = reduced_precision_copy(model, torch.bfloat16)
    replaced = {getattr(m.forward, "__func__", None) for m in copy.modules()}
    assert {_conv_by_taps, _pointwise_conv} <= replaced
    assert not any("forward" in vars(m) for m in model.modules())   # the original keeps its own forwards
