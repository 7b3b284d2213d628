"""Choosing where separation runs: Apple MPS, CUDA or CPU.

`auto` prefers MPS, then CUDA, then CPU. An accelerator that is asked for but missing, or
that fails a small smoke test, falls back to the CPU with a logged reason: a session the
night before a deadline should finish slowly rather than not at all.
"""

from __future__ import annotations

import logging
from typing import Literal

log = logging.getLogger(__name__)
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def select_device(requested: str, mps_available: bool, cuda_available: bool) -> tuple[str, str]:
    """Pure choice logic: (device, reason)."""
    if requested not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {requested!r} (choose from {', '.join(DEVICE_CHOICES)})")
    if requested == "auto":
        if mps_available:
            return "mps", "auto: Apple GPU (MPS) available"
        if cuda_available:
            return "cuda", "auto: CUDA GPU available"
        return "cpu", "auto: no GPU available"
    if requested == "mps" and not mps_available:
        return "cpu", "MPS requested but not available; using the CPU"
    if requested == "cuda" and not cuda_available:
        return "cpu", "CUDA requested but not available; using the CPU"
    return requested, f"{requested} requested"


def mps_available() -> bool:
    import torch  # imported here so that choosing a device costs nothing until it runs

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def smoke_test(device: str) -> str | None:
    """Run a tiny computation on `device`; the error text if it fails, else None."""
    import torch

    try:
        x = torch.ones(8, 8, device=device)
        float((x @ x).sum().item())
    except Exception as exc:  # any driver/runtime failure means: do not use it
        return f"{type(exc).__name__}: {exc}"
    return None


def resolve_device(requested: str) -> tuple[str, str]:
    """The device to use now, after availability checks and a smoke test."""
    import torch

    device, reason = select_device(requested, mps_available(), torch.cuda.is_available())
    if device != "cpu":
        failure = smoke_test(device)
        if failure:
            return "cpu", f"{device} failed a test computation ({failure}); using the CPU"
    return device, reason


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures, which a smaller segment or the CPU can avoid."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "failed to allocate" in text)
