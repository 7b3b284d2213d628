"""Is a bounce finished? Judge a file by its container header, without decoding audio.

DAWs and libsndfile write WAV/AIFF headers with placeholder sizes and fix them on close, so a
header whose sizes match the file is the best evidence a writer is done. Three answers:
COMPLETE (sizes agree), INCOMPLETE (could still be growing: keep waiting) and INVALID (cannot
become valid by growing, e.g. a `.wav` that is not RIFF: hand it on so the job reports why).
"""

from __future__ import annotations

import enum
import struct
from pathlib import Path

_WAV_EXTENSIONS = {".wav", ".wave", ".bwf"}
_AIFF_EXTENSIONS = {".aif", ".aiff", ".aifc"}
# RIFF/RF64 placeholders some writers leave until they finish.
_PLACEHOLDERS = {0, 0xFFFFFFFF}
_MAX_CHUNKS = 1024  # a real header has a handful; stop walking garbage early


class HeaderState(enum.Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    INVALID = "invalid"


def header_state(path: Path) -> HeaderState:
    """Classify `path` by its header. A missing file is INCOMPLETE (it may reappear)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            suffix = path.suffix.lower()
            if suffix in _WAV_EXTENSIONS:
                return _wav_state(fh, size)
            if suffix in _AIFF_EXTENSIONS:
                return _aiff_state(fh, size)
    except OSError:
        return HeaderState.INCOMPLETE
    return _decoded_state(path)


def _wav_state(fh, size: int) -> HeaderState:
    head = fh.read(12)
    if len(head) < 12:
        return HeaderState.INCOMPLETE
    magic, riff_size, form = struct.unpack("<4sI4s", head)
    if magic not in (b"RIFF", b"RF64", b"BW64") or form != b"WAVE":
        return HeaderState.INVALID
    data_size: int | None = None
    if magic != b"RIFF":
        # RF64/BW64: the real sizes live in the ds64 chunk that must come first.
        chunk = fh.read(8 + 16)
        if len(chunk) < 24 or chunk[:4] != b"ds64":
            return HeaderState.INCOMPLETE
        riff_size, data_size = struct.unpack("<QQ", chunk[8:24])
    elif riff_size in _PLACEHOLDERS:
        return HeaderState.INCOMPLETE
    # RIFF size counts everything after the first 8 bytes; tolerate a trailing pad byte
    # that a writer did not count. A file longer than declared is mid-write too: libsndfile
    # declares the header-only size until it closes the file.
    if size not in (riff_size + 8, riff_size + 9):
        return HeaderState.INCOMPLETE
    return _walk_chunks(fh, size, little_endian=True, data_id=b"data", data_size=data_size)


def _aiff_state(fh, size: int) -> HeaderState:
    head = fh.read(12)
    if len(head) < 12:
        return HeaderState.INCOMPLETE
    magic, form_size, form = struct.unpack(">4sI4s", head)
    if magic != b"FORM" or form not in (b"AIFF", b"AIFC"):
        return HeaderState.INVALID
    if form_size in _PLACEHOLDERS:
        return HeaderState.INCOMPLETE
    if size not in (form_size + 8, form_size + 9):
        return HeaderState.INCOMPLETE
    return _walk_chunks(fh, size, little_endian=False, data_id=b"SSND", data_size=None)


def _walk_chunks(fh, size: int, little_endian: bool, data_id: bytes, data_size: int | None) -> HeaderState:
    """The audio chunk must exist, be non-placeholder and fit inside the file."""
    fmt = "<4sI" if little_endian else ">4sI"
    offset = 12
    for _ in range(_MAX_CHUNKS):
        if offset + 8 > size:
            return HeaderState.INCOMPLETE
        fh.seek(offset)
        chunk_id, chunk_size = struct.unpack(fmt, fh.read(8))
        if chunk_id == data_id:
            if data_size is not None and chunk_size == 0xFFFFFFFF:
                chunk_size = data_size  # RF64 keeps the real data size in ds64
            # An empty or placeholder data chunk is what writers put down at open; an
            # empty file that stays so is handed on by the watcher's stale timeout.
            if chunk_size in _PLACEHOLDERS:
                return HeaderState.INCOMPLETE
            return HeaderState.COMPLETE if offset + 8 + chunk_size <= size else HeaderState.INCOMPLETE
        offset += 8 + chunk_size + (chunk_size & 1)
    return HeaderState.INVALID


def _decoded_state(path: Path) -> HeaderState:
    """Compressed formats have no size field to trust: ask the decoder for a frame count.
    A file the decoder cannot open yet may still be arriving, so that is INCOMPLETE; the
    watcher's stale timeout hands it on eventually so the job can report the error."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception:  # libsndfile raises several types for partial or foreign data
        return HeaderState.INCOMPLETE
    return HeaderState.COMPLETE if info.frames > 0 else HeaderState.INCOMPLETE
