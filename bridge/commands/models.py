"""`stembridge models`: which models load on this machine without network, and where."""

from __future__ import annotations

import argparse
from pathlib import Path


NAME = "models"
HELP = "list the Demucs models available locally and where StemBridge looks for them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repo", type=Path, metavar="DIR", help="also list this local model folder")


def run(args: argparse.Namespace) -> int:
    import torch

    from bridge.models import available_models, hf_cache_dir, is_offline

    found = available_models(args.model_repo)
    if found:
        width = max(len(name) for name, _ in found)
        for name, where in found:
            print(f"{name:<{width}}  {where}")
    else:
        print("no models are available locally")
    print()
    print("Looked in:")
    if args.model_repo:
        print(f"  local model folder   {args.model_repo}")
    print(f"  Hugging Face cache   {hf_cache_dir()}")
    print(f"  torch hub cache      {Path(torch.hub.get_dir()) / 'checkpoints'}")
    print("Models not found there are downloaded on first use"
          + (" (disabled: offline mode is set)" if is_offline() else " when the network is reachable")
          + "; offline, pass --model-repo DIR.")
    return 0
