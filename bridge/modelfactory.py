"""Random-weight HTDemucs models saved as a demucs local model folder.

Demucs weights cannot always be downloaded (offline studios, CI). A random-weight model
has the real architecture, so it exercises every code path and, at full size, costs exactly
what the released model costs. `stembridge doctor` and the tests use the tiny one; the
benchmarks use the full-size one.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Literal

import torch
from demucs.htdemucs import HTDemucs

FOUR_STEMS = ["drums", "bass", "other", "vocals"]
SIX_STEMS = ["drums", "bass", "other", "vocals", "guitar", "piano"]

Size = Literal["tiny", "full"]


def build_htdemucs(size: Size = "tiny", sources: list[str] | None = None, seed: int = 0) -> HTDemucs:
    """Build an HTDemucs with random weights.

    `full` is the released `htdemucs` configuration (dconv_mode=3, 41.98 M parameters).
    `tiny` keeps depth 4 and nfft 4096 (so the transformer sees few tokens and it runs
    ~11x realtime on two cores) but shrinks every width: about 0.1 M parameters. dconv_comp=2
    keeps the residual branches at least one channel wide (4 // 8 would be zero).
    """
    torch.manual_seed(seed)
    sources = list(sources or FOUR_STEMS)
    with warnings.catch_warnings():
        # Zero-width layers of the tiny model make torch's initialisers warn; harmless.
        warnings.simplefilter("ignore", UserWarning)
        if size == "full":
            model = HTDemucs(sources=sources, bottom_channels=512, segment=Fraction(39, 5), dconv_mode=3)
        else:
            model = HTDemucs(
                sources=sources, channels=4, dconv_comp=2, t_layers=1, t_heads=2, bottom_channels=0,
                segment=Fraction(39, 5),
            )
    model.eval()
    return model


def save_to_model_repo(model: HTDemucs, repo: Path, name: str) -> Path:
    """Save `model` into the local model folder `repo` under the bag name `name`.

    Writes `<sig>-<sha8>.th` (demucs' checksummed single-model format) and `<name>.yaml`
    (a bag of one), which is what `demucs.pretrained.get_model(name, repo)` reads.
    Returns the yaml path.
    """
    repo.mkdir(parents=True, exist_ok=True)
    args, kwargs = model._init_args_kwargs
    package = {
        "klass": model.__class__,
        "args": args,
        "kwargs": kwargs,
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(package, buffer)
    checksum = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    signature = hashlib.sha256(name.encode()).hexdigest()[:8]
    (repo / f"{signature}-{checksum}.th").write_bytes(buffer.getvalue())
    bag = repo / f"{name}.yaml"
    bag.write_text(f"models: ['{signature}']\n")
    return bag


def make_model_repo(repo: Path, size: Size = "tiny", seed: int = 0) -> Path:
    """A local model folder with `htdemucs`, `htdemucs_ft` (a bag of four) and `htdemucs_6s`
    stand-ins of the given size, so every preset and stem set resolves offline."""
    save_to_model_repo(build_htdemucs(size, FOUR_STEMS, seed), repo, "htdemucs")
    save_to_model_repo(build_htdemucs(size, SIX_STEMS, seed + 1), repo, "htdemucs_6s")
    ft_sigs = []
    for index, stem in enumerate(FOUR_STEMS):
        sub_name = f"htdemucs_ft_{stem}"
        save_to_model_repo(build_htdemucs(size, FOUR_STEMS, seed + 2 + index), repo, sub_name)
        ft_sigs.append(hashlib.sha256(sub_name.encode()).hexdigest()[:8])
        (repo / f"{sub_name}.yaml").unlink()
    # The released htdemucs_ft takes each source from its own specialised model.
    weights = [[1.0 if j == i else 0.0 for j in range(4)] for i in range(4)]
    (repo / "htdemucs_ft.yaml").write_text(f"models: {ft_sigs}\nweights: {weights}\n")
    return repo
