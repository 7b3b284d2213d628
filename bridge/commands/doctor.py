"""`stembridge doctor`: check device, models, folders and port, then separate a generated
clip with a tiny random-weight model through the real pipeline (works offline)."""

from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path

from bridge import paths

NAME = "doctor"
HELP = "check this machine's setup and run a self-test separation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repo", type=Path, metavar="DIR", help="local model folder to check")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--osc-port", type=int, default=9010, help="OSC port the daemon will use")


def _writable(folder: Path) -> str | None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def self_test(device: str) -> str:
    """Separate 2 s of generated stereo with a tiny random-weight model; raise on any fault."""
    import numpy as np
    import soundfile as sf

    from bridge.manifest import read_manifest
    from bridge.modelfactory import make_model_repo
    from bridge.pipeline import EngineSettings, SeparationRequest, Separator

    with tempfile.TemporaryDirectory(prefix="stembridge-doctor-") as tmp:
        root = Path(tmp)
        repo = make_model_repo(root / "models")
        t = np.arange(2 * 48000) / 48000
        mix = np.stack([np.sin(2 * np.pi * 110 * t), np.sin(2 * np.pi * 220 * t)], axis=1).astype(np.float32) * 0.3
        sf.write(root / "selftest.wav", mix, 48000, subtype="PCM_24")
        separator = Separator(EngineSettings(device=device, model_repo=repo, use_cache=False))
        manifest = separator.run(SeparationRequest(root / "selftest.wav", root / "out", quality="preview",
                                                   exact_sum=True))
        data = read_manifest(manifest)
        total = 0
        for name in data["stems"].values():
            stem, rate = sf.read(manifest.parent / name, always_2d=True)
            if rate != 48000 or stem.shape != mix.shape:
                raise RuntimeError(f"stem {name} has {stem.shape} at {rate} Hz, expected {mix.shape} at 48000")
            total = total + stem
        error = float(np.sqrt(np.mean((total - mix) ** 2)) / np.sqrt(np.mean(mix**2)))
        if error > 1e-4:
            raise RuntimeError(f"stems do not sum to the source (relative error {error:.2e})")
        return f"{len(data['stems'])} stems on {data['device']}, exact sum within {20 * np.log10(error + 1e-30):.0f} dB"


def run(args: argparse.Namespace) -> int:
    from bridge.device import resolve_device
    from bridge.models import available_models

    problems = 0

    def report(ok: bool, label: str, detail: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"[{'ok' if ok else '!!'}] {label:<16} {detail}")

    device, reason = resolve_device(args.device)
    report(True, "device", f"{device} ({reason})")
    models = available_models(args.model_repo)
    report(bool(models), "models", ", ".join(sorted({n for n, _ in models})) if models else
           "none available offline: run `stembridge models` for where they are looked for, or pass --model-repo DIR")
    for label, folder in (("cache folder", paths.cache_dir()), ("state folder", paths.state_dir()),
                          ("output folder", paths.default_output_dir()), ("watch folder", paths.default_watch_dir())):
        failure = _writable(folder)
        report(failure is None, label, f"{folder}" + (f": {failure}" if failure else ""))
    report(_port_free(args.osc_port), "OSC port", f"127.0.0.1:{args.osc_port}"
           + ("" if _port_free(args.osc_port) else " is in use (a daemon already running, or another program)"))
    try:
        report(True, "self-test", self_test(device))
    except Exception as exc:  # the point of a self-test is to report any failure as a line
        report(False, "self-test", f"{type(exc).__name__}: {exc}")
    print("all checks passed" if not problems else f"{problems} check(s) need attention")
    return 0 if not problems else 1
