"""Peak memory of a separation does not grow with the input's length (measured, in a fresh
process per run, as the kernel's peak resident set size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from conftest import multitone

CHILD = """
import json, resource, sys
from bridge.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), file=sys.stderr)
"""


def long_clip(path: Path, seconds: int) -> Path:
    block = multitone(10.0, 44100, 2)
    with sf.SoundFile(str(path), "w", 44100, 2, "FLOAT") as handle:
        for _ in range(seconds // 10):
            handle.write(block)
    return path


def peak_mib(source: Path, out: Path, model_repo: Path) -> float:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, "separate", str(source), "-o", str(out), "--model-repo", str(model_repo),
         "--model", "htdemucs", "--quality", "preview", "--no-cache", "--exact-sum"],
        capture_output=True, text=True, timeout=600)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr
    return report["peak_kib"] / 1024


def test_peak_memory_is_flat_in_input_length(tmp_path, model_repo):
    short = peak_mib(long_clip(tmp_path / "short.wav", 40), tmp_path / "out", model_repo)
    long = peak_mib(long_clip(tmp_path / "long.wav", 200), tmp_path / "out", model_repo)
    # Holding the whole input and four stems in memory would add ~60 MiB per 160 s of
    # stereo input and ~240 MiB for the stems; streaming adds (almost) nothing.
    assert long - short < 40, f"peak RSS {short:.0f} MiB for 40 s, {long:.0f} MiB for 200 s"
    assert sf.info(str(tmp_path / "out" / "long" / "long_vocals.wav")).frames == 200 * 44100
