"""WAV files with a BWF `bext` chunk.

libsndfile (and so soundfile) cannot write a `bext` chunk, and a read+write through it drops
the one a source had. DAWs spot stems to their original position from that chunk's
TimeReference, so StemBridge writes its WAV files itself: RIFF header, `fmt `, `bext` before
`data` (where every DAW looks for it), sample data streamed in blocks, sizes patched on close.

A RIFF file holds at most 4 GiB (a 32-bit size): three hours of 48 kHz stereo in 32-bit float
already exceed it. The header reserves room for a `ds64` chunk as a `JUNK` chunk, which
readers skip (EBU Tech 3306, as broadcast recorders do). A file that ends up larger becomes
RF64 on close: `RIFF` turns into `RF64`, `JUNK` into `ds64` with the 64-bit sizes, and the
32-bit sizes read 0xFFFFFFFF. Everything smaller stays a plain WAV file.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

BitDepth = Literal["16", "24", "32f"]

BEXT_FIXED_SIZE = 602  # EBU Tech 3285: fixed part of the chunk, CodingHistory follows
_TIME_REFERENCE_OFFSET = 338
_FORMAT_PCM = 1
_FORMAT_FLOAT = 3
_FORMAT_EXTENSIBLE = 0xFFFE
MAX_RIFF_BYTES = 0xFFFFFFFF   # beyond this the file is written as RF64
_DS64_BODY = struct.Struct("<QQQI")   # RIFF size, data size, sample count, table length
# KSDATAFORMAT_SUBTYPE_PCM / _IEEE_FLOAT without their first two bytes (the format tag).
_SUBFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def build_bext(time_reference: int, description: str = "", originator: str = "StemBridge",
               coding_history: str = "") -> bytes:
    """The body of a `bext` chunk (version 1) carrying `time_reference` in samples."""
    body = bytearray(BEXT_FIXED_SIZE)
    body[0:256] = description.encode("ascii", "replace")[:256].ljust(256, b"\0")
    body[256:288] = originator.encode("ascii", "replace")[:32].ljust(32, b"\0")
    struct.pack_into("<II", body, _TIME_REFERENCE_OFFSET, time_reference & 0xFFFFFFFF, time_reference >> 32)
    struct.pack_into("<H", body, 346, 1)
    return bytes(body) + coding_history.encode("ascii", "replace")


def iter_chunks(handle: BinaryIO) -> list[tuple[bytes, int, int]]:
    """(id, body offset, body size) of each top-level chunk of a RIFF/WAVE file."""
    handle.seek(0)
    header = handle.read(12)
    if len(header) < 12 or header[:4] not in (b"RIFF", b"RF64") or header[8:12] != b"WAVE":
        return []
    handle.seek(0, 2)
    end = handle.tell()
    chunks = []
    position = 12
    while position + 8 <= end:
        handle.seek(position)
        chunk_id, size = struct.unpack("<4sI", handle.read(8))
        chunks.append((chunk_id, position + 8, size))
        position += 8 + size + (size & 1)
    return chunks


def read_time_reference(path: Path | str) -> int | None:
    """The BWF TimeReference (samples since midnight) of a WAV file, or None without bext."""
    try:
        with open(path, "rb") as handle:
            for chunk_id, offset, size in iter_chunks(handle):
                if chunk_id == b"bext" and size >= _TIME_REFERENCE_OFFSET + 8:
                    handle.seek(offset + _TIME_REFERENCE_OFFSET)
                    low, high = struct.unpack("<II", handle.read(8))
                    return low | (high << 32)
    except OSError:
        return None
    return None


def float_to_pcm(block: np.ndarray, bit_depth: BitDepth, rng: np.random.Generator | None = None) -> bytes | memoryview:
    """Interleaved little-endian sample bytes for a float block (frames, channels).

    16-bit gets TPDF dither (what a mastering engineer expects when truncating to 16 bits);
    24-bit is rounded (its noise floor is already below any converter's).
    """
    block = np.ascontiguousarray(block, dtype="<f4")
    if bit_depth == "32f":
        return memoryview(block).cast("B")  # the samples as they are: no copy
    if bit_depth == "16":
        scale = 32767.0
        scaled = block.astype(np.float64) * scale
        if rng is not None:
            scaled += rng.random(block.shape) - rng.random(block.shape)
        return np.clip(np.round(scaled), -32768, 32767).astype("<i2").tobytes()
    scaled = np.clip(np.round(block.astype(np.float64) * 8388607.0), -8388608, 8388607).astype("<i4")
    return scaled.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


class WavWriter:
    """Streams float blocks into a WAV file with an optional `bext` chunk before `data`.

    Use as a context manager; sizes in the header are correct only after `close()`.
    """

    def __init__(self, path: Path | str, sample_rate: int, channels: int, bit_depth: BitDepth = "32f",
                 time_reference: int | None = None, description: str = "") -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.bit_depth = bit_depth
        self.frames = 0
        self._bytes_per_sample = {"16": 2, "24": 3, "32f": 4}[bit_depth]
        self._rng = np.random.default_rng(0x5B) if bit_depth == "16" else None
        self._handle: BinaryIO = open(self.path, "wb")
        self._write_header(time_reference, description)

    def _write_header(self, time_reference: int | None, description: str) -> None:
        bits = self._bytes_per_sample * 8
        block_align = self.channels * self._bytes_per_sample
        tag = _FORMAT_FLOAT if self.bit_depth == "32f" else _FORMAT_PCM
        # More than two channels needs WAVE_FORMAT_EXTENSIBLE (a channel layout); for mono
        # and stereo the plain tags are what libsndfile writes and every DAW reads.
        extensible = self.channels > 2
        fmt = struct.pack("<HHIIHH", _FORMAT_EXTENSIBLE if extensible else tag, self.channels,
                          self.sample_rate, self.sample_rate * block_align, block_align, bits)
        if extensible:
            fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + _SUBFORMAT_TAIL
        elif tag == _FORMAT_FLOAT:
            fmt += struct.pack("<H", 0)
        out = self._handle
        out.write(b"RIFF\0\0\0\0WAVE")
        self._ds64_offset = out.tell()
        out.write(b"JUNK" + struct.pack("<I", _DS64_BODY.size) + bytes(_DS64_BODY.size))
        out.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
        if tag == _FORMAT_FLOAT:
            self._fact_offset = out.tell() + 8
            out.write(b"fact" + struct.pack("<II", 4, 0))
        else:
            self._fact_offset = None
        if time_reference is not None:
            bext = build_bext(time_reference, description)
            out.write(b"bext" + struct.pack("<I", len(bext)) + bext + (b"\0" if len(bext) & 1 else b""))
        out.write(b"data\0\0\0\0")
        self._data_offset = out.tell()

    def write(self, block: np.ndarray) -> None:
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"expected (frames, {self.channels}) block, got {block.shape}")
        self._handle.write(float_to_pcm(block, self.bit_depth, self._rng))
        self.frames += block.shape[0]

    def close(self) -> None:
        out = self._handle
        if out.closed:
            return
        data_bytes = self.frames * self.channels * self._bytes_per_sample
        if data_bytes & 1:
            out.write(b"\0")
        riff_size = out.tell() - 8
        rf64 = riff_size > MAX_RIFF_BYTES
        out.seek(0)
        if rf64:   # the 32-bit sizes read 0xFFFFFFFF; ds64, in the reserved JUNK, holds the real ones
            out.write(b"RF64" + struct.pack("<I", 0xFFFFFFFF))
            out.seek(self._ds64_offset)
            out.write(b"ds64" + struct.pack("<I", _DS64_BODY.size)
                      + _DS64_BODY.pack(riff_size, data_bytes, self.frames, 0))
        else:
            out.write(b"RIFF" + struct.pack("<I", riff_size))
        out.seek(self._data_offset - 4)
        out.write(struct.pack("<I", 0xFFFFFFFF if rf64 else data_bytes))
        if self._fact_offset is not None:
            out.seek(self._fact_offset)
            out.write(struct.pack("<I", min(self.frames, 0xFFFFFFFF)))
        out.flush()
        out.close()

    def __enter__(self) -> "WavWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_wav(path: Path | str, data: np.ndarray, sample_rate: int, bit_depth: BitDepth = "32f",
              time_reference: int | None = None) -> None:
    """Write a whole (frames, channels) float array as a WAV with an optional bext chunk."""
    if data.ndim == 1:
        data = data[:, None]
    with WavWriter(path, sample_rate, data.shape[1], bit_depth, time_reference) as writer:
        writer.write(data)
