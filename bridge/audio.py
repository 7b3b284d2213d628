"""Decoding sources: probe, block-wise reading, channel mapping and resampling.

Sources are read in blocks so that memory never grows with the length of a recording.
soundfile (libsndfile) decodes WAV/AIFF/FLAC/OGG/MP3; pedalboard's AudioFile is the fallback
for what libsndfile cannot open (e.g. M4A/AAC where the platform has a decoder).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from bridge.errors import InputError
from bridge.wavio import iter_chunks, read_time_reference

AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".bwf", ".aif", ".aiff", ".aifc", ".flac", ".ogg", ".oga", ".opus",
    ".mp3", ".caf", ".w64", ".rf64", ".m4a", ".aac",
})
BLOCK_FRAMES = 1 << 16


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    frames: int
    channels: int
    container: str
    subtype: str | None
    time_reference: int | None

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def _check_wav_sizes(path: Path) -> None:
    """A WAV whose header promises more audio than the file holds is truncated (or still
    being written, when the sizes are placeholders); libsndfile would read it silently short."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        file_size = handle.tell()
        chunks = iter_chunks(handle)
        handle.seek(0)
        riff = handle.read(12)
    if not chunks or riff[:4] != b"RIFF":
        return
    riff_size = struct.unpack("<I", riff[4:8])[0]
    for chunk_id, offset, size in chunks:
        if chunk_id == b"data":
            if size in (0, 0xFFFFFFFF) and file_size > offset:
                raise InputError(path, "incomplete WAV: its header sizes are not set (still being written?)")
            if offset + size > file_size:
                raise InputError(path, f"truncated: the header promises {size} bytes of audio, "
                                       f"the file holds {file_size - offset}")
            return
    if riff_size + 8 > file_size:
        raise InputError(path, "truncated: the WAV file ends before its audio data")


def probe(path: Path | str) -> AudioInfo:
    """Describe a source, or raise InputError saying why it cannot be separated."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")
    _check_wav_sizes(path)
    try:
        info = sf.info(str(path))
        result = AudioInfo(path.resolve(), int(info.samplerate), int(info.frames), int(info.channels),
                           info.format, info.subtype, read_time_reference(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        result = _probe_with_pedalboard(path)
    if result.frames <= 0:
        raise InputError(path, "contains no audio (0 frames)")
    if result.channels not in (1, 2):
        raise InputError(path, f"has {result.channels} channels; StemBridge separates mono and stereo files")
    if not 8000 <= result.sample_rate <= 384000:
        raise InputError(path, f"unsupported sample rate {result.sample_rate} Hz")
    return result


def _probe_with_pedalboard(path: Path) -> AudioInfo:
    from pedalboard.io import AudioFile  # imported here: only for formats libsndfile lacks

    try:
        with AudioFile(str(path)) as audio:
            return AudioInfo(path.resolve(), int(audio.samplerate), int(audio.frames), int(audio.num_channels),
                             path.suffix.lstrip(".").upper(), None, None)
    except Exception:
        raise InputError(path, "not an audio file this system can decode") from None


def read_blocks(info: AudioInfo, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Yield float32 (frames, channels) blocks of the whole source; InputError if the file
    turns out shorter than its header said or cannot be decoded part-way."""
    delivered = 0
    try:
        if info.subtype is not None:
            with sf.SoundFile(str(info.path)) as handle:
                while True:
                    block = handle.read(block_frames, dtype="float32", always_2d=True)
                    if block.shape[0] == 0:
                        break
                    delivered += block.shape[0]
                    yield block
        else:
            from pedalboard.io import AudioFile

            with AudioFile(str(info.path)) as audio:
                while audio.tell() < audio.frames:
                    block = np.ascontiguousarray(audio.read(block_frames).T, dtype=np.float32)
                    if block.shape[0] == 0:
                        break
                    delivered += block.shape[0]
                    yield block
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise InputError(info.path, f"could not be decoded after {delivered} frames ({exc})") from None
    if delivered != info.frames:
        raise InputError(info.path, f"truncated: decoded {delivered} of {info.frames} frames")


def to_stereo(block: np.ndarray) -> np.ndarray:
    """Demucs models are stereo: a mono source runs as dual mono."""
    if block.shape[1] == 2:
        return block
    return np.repeat(block[:, :1], 2, axis=1)


def from_stereo(block: np.ndarray, channels: int) -> np.ndarray:
    """Back to the source's channel count; dual-mono output folds to mono by averaging."""
    if channels == 2:
        return block
    return block.mean(axis=1, keepdims=True, dtype=np.float32)


def resampled_length(frames: int, rate_in: int, rate_out: int) -> int:
    return int(round(frames * rate_out / rate_in))


class Resampler:
    """Streaming high-quality resampler (soxr VHQ); a pass-through when rates match.

    The output is delay-compensated: block-wise output equals resampling the whole signal.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int) -> None:
        self._stream = None
        if rate_in != rate_out:
            self._stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="VHQ")

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        return self._stream.resample_chunk(np.ascontiguousarray(block), last=last)


class ExactLength:
    """Trims or zero-pads a block stream to exactly `frames` frames."""

    def __init__(self, frames: int, channels: int) -> None:
        self.remaining = frames
        self.channels = channels

    def take(self, block: np.ndarray) -> np.ndarray:
        block = block[: max(self.remaining, 0)]
        self.remaining -= block.shape[0]
        return block

    def finish(self) -> np.ndarray:
        pad = np.zeros((max(self.remaining, 0), self.channels), dtype=np.float32)
        self.remaining = 0
        return pad
