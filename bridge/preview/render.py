"""Rendering previews: effects per stem (cached), then a cheap re-mix.

A preview render splits into the expensive part (each stem through its effect chain) and the
cheap part (gain, pan, mute, solo, the sum, the master chain). Processed stems are cached by
(stem file identity, chain), so a gain/mute/pan/solo change, or a chain change on one stem,
re-runs only what it must. Stems are never separated again: only the published files are read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np

from bridge.errors import ConfigError
from bridge.preview import effects
from bridge.preview.cache import ArrayCache
from bridge.preview.presets import get_preset, load_presets
from bridge.preview.spec import PreviewSpec, TrackSpec
from bridge.preview.stemset import StemSet, open_stem_set, read_stem, stem_identity, write_preview

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 1 << 30  # 1 GiB: both raw and processed stems of a 3-minute 6-stem set
BLOCK_FRAMES = 1 << 16  # 512 KiB of stereo float: the running sum stays in L2 cache


class PreviewRenderer:
    """Renders previews and keeps processed stems in memory between calls (bounded, LRU).

    Thread-safe: renders are serialised, so the daemon may call it from any thread.
    """

    def __init__(self, presets: dict[str, PreviewSpec] | None = None, presets_file: Path | None = None,
                 max_cache_bytes: int = DEFAULT_CACHE_BYTES, workers: int | None = None) -> None:
        self._presets = presets
        self._presets_file = presets_file
        self.cache = ArrayCache(max_cache_bytes)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._lock = threading.Lock()
        # Deletes superseded preview files after a render has returned (see write_preview).
        self._cleanup: ThreadPoolExecutor | None = None
        # What the last render did, for logs, benchmarks and tests: stems whose chain ran.
        self.last_processed: list[str] = []

    @property
    def presets(self) -> dict[str, PreviewSpec]:
        if self._presets is None:
            self._presets = load_presets(self._presets_file)
        return self._presets

    def spec_for(self, stems: Iterable[str], overrides: Iterable[str] = (), preset: str | None = None) -> PreviewSpec:
        """The preview a request asks for: the preset (if any), then the overrides on top."""
        stems = list(stems)
        base = PreviewSpec()
        if preset:
            base = get_preset(self.presets, preset)
            try:
                base.check_stems(stems)
            except ConfigError as exc:
                raise ConfigError(f"preset {preset!r}: {exc}") from None
        return PreviewSpec.parse(overrides, base=base, stems=stems)

    def render(self, manifest_path: Path, overrides: Iterable[str] = (), preset: str | None = None) -> Path:
        """Render `<clip>_preview.<ext>` beside the stems of `manifest_path` (a stems.json or
        its folder) and record it in the manifest. Returns the preview's path.

        Raises ConfigError (bad key, value, effect, plugin), InputError (manifest or stems
        unusable), OutputError (cannot write). Nothing is written when any of these is raised
        before the final rename."""
        with self._lock:
            started = time.perf_counter()
            stem_set = open_stem_set(Path(manifest_path))
            spec = self.spec_for(stem_set.files, overrides, preset)
            path = write_preview(stem_set, self.mix_blocks(stem_set, spec), retire=self._retire)
            log.info("preview %s in %.3f s (effects ran on: %s)", path, time.perf_counter() - started,
                     ", ".join(self.last_processed) or "none")
            return path

    def _retire(self, old: Path) -> None:
        if self._cleanup is None:
            self._cleanup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preview-cleanup")
        self._cleanup.submit(old.unlink, missing_ok=True)

    def close(self) -> None:
        """Finish pending deletions, stop the helper thread and drop cached audio."""
        with self._lock:
            if self._cleanup is not None:
                self._cleanup.shutdown(wait=True)
                self._cleanup = None
            self.cache.clear()

    def __enter__(self) -> PreviewRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mix(self, stem_set: StemSet, spec: PreviewSpec) -> np.ndarray:
        """The whole preview as (frames, channels) float32, without writing anything."""
        blocks = [block.copy() for block in self.mix_blocks(stem_set, spec)]
        return np.concatenate(blocks, axis=0) if blocks else np.zeros((0, stem_set.channels), np.float32)

    def mix_blocks(self, stem_set: StemSet, spec: PreviewSpec) -> Iterator[np.ndarray]:
        """The preview as consecutive (frames, channels) blocks.

        Every check, plugin load and effect run happens here, before the first block is
        asked for, so a failing request never opens an output file. Without a master chain
        the sum is then formed block by block in one small buffer that stays in the CPU cache
        and goes straight to the file: a gain-only re-mix costs one read of each stem and
        one write, not a full-length temporary per operation. The yielded buffer is reused:
        consume (write or copy) each block before asking for the next."""
        if stem_set.channels != 2:
            panned = [name for name, track in spec.tracks.items() if track.pan]
            if panned:
                raise ConfigError(f"{panned[0]}.pan: pan needs a stereo set; this one has "
                                  f"{stem_set.channels} channel(s)")
        master_board = effects.build_chain(spec.master.fx, "master.fx") if spec.master.fx else None
        audible = _audible(stem_set.files, spec)
        processed = self._processed(stem_set, {name: spec.track(name) for name in audible})
        layers = [(processed[name], _channel_gains(spec.track(name), stem_set.channels)) for name in audible]
        master_gain = np.float32(_db_to_gain(spec.master.gain_db))
        if master_board is None:
            return _scaled(_sum_blocks(layers, stem_set), master_gain)
        # The master chain needs the whole sum (its state runs across block edges).
        whole = np.empty((stem_set.frames, stem_set.channels), dtype=np.float32)
        for start, block in _sum_blocks(layers, stem_set):
            whole[start:start + len(block)] = block
        whole = effects.process(master_board, whole, stem_set.sample_rate)
        whole *= master_gain
        return (whole[start:start + BLOCK_FRAMES] for start in range(0, stem_set.frames, BLOCK_FRAMES))

    def _processed(self, stem_set: StemSet, tracks: dict[str, TrackSpec]) -> dict[str, np.ndarray]:
        """Each audible stem after its chain: from the cache, or computed (in parallel)."""
        result: dict[str, np.ndarray] = {}
        todo: dict[str, tuple] = {}
        for name, track in tracks.items():
            raw_key = stem_identity(stem_set.files[name])
            key = raw_key if not track.fx else (raw_key, stem_set.sample_rate, track.fx)
            cached = self.cache.get(key)
            if cached is not None:
                result[name] = cached
            else:
                todo[name] = (raw_key, key)
        # Build every chain before running any: a plugin that will not load fails the request
        # before seconds are spent on the other stems.
        boards = {name: effects.build_chain(tracks[name].fx, f"{name}.fx")
                  for name in todo if tracks[name].fx}

        def run(name: str) -> np.ndarray:
            raw_key, key = todo[name]
            raw = self.cache.get(raw_key)
            if raw is None:
                raw = read_stem(stem_set, name)
                self.cache.put(raw_key, raw)
            if name not in boards:
                return raw
            # Cached in the file's interleaved (frames, channels) layout, so the re-mix and the
            # writer never transpose.
            out = effects.process(boards[name], raw, stem_set.sample_rate)
            self.cache.put(key, out)
            self.cache.demote(raw_key)
            return out

        if todo:
            # pedalboard releases the GIL while processing, so stems run side by side.
            with ThreadPoolExecutor(max_workers=min(self.workers, len(todo))) as pool:
                for name, array in zip(todo, pool.map(run, todo)):
                    result[name] = array
        self.last_processed = sorted(boards)
        return result


def _audible(stems: Iterable[str], spec: PreviewSpec) -> list[str]:
    """Mute always silences (as in most DAWs, a muted track stays silent when soloed);
    with any stem soloed, only soloed stems play."""
    names = list(stems)
    soloed = {n for n in names if spec.track(n).solo}
    return [n for n in names if not spec.track(n).mute and (not soloed or n in soloed)]


def _db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


Gains = Union[None, np.float32, np.ndarray]


def _channel_gains(track: TrackSpec, channels: int) -> Gains:
    """None when the stem is summed as it is (exactly), a scalar for a plain gain, or, for a
    pan, a whole block of per-sample factors: numpy broadcasting a (channels,) vector runs
    its inner loop over 2 elements and is several times slower than two equal-shaped arrays."""
    gain = _db_to_gain(track.gain_db)
    if track.pan and channels == 2:
        # Balance law: centre leaves both sides untouched (so a plain sum stays exact);
        # moving right attenuates the left side linearly, and vice versa. The stems are
        # already stereo images: a balance control moves them without a mono panner's dip.
        pair = np.array([gain * min(1.0, 1.0 - track.pan), gain * min(1.0, 1.0 + track.pan)], dtype=np.float32)
        return np.ascontiguousarray(np.broadcast_to(pair, (BLOCK_FRAMES, 2)))
    if gain == 1.0:
        return None
    return np.float32(gain)


def _scaled(blocks: Iterator[tuple[int, np.ndarray]], gain: np.float32) -> Iterator[np.ndarray]:
    for _, block in blocks:
        if gain != 1.0:
            block *= gain
        yield block


def _sum_blocks(layers: list[tuple[np.ndarray, Gains]],
                stem_set: StemSet) -> Iterator[tuple[int, np.ndarray]]:
    buffer = np.empty((BLOCK_FRAMES, stem_set.channels), dtype=np.float32)
    scratch = np.empty_like(buffer)
    for start in range(0, stem_set.frames, BLOCK_FRAMES):
        stop = min(start + BLOCK_FRAMES, stem_set.frames)
        out, tmp = buffer[:stop - start], scratch[:stop - start]
        if not layers:
            out.fill(0.0)
        for i, (audio, gains) in enumerate(layers):
            # The first layer is written, not added to zeros: one pass less over the block.
            target = out if i == 0 else tmp
            if gains is None:
                if i == 0:
                    np.copyto(out, audio[start:stop])
                else:
                    out += audio[start:stop]
                continue
            np.multiply(audio[start:stop], gains if gains.ndim == 0 else gains[:stop - start], out=target)
            if i > 0:
                out += tmp
        yield start, out
