"""Reading a published stem set and writing its preview file beside it.

Audio is handled as (frames, channels) float32, the interleaved layout of the files. The preview is
written in the stems' own container and sample format, with the set's bext TimeReference, under
a hidden temporary name, then renamed into place and recorded as `preview` in stems.json.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import soundfile as sf

from bridge.atomic import folder_lock, temp_name_for
from bridge.errors import InputError, OutputError
from bridge.manifest import MANIFEST_NAME, read_manifest, write_manifest
from bridge.wavio import BitDepth, WavWriter

_WAV_DEPTHS: dict[str, BitDepth] = {"PCM_16": "16", "PCM_24": "24", "FLOAT": "32f"}


@dataclass(frozen=True)
class StemSet:
    manifest_path: Path
    manifest: dict
    files: dict[str, Path]          # stem name -> absolute file
    sample_rate: int
    frames: int
    channels: int
    time_reference: int | None

    @property
    def folder(self) -> Path:
        return self.manifest_path.parent


def open_stem_set(path: Path) -> StemSet:
    """The manifest (or its folder) at `path`, checked so that a preview can be rendered."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME if path.is_dir() else path
    manifest = read_manifest(manifest_path)
    folder = manifest_path.parent
    stems = manifest["stems"]
    if not isinstance(stems, dict) or not stems:
        raise InputError(manifest_path, "manifest lists no stems")
    files = {}
    for name, rel in stems.items():
        file = (folder / rel).resolve()
        if file.parent != folder.resolve():
            raise InputError(manifest_path, f"stem {name!r} points outside the set's folder: {rel}")
        files[name] = file
    return StemSet(manifest_path, manifest, files, int(manifest["sample_rate"]), int(manifest["frames"]),
                   int(manifest["channels"]), manifest["time_reference"])


def stem_identity(file: Path) -> tuple:
    """Changes whenever the file is replaced (a render-quality set replacing a preview set),
    so cached audio of the old file is never mixed into the new set's preview."""
    try:
        st = file.stat()
    except FileNotFoundError:
        raise InputError(file, "stem file missing; separate the source again") from None
    return (str(file), st.st_ino, st.st_mtime_ns, st.st_size)


def read_stem(stem_set: StemSet, name: str) -> np.ndarray:
    file = stem_set.files[name]
    try:
        data, rate = sf.read(file, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise InputError(file, f"cannot read stem: {exc}") from None
    expected = (stem_set.sample_rate, stem_set.frames, stem_set.channels)
    if (rate, data.shape[0], data.shape[1]) != expected:
        raise InputError(file, f"stem is {rate} Hz, {data.shape[0]} frames, {data.shape[1]} channels; "
                               f"the manifest says {expected[0]} Hz, {expected[1]} frames, {expected[2]} channels")
    return data  # (frames, channels), C-contiguous: the layout of the file and of the re-mix


def preview_path(stem_set: StemSet) -> Path:
    """`<clip>_preview.<ext>`: the clip is the set's folder name (the output layout is
    `<output>/<clip>/`, already sanitised), the extension that of the stems."""
    ext = next(iter(stem_set.files.values())).suffix
    return stem_set.folder / f"{stem_set.folder.name}_preview{ext}"


def write_preview(stem_set: StemSet, blocks: Iterable[np.ndarray], *, durable: bool = False,
                  retire: Callable[[Path], None] | None = None) -> Path:
    """Write consecutive (frames, channels) `blocks` as the set's preview and record it in
    stems.json.

    `durable=False` skips fsync of the audio: a preview can always be rendered again, and
    flushing tens of MB would cost more than the whole gain-only re-mix. The rename is still
    atomic, so a reader never sees a partial file.

    With `retire`, the previous preview is first hard-linked to a hidden name and handed to
    `retire` after the rename: freeing a large file's blocks takes tens of milliseconds, which
    the caller can spend after answering instead of before."""
    final = preview_path(stem_set)
    template = next(iter(stem_set.files.values()))
    try:
        info = sf.info(template)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise InputError(template, f"cannot read stem: {exc}") from None
    temp = temp_name_for(final, f"preview-{uuid.uuid4().hex[:12]}")
    try:
        if info.format == "WAV":
            _write_wav(temp, blocks, stem_set, _WAV_DEPTHS.get(info.subtype, "32f"))
        else:
            _write_soundfile(temp, blocks, stem_set, info.format, info.subtype)
        if durable:
            with open(temp, "rb+") as handle:
                os.fsync(handle.fileno())
        # Locked against a set being published here (a render replacing its preview set):
        # the preview is only put in place if it was mixed from the stems still listed.
        with folder_lock(stem_set.folder):
            _check_still_current(stem_set)
            old = _keep_old(final) if retire is not None else None
            os.replace(temp, final)
            if old is not None:
                retire(old)
            _record(stem_set, final)
    except OSError as exc:
        raise OutputError(final, f"cannot write preview: {exc.strerror or exc}") from None
    finally:
        temp.unlink(missing_ok=True)
    return final


def _check_still_current(stem_set: StemSet) -> None:
    try:
        current = read_manifest(stem_set.manifest_path)
    except InputError:
        current = None
    if current is None or any(current.get(k) != stem_set.manifest.get(k) for k in ("job_id", "created", "stems")):
        raise InputError(stem_set.manifest_path, "the stems were replaced while the preview rendered "
                                                 "(a render finished); ask for the preview again")


def _keep_old(final: Path) -> Path | None:
    old = temp_name_for(final, f"old-{uuid.uuid4().hex[:12]}")
    try:
        os.link(final, old)
    except FileNotFoundError:
        return None
    except OSError:  # no hard links here (FAT, some network shares): delete in place instead
        return None
    return old


def _write_wav(temp: Path, blocks: Iterable[np.ndarray], stem_set: StemSet, depth: BitDepth) -> None:
    with WavWriter(temp, stem_set.sample_rate, stem_set.channels, depth, stem_set.time_reference) as writer:
        for block in blocks:
            writer.write(block)
    if writer.frames != stem_set.frames:
        raise OutputError(temp, f"wrote {writer.frames} frames, expected {stem_set.frames}")


def _write_soundfile(temp: Path, blocks: Iterable[np.ndarray], stem_set: StemSet, fmt: str, subtype: str) -> None:
    # Integer formats: clip here so libsndfile never wraps an over-full sample around.
    clip = subtype not in ("FLOAT", "DOUBLE")
    with sf.SoundFile(temp, "w", samplerate=stem_set.sample_rate, channels=stem_set.channels,
                      format=fmt, subtype=subtype) as out:
        for block in blocks:
            out.write(np.clip(block, -1.0, 1.0) if clip else block)


def _record(stem_set: StemSet, final: Path) -> None:
    """Set `preview` in stems.json, re-read just before so a field another writer changed
    meanwhile is kept; skipped when it already names this file (every re-render after the
    first)."""
    current = read_manifest(stem_set.manifest_path)
    if current.get("preview") == final.name:
        return
    current["preview"] = final.name
    try:
        write_manifest(stem_set.manifest_path, current)
    except OSError as exc:
        raise OutputError(stem_set.manifest_path, f"cannot update manifest: {exc.strerror or exc}") from None

