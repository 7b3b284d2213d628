"""StemBridge on a CUDA GPU against bare Demucs, side by side in one process.

    python bench/bench_cuda.py [--seconds 60] [--repeats 3] [--json PATH]
    python bench/bench_cuda.py --device cpu --models tiny --seconds 10 --repeats 1   (a dry run of
                                                                                   this script)

Needs a CUDA GPU. Uses the full-size random-weight models of bench/bench_separation.py
(bench/models/full, built on first use). Measurements:
  calls    one htdemucs model call (one 7.8 s segment) in fp32, bf16 and fp16 autocast:
           milliseconds (median of CUDA-event timings), times realtime and TFLOP/s.
  render   StemBridge `render` (whole pipeline: file in, stem files out; htdemucs_ft, shifts
           1, overlap 0.25, fp32) vs bare `apply_model` as Demucs' CLI runs it (the track on
           the CPU, each segment on the GPU), and vs apply_model with the track on the GPU too.
  preview  StemBridge `preview` vs the fp32 baseline (apply_model, htdemucs, shifts 0,
           overlap 0.25), and preview in bf16 and fp16 autocast: speed and SNR against fp32
           at preview's own overlap.
  profile  one StemBridge render under cProfile: where the host's time goes.
  drift    how far one CUDA fp32 model call lands from the CPU's, both against CPU fp64, for
           the tiny test model and the full one, in torch's default fp32 mode, with the
           legacy TF32 switches off, and with the per-backend fp32 precision at "ieee" (and
           the time of a call in each); then the first layers of the tiny model whose
           outputs part from the CPU's.
Every timed figure is a median over interleaved repeats; compare the ratios, which are
measured side by side, not absolute times across machines. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from demucs.apply import apply_model  # noqa: E402

from bench_separation import SEGMENT_GFLOP, med, model_repo, music, read_stems, snr_db, write_clip  # noqa: E402
from bridge.pipeline import EngineSettings, SeparationRequest, Separator  # noqa: E402
from bridge.presets import resolve_precision  # noqa: E402

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE = "cuda"   # "cpu" only for a dry run of this script where no GPU is


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def synced(fn: Callable[[], Any]) -> tuple[float, Any]:
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def autocast(precision: str) -> contextlib.AbstractContextManager:
    dtype = AUTOCAST[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(DEVICE, dtype=dtype)


def bare_apply_model(bag: torch.nn.Module, path: Path, shifts: int, overlap: float, track_on: str,
                     precision: str = "fp32") -> np.ndarray:
    """What `demucs.api`/`demucs.separate` do around apply_model: decode, normalise,
    separate, de-normalise. `track_on="cpu"` (the track on the CPU, each segment on the GPU)
    is how Demucs' CLI calls it; "gpu" keeps the whole track on the GPU."""
    audio, _ = sf.read(str(path), dtype="float32", always_2d=True)
    wav = torch.from_numpy(np.ascontiguousarray(audio.T)).to(DEVICE if track_on == "gpu" else "cpu")
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std()
    random.seed(0)
    with torch.inference_mode(), autocast(precision):
        out = apply_model(bag, ((wav - mean) / (std + 1e-8))[None], shifts=shifts, overlap=overlap, split=True,
                          device=DEVICE, progress=False)
    return (out[0] * (std + 1e-8) + mean).float().cpu().numpy()


FP32_MODES = ("default", "allow_tf32 off", "ieee")


@contextlib.contextmanager
def fp32_mode(mode: str) -> Iterator[None]:
    """torch's defaults; the legacy switches off (cudnn.allow_tf32, matmul.allow_tf32); or
    the per-backend precision settings newer torch has, at "ieee". Each mode is undone
    through the same API that set it: torch refuses reads that mix the two."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if mode == "default":
        yield
    elif mode == "allow_tf32 off":
        saved = (cudnn.allow_tf32, matmul.allow_tf32)
        cudnn.allow_tf32 = matmul.allow_tf32 = False
        try:
            yield
        finally:
            cudnn.allow_tf32, matmul.allow_tf32 = saved
    else:
        settings = [obj for obj in (getattr(cudnn, "conv", None), getattr(cudnn, "rnn", None), matmul)
                    if hasattr(obj, "fp32_precision")]
        saved_precision = [obj.fp32_precision for obj in settings]
        for obj in settings:
            obj.fp32_precision = "ieee"
        print(f"  fp32 mode ieee: {[obj.fp32_precision for obj in settings]} (was {saved_precision})", flush=True)
        try:
            yield
        finally:
            for obj, value in zip(settings, saved_precision):
                obj.fp32_precision = value


def _snr(reference: torch.Tensor, test: torch.Tensor) -> float:
    reference, test = reference.double(), test.double()
    noise = float(((reference - test) ** 2).sum())
    return float(10 * np.log10(float((reference ** 2).sum()) / max(noise, 1e-300)))


def first_parting_layers(model: torch.nn.Module, x: torch.Tensor, below_db: float = 90.0) -> list[tuple[str, float]]:
    """Leaf layers in call order whose output on the device is under `below_db` SNR against
    the same layer on the CPU (each side fed by its own earlier layers)."""
    def record(store: list) -> Callable[..., None]:
        def hook(module: torch.nn.Module, args: tuple, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            if isinstance(out, torch.Tensor) and not out.is_complex():
                store.append((names[module], out.detach().float().cpu()))
        return hook

    parted = []
    runs: dict[str, list] = {}
    for where in ("cpu", DEVICE):
        copy_ = copy.deepcopy(model).to(where)
        names = {module: name for name, module in copy_.named_modules()}
        store: list = []
        handles = [m.register_forward_hook(record(store)) for m in copy_.modules() if not list(m.children())]
        with torch.inference_mode():
            copy_(x.to(where))
        for handle in handles:
            handle.remove()
        runs[where] = store
    for (name, on_cpu), (_, on_device) in zip(runs["cpu"], runs[DEVICE]):
        if on_cpu.shape == on_device.shape and float((on_cpu ** 2).sum()) > 0:
            value = _snr(on_cpu, on_device)
            if value < below_db:
                parted.append((name, value))
    return parted


class CudaBench:
    def __init__(self, seconds: float, repeats: int, work: Path, models: str) -> None:
        self.seconds = seconds
        self.repeats = repeats
        self.work = work
        self.repo = model_repo(models)
        self.separator = Separator(EngineSettings(device=DEVICE, model_repo=self.repo, use_cache=False))
        if self.separator.device != DEVICE:
            raise SystemExit(f"bench_cuda: the separator chose {self.separator.device}, not {DEVICE}")
        gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "no GPU (dry run on the CPU)"
        self.results: dict[str, Any] = {"gpu": gpu, "torch": torch.__version__, "clip_seconds": seconds,
                                        "models": models}
        self.rows: list[tuple[str, str]] = []
        self._runs = 0

    def pipeline(self, source: Path, **request: Any) -> Path:
        self._runs += 1
        return self.separator.run(SeparationRequest(source=source, output_root=self.work / f"out{self._runs}",
                                                    **request))

    def interleaved(self, runs: dict[str, Callable[[], Any]], label: str) -> tuple[dict[str, list[float]], dict]:
        times: dict[str, list[float]] = {name: [] for name in runs}
        last: dict[str, Any] = {}
        for name, fn in runs.items():  # untimed: kernels chosen, models moved, caches warm
            synced(fn)
        for rep in range(self.repeats):
            names = list(runs) if rep % 2 == 0 else list(runs)[::-1]
            for name in names:
                wall, last[name] = synced(runs[name])
                times[name].append(wall)
                print(f"  {label} rep {rep + 1} {name}: {wall:.3f} s", flush=True)
        return times, last

    def calls(self) -> None:
        model = self.separator.model("htdemucs").model.models[0].to(DEVICE).eval()
        x = torch.randn(1, 2, int(44100 * 7.8), device=DEVICE) * 0.3
        figures = {}
        for precision in AUTOCAST:
            with torch.inference_mode(), autocast(precision):
                for _ in range(3):
                    model(x)
                timings = []
                for _ in range(10):
                    timings.append(synced(lambda: model(x))[0])
            seconds = med(timings)
            figures[precision] = {"ms": 1000 * seconds, "x_realtime": 7.8 / seconds,
                                  "tflops": SEGMENT_GFLOP / seconds / 1000}
            self.rows.append((f"one model call, {precision}",
                              f"{1000 * seconds:.1f} ms = {7.8 / seconds:.0f}x realtime, "
                              f"{SEGMENT_GFLOP / seconds / 1000:.1f} TFLOP/s"))
        self.results["calls"] = figures

    def render(self) -> None:
        clip = write_clip(self.work / "render.wav", music(self.seconds, seed=1))
        bag = self.separator.model("htdemucs_ft").model
        times, _ = self.interleaved({
            "stembridge": lambda: self.pipeline(clip, quality="render"),
            "demucs_track_on_cpu": lambda: bare_apply_model(bag, clip, 1, 0.25, "cpu"),
            "apply_model_track_on_gpu": lambda: bare_apply_model(bag, clip, 1, 0.25, "gpu"),
        }, "render")
        ours = med(times["stembridge"])
        self.results["render"] = {"times_s": times, "settings": "htdemucs_ft, shifts 1, overlap 0.25, fp32"}
        for other in ("demucs_track_on_cpu", "apply_model_track_on_gpu"):
            ratio = med(times[other]) / ours
            self.results["render"][f"speed_ratio_vs_{other}"] = ratio
            self.rows.append((f"render vs {other.replace('_', ' ')}",
                              f"{ratio:.3f}x ({self.seconds / ours:.0f}x vs "
                              f"{self.seconds / med(times[other]):.0f}x realtime)"))

    def profile(self) -> None:
        """Where a render's time goes outside the GPU: one run under cProfile, top functions."""
        import cProfile
        import io
        import pstats

        clip = write_clip(self.work / "profile.wav", music(self.seconds, seed=4))
        self.pipeline(clip, quality="render")  # warm
        profiler = cProfile.Profile()
        profiler.enable()
        wall, _ = synced(lambda: self.pipeline(clip, quality="render"))
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        print(f"  profiled render: {wall:.3f} s\n" + text.getvalue()[-4500:], flush=True)
        self.results["profile"] = {"wall_s": wall, "top": text.getvalue()[-4500:]}

    def drift(self) -> None:
        from bridge.modelfactory import build_htdemucs

        audio = music(7.8, seed=3)
        audio = (audio - audio.mean()) / audio.std()
        x = torch.from_numpy(np.ascontiguousarray(audio.T))[None]
        figures: dict[str, dict[str, float]] = {}
        for size in ("tiny", "full"):
            model = build_htdemucs(size)  # type: ignore[arg-type]
            on_gpu = copy.deepcopy(model).to(DEVICE)
            with torch.inference_mode():
                reference = copy.deepcopy(model).double()(x.double())
                cpu = model(x)
                figures[size] = {"cpu fp32": _snr(reference, cpu)}
                for mode in FP32_MODES:
                    with fp32_mode(mode):
                        out = on_gpu(x.to(DEVICE)).cpu()
                        seconds = med([synced(lambda: on_gpu(x.to(DEVICE)))[0] for _ in range(5)])
                    figures[size][f"{DEVICE} {mode}"] = _snr(reference, out)
                    figures[size][f"{DEVICE} {mode} vs cpu fp32"] = _snr(cpu, out)
                    figures[size][f"{DEVICE} {mode} ms"] = 1000 * seconds
            self.rows.append((f"drift, {size} model, SNR vs CPU fp64",
                              "; ".join(f"{name} {value:.1f}" for name, value in figures[size].items())))
        self.results["drift"] = figures
        self.results["drift_first_layers"] = first_parting_layers(build_htdemucs("tiny"), x)
        for name, value in self.results["drift_first_layers"][:8]:
            print(f"  tiny model layer {name}: {value:.1f} dB vs cpu", flush=True)

    def preview(self) -> None:
        clip = write_clip(self.work / "preview.wav", music(self.seconds, seed=2))
        bag = self.separator.model("htdemucs").model
        shipped = resolve_precision("auto", DEVICE)
        times, last = self.interleaved({
            "baseline_fp32": lambda: bare_apply_model(bag, clip, 0, 0.25, "cpu"),
            **{f"preview_{precision}": (lambda precision=precision: self.pipeline(clip, quality="preview",
                                                                               precision=precision))
               for precision in AUTOCAST},
        }, "preview")
        reference = read_stems(last["preview_fp32"])
        snr = {precision: snr_db(reference, read_stems(last[f"preview_{precision}"])) for precision in ("bf16", "fp16")}
        ratio = med(times["baseline_fp32"]) / med(times[f"preview_{shipped}"])
        self.results["preview"] = {"times_s": times, "shipped_precision": shipped,
                                   "speed_ratio_vs_fp32_baseline": ratio, "snr_db_vs_fp32": snr}
        self.rows.append((f"preview (auto = {shipped}) vs fp32 baseline",
                          f"{ratio:.2f}x ({self.seconds / med(times[f'preview_{shipped}']):.0f}x vs "
                          f"{self.seconds / med(times['baseline_fp32']):.0f}x realtime)"))
        self.rows.append(("preview fp32 / bf16 / fp16",
                          " / ".join(f"{self.seconds / med(times[f'preview_{precision}']):.0f}x"
                                     for precision in AUTOCAST) + " realtime"))
        self.rows.append(("preview SNR vs fp32", f"bf16 {snr['bf16']:.1f} dB, fp16 {snr['fp16']:.1f} dB"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="calls,render,preview,drift,profile")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a dry run of this script on a machine without a GPU")
    parser.add_argument("--models", choices=("full", "tiny"), default="full",
                        help="tiny: the test suite's model, for a dry run")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("bench_cuda: no CUDA GPU here (--device cpu for a dry run)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="stembridge-bench-cuda-") as work:
        bench = CudaBench(args.seconds, args.repeats, Path(work), args.models)
        for name in args.only.split(","):
            print(f"== {name}", flush=True)
            getattr(bench, name)()
    print(f"\n{bench.results['gpu']}, torch {bench.results['torch']}, {args.seconds:.0f} s clip")
    width = max(len(label) for label, _ in bench.rows)
    for label, figure in bench.rows:
        print(f"{label:<{width}}  {figure}")
    text = json.dumps(bench.results, indent=2)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{DEVICE}-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
