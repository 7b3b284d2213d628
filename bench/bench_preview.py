"""Preview rendering speed: a 3-minute, 4-stem, stereo 44.1 kHz set, 3 effects per stem.

    .venv/bin/python bench/bench_preview.py [--seconds 180] [--repeats 5] [--chain CHAIN]

Prints, as medians (and best) over interleaved repeats (these VMs drift, so ratios measured
side by side are what to compare):
  - cold:      first render, stems read from disk, every chain run
  - re-render: every stem's chain changed (stems already in memory) -> x realtime (goal >= 100)
  - one stem:  one stem's chain changed -> x realtime
  - gain-only: a gain/mute/pan change, effects cached -> seconds (goal <= 0.1)
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.manifest import write_manifest  # noqa: E402
from bridge.preview import PreviewRenderer  # noqa: E402
from bridge.wavio import write_wav  # noqa: E402

RATE = 44100
STEMS = ("drums", "bass", "other", "vocals")
DEFAULT_CHAIN = "highpassfilter:cutoff_frequency_hz=80;compressor:threshold_db=-18,ratio={ratio};reverb:room_size=0.3"


def make_set(folder: Path, seconds: float) -> Path:
    rng = np.random.default_rng(0)
    frames = int(seconds * RATE)
    out = folder / "bench"
    out.mkdir()
    files = {}
    for i, name in enumerate(STEMS):
        t = np.arange(frames) / RATE
        audio = 0.2 * np.sin(2 * np.pi * 55 * (i + 1) * t)[:, None] + 0.05 * rng.standard_normal((frames, 2))
        write_wav(out / f"bench_{name}.wav", audio.astype(np.float32), RATE, "32f", 0)
        files[name] = f"bench_{name}.wav"
    manifest = out / "stems.json"
    write_manifest(manifest, {
        "version": 1, "job_id": "bench", "source": str(folder / "bench.wav"), "source_hash": "-",
        "sample_rate": RATE, "frames": frames, "channels": 2, "time_reference": 0, "model": "htdemucs",
        "quality": "render", "device": "cpu", "stems": files, "preview": None, "created": "2024-01-01T00:00:00+00:00"})
    return manifest


CPU_SECONDS: list[float] = []


def timed(fn) -> float:
    """Wall seconds of fn(); its process CPU seconds go to CPU_SECONDS (shared VMs: the CPU
    figure tells a slow machine from a busy one)."""
    cpu = time.process_time()
    start = time.perf_counter()
    fn()
    CPU_SECONDS.append(time.process_time() - cpu)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chain", default=DEFAULT_CHAIN, help="chain per stem; {ratio} varies to defeat the cache")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, PreviewRenderer(presets={}) as renderer:
        manifest = make_set(Path(tmp), args.seconds)
        counter = iter(range(1, 1_000_000))

        def chains(only: str | None = None) -> list[str]:
            # A fresh ratio makes a new cache key, so the chain really runs again.
            fresh = f"{3 + next(counter) * 1e-4:.4f}"
            return [f"{s}.fx=" + args.chain.format(ratio=fresh if only in (None, s) else "3") for s in STEMS]

        base = chains()
        cold = timed(lambda: renderer.render(manifest, base))
        full, one, gain = [], [], []
        full_cpu, gain_cpu = [], []
        for i in range(args.repeats):  # interleaved, so drift hits every figure alike
            full.append(timed(lambda: renderer.render(manifest, chains())))
            full_cpu.append(CPU_SECONDS[-1])
            base = chains(only="vocals")
            one.append(timed(lambda: renderer.render(manifest, base)))
            for step in range(3):
                extra = [f"vocals.gain_db={step + i * 0.1:.2f}", f"drums.mute={step % 2}", "bass.pan=-0.3"]
                gain.append(timed(lambda: renderer.render(manifest, base + extra)))
                gain_cpu.append(CPU_SECONDS[-1])
                assert renderer.last_processed == [], "a gain-only change re-ran effects"

    seconds = args.seconds
    print(f"preview bench: {seconds:g} s, {len(STEMS)} stems, stereo {RATE} Hz, chain per stem: {args.chain}")
    print(f"cpu cores: {os.cpu_count()}, renderer workers: {renderer.workers}, "
          f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"cold (read stems + all chains): {cold:.3f} s = {seconds / cold:.0f}x realtime")
    print(f"re-render, all chains changed:  median {statistics.median(full):.3f} s = "
          f"{seconds / statistics.median(full):.0f}x realtime (best {seconds / min(full):.0f}x; goal >= 100x)")
    cpu = statistics.median(full_cpu)
    print(f"  (CPU time of that re-render: {cpu:.3f} s, i.e. {seconds / cpu:.0f}x realtime per busy core)")
    print(f"re-render, one chain changed:   median {statistics.median(one):.3f} s = "
          f"{seconds / statistics.median(one):.0f}x realtime")
    print(f"gain-only change:               median {statistics.median(gain):.3f} s "
          f"(best {min(gain):.3f} s, worst {max(gain):.3f} s; goal <= 0.1 s; "
          f"CPU time median {statistics.median(gain_cpu):.3f} s)")


if __name__ == "__main__":
    main()
