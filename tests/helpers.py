"""Small helpers shared by test modules (reading stem sets, measuring nulls)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf


def read(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    return data, rate


def load_set(manifest: Path) -> tuple[dict, dict[str, np.ndarray]]:
    data = json.loads(Path(manifest).read_text())
    stems = {name: read(Path(manifest).parent / file)[0] for name, file in data["stems"].items()}
    return data, stems


def relative_db(residual: np.ndarray, reference: np.ndarray) -> float:
    """Residual RMS relative to the reference's, in dB."""
    num = np.sqrt(np.mean(np.square(residual)))
    den = np.sqrt(np.mean(np.square(reference)))
    return float(20 * np.log10(max(num, 1e-30) / den))
