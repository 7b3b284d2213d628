"""Quality presets: what `preview` and `render` mean, each overridable per request."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

Quality = Literal["preview", "render"]
QUALITIES = ("preview", "render")


@dataclass(frozen=True)
class Preset:
    model: str
    shifts: int
    overlap: float
    segment: float | None      # None: the model's own (transformer models cannot go longer)
    precision: str             # fp32 | bf16 | fp16 | auto (reduced precision where the hardware has it)
    skip_silence: bool
    spacing: str = "grid"      # grid: apply_model's segment grid; even: fewest evenly spread segments


PRESETS: dict[str, Preset] = {
    # Fast feedback: the single htdemucs model, no shift pass, reduced precision where the
    # processor computes it natively, and the fewest segments that still cross-fade (at least
    # 5 % overlap, spread evenly: 4 model calls for 30 s where the 25 % grid makes 6).
    "preview": Preset(model="htdemucs", shifts=0, overlap=0.05, segment=None, precision="auto",
                      skip_silence=True, spacing="even"),
    # Best quality: the fine-tuned bag, one random-shift pass (one pass, not two), 25 % overlap.
    "render": Preset(model="htdemucs_ft", shifts=1, overlap=0.25, segment=None, precision="fp32",
                     skip_silence=True),
}
SIX_STEM_MODEL = "htdemucs_6s"


def preset_for(quality: str, **overrides: object) -> Preset:
    base = PRESETS[quality]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """`auto` picks bf16 on CPUs with native bf16, fp32 elsewhere: on MPS and older CPUs
    emulated reduced precision is slower than fp32, and on CUDA an htdemucs call is bound by
    its many small kernels, not arithmetic, so autocast's extra casts made it slower (H200:
    65.7 ms bf16, 65.1 ms fp16, 53.4 ms fp32 per 7.8 s segment; bench/README.md)."""
    if precision != "auto":
        return precision
    if device == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"
