"""Separation speed and memory: StemBridge against bare Demucs, side by side in one process.

    .venv/bin/python bench/bench_separation.py [--only render,preview,...] [--seconds 30] [--repeats 2]

Measurements (names for --only):
  render   StemBridge `render` (whole pipeline: file in, stem files out) vs bare
           `demucs.apply.apply_model` on the decoded tensor, identical settings
           (htdemucs_ft, shifts 1, overlap 0.25, fp32): the engine's overhead.
  preview  StemBridge `preview` vs the fp32 baseline (bare apply_model, htdemucs, fp32,
           shifts 0, overlap 0.25), plus preview forced to fp32 at its own overlap, whose
           output gives the SNR of the reduced precision.
  silence  `preview` on a clip that is 50 % digital silence vs one with none, equal length.
  daemon   warm `stembridge serve` drop-to-stems latency (10 s clip, watched folder) vs a cold
           `python -m demucs.separate` run on the same clip.
  cache    cache-hit time of a 3-minute clip (tiny model; a hit never runs the model).
  rss      peak RSS of `stembridge separate` for 5, 30 and 60 minute inputs (tiny model,
           one fresh process each).
  sidebyside  `preview` and `render` (htdemucs) with segment pairs side by side on a core
           each (bridge/side_by_side.py) vs every segment alone on both cores
           (STEMBRIDGE_SIDE_BY_SIDE=0), alternated in one process.
  split    seconds per model call (full htdemucs, fp32 and the CPU's `auto` precision) for each
           way of splitting the CPU's threads into calls side by side (1 x all, 2 x half,
           4 x a quarter, 8 x an eighth): checks bridge/side_by_side.py's choice on a machine's core count.
  alloc    model calls in a worker thread (as the daemon makes them), full htdemucs, fp32
           and bf16, in fresh processes with glibc's default allocator vs the tuning every
           `stembridge` process applies (bridge/allocator.py).
The in-process measurements run with that tuning too, on both sides, as `stembridge` does.
GFLOP/s (as a fraction of the CPU's peak) is derived from the render and preview runs: model
calls are counted, each costing 334.9 GFLOP (one 7.8 s segment of the released htdemucs).

The full-size models (released htdemucs architecture, random weights: the real compute cost)
are built once under bench/models/. Every timed figure is a median over interleaved repeats:
these shared VMs drift, so compare the ratios measured side by side, not absolute figures
across runs. Results go to bench/results/<timestamp>.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demucs.apply import apply_model  # noqa: E402

from bridge import allocator, side_by_side  # noqa: E402
from bridge.lowprecision import modules_that_run, reduced_precision_copy  # noqa: E402
from bridge.modelfactory import make_model_repo  # noqa: E402
from bridge.pipeline import EngineSettings, SeparationRequest, Separator  # noqa: E402
from bridge.presets import resolve_precision  # noqa: E402

RATE = 44100
SEGMENT_GFLOP = 334.9          # one 7.8 s segment of the released htdemucs (DESIGN.md)
PEAK_GFLOPS = {"fp32": 166.0, "bf16": 332.0}   # two Zen 4 cores (DESIGN.md)
ALL = ("preview", "silence", "render", "daemon", "cache", "rss", "alloc", "sidebyside", "split")
MODELS = ROOT / "bench" / "models"
RESULTS = ROOT / "bench" / "results"


# ---------------------------------------------------------------- inputs and models

def music(seconds: float, seed: int = 0) -> np.ndarray:
    """A dense, never-silent stereo signal: tones, a pulse and noise (random-weight models do
    not care what the music is, only that no chunk is digital silence)."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * RATE)
    t = np.arange(frames) / RATE
    tones = sum(0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (110, 220, 330, 440 * (1 + seed)))
    pulse = 0.2 * (np.sin(2 * np.pi * 2 * t) > 0.95)
    left = tones + pulse + 0.02 * rng.standard_normal(frames)
    right = 0.8 * tones + pulse + 0.02 * rng.standard_normal(frames)
    return np.stack([left, right], axis=1).astype(np.float32)


def write_clip(path: Path, audio: np.ndarray, subtype: str = "PCM_24") -> Path:
    sf.write(str(path), audio, RATE, subtype=subtype)
    return path


def model_repo(size: str) -> Path:
    repo = MODELS / size
    done = repo / ".complete"
    if not done.exists():
        print(f"building the {size} random-weight model folder in {repo} ...", flush=True)
        shutil.rmtree(repo, ignore_errors=True)
        make_model_repo(repo, size=size)  # type: ignore[arg-type]
        done.write_text("ok\n")
    return repo


class CallCounter:
    """Counts model forward calls (one per segment) on the given (sub)models and on the bf16
    weight copies that bf16 runs on CPU use in their place."""

    def __init__(self, models: list[torch.nn.Module]) -> None:
        self.calls = 0
        self._handles = [m.register_forward_hook(self._hook) for model in models for m in modules_that_run(model)]

    def _hook(self, *_: object) -> None:
        self.calls += 1

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


LAST_FAULTS = [0]  # page faults of the latest timed() run, printed beside its times


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result). CPU time beside wall time tells a slow
    run from one that shared its cores with other work."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu = time.process_time()
    start = time.perf_counter()
    result = fn()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    LAST_FAULTS[0] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return wall, cpu, result


class DemucsAllocator:
    """The C allocator the bare-Demucs side runs with. Every stembridge process tunes glibc to
    keep freed memory (bridge/allocator.py); plain Demucs runs at glibc's defaults. For a
    workload of blocks over 32 MiB, the defaults' dynamic thresholds settle at mmap threshold
    32 MiB and trim threshold 64 MiB, which is what `glibc` mode sets (the page faults per
    run it prints match a fresh untuned process). `tuned` gives both sides the tuning: the
    engine alone is compared."""

    mode = "glibc"

    @classmethod
    @contextlib.contextmanager
    def active(cls) -> Iterator[None]:
        libc = allocator._libc
        if cls.mode == "tuned" or libc is None:
            yield
            return
        libc.mallopt(-4, 65536)          # M_MMAP_MAX: glibc's default
        libc.mallopt(-3, 32 * 2**20)     # M_MMAP_THRESHOLD: the dynamic threshold's ceiling
        libc.mallopt(-1, 64 * 2**20)     # M_TRIM_THRESHOLD: twice that, as glibc keeps it
        libc.malloc_trim(0)
        try:
            yield
        finally:
            allocator.keep_freed_memory()


def bare_apply_model(bag: torch.nn.Module, path: Path, shifts: int, overlap: float, precision: str = "fp32",
                     seed: int = 0) -> np.ndarray:
    """What `demucs.api` does around apply_model: decode, normalise, separate, de-normalise,
    with the C allocator plain Demucs has (see DemucsAllocator)."""
    with DemucsAllocator.active():
        return _bare_apply_model(bag, path, shifts, overlap, precision, seed)


def _bare_apply_model(bag: torch.nn.Module, path: Path, shifts: int, overlap: float, precision: str,
                      seed: int) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    assert rate == RATE
    wav = torch.from_numpy(np.ascontiguousarray(audio.T))
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std()
    random.seed(seed)
    with torch.inference_mode():
        if precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = apply_model(bag, ((wav - mean) / (std + 1e-8))[None], shifts=shifts, overlap=overlap,
                                  split=True, device="cpu", progress=False)
        else:
            out = apply_model(bag, ((wav - mean) / (std + 1e-8))[None], shifts=shifts, overlap=overlap,
                              split=True, device="cpu", progress=False)
    return (out[0] * (std + 1e-8) + mean).numpy()


def read_stems(manifest: Path) -> dict[str, np.ndarray]:
    data = json.loads(manifest.read_text())
    return {name: sf.read(str(manifest.parent / file), dtype="float32", always_2d=True)[0]
            for name, file in data["stems"].items()}


def snr_db(reference: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> float:
    signal = sum(float(np.sum(reference[k].astype(np.float64) ** 2)) for k in reference)
    noise = sum(float(np.sum((reference[k].astype(np.float64) - test[k]) ** 2)) for k in reference)
    return 10 * np.log10(signal / max(noise, 1e-30))


def warm_up(separator: Separator, quality: str, model: str | None = None) -> None:
    """One untimed segment per precision before timing: the first model call prepares the
    compute kernels, and would otherwise be charged to whichever side runs first."""
    separator.warm_up(quality, model)


@contextlib.contextmanager
def side_by_side_setting(on: bool) -> Iterator[None]:
    """STEMBRIDGE_SIDE_BY_SIDE for the block: the engine reads it at each separation."""
    before = os.environ.get("STEMBRIDGE_SIDE_BY_SIDE")
    os.environ["STEMBRIDGE_SIDE_BY_SIDE"] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["STEMBRIDGE_SIDE_BY_SIDE"]
        else:
            os.environ["STEMBRIDGE_SIDE_BY_SIDE"] = before


def med(values: list[float]) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------- measurements

class Bench:
    def __init__(self, seconds: float, repeats: int, work: Path, render_model: str = "htdemucs_ft") -> None:
        self.seconds = seconds
        self.render_model = render_model
        self.sparse_rss = False
        self.repeats = repeats
        self.work = work
        self.results: dict[str, Any] = {}
        self.rows: list[tuple[str, str, str]] = []   # (measurement, figure, target)
        self._runs = 0

    def out_root(self) -> Path:
        self._runs += 1
        return self.work / f"out{self._runs}"

    def pipeline(self, separator: Separator, source: Path, **request: Any) -> Path:
        return separator.run(SeparationRequest(source=source, output_root=self.out_root(), **request))

    def render(self) -> None:
        repo = model_repo("full")
        clip = write_clip(self.work / "render.wav", music(self.seconds, seed=1))
        separator = Separator(EngineSettings(device="cpu", model_repo=repo, use_cache=False))
        bag = separator.model(self.render_model).model
        warm_up(separator, "render", self.render_model)
        counter = CallCounter(list(bag.models))
        ours, bare, ours_cpu, bare_cpu, calls = [], [], [], [], {}
        for rep in range(self.repeats):
            # Alternate which goes first so drift and warm-up do not favour one side.
            order = ("ours", "bare") if rep % 2 == 0 else ("bare", "ours")
            for who in order:
                if who == "ours":
                    wall, cpu, _ = timed(lambda: self.pipeline(separator, clip, quality="render",
                                                               model=self.render_model))
                    ours.append(wall)
                    ours_cpu.append(cpu)
                else:
                    wall, cpu, _ = timed(lambda: bare_apply_model(bag, clip, shifts=1, overlap=0.25))
                    bare.append(wall)
                    bare_cpu.append(cpu)
                calls[who] = counter.take()
                print(f"  render rep {rep + 1} {who}: {wall:.1f} s wall, {cpu:.1f} s cpu, {calls[who]} segments, "
                      f"{LAST_FAULTS[0]} page faults",
                      flush=True)
        ratio = med(bare) / med(ours)
        pairs = [b / o for b, o in zip(bare, ours)]
        cpu_ratio = med(bare_cpu) / med(ours_cpu)
        self.results["render"] = {
            "clip_seconds": self.seconds, "settings": f"{self.render_model}, shifts 1, overlap 0.25, fp32",
            "speed_ratio_cpu_time_median": cpu_ratio,
            "stembridge_s": ours, "apply_model_s": bare, "stembridge_cpu_s": ours_cpu, "apply_model_cpu_s": bare_cpu,
            "segments": calls, "speed_ratio_median": ratio, "speed_ratio_per_pair": pairs,
            "stembridge_x_realtime": self.seconds / med(ours), "apply_model_x_realtime": self.seconds / med(bare),
        }
        self.rows.append((f"render ({self.render_model}) vs bare apply_model, wall",
                          f"{ratio:.3f}x (pairs {', '.join(f'{p:.3f}' for p in pairs)}); "
                          f"{self.seconds / med(ours):.2f}x vs {self.seconds / med(bare):.2f}x realtime", ">= 0.97x"))
        self.rows.append((f"render ({self.render_model}) vs bare apply_model, CPU time",
                          f"{cpu_ratio:.3f}x; {self.seconds / med(ours_cpu):.2f}x vs "
                          f"{self.seconds / med(bare_cpu):.2f}x realtime per CPU-second", ">= 0.97x"))
        self._gflops("render (fp32)", calls["ours"], med(ours), "fp32")
        self._gflops("bare apply_model (fp32)", calls["bare"], med(bare), "fp32")

    def _gflops(self, label: str, segments: int, seconds: float, precision: str) -> None:
        rate = segments * SEGMENT_GFLOP / seconds
        peak = PEAK_GFLOPS[precision]
        self.results.setdefault("gflops", {})[label] = {"segments": segments, "seconds": seconds,
                                                       "gflops": rate, "fraction_of_peak": rate / peak}
        self.rows.append((f"GFLOP/s, {label}", f"{rate:.0f} GFLOP/s = {100 * rate / peak:.0f} % of {peak:.0f}", "-"))

    def preview(self) -> None:
        repo = model_repo("full")
        clip = write_clip(self.work / "preview.wav", music(self.seconds, seed=2))
        separator = Separator(EngineSettings(device="cpu", model_repo=repo, use_cache=False))
        bag = separator.model("htdemucs").model
        warm_up(separator, "preview")
        warm_up(separator, "render", "htdemucs")
        counter = CallCounter(list(bag.models))
        times: dict[str, list[float]] = {"baseline": [], "preview": [], "preview_fp32": []}
        cpus: dict[str, list[float]] = {name: [] for name in times}
        calls: dict[str, int] = {}
        manifests: dict[str, Path] = {}
        runs: dict[str, Callable[[], Any]] = {
            "baseline": lambda: bare_apply_model(bag, clip, shifts=0, overlap=0.25),
            "preview": lambda: self.pipeline(separator, clip, quality="preview"),
            "preview_fp32": lambda: self.pipeline(separator, clip, quality="preview", precision="fp32"),
        }
        for rep in range(self.repeats):
            names = list(runs)
            order = names if rep % 2 == 0 else names[::-1]
            for name in order:
                wall, cpu, result = timed(runs[name])
                times[name].append(wall)
                cpus[name].append(cpu)
                calls[name] = counter.take()
                if isinstance(result, Path):
                    manifests[name] = result
                print(f"  preview rep {rep + 1} {name}: {wall:.1f} s wall, {cpu:.1f} s cpu, {calls[name]} segments, "
                      f"{LAST_FAULTS[0]} page faults",
                      flush=True)
        snr = snr_db(read_stems(manifests["preview_fp32"]), read_stems(manifests["preview"]))
        ratio = med(times["baseline"]) / med(times["preview"])
        precision_gain = med(times["preview_fp32"]) / med(times["preview"])
        cpu_ratio = med(cpus["baseline"]) / med(cpus["preview"])
        cpu_gain = med(cpus["preview_fp32"]) / med(cpus["preview"])
        self.results["preview"] = {
            "cpu_s": cpus, "speed_ratio_cpu_time_median": cpu_ratio, "bf16_gain_cpu_time": cpu_gain,
            "clip_seconds": self.seconds, "baseline": "bare apply_model, htdemucs, fp32, shifts 0, overlap 0.25",
            "times_s": times, "segments": calls, "speed_ratio_median": ratio, "bf16_gain": precision_gain,
            "snr_db_vs_fp32_same_overlap": snr,
            "x_realtime": {k: self.seconds / med(v) for k, v in times.items()},
        }
        self.rows.append(("preview vs fp32 baseline (speed ratio)",
                          f"{ratio:.2f}x; {self.seconds / med(times['preview']):.2f}x vs "
                          f"{self.seconds / med(times['baseline']):.2f}x realtime", ">= 2.5x"))
        self.rows.append(("preview vs fp32 baseline, CPU time", f"{cpu_ratio:.2f}x", ">= 2.5x"))
        self.rows.append(("preview reduced precision alone", f"{precision_gain:.2f}x faster wall, {cpu_gain:.2f}x CPU "
                          f"time; SNR {snr:.1f} dB vs fp32", ">= 40 dB"))
        self._gflops("preview", calls["preview"], med(times["preview"]), "bf16")

    def silence(self) -> None:
        repo = model_repo("full")
        half = int(self.seconds * RATE) // 2
        dense = music(self.seconds, seed=3)
        sparse = dense.copy()
        sparse[half:] = 0.0  # the second half is digital silence, as after a bounce's last note
        full_clip = write_clip(self.work / "dense.wav", dense)
        half_clip = write_clip(self.work / "half_silent.wav", sparse)
        separator = Separator(EngineSettings(device="cpu", model_repo=repo, use_cache=False))
        times: dict[str, list[float]] = {"dense": [], "half_silent": []}
        cpus: dict[str, list[float]] = {"dense": [], "half_silent": []}
        for rep in range(self.repeats):
            order = (("dense", full_clip), ("half_silent", half_clip))
            for name, clip in (order if rep % 2 == 0 else order[::-1]):
                wall, cpu, _ = timed(lambda: self.pipeline(separator, clip, quality="preview"))
                times[name].append(wall)
                cpus[name].append(cpu)
                print(f"  silence rep {rep + 1} {name}: {wall:.1f} s wall, {cpu:.1f} s cpu", flush=True)
        ratio = med(times["dense"]) / med(times["half_silent"])
        cpu_ratio = med(cpus["dense"]) / med(cpus["half_silent"])
        self.results["silence"] = {"clip_seconds": self.seconds, "times_s": times, "cpu_s": cpus, "speedup": ratio,
                                   "speedup_cpu_time": cpu_ratio}
        self.rows.append(("50 % silent clip vs dense clip (preview)",
                          f"{ratio:.2f}x faster wall, {cpu_ratio:.2f}x CPU time", ">= 1.6x"))

    def sidebyside(self) -> None:
        repo = model_repo("full")
        clip = write_clip(self.work / "sidebyside.wav", music(self.seconds, seed=6))
        separator = Separator(EngineSettings(device="cpu", model_repo=repo, use_cache=False))
        warm_up(separator, "preview")
        warm_up(separator, "render", "htdemucs")
        for quality in ("preview", "render"):
            times: dict[str, list[float]] = {"paired": [], "alone": []}
            cpus: dict[str, list[float]] = {"paired": [], "alone": []}
            for rep in range(self.repeats):
                order = ("paired", "alone") if rep % 2 == 0 else ("alone", "paired")
                for who in order:
                    with side_by_side_setting(who == "paired"):
                        wall, cpu, _ = timed(lambda quality=quality: self.pipeline(
                            separator, clip, quality=quality, model="htdemucs"))
                    times[who].append(wall)
                    cpus[who].append(cpu)
                    print(f"  sidebyside {quality} rep {rep + 1} {who}: {wall:.1f} s wall, {cpu:.1f} s cpu",
                          flush=True)
            ratio = med(times["alone"]) / med(times["paired"])
            pairs = [a / p for a, p in zip(times["alone"], times["paired"])]
            self.results.setdefault("sidebyside", {})[quality] = {
                "clip_seconds": self.seconds, "times_s": times, "cpu_s": cpus, "speedup": ratio,
                "speedup_per_pair": pairs}
            self.rows.append((f"{quality}: segment pairs side by side vs alone",
                              f"{ratio:.3f}x faster (pairs {', '.join(f'{p:.3f}' for p in pairs)})", "-"))

    def split(self) -> None:
        repo = model_repo("full")
        model = Separator(EngineSettings(device="cpu", model_repo=repo)).model("htdemucs").model.models[0].eval()
        threads = torch.get_num_threads()
        splits = [(calls, threads // calls) for calls in (1, 2, 4, 8) if threads // calls >= 1]
        x = torch.from_numpy(music(7.8, seed=7).T.copy())[None]
        figures: dict[str, dict[str, list[float]]] = {}
        for precision in sorted({"fp32", resolve_precision("auto", "cpu")}):
            runner = reduced_precision_copy(model, torch.bfloat16) if precision == "bf16" else model

            def call(runner: torch.nn.Module = runner) -> None:
                with torch.inference_mode():
                    runner(x)

            per_call: dict[str, list[float]] = {f"{c}x{t}": [] for c, t in splits}
            pools = {(c, t): side_by_side.CallPool(c, t) for c, t in splits}
            with contextlib.ExitStack() as stack:
                for pool in pools.values():
                    stack.enter_context(pool)
                for (calls, _), pool in pools.items():
                    pool.run([call] * calls)   # untimed: prepares each split's kernels
                for rep in range(self.repeats):
                    order = list(pools.items()) if rep % 2 == 0 else list(pools.items())[::-1]
                    for (calls, each), pool in order:
                        start = time.perf_counter()
                        for _ in range(2):
                            pool.run([call] * calls)
                        per_call[f"{calls}x{each}"].append((time.perf_counter() - start) / (2 * calls))
                        print(f"  split {precision} {calls} x {each} threads: "
                              f"{per_call[f'{calls}x{each}'][-1]:.3f} s per call", flush=True)
            figures[precision] = per_call
            best = min(per_call, key=lambda key: med(per_call[key]))
            self.rows.append((f"seconds per call, {precision}, {threads} threads split as calls x threads",
                              ", ".join(f"{key}: {med(v):.3f}" for key, v in per_call.items()) + f" (best {best})",
                              "-"))
        self.results["split"] = {"threads": threads, "seconds_per_call": figures}

    def cache(self) -> None:
        repo = model_repo("tiny")
        clip = write_clip(self.work / "three_minutes.wav", music(180.0, seed=4))
        separator = Separator(EngineSettings(device="cpu", model_repo=repo, cache_dir=self.work / "cache"))
        miss, _, _ = timed(lambda: self.pipeline(separator, clip, quality="preview"))
        hits = []
        for _ in range(max(self.repeats, 3)):
            wall, _, _ = timed(lambda: self.pipeline(separator, clip, quality="preview"))
            hits.append(wall)
        self.results["cache"] = {"clip_seconds": 180.0, "miss_s": miss, "hit_s": hits}
        self.rows.append(("cache hit, 3-minute clip (4 stems, 32-bit float out)",
                          f"{med(hits):.3f} s median (best {min(hits):.3f} s; miss {miss:.1f} s, tiny model)",
                          "<= 0.3 s"))

    def rss(self) -> None:
        repo = model_repo("tiny")
        peaks = {}
        for minutes in (5, 30, 60):
            clip = self.work / f"long_{minutes}.wav"
            block = music(60.0, seed=5)
            if self.sparse_rss:
                # 12 s of music per minute: every buffer still streams the whole length and the
                # model's activations still peak every minute, at a fifth of the compute.
                block[12 * RATE:] = 0.0
            with sf.SoundFile(str(clip), "w", RATE, 2, "PCM_16") as handle:
                for _ in range(minutes):
                    handle.write(block)
            out = self.work / f"rss_{minutes}"
            child = ("import json, resource, sys\nfrom bridge.cli import main\ncode = main(sys.argv[1:])\n"
                     "print(json.dumps({'code': code, 'peak_kib': "
                     "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), file=sys.stderr)\n")
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", child, "separate", str(clip), "-o", str(out),
                                   "--model-repo", str(repo), "--model", "htdemucs", "--quality", "preview",
                                   "--no-cache", "--bit-depth", "16"],
                                  capture_output=True, text=True, cwd=ROOT)
            report = json.loads(proc.stderr.strip().splitlines()[-1])
            if report["code"] != 0:
                raise RuntimeError(f"separate failed for {minutes} min: {proc.stderr[-2000:]}")
            peaks[minutes] = report["peak_kib"] / 1024
            print(f"  rss {minutes} min: {peaks[minutes]:.0f} MiB peak in {time.perf_counter() - start:.0f} s",
                  flush=True)
            shutil.rmtree(out)
            clip.unlink()
        ratio = peaks[60] / peaks[5]
        self.results["rss"] = {"peak_mib": peaks, "ratio_60_to_5": ratio}
        self.results["rss"]["input"] = "12 s music + 48 s silence per minute" if self.sparse_rss else "music"
        self.rows.append((f"peak RSS 5 / 30 / 60 min (tiny model{', sparse input' if self.sparse_rss else ''})",
                          f"{peaks[5]:.0f} / {peaks[30]:.0f} / {peaks[60]:.0f} MiB; 60/5 = {ratio:.3f}",
                          "60/5 <= 1.25"))

    ALLOC_CHILD = """
import json, os, resource, sys, threading, time, warnings
from pathlib import Path
from bridge import allocator
tuned = sys.argv[1] == "tuned" and allocator.keep_freed_memory()
import torch
from demucs.pretrained import get_model
from bridge.lowprecision import reduced_precision_copy
warnings.simplefilter("ignore")
model = get_model("htdemucs", repo=Path(sys.argv[3])).models[0].eval()
if sys.argv[2] == "bf16":
    model = reduced_precision_copy(model, torch.bfloat16)
x = torch.randn(1, 2, int(44100 * 7.8)) * 0.1
report = {}
def work():
    with torch.inference_mode():
        model(x)
        usage, wall, cpu = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), time.process_time()
        for _ in range(3):
            model(x)
        after = resource.getrusage(resource.RUSAGE_SELF)
    report.update(wall=(time.perf_counter() - wall) / 3, cpu=(time.process_time() - cpu) / 3,
                  faults=(after.ru_minflt - usage.ru_minflt) / 3, sys=(after.ru_stime - usage.ru_stime) / 3,
                  peak_mib=after.ru_maxrss / 1024, tuned=tuned)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(json.dumps(report))
"""

    def alloc(self) -> None:
        repo = model_repo("full")
        runs: dict[str, dict[str, list[dict[str, float]]]] = {}
        for precision in ("fp32", "bf16"):
            runs[precision] = {"default": [], "tuned": []}
            for rep in range(self.repeats):
                for mode in (("default", "tuned") if rep % 2 == 0 else ("tuned", "default")):
                    proc = subprocess.run([sys.executable, "-c", self.ALLOC_CHILD, mode, precision, str(repo)],
                                          capture_output=True, text=True, cwd=ROOT)
                    if proc.returncode != 0:
                        raise RuntimeError(f"alloc child failed: {proc.stderr[-2000:]}")
                    report = json.loads(proc.stdout.strip().splitlines()[-1])
                    runs[precision][mode].append(report)
                    print(f"  alloc {precision} {mode}: {report['wall']:.2f} s/segment wall, {report['cpu']:.2f} cpu, "
                          f"{report['faults']:.0f} page faults, {report['sys']:.2f} s kernel, "
                          f"peak {report['peak_mib']:.0f} MiB", flush=True)
            default, tuned = runs[precision]["default"], runs[precision]["tuned"]
            gain = med([r["wall"] for r in default]) / med([r["wall"] for r in tuned])
            cpu_gain = med([r["cpu"] for r in default]) / med([r["cpu"] for r in tuned])
            self.rows.append((f"allocator tuning, model call in a thread ({precision})",
                              f"{gain:.2f}x faster wall, {cpu_gain:.2f}x CPU; kernel "
                              f"{med([r['sys'] for r in default]):.2f} -> {med([r['sys'] for r in tuned]):.2f} s/segment;"
                              f" peak {med([r['peak_mib'] for r in default]):.0f} -> "
                              f"{med([r['peak_mib'] for r in tuned]):.0f} MiB", "-"))
        self.results["alloc"] = runs

    def daemon(self) -> None:
        repo = model_repo("full")
        clips = [write_clip(self.work / f"ten_{i}.wav", music(10.0, seed=10 + i)) for i in range(self.repeats + 1)]
        # Cold runs and warm drops alternate (the daemon idles while the CLI runs), so drift
        # of these shared machines hits both sides alike.
        cold: list[float] = []
        warm = self._warm_daemon(repo, clips, between=lambda index: cold.append(self._cold_demucs(repo, clips[index])))
        ratio = med(warm) / med(cold)
        pairs = [w / c for w, c in zip(warm, cold)]
        self.results["daemon"] = {"clip_seconds": 10.0, "warm_daemon_s": warm, "cold_demucs_cli_s": cold,
                                  "ratio": ratio, "ratio_per_pair": pairs, "daemon_quality": "preview (htdemucs)",
                                  "cli": "python -m demucs.separate -n htdemucs (shifts 1, overlap 0.25, fp32)"}
        self.rows.append(("warm daemon drop-to-stems vs cold demucs CLI, 10 s",
                          f"{med(warm):.2f} s vs {med(cold):.2f} s = {ratio:.2f} "
                          f"(pairs {', '.join(f'{p:.2f}' for p in pairs)})", "<= 0.33"))

    def _cold_demucs(self, repo: Path, clip: Path) -> float:
        out = self.work / "demucs_cli"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "demucs.separate", "--repo", str(repo), "-n", "htdemucs",
                               "-d", "cpu", "-o", str(out), "--float32", str(clip)],
                              capture_output=True, text=True, cwd=self.work)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"demucs CLI failed: {proc.stderr[-2000:]}")
        stems = list(out.rglob("*.wav"))
        assert len(stems) == 4, stems
        shutil.rmtree(out)
        print(f"  cold demucs CLI: {wall:.1f} s", flush=True)
        return wall

    def _warm_daemon(self, repo: Path, clips: list[Path], between: Callable[[int], None]) -> list[float]:
        """Drop each clip into a warm daemon; `between(i)` runs before measured drop i+1."""
        root = self.work / "daemon"
        watch, output = root / "watch", root / "stems"
        watch.mkdir(parents=True)
        env = {**os.environ, "XDG_CONFIG_HOME": str(root / "xdg"), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "bridge.cli", "serve", "--state-dir", str(root / "state"), "--watch", str(watch),
               "--output", str(output), "--osc-port", "0", "--device", "cpu", "--cache-dir", str(root / "cache"),
               "--model-repo", str(repo), "--quality", "preview"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        lines: list[str] = []
        done = threading.Condition()

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                with done:
                    lines.append(line)
                    done.notify_all()
            with done:
                lines.append("")
                done.notify_all()

        threading.Thread(target=read, daemon=True).start()

        def wait_for(pattern: str, after: int, timeout: float) -> int:
            deadline = time.monotonic() + timeout
            with done:
                while True:
                    for index in range(after, len(lines)):
                        if lines[index] == "":
                            raise RuntimeError("daemon exited:\n" + "".join(lines))
                        if re.search(pattern, lines[index]):
                            return index + 1
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RuntimeError(f"no {pattern!r} within {timeout} s:\n" + "".join(lines))
                    done.wait(left)

        latencies = []
        try:
            seen = wait_for(r"serving on", 0, 120)
            # The first drop warms up (model preload, first-call allocations); then the measured ones.
            for index, clip in enumerate(clips[-1:] + clips[:-1]):
                if index:
                    between(index - 1)
                target = watch / f"take_{index}.wav"
                temp = watch / f".take_{index}.part"
                shutil.copyfile(clip, temp)
                start = time.perf_counter()
                os.replace(temp, target)   # how DAWs publish a bounce: rename into place
                seen = wait_for(r"job \w+ done", seen, 600)
                wall = time.perf_counter() - start
                assert (output / f"take_{index}" / "stems.json").exists(), "no stems.json after 'done'"
                print(f"  warm daemon drop {index}{' (warm-up)' if index == 0 else ''}: {wall:.1f} s", flush=True)
                if index:
                    latencies.append(wall)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        return latencies


# ---------------------------------------------------------------- report

def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "load_average_start": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {', '.join(ALL)}")
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length for render/preview/silence")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions per measurement")
    parser.add_argument("--render-model", default="htdemucs_ft",
                        help="model for the render comparison (htdemucs: a quarter of the time, same per-segment path)")
    parser.add_argument("--sparse-rss", action="store_true",
                        help="rss inputs carry 12 s of music per minute (a fifth of the compute)")
    parser.add_argument("--demucs-allocator", choices=("glibc", "tuned"), default="glibc",
                        help="C allocator of the bare-Demucs side: glibc's defaults, as plain Demucs runs "
                             "(default), or StemBridge's tuning, to compare the engines alone")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(ALL)
    if unknown:
        parser.error(f"unknown measurement(s) {', '.join(sorted(unknown))} (choose from {', '.join(ALL)})")
    info = machine()
    info["allocator_tuned"] = allocator.keep_freed_memory()   # as every stembridge process does
    DemucsAllocator.mode = args.demucs_allocator
    info["demucs_allocator"] = args.demucs_allocator
    print(f"machine: {info}", flush=True)
    with tempfile.TemporaryDirectory(prefix="stembridge-bench-") as tmp:
        bench = Bench(args.seconds, args.repeats, Path(tmp), args.render_model)
        bench.sparse_rss = args.sparse_rss
        for name in ALL:
            if name in chosen:
                print(f"{name} ...", flush=True)
                getattr(bench, name)()
    info["load_average_end"] = os.getloadavg()[0]
    info["peak_rss_mib_bench_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    width = max(len(r[0]) for r in bench.rows) if bench.rows else 10
    print()
    print(f"{'measurement'.ljust(width)}  figure  [target]")
    for label, figure, target in bench.rows:
        print(f"{label.ljust(width)}  {figure}  [{target}]")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps({"machine": info, "args": vars(args), "results": bench.results,
                               "table": bench.rows}, indent=2, default=str))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
