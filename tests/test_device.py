"""Device choice and fallback. MPS and CUDA are absent here: the choice logic is tested as a
pure function and the fallback with this machine's real (missing) accelerators. Where CUDA
is present, tests/test_cuda.py runs the real thing."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from demucs.apply import BagOfModels

from bridge.device import is_out_of_memory, resolve_device, select_device, smoke_test
from bridge.engine import SeparationParams, shorter_segments_save_memory
from bridge.modelfactory import build_htdemucs
from bridge.pipeline import EngineSettings, Separator, _Plan


@pytest.mark.parametrize("requested,mps,cuda,expected", [
    ("auto", True, True, "mps"),
    ("auto", False, True, "cuda"),
    ("auto", False, False, "cpu"),
    ("auto", True, False, "mps"),
    ("cpu", True, True, "cpu"),
    ("cuda", False, True, "cuda"),
    ("cuda", True, False, "cpu"),
    ("mps", False, True, "cpu"),
    ("mps", True, False, "mps"),
])
def test_select_device(requested, mps, cuda, expected):
    device, reason = select_device(requested, mps, cuda)
    assert device == expected
    assert reason


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        select_device("tpu", False, False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_falls_back_to_cpu():
    device, reason = resolve_device("cuda")
    assert device == "cpu" and "CUDA requested but not available" in reason
    assert smoke_test("cuda") is not None  # the real smoke test fails here
    assert smoke_test("cpu") is None


def test_out_of_memory_detection():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_out_of_memory_goes_to_the_cpu_for_htdemucs(model_repo):
    """HTDemucs pads every call to its 7.8 s training length, so a shorter segment would need
    the same memory: out of memory on an accelerator goes straight to the CPU."""
    sep = Separator(EngineSettings(device="cpu", model_repo=model_repo, use_cache=False))
    loaded = sep.model("htdemucs")
    assert not shorter_segments_save_memory(loaded.model)
    oom = torch.OutOfMemoryError("CUDA out of memory")
    retry = sep._fallback(_Plan("htdemucs", SeparationParams(segment=None, precision="bf16"), None, "cuda"),
                          loaded, oom)
    assert retry is not None and retry.device == "cpu" and retry.params.segment is None
    assert sep._fallback(retry, loaded, MemoryError()) is None  # out of memory on the CPU: nothing left
    # A failure that is neither memory nor the accelerator's is not retried.
    assert sep._fallback(_Plan("htdemucs", SeparationParams(), None, "cpu"), loaded, ValueError("x")) is None
    # Any runtime failure on an accelerator retries on the CPU.
    retry = sep._fallback(_Plan("htdemucs", SeparationParams(), None, "mps"), loaded,
                          RuntimeError("MPS: unsupported operation"))
    assert retry is not None and retry.device == "cpu"


def test_out_of_memory_halves_the_segment_where_that_saves_memory(model_repo):
    """A model that runs shorter segments at their own length (here an HTDemucs built without
    `use_train_segment`) first retries with halved segments down to MIN_SEGMENT, then the CPU."""
    sep = Separator(EngineSettings(device="cpu", model_repo=model_repo, use_cache=False))
    loaded = sep.model("htdemucs")
    model = build_htdemucs("tiny")
    model.use_train_segment = False
    flexible = replace(loaded, model=BagOfModels([model]))
    assert shorter_segments_save_memory(flexible.model)
    plan = _Plan("htdemucs", SeparationParams(segment=None), None, "cuda")
    oom = torch.OutOfMemoryError("CUDA out of memory")
    steps = []
    while plan is not None:
        steps.append((plan.device, round(plan.params.segment or 7.8, 2)))
        plan = sep._fallback(plan, flexible, oom)
    assert steps[:3] == [("cuda", 7.8), ("cuda", 3.9), ("cuda", 1.95)]
    assert steps[3][0] == "cpu" and len(steps) >= 4
