"""Writing a stem set a DAW can re-import sample-exactly.

Model-rate stems arrive as a stream of (stems, n, 2) blocks. Each stem is resampled back to
the source's rate, folded back to mono when the source was mono, cut to exactly the source's
frame count, optionally corrected so the stems sum to the source (`exact_sum`), and written
under a hidden temporary name. Only when every file is complete are they renamed into place,
`stems.json` last: its presence means the set is whole.
"""

from __future__ import annotations

import os
import re
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import soundfile as sf

from bridge.atomic import folder_lock, fsync_all, fsync_dir, temp_name_for
from bridge.audio import AudioInfo, Resampler, from_stereo, read_blocks
from bridge.errors import ConfigError, InputError, OutputError
from bridge.manifest import MANIFEST_NAME, now_iso, read_manifest, write_manifest
from bridge.wavio import WavWriter

OutputFormat = Literal["wav", "flac"]
DEFAULT_TEMPLATE = "{clip}/{clip}_{stem}"
TEMPLATE_FIELDS = {"clip", "stem", "model", "quality"}
_SOURCE_DEPTH = {"PCM_16": "16", "PCM_S8": "16", "PCM_U8": "16", "PCM_24": "24"}


def sanitise_name(name: str) -> str:
    """A clip name safe as one path component on every platform."""
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch if ch.isprintable() else "_" for ch in name)
    name = re.sub(r'[\\/:*?"<>|]', "_", name).strip().strip(".")
    return name or "clip"


def check_template(template: str) -> None:
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    unknown = fields - TEMPLATE_FIELDS
    if unknown:
        raise ConfigError(f"name template {template!r}: unknown field(s) {', '.join(sorted(unknown))} "
                          f"(use {', '.join(sorted(TEMPLATE_FIELDS))})")
    if "stem" not in fields:
        raise ConfigError(f"name template {template!r} must contain {{stem}}")
    folder = template.replace("\\", "/").rpartition("/")[0]
    if "{stem}" in folder:
        raise ConfigError(f"name template {template!r}: all stems of a set go in one folder; keep {{stem}} in the file name")


def resolve_bit_depth(requested: str | None, fmt: OutputFormat, source_subtype: str | None) -> str:
    depth = requested or ("24" if fmt == "flac" else "32f")
    if depth == "source":
        depth = _SOURCE_DEPTH.get(source_subtype or "", "32f")
        if fmt == "flac" and depth == "32f":
            depth = "24"
    if fmt == "flac" and depth == "32f":
        raise ConfigError("FLAC holds integer samples only: use --bit-depth 16 or 24, or --format wav")
    if depth not in ("16", "24", "32f"):
        raise ConfigError(f"bit depth {depth!r}: choose 16, 24, 32f or source")
    return depth


@dataclass(frozen=True)
class OutputPlan:
    """Where and how one stem set is written."""

    root: Path
    clip: str
    template: str
    fmt: OutputFormat
    bit_depth: str
    model: str
    quality: str

    def stem_path(self, stem: str) -> Path:
        fields = {"clip": self.clip, "stem": sanitise_name(stem), "model": sanitise_name(self.model),
                  "quality": self.quality}
        relative = self.template.format(**fields).replace("\\", "/")
        parts = [sanitise_name(part) for part in relative.split("/") if part not in ("", ".", "..")]
        # Appended, not with_suffix(): a clip called "take 1.5" must not lose its ".5".
        parts[-1] = f"{parts[-1]}.{self.fmt}"
        path = self.root.joinpath(*parts)
        root = self.root.resolve()
        if root not in path.resolve().parents:
            raise OutputError(path, f"would leave the output folder {root}")
        return path

    def folder(self) -> Path:
        return self.stem_path("x").parent

    def manifest_path(self) -> Path:
        return self.folder() / MANIFEST_NAME


class _FrameQueue:
    """Pulls exactly n frames at a time out of a block iterator."""

    def __init__(self, blocks: Iterator[np.ndarray], channels: int) -> None:
        self.blocks = blocks
        self.channels = channels
        self.pending: list[np.ndarray] = []
        self.count = 0

    def take(self, n: int) -> np.ndarray:
        while self.count < n:
            block = next(self.blocks, None)
            if block is None:
                break
            self.pending.append(block)
            self.count += block.shape[0]
        joined = np.concatenate(self.pending) if self.pending else np.zeros((0, self.channels), np.float32)
        head, rest = joined[:n], joined[n:]
        self.pending = [rest] if rest.shape[0] else []
        self.count = rest.shape[0]
        if head.shape[0] < n:
            head = np.concatenate([head, np.zeros((n - head.shape[0], self.channels), np.float32)])
        return head


class _Writer:
    def __init__(self, path: Path, info: AudioInfo, plan: OutputPlan) -> None:
        self.path = path
        if plan.fmt == "wav":
            self.handle = WavWriter(path, info.sample_rate, info.channels, plan.bit_depth, info.time_reference)
        else:
            subtype = {"16": "PCM_16", "24": "PCM_24"}[plan.bit_depth]
            self.handle = sf.SoundFile(str(path), "w", info.sample_rate, info.channels, subtype, format="FLAC")

    def write(self, block: np.ndarray) -> None:
        self.handle.write(block)

    def close(self) -> None:
        self.handle.close()


def write_stem_set(blocks: Iterator[np.ndarray], model_stems: list[str], model_rate: int, info: AudioInfo,
                   plan: OutputPlan, *, two_stems: str | None, exact_sum: bool, job_id: str,
                   manifest_fields: dict) -> Path:
    """Consume model-rate blocks (len(model_stems), n, 2) and publish the set; returns the
    manifest path. On any failure, no file of the set is left visible or half-written."""
    out_names = _output_names(model_stems, two_stems)
    folder = plan.folder()
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, f"cannot create the output folder ({exc.strerror})") from None
    finals = {name: plan.stem_path(name) for name in out_names}
    temps = {name: temp_name_for(path, job_id) for name, path in finals.items()}
    writers: dict[str, _Writer] = {}
    published = False
    try:
        for name in out_names:
            writers[name] = _Writer(temps[name], info, plan)
        _stream(blocks, model_stems, model_rate, info, writers, out_names, two_stems, exact_sum)
        for writer in writers.values():
            writer.close()
        fsync_all(list(temps.values()))
        manifest = plan.manifest_path()
        # Locked: a preview being recorded into the old set waits, then sees the new one.
        with folder_lock(folder):
            stale = _retire_manifest(manifest, job_id)  # the set reads as incomplete from here...
            for name in out_names:
                os.replace(temps[name], finals[name])
            # ...until the new manifest lands.
            write_manifest(manifest, {
                "version": 1, "job_id": job_id, "source": str(info.path), **manifest_fields,
                "sample_rate": info.sample_rate, "frames": info.frames, "channels": info.channels,
                "time_reference": info.time_reference, "model": plan.model, "quality": plan.quality,
                "stems": {name: finals[name].relative_to(folder).as_posix() for name in out_names},
                "preview": None, "created": now_iso(),
            })
            fsync_dir(folder)
            published = True
            _remove_stale(folder, stale, set(finals.values()))
        return manifest
    except OSError as exc:
        raise OutputError(folder, f"writing stems failed ({exc.strerror or exc})") from None
    finally:
        for writer in writers.values():
            try:
                writer.close()
            except Exception:  # a writer that failed mid-way may not close cleanly; its temp goes anyway
                pass
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        if not published:
            _remove_empty(created)


def _retire_manifest(manifest: Path, job_id: str) -> list[Path]:
    """Replacing a set (a re-bounce, a render after its preview): take stems.json away before
    the first stem changes, so the folder reads as incomplete until the new manifest lands.
    A reader that reads stems.json, then the stems, then stems.json again and finds it
    unchanged has read one whole set. Returns the old set's files that the new one may not
    overwrite (a preview rendered from the old stems, differently named stems)."""
    if not manifest.exists():
        return []
    try:
        old = read_manifest(manifest)
        files = [*old["stems"].values(), *([old["preview"]] if old.get("preview") else [])]
    except InputError:
        files = []
    retired = temp_name_for(manifest, job_id)
    os.replace(manifest, retired)
    retired.unlink(missing_ok=True)
    fsync_dir(manifest.parent)
    return [manifest.parent / name for name in files]


def _remove_stale(folder: Path, stale: list[Path], current: set[Path]) -> None:
    for path in stale:
        if path not in current and path.parent == folder:
            path.unlink(missing_ok=True)


def _remove_empty(created: list[Path]) -> None:
    """Folders this run created for a set that failed: leave no empty husk behind."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break


def _output_names(model_stems: list[str], two_stems: str | None) -> list[str]:
    if two_stems is None:
        return list(model_stems)
    return [two_stems, f"no_{two_stems}"]


def _stream(blocks: Iterator[np.ndarray], model_stems: list[str], model_rate: int, info: AudioInfo,
            writers: dict[str, _Writer], out_names: list[str], two_stems: str | None, exact_sum: bool) -> None:
    # One resampler per stem: identical filters fed identical block sizes give every stem
    # the same output lengths, block by block.
    resamplers = [Resampler(model_rate, info.sample_rate, 2) for _ in model_stems]
    remaining = info.frames
    needs_mix = exact_sum or (two_stems is not None and len(model_stems) == 1)
    mix = _FrameQueue(read_blocks(info), info.channels) if needs_mix else None

    def emit(parts: list[np.ndarray]) -> None:
        nonlocal remaining
        n = min(parts[0].shape[0], remaining)
        if n <= 0:
            return
        remaining -= n
        stems = {name: from_stereo(part[:n], info.channels) for name, part in zip(model_stems, parts)}
        source = mix.take(n) if mix is not None else None
        for name, block in _arrange(stems, model_stems, two_stems, exact_sum, source).items():
            writers[name].write(block)

    for block in blocks:
        emit([resample(block[i]) for i, resample in enumerate(resamplers)])
    empty = np.zeros((0, 2), np.float32)
    emit([resample(empty, last=True) for resample in resamplers])
    if remaining > 0:  # the resampler's output fell short of the source's length by a few frames
        emit([np.zeros((remaining, 2), np.float32)] * len(model_stems))


def _arrange(stems: dict[str, np.ndarray], model_stems: list[str], two_stems: str | None, exact_sum: bool,
             source: np.ndarray | None) -> dict[str, np.ndarray]:
    if two_stems is None:
        if exact_sum:
            total = np.sum([stems[name] for name in model_stems], axis=0)
            residual_stem = "other" if "other" in stems else model_stems[-1]
            stems = dict(stems)
            stems[residual_stem] = stems[residual_stem] + (source - total)
        return stems
    target = stems[two_stems]
    if exact_sum or source is not None and len(model_stems) == 1:
        complement = source - target
    else:
        complement = np.sum([stems[name] for name in model_stems if name != two_stems], axis=0)
    return {two_stems: target, f"no_{two_stems}": complement}
