"""The streaming overlap-add against demucs' own apply_model, block-size independence,
silence skipping and cancellation."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import torch
from demucs.apply import apply_model

from bridge import side_by_side
from bridge.engine import Normalisation, SeparationParams, StreamSeparator, effective_segment
from bridge.errors import Cancelled
from bridge.models import load_model


@pytest.fixture(scope="module")
def bag(model_repo):
    return load_model("htdemucs", model_repo).model


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((int(seconds * 44100) + 37, 2)) * 0.1).astype(np.float32)


def stream(bag, x: np.ndarray, params: SeparationParams, block: int, norm=Normalisation(0.0, 1.0), **kw) -> np.ndarray:
    sep = StreamSeparator(bag, "cpu", params)
    blocks = (x[i:i + block] for i in range(0, len(x), block))
    return np.concatenate(list(sep.separate(blocks, len(x), norm, **kw)), axis=1)


@pytest.mark.parametrize("shifts", [0, 1])
def test_equals_apply_model(bag, shifts):
    x = noise(12.0)
    random.seed(3)  # apply_model draws its shift offsets from the global generator
    with torch.no_grad():
        want = apply_model(bag, torch.from_numpy(x.T.copy())[None], shifts=shifts, overlap=0.25)[0].numpy()
    got = stream(bag, x, SeparationParams(shifts=shifts, overlap=0.25, skip_silence=False, seed=3), block=20000)
    np.testing.assert_allclose(got.transpose(0, 2, 1), want, atol=1e-6)


def test_chunked_equals_unchunked(bag):
    """Streaming in small blocks gives what one whole-file block gives, at every sample."""
    x = noise(14.0, seed=1)
    params = SeparationParams(shifts=1, overlap=0.25, skip_silence=False)
    whole = stream(bag, x, params, block=len(x))
    chunked = stream(bag, x, params, block=4096)
    assert whole.shape == (4, len(x), 2)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_normalisation_is_undone(bag):
    x = noise(9.0, seed=2) + 0.05
    mono = x.mean(axis=1)
    norm = Normalisation(float(mono.mean()), float(mono.std()))
    random.seed(0)
    with torch.no_grad():
        ref = apply_model(bag, torch.from_numpy(((x - norm.mean) / norm.std).T.copy())[None], shifts=0,
                          overlap=0.1)[0].numpy() * norm.std + norm.mean
    got = stream(bag, x, SeparationParams(shifts=0, overlap=0.1, skip_silence=False), 30000, norm)
    np.testing.assert_allclose(got.transpose(0, 2, 1), ref, atol=1e-5)


def test_silent_segments_skip_the_model(bag):
    x = noise(30.0, seed=4)
    x[44100 * 8: 44100 * 25] = 0.0
    calls = []
    sep = StreamSeparator(bag, "cpu", SeparationParams(shifts=0, overlap=0.25, skip_silence=True))
    out = np.concatenate(list(sep.separate([x], len(x), Normalisation(0.0, 1.0),
                                           progress=lambda f, s: calls.append(f))), axis=1)
    # The middle of the silence is produced without the model and is exactly silent.
    # Only the segment at 11.7-19.5 s (all silent) covers 13.65-17.55 s.
    assert np.all(out[:, 44100 * 14: 44100 * 17] == 0.0)
    assert np.any(out[:, : 44100 * 5] != 0.0)
    assert calls[-1] == pytest.approx(1.0)


def test_cancel_stops_between_segments(bag):
    """Cancellation takes effect before the next model call. Segments that ran side by side
    with the one that saw it (bridge/side_by_side.py) have been computed: they still count."""
    x = noise(30.0, seed=5)
    cancel = threading.Event()
    seen = []

    def progress(fraction: float, stage: str) -> None:
        seen.append(fraction)
        if len(seen) == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        stream(bag, x, SeparationParams(shifts=0, overlap=0.25), 44100, progress=progress, cancel=cancel)
    side_by_side_calls = side_by_side.most_calls(torch.device("cpu"))
    assert len(seen) == max(2, side_by_side_calls)   # of 6 segments


def test_segment_is_clamped_to_the_models_maximum(bag):
    assert effective_segment(bag, None) == pytest.approx(7.8)
    assert effective_segment(bag, 10.0) == pytest.approx(7.8)
    assert effective_segment(bag, 4.0) == pytest.approx(4.0)


def test_bag_member_pruning_runs_only_models_for_wanted_sources(model_repo):
    ft = load_model("htdemucs_ft", model_repo).model
    assert len(StreamSeparator(ft, "cpu", SeparationParams()).members) == 4
    only_vocals = StreamSeparator(ft, "cpu", SeparationParams(), wanted_sources=["vocals"])
    assert len(only_vocals.members) == 1
    x = noise(3.0, seed=6)
    full = StreamSeparator(ft, "cpu", SeparationParams(shifts=0, skip_silence=False))
    want = np.concatenate(list(full.separate([x], len(x), Normalisation(0.0, 1.0))), axis=1)[3]
    one = StreamSeparator(ft, "cpu", SeparationParams(shifts=0, skip_silence=False), wanted_sources=["vocals"])
    got = np.concatenate(list(one.separate([x], len(x), Normalisation(0.0, 1.0))), axis=1)[0]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_even_spacing_with_skipped_silence_is_block_size_independent(bag):
    """Segments placed only where there is sound, streamed in small blocks, give what one
    whole-file block gives (a gap of silence must not shift later input). Equal to float
    rounding, not bit for bit: with the whole file at hand the engine runs segments in pairs
    on a core each, in small blocks it runs the lone segment before the gap on both cores."""
    x = noise(45.0, seed=7)
    x[44100 * 5: 44100 * 36] = 0.0
    active = [(0, 44100 * 5 + 2205), (44100 * 36 - 2205, len(x))]
    params = SeparationParams(shifts=0, overlap=0.05, spacing="even")
    whole = stream(bag, x, params, block=len(x), active=active)
    chunked = stream(bag, x, params, block=65536, active=active)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert np.all(whole[:, 44100 * 14: 44100 * 27] == 0.0)
    assert np.any(whole[:, 44100 * 40:] != 0.0)


def test_a_model_already_in_place_is_not_walked_again(model_repo):
    """Module.to visits every tensor: a job skips it when the model already sits on the device
    in eval mode, and still puts a model that is elsewhere, or training, right."""
    bag = load_model("htdemucs", model_repo).model   # a fresh load: the shared fixture stays untouched
    model = bag.models[0]
    moved: list[object] = []
    model.to = lambda *args, **kwargs: moved.append(args) or torch.nn.Module.to(model, *args, **kwargs)
    x = noise(2.0)
    params = SeparationParams(shifts=0, overlap=0.25, precision="fp32", skip_silence=False)
    stream(bag, x, params, block=len(x))
    assert moved == []
    model.train()
    stream(bag, x, params, block=len(x))
    assert moved == [(torch.device("cpu"),)] and not model.training
