"""Model calls side by side on the CPU, each on its share of the cores.

One HTDemucs call on two Zen 4 cores keeps both busy only in its large products: its norms,
activations, softmax and copies are memory-bound and wait at the end of every parallel
region. Two calls at once, one core each, finish sooner than the same two calls one after the
other on both cores (measured side by side, full-size htdemucs: bf16 2.90 → 2.72 s, fp32
5.08 → 4.78 s); on bigger CPUs the gain grows (`plan`). The engine hands these pools as many
ready segments as they take; a lone segment still runs on every core, in the caller's thread.

Torch's intra-op thread count is per thread (OpenMP), but `torch.set_num_threads` also sets
the default that a thread takes on its first parallel op. The pool's threads set their own
count once, when they start, and the caller's count is put back before any work is handed
out, so no other thread can pick up the smaller default outside that moment.
STEMBRIDGE_SIDE_BY_SIDE=0 runs every call alone.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Generic, TypeVar

import torch

T = TypeVar("T")
OPT_OUT = "STEMBRIDGE_SIDE_BY_SIDE"
MAX_CALLS = 4   # each call holds its own activations (about 1 GB for htdemucs in fp32)

_start_lock = threading.Lock()


def plan(device: torch.device) -> list[tuple[int, int]]:
    """The ways model calls on `device` run side by side: (calls, intra-op threads per call),
    most calls first. Empty: one call at a time on every thread.

    Accelerators queue their own work: one call at a time. On the CPU, more calls on fewer
    threads each always did more work per second (full-size htdemucs, 16-thread Xeon: 4 x 4
    threads 1.45x 1 x 16 in bf16; on 8 and 4 threads, 4 calls 1.1-1.4x one; 2 Zen 4 cores,
    2 x 1 1.07x), so the CPU runs up to MAX_CALLS at once, and pairs where fewer segments
    are ready."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or os.environ.get(OPT_OUT, "1").strip() == "0":
        return []
    return [(calls, threads // calls) for calls in (MAX_CALLS, 2) if calls <= threads]


def most_calls(device: torch.device) -> int:
    """How many model calls on `device` run at once at the most (1: one at a time)."""
    return max((calls for calls, _ in plan(device)), default=1)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class CallPool(Generic[T]):
    """`calls` threads, each running one task at a time on `threads_per_call` cores.

    A context manager: the threads start on entry and are joined on exit."""

    def __init__(self, calls: int, threads_per_call: int) -> None:
        self.calls = calls
        self.threads_per_call = threads_per_call
        self._inboxes: list[queue.Queue[Callable[[], T] | None]] = [queue.Queue() for _ in range(calls)]
        self._results: queue.Queue[tuple[int, T | _Failure]] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> CallPool[T]:
        started = threading.Barrier(self.calls + 1)
        with _start_lock:
            caller_threads = torch.get_num_threads()
            for index in range(self.calls):
                thread = threading.Thread(target=self._serve, args=(index, started),
                                          name=f"stembridge-call-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
            started.wait()
            torch.set_num_threads(caller_threads)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for thread in self._threads:
            thread.join()

    def _serve(self, index: int, started: threading.Barrier) -> None:
        # A thread takes the default count on its first parallel op unless it has already
        # asked for its count: ask first, so the count set next is the one that stays.
        torch.get_num_threads()
        torch.set_num_threads(self.threads_per_call)
        started.wait()
        inbox = self._inboxes[index]
        while (task := inbox.get()) is not None:
            try:
                result: T | _Failure = task()
            except BaseException as error:  # handed to the caller, who raises it
                result = _Failure(error)
            self._results.put((index, result))

    def run(self, tasks: list[Callable[[], T]]) -> list[T]:
        """Run up to `calls` tasks side by side; their results in order. Every task has
        finished when this returns or raises (the first failure is raised)."""
        if len(tasks) > self.calls:
            raise ValueError(f"{len(tasks)} tasks for {self.calls} threads")
        for inbox, task in zip(self._inboxes, tasks):
            inbox.put(task)
        results: list[T | _Failure | None] = [None] * len(tasks)
        for _ in tasks:
            index, result = self._results.get()
            results[index] = result
        for result in results:
            if isinstance(result, _Failure):
                raise result.error
        return results  # type: ignore[return-value]
