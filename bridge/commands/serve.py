"""`stembridge serve`: run the daemon in the foreground (launchd/systemd keep it running)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bridge.config import load_config

NAME = "serve"
HELP = "run the daemon: watch folders and answer OSC requests until stopped (Ctrl-C)"

# flag destination → (config key, flag as the user typed it, for "where did this come from")
_FLAG_KEYS: dict[str, tuple[str, str]] = {
    "watch": ("paths.watch", "--watch"),
    "output": ("paths.output", "--output"),
    "state_dir": ("paths.state_dir", "--state-dir"),
    "osc_host": ("osc.host", "--osc-host"),
    "osc_port": ("osc.port", "--osc-port"),
    "device": ("engine.device", "--device"),
    "model": ("engine.model", "--model"),
    "model_repo": ("engine.model_repo", "--model-repo"),
    "cache_dir": ("engine.cache_dir", "--cache-dir"),
    "quality": ("engine.quality", "--quality"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML config file (default: config.toml in the per-user config folder, if present)")
    parser.add_argument("--watch", type=Path, action="append", metavar="DIR",
                        help="folder to watch for bounces (repeat for several; replaces the configured ones)")
    parser.add_argument("--output", type=Path, metavar="DIR", help="where stem sets are written")
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="job database and log file folder")
    parser.add_argument("--osc-host", metavar="HOST", help="address to listen on for OSC (default 127.0.0.1)")
    parser.add_argument("--osc-port", type=int, metavar="PORT", help="UDP port for OSC (default 9010; 0: any free port)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="where the model runs")
    parser.add_argument("--model", metavar="NAME", help="default model (htdemucs, htdemucs_ft, htdemucs_6s)")
    parser.add_argument("--model-repo", type=Path, metavar="DIR", help="local folder of model files (offline use)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR", help="stem cache folder")
    parser.add_argument("--quality", choices=("preview", "render"), help="quality of watched-folder jobs")


def config_flags(args: argparse.Namespace) -> dict[str, tuple[Any, str]]:
    return {key: (getattr(args, dest), flag) for dest, (key, flag) in _FLAG_KEYS.items()
            if getattr(args, dest, None) is not None}


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, flags=config_flags(args))
    from bridge.daemon import Daemon

    return Daemon(config, verbose=getattr(args, "verbose", False)).run()
