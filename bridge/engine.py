"""Streaming separation: Demucs' overlap-add, a few segments at a time.

`demucs.apply.apply_model` holds the whole track, its four stems and a weight vector in
memory (about 120 MiB more per audio minute). This module computes the same thing — the
same segments, the same triangular cross-fade weights, the same random-shift passes, the
same per-source weights for bags of models — but reads its input as a stream and emits
finished output as soon as no later segment can touch it. On the CPU, segments whose input
has arrived run side by side, each on its share of the cores (bridge/side_by_side.py); their
outputs are summed in segment order, as one at a time would. Memory stays flat in the input
length, progress is per segment, and cancellation takes effect before the next model call.

Shapes: input blocks are (frames, 2) float32 at the model's rate; output blocks are
(sources, frames, 2) float32, normalised back to the input's scale.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal

import numpy as np
import torch

from bridge import side_by_side
from bridge.errors import Cancelled
from bridge.lowprecision import has_weight_copy_path, reduced_precision_copy

Precision = Literal["fp32", "bf16", "fp16"]
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class SeparationParams:
    shifts: int = 1
    overlap: float = 0.25
    segment: float | None = None      # seconds; None = the model's training segment
    precision: Precision = "fp32"
    skip_silence: bool = True         # all-silent segments give silent stems without the model
    seed: int = 0                     # for the random shift offsets: same input, same output
    # "grid": segments every (1 - overlap) * segment, as apply_model places them (render).
    # "even": the fewest segments that still overlap by at least `overlap`, spread evenly so
    # the last one ends with the input instead of running mostly on padding (preview).
    spacing: Literal["grid", "even"] = "grid"


@dataclass(frozen=True)
class Normalisation:
    """Demucs separates a normalised mix: (x - mean) / std of the mono mix."""

    mean: float
    std: float


Interval = tuple[int, int]


def segment_offsets(length: int, segment_length: int, stride: int, spacing: str = "grid",
                    active: list[Interval] | None = None) -> list[int]:
    """Where segments start along a (virtual) input of `length` samples.

    `grid` ignores `active`. `even` covers each active interval (all of the input when None)
    with the fewest segments that overlap by at least `segment_length - stride`, spread evenly;
    samples outside every active interval (long digital silence) get no segment at all.
    """
    if spacing == "grid":
        return list(range(0, length, stride))
    if length <= segment_length:
        return [0]
    spans: list[list[int]] = []
    for start, end in sorted(active if active is not None else [(0, length)]):
        start, end = max(0, start), min(length, end)
        if end <= start:
            continue
        if end - start < segment_length:  # a short island of sound still needs a whole segment
            start = min(max(0, start - (segment_length - (end - start)) // 2), length - segment_length)
            end = start + segment_length
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    offsets: list[int] = []
    for start, end in spans:
        count = math.ceil((end - start - segment_length) / stride) + 1
        step = (end - start - segment_length) / max(count - 1, 1)
        offsets.extend(start + round(index * step) for index in range(count))
    return sorted(set(offsets))


def even_span(count: int, segment_length: int, stride: int) -> int:
    """The longest input that `even` spacing covers with `count` segments."""
    return segment_length + (count - 1) * stride


def max_segment(model: torch.nn.Module) -> float:
    """Transformer models refuse segments longer than they were trained on."""
    limit = getattr(model, "max_allowed_segment", math.inf)
    return float(limit)


def shorter_segments_save_memory(model: torch.nn.Module) -> bool:
    """False where a shorter segment costs the same memory: HTDemucs (v4) pads every call to
    its training length (`use_train_segment`), so halving the segment only doubles the calls."""
    members = getattr(model, "models", [model])
    return not any(getattr(member, "use_train_segment", False) for member in members)


def effective_segment(model: torch.nn.Module, requested: float | None) -> float:
    limit = max_segment(model)
    if requested is None:
        segment = float(model.models[0].segment) if hasattr(model, "models") else limit
        return min(segment, limit)
    if requested <= 0:
        raise ValueError("segment must be positive")
    return min(float(requested), limit)


@dataclass(frozen=True)
class _Segment:
    """One segment taken from a pass: its index and the model's input, (frames, 2), or None
    where the input is digital silence and the model is skipped."""

    owner: _OverlapAddPass
    index: int
    piece: np.ndarray | None


class _OverlapAddPass:
    """One model over the whole stream with one shift: segments at `offset = k * stride` of
    the virtual input `[pad] * delay + x`, weighted by a triangle and normalised by the
    summed weights, exactly as apply_model's split mode does it.

    The input buffer is numpy on the host; the weighted sums live on the model's device as
    (sources, channels, samples), the layout the model returns, so on a GPU each segment's
    output is summed where it was computed and only finished samples cross to the host."""

    def __init__(self, run_model: Callable[[np.ndarray], torch.Tensor], device: torch.device, sources: int,
                 length: int, segment_length: int, stride: int, delay: int, silent_input: float | None,
                 spacing: str = "grid", active: list[Interval] | None = None) -> None:
        self.run_model = run_model
        self.sources = sources
        self.device = device
        self.length = length + delay            # virtual length
        self.segment_length = segment_length
        self.stride = stride
        self.delay = delay
        # apply_model pads the normalised mix with zeros; digital silence normalises to
        # `silent_input` (None: never skip).
        self.silent_input = None if silent_input is None else np.float32(silent_input)
        half = segment_length // 2
        ramp = np.concatenate([np.arange(1, half + 1), np.arange(segment_length - half, 0, -1)])
        self.weight = torch.from_numpy((ramp / ramp.max()).astype(np.float32)).to(device)
        if active is not None:
            active = [(start + delay, end + delay) for start, end in active]
        self.offsets = segment_offsets(self.length, segment_length, stride, spacing, active)
        self.next_index = 0
        # Input buffer holds virtual samples [buf_start, buf_start + len(buf)).
        self.buf = np.zeros((delay, 2), dtype=np.float32)
        self.buf_start = 0
        # Accumulators hold virtual samples [acc_start, acc_start + acc.shape[-1]).
        self.acc = torch.zeros((sources, 2, 0), device=device)
        self.wsum = torch.zeros(0, device=device)
        # 1 where a segment that ran the model contributed: samples covered only by skipped
        # (digitally silent) segments come out as exact zeros, not as the normalised silence
        # value de-normalised again (off by float rounding, so never quite digital silence).
        self.live = torch.zeros(0, device=device)
        self.acc_start = 0
        self.emitted = 0                        # virtual position up to which output is final

    @property
    def total_segments(self) -> int:
        return len(self.offsets)

    def feed(self, block: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, block]) if self.buf.size else block.copy()

    def _available(self) -> int:
        return self.buf_start + self.buf.shape[0]

    def ready(self, input_done: bool, ahead: int = 0) -> bool:
        """Whether the input for the segment `ahead` places after the next one has arrived."""
        index = self.next_index + ahead
        if index >= len(self.offsets):
            return False
        return input_done or self._available() >= self._input_needed(index)

    def input_missing(self, ahead: int) -> int | None:
        """How many more input samples the segment `ahead` places after the next one waits
        for (None: there is no such segment)."""
        index = self.next_index + ahead
        if index >= len(self.offsets):
            return None
        return max(0, self._input_needed(index) - self._available())

    def _input_needed(self, index: int) -> int:
        return min(self.offsets[index] + self.segment_length, self.length)

    def take(self) -> _Segment:
        """The next segment's model input; None as its piece where it is digital silence."""
        index = self.next_index
        self.next_index += 1
        offset = self.offsets[index]
        chunk_length = min(self.segment_length, self.length - offset)
        # A short last segment is centred with real audio before it, as TensorChunk.padded does.
        start = offset - (self.segment_length - chunk_length) // 2
        end = start + self.segment_length
        lo, hi = max(start, 0), min(end, self.length)
        piece = self.buf[lo - self.buf_start: hi - self.buf_start]
        if self.silent_input is not None and np.all(piece == self.silent_input):
            return _Segment(self, index, None)  # stems of digital silence are digital silence
        if lo - start or end - hi:
            piece = np.pad(piece, ((lo - start, end - hi), (0, 0)))
        return _Segment(self, index, piece)

    def finish(self, segment: _Segment, out: torch.Tensor | None) -> np.ndarray:
        """Add the model's output for `segment` (None: it was skipped); return newly finished
        output (sources + 1, n, 2), original coordinates (the leading `delay` padding
        removed). The extra last row is the liveness flag (1.0: the model contributed to that
        sample). Segments must be finished in the order they were taken."""
        offset = self.offsets[segment.index]
        chunk_length = min(self.segment_length, self.length - offset)
        live = out is not None
        if out is None:
            out = torch.full((self.sources, 2, self.segment_length), float(self.silent_input), device=self.device)
        trim = (self.segment_length - chunk_length) // 2
        self._accumulate(offset, out[:, :, trim: trim + chunk_length], live)
        following = segment.index + 1
        return self._emit(self.offsets[following] if following < len(self.offsets) else self.length)

    def _accumulate(self, offset: int, out: torch.Tensor, live: bool, weight: float | None = None) -> None:
        n = out.shape[-1]
        end = offset + n
        grow = end - (self.acc_start + self.acc.shape[-1])
        if grow > 0:
            self.acc = torch.cat([self.acc, self.acc.new_zeros((self.sources, 2, grow))], dim=2)
            self.wsum = torch.cat([self.wsum, self.wsum.new_zeros(grow)])
            self.live = torch.cat([self.live, self.live.new_zeros(grow)])
        a = offset - self.acc_start
        w = self.weight[:n] if weight is None else self.weight.new_full((n,), weight)
        self.acc[:, :, a: a + n] += w * out
        self.wsum[a: a + n] += w
        if live:
            self.live[a: a + n] = 1.0

    def _emit(self, until: int) -> np.ndarray:
        n = until - self.acc_start
        if self.acc.shape[-1] < n:  # a stretch no segment covers (skipped silence): no output yet
            self._accumulate(until - 1, self.acc.new_zeros((self.sources, 2, 1)), live=False, weight=0.0)
        wsum = self.wsum[:n]
        done = self.acc.new_empty((self.sources + 1, n, 2))
        # Samples no segment weighted (skipped silence) come out as zeros, not 0 / 0.
        done[:-1] = torch.where(wsum > 0, self.acc[:, :, :n] / wsum, 0.0).transpose(1, 2)
        done[-1] = self.live[:n, None]
        self.acc = self.acc[:, :, n:]
        self.wsum = self.wsum[n:]
        self.live = self.live[n:]
        self.acc_start = until
        # Input before the next segment's padded start is never read again.
        # (Never past what has arrived: after a skipped stretch of silence the next segment
        # may start beyond the input received so far.)
        keep_from = min(max(0, until - self.segment_length), self._available())
        if keep_from > self.buf_start:
            self.buf = self.buf[keep_from - self.buf_start:]
            self.buf_start = keep_from
        drop = max(0, self.delay - self.emitted)
        self.emitted = until
        return (done[:, drop:] if drop else done).cpu().numpy()


class StreamSeparator:
    """Separates a stream with a (bag of) Demucs model(s) and yields finished stems."""

    def __init__(self, bag: torch.nn.Module, device: str, params: SeparationParams,
                 wanted_sources: Iterable[str] | None = None) -> None:
        self.bag = bag
        self.device = torch.device(device)
        self.params = params
        self.sources: list[str] = list(bag.sources)
        wanted = set(wanted_sources or self.sources)
        self.wanted_index = [i for i, name in enumerate(self.sources) if name in wanted]
        # Sub-models whose weights are zero for every wanted source contribute nothing:
        # htdemucs_ft asked for vocals alone runs one model instead of four.
        self.members: list[tuple[torch.nn.Module, np.ndarray]] = []
        for sub_model, weights in zip(bag.models, bag.weights):
            w = np.asarray(weights, dtype=np.float32)[self.wanted_index]
            if np.any(w != 0):
                self.members.append((sub_model, w))
        self.segment = effective_segment(bag, params.segment)
        self.samplerate = int(bag.samplerate)

    def _run_model(self, model: torch.nn.Module) -> Callable[[np.ndarray], torch.Tensor]:
        autocast = self._autocast()
        if (self.params.precision == "bf16" and self.device.type == "cpu"
                and has_weight_copy_path(model)):
            # A bf16 copy of the weights runs faster on CPU than autocast over fp32 weights
            # (see bridge/lowprecision.py); it needs no autocast around it.
            model = reduced_precision_copy(model, torch.bfloat16)
            autocast = contextlib.nullcontext

        every_source = self.wanted_index == list(range(len(self.sources)))

        def run(piece: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(np.ascontiguousarray(piece.T))[None].to(self.device)
            with torch.inference_mode(), autocast():
                y = model(x)
            # (S, C, T), left on the model's device; inference tensors are read-only, which
            # is all the overlap-add does with them.
            return (y[0] if every_source else y[0, self.wanted_index]).float()

        return run

    def _autocast(self) -> Callable[[], contextlib.AbstractContextManager]:
        precision = self.params.precision
        if precision == "fp32":
            return contextlib.nullcontext
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return lambda: torch.autocast(device_type=self.device.type, dtype=dtype)

    def segment_geometry(self) -> tuple[int, int]:
        """(segment length, stride) in samples at the model's rate."""
        segment_length = int(self.samplerate * self.segment)
        stride = int((1 - self.params.overlap) * segment_length)
        if stride <= 0:
            raise ValueError("overlap must be below 1")
        return segment_length, stride

    def separate(self, blocks: Iterable[np.ndarray], frames: int, norm: Normalisation,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                 active: list[Interval] | None = None) -> Iterator[np.ndarray]:
        """Yield (wanted_sources, n, 2) blocks whose lengths add up to `frames`. With `even`
        spacing, `active` (frame ranges with sound) limits where segments go; the rest comes
        out as digital silence."""
        segment_length, stride = self.segment_geometry()
        rng = random.Random(self.params.seed)
        max_shift = int(0.5 * self.samplerate)
        silent_in = np.float32((np.float32(0.0) - np.float32(norm.mean)) / np.float32(norm.std))
        silent = float(silent_in) if self.params.skip_silence else None
        passes: list[tuple[_OverlapAddPass, np.ndarray, int]] = []
        placed = torch.empty(0, device=self.device).device   # "cuda" names cuda:0 (or the current GPU)
        for member_index, (model, weights) in enumerate(self.members):
            first = next(model.parameters(), None)
            if model.training or (first is not None and first.device != placed):
                model.to(self.device).eval()  # a walk over every tensor: only when it moves
            runner = self._run_model(model)
            shift_delays = ([max_shift - rng.randint(0, max_shift) for _ in range(self.params.shifts)]
                            if self.params.shifts else [0])
            for delay in shift_delays:
                passes.append((_OverlapAddPass(runner, self.device, len(self.wanted_index), frames,
                                               segment_length, stride, delay, silent, self.params.spacing, active),
                               weights, member_index))
        total = sum(p.total_segments for p, _, _ in passes)
        shifts = len(passes) // max(len(self.members), 1)
        weight_total = np.sum([w for _, w in self.members], axis=0)  # per wanted source
        outputs: list[deque[np.ndarray]] = [deque() for _ in passes]
        queue_of = {ola: queue for (ola, _, _), queue in zip(passes, outputs)}  # passes hash by identity
        done_segments = 0
        input_done = False
        iterator = iter(blocks)
        scale, offset = np.float32(norm.std), np.float32(norm.mean)
        emitted = 0
        pools = [side_by_side.CallPool(calls, threads) for calls, threads in side_by_side.plan(self.device)]
        calls = pools[0].calls if pools else 1
        with contextlib.ExitStack() as running:
            for pool in pools:
                running.enter_context(pool)
            while emitted < frames:
                ready = min(sum(p.shape[1] for p in queue) for queue in outputs)
                if ready:
                    mixed = np.zeros((len(self.wanted_index), ready, 2), np.float32)
                    live = np.zeros(ready, np.float32)
                    for (ola, weights, _), queue in zip(passes, outputs):
                        piece = _take(queue, ready)
                        mixed += weights[:, None, None] * piece[:-1]
                        np.maximum(live, piece[-1, :, 0], out=live)
                    mixed *= (1.0 / (shifts * weight_total))[:, None, None].astype(np.float32)
                    emitted += ready
                    out = mixed * scale + offset
                    if not live.all():
                        out[:, live == 0] = 0.0
                    yield out
                    continue
                batch = _next_batch([ola for ola, _, _ in passes], input_done, calls, segment_length)
                if batch:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("separation cancelled")
                    segments = [ola.take() for ola in batch]
                    for segment, result in zip(segments, _run_segments(segments, pools)):
                        piece = segment.owner.finish(segment, result)
                        if piece.shape[1]:
                            queue_of[segment.owner].append(piece)
                        done_segments += 1
                        if progress is not None:
                            progress(done_segments / total, "separating")
                    continue
                if input_done:
                    raise RuntimeError("separation stalled before the end of the input")
                block = next(iterator, None)
                if block is None:
                    input_done = True
                    continue
                normalised = (block - offset) / scale
                for ola, _, _ in passes:
                    ola.feed(normalised)


def _run_segments(segments: list[_Segment], pools: list[side_by_side.CallPool]) -> list[torch.Tensor | None]:
    """The model's output for each segment (None where it is skipped): side by side in the
    largest pool that the remaining segments fill, a lone one in this thread on every core."""
    work = [segment for segment in segments if segment.piece is not None]
    outputs: list[torch.Tensor] = []
    while len(outputs) < len(work):
        left = work[len(outputs):]
        pool = next((pool for pool in pools if pool.calls <= len(left)), None)
        if pool is None:
            outputs.append(left[0].owner.run_model(left[0].piece))
        else:
            outputs.extend(pool.run([functools.partial(segment.owner.run_model, segment.piece)
                                     for segment in left[:pool.calls]]))
    found = iter(outputs)
    return [None if segment.piece is None else next(found) for segment in segments]


def _next_batch(passes: list[_OverlapAddPass], input_done: bool, calls: int,
                segment_length: int) -> list[_OverlapAddPass]:
    """The passes whose next segments to run now, one entry per segment, in order: up to
    `calls` segments whose input has arrived. An empty list asks for more input: a batch
    short of `calls` waits while the next segment lacks at most one segment of input (calls
    side by side run faster than in turn); one further off, past a long stretch of skipped
    silence, is not waited for, so the input buffer stays short."""
    batch: list[_OverlapAddPass] = []
    for ola in passes:
        while len(batch) < calls and ola.ready(input_done, batch.count(ola)):
            batch.append(ola)
    if 0 < len(batch) < calls and not input_done:
        waiting = (ola.input_missing(batch.count(ola)) for ola in passes)
        if any(missing is not None and missing <= segment_length for missing in waiting):
            return []
    return batch


def _take(queue: deque[np.ndarray], n: int) -> np.ndarray:
    parts = []
    while n:
        head = queue[0]
        if head.shape[1] <= n:
            parts.append(queue.popleft())
            n -= head.shape[1]
        else:
            parts.append(head[:, :n])
            queue[0] = head[:, n:]
            n = 0
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
