"""`stembridge separate INPUT...`: one-shot separation without the daemon."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

from bridge import paths
from bridge.device import DEVICE_CHOICES
from bridge.errors import StemBridgeError
from bridge.progress import ProgressBar

if TYPE_CHECKING:
    from bridge.pipeline import EngineSettings

# Kept in step with bridge.output.DEFAULT_TEMPLATE; importing that module here would load the
# audio stack for every `stembridge` invocation, `send` included.
DEFAULT_TEMPLATE = "{clip}/{clip}_{stem}"

NAME = "separate"
HELP = "split audio files into stems"


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `separate` and `serve`."""
    parser.add_argument("--model", help="Demucs model name (default: per quality: htdemucs / htdemucs_ft)")
    parser.add_argument("--model-repo", type=Path, metavar="DIR",
                        help="local model folder holding <name>.yaml and .th files (works offline)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="where to run; auto prefers MPS, then CUDA, then CPU (default: auto)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help=f"stem cache folder (default: {paths.cache_dir() / 'stems'})")
    parser.add_argument("--cache-max-gb", type=float, default=20.0, metavar="GB",
                        help="cache size cap; least recently used entries go first (default: 20)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the stem cache")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio files to separate")
    parser.add_argument("-o", "--output", type=Path, metavar="DIR",
                        help=f"output root (default: {paths.default_output_dir()})")
    parser.add_argument("--quality", choices=("preview", "render"), default="render",
                        help="preview: fast htdemucs; render: htdemucs_ft, best quality (default: render)")
    parser.add_argument("--stems", choices=("4", "6"), default="4", help="4 stems, or 6 with htdemucs_6s")
    parser.add_argument("--two-stems", metavar="STEM", help="write STEM and its complement no_STEM")
    parser.add_argument("--exact-sum", action="store_true",
                        help="correct the stems so they sum exactly to the source (residual into other)")
    parser.add_argument("--format", choices=("wav", "flac"), default="wav")
    parser.add_argument("--bit-depth", choices=("16", "24", "32f", "source"),
                        help="sample format (default: 32f for WAV, 24 for FLAC)")
    parser.add_argument("--name-template", default=DEFAULT_TEMPLATE, metavar="TPL",
                        help="stem path below the output root; fields {clip} {stem} {model} {quality} "
                             f"(default: {DEFAULT_TEMPLATE})")
    parser.add_argument("--shifts", type=int, help="random-shift passes (each one costs a full pass)")
    parser.add_argument("--overlap", type=float, help="segment overlap, 0 to <1")
    parser.add_argument("--segment", type=float, help="segment seconds (clamped to the model's maximum)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                        help="compute precision (default: preview auto, render fp32)")
    parser.add_argument("--dawproject", action="store_true",
                        help="also write <clip>.dawproject (stems as tracks at the clip's position) beside stems.json")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input on stdout")
    add_engine_arguments(parser)


def engine_settings(args: argparse.Namespace) -> "EngineSettings":
    from bridge.pipeline import EngineSettings

    return EngineSettings(device=args.device, model_repo=args.model_repo, cache_dir=args.cache_dir,
                          cache_max_bytes=int(args.cache_max_gb * 1024**3), use_cache=not args.no_cache)


def run(args: argparse.Namespace) -> int:
    from bridge.manifest import read_manifest
    from bridge.pipeline import SeparationRequest, Separator

    requests = [SeparationRequest(
        source=path, output_root=args.output or paths.default_output_dir(), quality=args.quality,
        model=args.model, stems=args.stems, two_stems=args.two_stems, exact_sum=args.exact_sum,
        format=args.format, bit_depth=args.bit_depth, name_template=args.name_template,
        shifts=args.shifts, overlap=args.overlap, segment=args.segment, precision=args.precision,
        dawproject=args.dawproject,
    ) for path in args.inputs]
    separator = Separator(engine_settings(args))
    failures = 0
    for request in requests:
        bar = ProgressBar(request.source.name)
        started = time.monotonic()
        try:
            manifest = separator.run(request, bar)
        except StemBridgeError as exc:
            bar.close()
            if len(requests) == 1:
                raise
            print(f"stembridge: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        bar.close()
        if args.json:
            data = read_manifest(manifest)
            manifest = manifest.resolve()
            dawproject = next(manifest.parent.glob("*.dawproject"), None) if request.dawproject else None
            print(json.dumps({"input": str(request.source), "manifest": str(manifest),
                              "stems": {k: str(manifest.parent / v) for k, v in data["stems"].items()},
                              "dawproject": str(dawproject) if dawproject else None,
                              "seconds": round(time.monotonic() - started, 3)}), flush=True)
        else:
            print(f"{request.source.name} -> {manifest.parent}", file=sys.stderr)
    return 1 if failures else 0
