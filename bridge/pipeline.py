"""One separation, end to end: source → cache or model → stem set on disk.

`Separator` is what both the CLI and the daemon's worker use. It keeps loaded models warm
between runs, and turns accelerator trouble into a slower success: out of memory → a smaller
segment → the CPU; any other accelerator failure → the CPU.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from bridge import paths, side_by_side
from bridge.audio import AudioInfo, ExactLength, Resampler, probe, read_blocks, resampled_length, to_stereo
from bridge.cache import CacheCorrupt, StemCache, cache_key
from bridge.dawproject import write_dawproject
from bridge.device import is_out_of_memory, resolve_device
from bridge.engine import Normalisation, SeparationParams, StreamSeparator, even_span, shorter_segments_save_memory
from bridge.errors import Cancelled, ConfigError
from bridge.fingerprint import HashMemo, audio_hash, normalisation, sounding_intervals
from bridge.models import LoadedModel, load_model
from bridge.output import DEFAULT_TEMPLATE, OutputPlan, check_template, resolve_bit_depth, sanitise_name, write_stem_set
from bridge.presets import QUALITIES, SIX_STEM_MODEL, preset_for, resolve_precision

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]
MIN_SEGMENT = 1.0  # seconds; below this separation quality collapses, so OOM retries stop here


@dataclass(frozen=True)
class EngineSettings:
    device: str = "auto"
    model_repo: Path | None = None
    cache_dir: Path | None = None
    cache_max_bytes: int = 20 * 1024**3
    use_cache: bool = True


@dataclass(frozen=True)
class SeparationRequest:
    source: Path
    output_root: Path
    quality: str = "render"
    model: str | None = None
    stems: str = "4"
    two_stems: str | None = None
    exact_sum: bool = False
    format: str = "wav"
    bit_depth: str | None = None
    name_template: str | None = None
    job_id: str | None = None
    shifts: int | None = None
    overlap: float | None = None
    segment: float | None = None
    precision: str | None = None
    dawproject: bool = False     # also write <clip>.dawproject beside stems.json
    then_render: bool = False    # daemon: follow this preview with a render that replaces the set

    def __post_init__(self) -> None:
        if self.quality not in QUALITIES:
            raise ConfigError(f"quality {self.quality!r}: choose preview or render")
        if self.stems not in ("4", "6"):
            raise ConfigError(f"stems {self.stems!r}: choose 4 or 6")
        if self.format not in ("wav", "flac"):
            raise ConfigError(f"format {self.format!r}: choose wav or flac")
        if self.bit_depth not in (None, "16", "24", "32f", "source"):
            raise ConfigError(f"bit depth {self.bit_depth!r}: choose 16, 24, 32f or source")
        if self.shifts is not None and not 0 <= self.shifts <= 20:
            raise ConfigError(f"shifts {self.shifts}: choose 0 to 20")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap {self.overlap}: choose at least 0 and below 1")
        if self.segment is not None and self.segment < MIN_SEGMENT:
            raise ConfigError(f"segment {self.segment}: choose at least {MIN_SEGMENT} seconds")
        if self.precision not in (None, "auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"precision {self.precision!r}: choose auto, fp32, bf16 or fp16")
        check_template(self.name_template or DEFAULT_TEMPLATE)
        if self.then_render and self.quality != "preview":
            raise ConfigError("then_render=1 follows a preview with a render: it needs quality=preview")

    OPTION_KEYS = ("quality", "model", "stems", "two_stems", "exact_sum", "output", "format", "bit_depth",
                   "shifts", "overlap", "segment", "precision", "name_template", "dawproject",
                   "then_render")

    @classmethod
    def from_options(cls, source: Path, output_root: Path, options: dict[str, str],
                     job_id: str | None = None) -> "SeparationRequest":
        """Build a request from key=value strings (OSC requests, watch-folder defaults).
        `output` names a sub-folder of `output_root`; it can never point outside it."""
        unknown = set(options) - set(cls.OPTION_KEYS)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(cls.OPTION_KEYS)})")
        values: dict[str, object] = {}
        for key, raw in options.items():
            text = str(raw).strip()
            if key in ("exact_sum", "dawproject", "then_render"):
                if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ConfigError(f"{key}={text!r}: use 1 or 0")
                values[key] = text.lower() in ("1", "true", "yes", "on")
            elif key in ("shifts",):
                values[key] = _parse_number(key, text, int)
            elif key in ("overlap", "segment"):
                values[key] = _parse_number(key, text, float)
            elif key == "output":
                parts = [sanitise_name(p) for p in text.replace("\\", "/").split("/") if p not in ("", ".", "..")]
                output_root = Path(output_root).joinpath(*parts)
            elif key == "two_stems":
                values[key] = text or None
            else:
                values[key] = text
        return cls(source=Path(source), output_root=Path(output_root), job_id=job_id, **values)  # type: ignore[arg-type]


def _parse_number(key: str, text: str, kind: type) -> object:
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not a {'whole ' if kind is int else ''}number") from None


def model_rate_blocks(info: AudioInfo, model_rate: int) -> Iterator[np.ndarray]:
    """The source as stereo blocks at the model's rate, exactly `resampled_length` frames long."""
    resample = Resampler(info.sample_rate, model_rate, 2)
    length = ExactLength(resampled_length(info.frames, info.sample_rate, model_rate), 2)
    for block in read_blocks(info):
        out = length.take(resample(to_stereo(block)))
        if out.shape[0]:
            yield out
    tail = length.take(resample(np.zeros((0, 2), np.float32), last=True))
    if tail.shape[0]:
        yield tail
    pad = length.finish()
    if pad.shape[0]:
        yield pad


@dataclass
class _Plan:
    model_name: str
    params: SeparationParams
    wanted: list[str] | None     # None: every source of the model
    device: str


class Separator:
    """Runs separations; keeps the most recently used models loaded."""

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.device, reason = resolve_device(self.settings.device)
        log.info("device: %s (%s)", self.device, reason)
        cache_root = self.settings.cache_dir or paths.cache_dir() / "stems"
        self.cache = StemCache(cache_root, self.settings.cache_max_bytes)
        self.hashes = HashMemo(cache_root / "sources")
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def model(self, name: str) -> LoadedModel:
        if name not in self._models:
            if len(self._models) >= 2:
                self._models.pop(next(iter(self._models)))
            self._models[name] = load_model(name, self.settings.model_repo)
        return self._models[name]

    def warm_up(self, quality: str = "render", model: str | None = None) -> None:
        """Load the model and push quiet noise through it at the quality's settings: the first
        real job then finds the compute kernels prepared (about a third faster on the CPU)
        instead of preparing them on the user's time. As many segments as the CPU runs side by
        side (bridge/side_by_side.py): kernels prepared that way serve a lone segment on every
        core as well, not the other way round."""
        preset = preset_for(quality)
        loaded = self.model(model or preset.model)
        params = SeparationParams(shifts=0, overlap=preset.overlap, precision=resolve_precision(
            preset.precision, self.device), skip_silence=False, spacing="even")
        # The bag's models share their shapes, so one call prepares them all: ask only for
        # the sources of its first model.
        bag = loaded.model
        first = [name for name, weight in zip(bag.sources, bag.weights[0]) if weight] or list(bag.sources)
        engine = StreamSeparator(bag, self.device, params, wanted_sources=first)
        calls = side_by_side.most_calls(torch.device(self.device))
        frames = even_span(calls, *engine.segment_geometry())  # exactly `calls` segments
        noise = (np.random.default_rng(0).standard_normal((frames, 2)) * 1e-3).astype(np.float32)
        with self._lock:
            for _ in engine.separate([noise], frames, Normalisation(0.0, 1e-3)):
                pass

    def run(self, request: SeparationRequest, progress: ProgressFn | None = None,
            cancel: threading.Event | None = None) -> Path:
        """Separate `request.source`; returns the path of the published stems.json."""
        with self._lock:  # one separation at a time: the accelerator runs one job
            return self._run(request, progress or (lambda fraction, stage: None), cancel)

    def _run(self, request: SeparationRequest, progress: ProgressFn, cancel: threading.Event | None) -> Path:
        job_id = request.job_id or uuid.uuid4().hex[:12]
        info = probe(request.source)
        fmt = request.format
        bit_depth = resolve_bit_depth(request.bit_depth, fmt, info.subtype)  # type: ignore[arg-type]
        preset = preset_for(request.quality, shifts=request.shifts, overlap=request.overlap,
                            segment=request.segment, precision=request.precision)
        model_name = request.model or (SIX_STEM_MODEL if request.stems == "6" else preset.model)
        progress(0.0, "decoding")
        source_hash = self.hashes.hash_of(info, cancel) if self.settings.use_cache else audio_hash(info, cancel)
        loaded = self.model(model_name)
        sources = list(loaded.model.sources)
        if request.two_stems is not None and request.two_stems not in sources:
            raise ConfigError(f"two_stems={request.two_stems!r}: model {model_name} has {', '.join(sources)}")
        # A two-stem set with an exact complement needs only the one stem from the model.
        wanted = [request.two_stems] if request.two_stems and request.exact_sum else None
        plan = _Plan(model_name, SeparationParams(
            shifts=preset.shifts, overlap=preset.overlap, segment=preset.segment,
            precision=resolve_precision(preset.precision, self.device), skip_silence=preset.skip_silence,
            spacing=preset.spacing),
            wanted, self.device)
        clip = sanitise_name(Path(info.path).stem)
        out_plan = OutputPlan(Path(request.output_root).expanduser(), clip, request.name_template or DEFAULT_TEMPLATE,
                              fmt, bit_depth, model_name, request.quality)  # type: ignore[arg-type]
        while True:
            try:
                manifest = self._separate_and_write(info, source_hash, loaded, plan, out_plan, request, job_id,
                                                    progress, cancel)
                if request.dawproject:
                    write_dawproject(manifest)
                return manifest
            except Cancelled:
                raise
            except Exception as exc:
                retry = self._fallback(plan, loaded, exc)
                if retry is None:
                    raise
                plan = retry

    def _fallback(self, plan: _Plan, loaded: LoadedModel, exc: Exception) -> _Plan | None:
        """A plan that avoids the failure, or None when there is nothing left to try."""
        if not isinstance(exc, RuntimeError) and not is_out_of_memory(exc):
            return None
        segment = plan.params.segment or _model_segment(loaded)
        if (is_out_of_memory(exc) and shorter_segments_save_memory(loaded.model)
                and segment / 2 >= MIN_SEGMENT):
            log.warning("out of memory on %s with %.1f s segments; retrying with %.1f s", plan.device,
                        segment, segment / 2)
            _free_accelerator(plan.device)
            return replace(plan, params=replace(plan.params, segment=segment / 2))
        if plan.device != "cpu":
            log.warning("separation failed on %s (%s); retrying on the CPU", plan.device, exc)
            _free_accelerator(plan.device)
            return replace(plan, device="cpu", params=replace(plan.params, precision=resolve_precision("auto", "cpu")
                                                              if plan.params.precision != "fp32" else "fp32"))
        return None

    def _separate_and_write(self, info: AudioInfo, source_hash: str, loaded: LoadedModel, plan: _Plan,
                            out_plan: OutputPlan, request: SeparationRequest, job_id: str,
                            progress: ProgressFn, cancel: threading.Event | None) -> Path:
        engine = StreamSeparator(loaded.model, plan.device, plan.params, plan.wanted)
        stems = [engine.sources[i] for i in engine.wanted_index]
        model_rate = engine.samplerate
        frames = resampled_length(info.frames, info.sample_rate, model_rate)
        key = cache_key(source_hash, {
            "model": loaded.name, "weights": loaded.fingerprint, "shifts": plan.params.shifts,
            "overlap": plan.params.overlap, "segment": engine.segment, "precision": plan.params.precision,
            "skip_silence": plan.params.skip_silence, "seed": plan.params.seed, "stems": stems,
            "spacing": plan.params.spacing,
        })
        write = lambda blocks, device: write_stem_set(  # noqa: E731
            blocks, stems, model_rate, info, out_plan, two_stems=request.two_stems,
            exact_sum=request.exact_sum, job_id=job_id,
            manifest_fields={"source_hash": source_hash, "device": device})
        if self.settings.use_cache:
            entry = self.cache.lookup(key)
            if entry is not None and entry.stems == stems and entry.frames == frames:
                try:
                    progress(0.9, "writing")
                    # The manifest names the device that made these stems, not this one.
                    manifest = write(entry.blocks(), entry.device or plan.device)
                    log.info("%s: stems from cache", info.path.name)
                    progress(1.0, "done")
                    return manifest
                except CacheCorrupt as exc:
                    log.warning("cache entry damaged (%s); separating again", exc)
                    self.cache.remove(key)
        progress(0.02, "separating")

        def scaled(fraction: float, stage: str) -> None:
            progress(0.02 + 0.93 * fraction, stage)

        norm, silences = normalisation(info, cancel)  # a second decoding pass, only when separating
        active = (sounding_intervals(silences, info.frames, info.sample_rate, model_rate, frames)
                  if plan.params.skip_silence else None)
        blocks = engine.separate(model_rate_blocks(info, model_rate), frames, norm, scaled, cancel, active)
        if not self.settings.use_cache:
            manifest = write(blocks, plan.device)
        else:
            writer = self.cache.writer(key, stems, frames, model_rate, plan.device)
            try:
                manifest = write(writer.tee(blocks), plan.device)
            except BaseException:
                writer.abort()
                raise
            writer.commit()
        progress(1.0, "done")
        return manifest


def _model_segment(loaded: LoadedModel) -> float:
    from bridge.engine import effective_segment

    return effective_segment(loaded.model, None)


def _free_accelerator(device: str) -> None:
    """Best effort: return cached accelerator memory before a retry."""
    try:
        if device == "cuda":
            torch.cuda.empty_cache()
        elif device == "mps":
            torch.mps.empty_cache()
    except RuntimeError:  # the backend is gone or was never initialised: nothing to free
        pass
