"""The bf16 copy with and without its convolutions as products (bridge/lowprecision.py), side
by side: full-size htdemucs (random weights), one 7.8 s call per thread, the variants
alternated, two calls at once as the engine runs them on two cores.

    .venv/bin/python bench/bench_conv_products.py [--repeats 6] [--threads 1] [--few-outputs 32,1000]

Each `--few-outputs` value is one products variant, with that line below which a
'same'-padded 1-D convolution runs as a product (bridge.lowprecision._FEW_OUTPUTS): to see
where the line belongs on another CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bridge import allocator, lowprecision, side_by_side
from bridge.lowprecision import _convert
from bridge.modelfactory import build_htdemucs


def snr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    reference, test = reference.double(), test.double()
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - test).pow(2).sum()))


def calls_at_once(pool: side_by_side.CallPool, model: torch.nn.Module, x: torch.Tensor) -> float:
    def call() -> None:
        with torch.inference_mode():
            model(x)

    start = time.perf_counter()
    pool.run([call] * pool.calls)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per call")
    parser.add_argument("--calls", type=int, default=2, help="calls at once")
    parser.add_argument("--few-outputs", default=str(lowprecision._FEW_OUTPUTS),
                        help="comma-separated lines, one products variant each")
    args = parser.parse_args()
    allocator.keep_freed_memory()
    model = build_htdemucs("full").eval()
    variants = {"torch convolutions": _convert(model, torch.bfloat16, conv_products=False)}
    for line in (int(value) for value in args.few_outputs.split(",")):
        lowprecision._FEW_OUTPUTS = line
        variants[f"products (<= {line} outputs)"] = _convert(model, torch.bfloat16)
    x = torch.randn(1, 2, int(model.segment * model.samplerate)) * 0.1
    with torch.inference_mode():
        reference = model(x)
        for name, copy in variants.items():
            print(f"{name}: SNR against fp32 {snr_db(reference, copy(x)):.2f} dB", flush=True)
    times: dict[str, list[float]] = {name: [] for name in variants}
    with side_by_side.CallPool(args.calls, args.threads) as pool:   # the engine's own way of running calls at once
        for name, copy in variants.items():   # untimed: first-call allocations
            calls_at_once(pool, copy, x)
        for repeat in range(args.repeats):
            order = list(variants)[repeat % len(variants):] + list(variants)[:repeat % len(variants)]
            for name in order:
                times[name].append(calls_at_once(pool, variants[name], x))
    for name, values in times.items():
        print(f"{name}: {args.calls} calls x {args.threads} threads: " + ", ".join(f"{v:.3f}" for v in values)
              + f" s (median {statistics.median(values):.3f})")
    base = statistics.median(times["torch convolutions"])
    for name in list(variants)[1:]:
        print(f"{name} vs torch convolutions: {base / statistics.median(times[name]):.3f}x", flush=True)


if __name__ == "__main__":
    main()
