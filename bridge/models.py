"""Finding and loading Demucs models, offline first.

Where a model can come from, in order:
1. a local model folder (`--model-repo DIR`): `<name>.yaml` bags and `<sig>[-<sha8>].th` files,
   read by demucs' own `LocalRepo`/`BagOnlyRepo`;
2. the Hugging Face cache (demucs 4.1 publishes its models there), read without network;
3. the legacy torch hub cache (`<torch hub dir>/checkpoints/<sig>-<sha8>.th`);
4. the network, through demucs' own loader — only when not offline and the hub answers.

A model that is nowhere locally fails in seconds with a message that says how to provide it,
instead of minutes of download retries.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from demucs import pretrained
from demucs.apply import BagOfModels
from demucs.hf import hf_repo_name, load_safetensors_model
from demucs.repo import AnyModelRepo, BagOnlyRepo, LocalRepo, ModelLoadingError, RemoteRepo

from bridge.errors import ModelUnavailableError

log = logging.getLogger(__name__)
HF_NAMESPACE = "adefossez"
KNOWN_MODELS = ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx", "mdx_extra",
                "mdx_q", "mdx_extra_q")


@dataclass
class LoadedModel:
    model: BagOfModels
    name: str
    origin: str          # where it was found, for logs and `stembridge models`
    fingerprint: str     # changes whenever the weights on disk change (part of the cache key)


def is_offline() -> bool:
    return any(os.environ.get(var, "").lower() in ("1", "true", "yes")
               for var in ("STEMBRIDGE_OFFLINE", "HF_HUB_OFFLINE"))


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in sorted(files):
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _as_bag(model: object) -> BagOfModels:
    if isinstance(model, BagOfModels):
        return model
    return BagOfModels([model])  # type: ignore[list-item]


def _torch_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _load_from_repo(name: str, repo: Path) -> LoadedModel:
    if not repo.is_dir():
        raise ModelUnavailableError(f"model folder {repo} does not exist or is not a folder")
    try:
        model_repo = LocalRepo(repo)
        any_repo = AnyModelRepo(model_repo, BagOnlyRepo(repo, model_repo))
        if not any_repo.has_model(name):
            found = ", ".join(sorted(BagOnlyRepo(repo, model_repo).list_model())) or "no model bags"
            raise ModelUnavailableError(f"model '{name}' is not in {repo} (it holds: {found})")
        model = any_repo.get_model(name)
    except ModelLoadingError as exc:
        raise ModelUnavailableError(f"model '{name}' in {repo} could not be loaded: {exc}") from None
    except (OSError, RuntimeError, KeyError, ValueError, yaml.YAMLError) as exc:
        raise ModelUnavailableError(f"model '{name}' in {repo} is damaged: {exc}") from None
    files = [repo / f"{name}.yaml"] if (repo / f"{name}.yaml").exists() else []
    files += [p for p in repo.glob("*.th")]
    model.eval()
    return LoadedModel(_as_bag(model), name, str(repo), _fingerprint(files))


def _load_from_hf_cache(name: str) -> LoadedModel | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id = f"{HF_NAMESPACE}/{hf_repo_name(name)}"
    try:
        bag_file = Path(hf_hub_download(repo_id, f"{name}.yaml", local_files_only=True))
        bag = yaml.safe_load(bag_file.read_text())
        files = [Path(hf_hub_download(repo_id, f"{sig}.safetensors", local_files_only=True))
                 for sig in bag["models"]]
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None
    models = [load_safetensors_model(file) for file in files]
    model = BagOfModels(models, bag.get("weights"), bag.get("segment"))
    model.eval()
    return LoadedModel(model, name, f"Hugging Face cache ({repo_id})", _fingerprint([bag_file, *files]))


def _load_from_torch_cache(name: str) -> LoadedModel | None:
    remote = pretrained.REMOTE_ROOT
    bag_file = remote / f"{name}.yaml"
    if not bag_file.exists():
        return None
    signatures = yaml.safe_load(bag_file.read_text())["models"]
    urls = pretrained._parse_remote_files(remote / "files.txt")
    cached = [_torch_checkpoints() / urls[sig].rsplit("/", 1)[-1] for sig in signatures if sig in urls]
    if len(cached) != len(signatures) or not all(path.exists() for path in cached):
        return None
    model_repo = RemoteRepo(urls)  # reads the cached files; no download happens when they exist
    model = AnyModelRepo(model_repo, BagOnlyRepo(remote, model_repo)).get_model(name)
    model.eval()
    return LoadedModel(_as_bag(model), name, f"torch hub cache ({_torch_checkpoints()})", _fingerprint(cached))


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def missing_model_message(name: str) -> str:
    return (f"model '{name}' is not available offline: not in the Hugging Face cache ({hf_cache_dir()}) "
            f"nor the torch hub cache ({_torch_checkpoints()}). Provide it with --model-repo DIR "
            f"(a folder holding {name}.yaml and its .th files), or connect to the network once so "
            f"it can be downloaded")


def load_model(name: str, repo: Path | None = None) -> LoadedModel:
    """Load `name` (a bag name such as htdemucs_ft, or a single signature) as a bag."""
    with warnings.catch_warnings():
        # demucs re-creates each model through its constructor, whose initialisers warn
        # about zero-size layers of small models; the weights are replaced right after.
        warnings.simplefilter("ignore", UserWarning)
        return _load_model(name, repo)


def _load_model(name: str, repo: Path | None) -> LoadedModel:
    if repo is not None:
        return _load_from_repo(name, Path(repo).expanduser())
    for loader in (_load_from_hf_cache, _load_from_torch_cache):
        loaded = loader(name)
        if loaded is not None:
            log.debug("model %s from %s", name, loaded.origin)
            return loaded
    if is_offline() or not _hub_reachable():
        raise ModelUnavailableError(missing_model_message(name))
    log.info("downloading model %s (first use)", name)
    try:
        model = pretrained.get_model(name)
    except (ModelLoadingError, SystemExit, OSError, ValueError) as exc:
        raise ModelUnavailableError(f"model '{name}' could not be downloaded: {exc}") from None
    loaded = _load_from_hf_cache(name) or _load_from_torch_cache(name)
    if loaded is not None:
        return loaded
    return LoadedModel(_as_bag(model), name, "network", name)


def available_models(repo: Path | None = None) -> list[tuple[str, str]]:
    """(name, where) of every model that loads without network."""
    found: list[tuple[str, str]] = []
    if repo is not None and Path(repo).is_dir():
        for model_name in sorted(BagOnlyRepo(Path(repo), LocalRepo(Path(repo))).list_model()):
            found.append((model_name, str(repo)))
    hub = hf_cache_dir()
    for name in KNOWN_MODELS:
        repo_dir = hub / f"models--{HF_NAMESPACE}--{hf_repo_name(name)}"
        if any(repo_dir.glob(f"snapshots/*/{name}.yaml")):
            found.append((name, f"Hugging Face cache ({repo_dir})"))
        elif _torch_cache_has(name):
            found.append((name, f"torch hub cache ({_torch_checkpoints()})"))
    return found


def _torch_cache_has(name: str) -> bool:
    bag_file = pretrained.REMOTE_ROOT / f"{name}.yaml"
    if not bag_file.exists():
        return False
    urls = pretrained._parse_remote_files(pretrained.REMOTE_ROOT / "files.txt")
    sigs = yaml.safe_load(bag_file.read_text())["models"]
    return all(sig in urls and (_torch_checkpoints() / urls[sig].rsplit("/", 1)[-1]).exists() for sig in sigs)
