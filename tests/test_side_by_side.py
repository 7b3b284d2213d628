"""Model calls side by side on the CPU: thread counts, results, failures, and the engine's use."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from bridge import side_by_side
from bridge.engine import Normalisation, SeparationParams, StreamSeparator
from bridge.models import load_model
from bridge.side_by_side import CallPool


def threads_after_parallel_work() -> int:
    # A parallel op first: a thread's count is settled by its first one.
    a = torch.randn(300, 300)
    a @ a
    return torch.get_num_threads()


def test_pool_threads_run_on_their_share_and_the_caller_keeps_its_own():
    caller = torch.get_num_threads()
    with CallPool(2, 1) as pool:
        assert pool.run([threads_after_parallel_work, threads_after_parallel_work]) == [1, 1]
        assert torch.get_num_threads() == caller
    # A thread started afterwards takes the caller's count as its default, not the pool's.
    seen: list[int] = []
    fresh = threading.Thread(target=lambda: seen.append(threads_after_parallel_work()))
    fresh.start()
    fresh.join()
    assert seen == [caller]


def test_results_come_back_in_order_and_calls_overlap():
    both_running = threading.Barrier(2, timeout=30)

    def task(value: int):
        both_running.wait()  # returns only if the other task runs at the same time
        return value, threading.current_thread().name

    with CallPool(2, 1) as pool:
        (first, name0), (second, name1) = pool.run([lambda: task(10), lambda: task(20)])
        assert (first, second) == (10, 20)
        assert name0 != name1
        assert pool.run([lambda: 5]) == [5]


def test_a_failing_call_is_raised_after_the_other_finishes():
    finished = threading.Event()
    release = threading.Event()

    def fails():
        release.wait(30)
        raise MemoryError("out of memory in call 0")

    def slow():
        release.set()
        finished.set()
        return 1

    with CallPool(2, 1) as pool:
        with pytest.raises(MemoryError, match="call 0"):
            pool.run([fails, slow])
        assert finished.is_set()
        assert pool.run([lambda: 2, lambda: 3]) == [2, 3]  # still serving after a failure


def test_more_tasks_than_threads_is_refused():
    with CallPool(2, 1) as pool:
        with pytest.raises(ValueError, match="3 tasks for 2 threads"):
            pool.run([lambda: 1] * 3)


def test_plan(monkeypatch):
    threads = torch.get_num_threads()
    assert side_by_side.plan(torch.device("cuda")) == (1, threads)
    assert side_by_side.plan(torch.device("mps")) == (1, threads)
    expected = (2, threads // 2) if threads >= 2 else (1, threads)
    assert side_by_side.plan(torch.device("cpu")) == expected
    monkeypatch.setenv(side_by_side.OPT_OUT, "0")
    assert side_by_side.plan(torch.device("cpu")) == (1, threads)


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="side by side needs two CPU threads")
def test_engine_runs_segment_pairs_side_by_side_with_the_same_result(model_repo, monkeypatch):
    bag = load_model("htdemucs", model_repo).model
    x = (np.random.default_rng(4).standard_normal((44100 * 20, 2)) * 0.1).astype(np.float32)
    params = SeparationParams(shifts=0, overlap=0.25, skip_silence=False)

    def separate() -> tuple[np.ndarray, list[str]]:
        threads: list[str] = []
        hook = bag.models[0].register_forward_hook(lambda *_: threads.append(threading.current_thread().name))
        try:
            blocks = (x[i:i + 30000] for i in range(0, len(x), 30000))
            out = np.concatenate(list(StreamSeparator(bag, "cpu", params).separate(
                blocks, len(x), Normalisation(0.0, 1.0))), axis=1)
        finally:
            hook.remove()
        return out, threads

    paired, paired_threads = separate()
    monkeypatch.setenv(side_by_side.OPT_OUT, "0")
    alone, alone_threads = separate()
    # 20 s in 7.8 s segments every 5.85 s: four segments, two pairs.
    assert sorted(paired_threads) == ["stembridge-call-0", "stembridge-call-0",
                                      "stembridge-call-1", "stembridge-call-1"]
    assert alone_threads == [threading.current_thread().name] * 4
    np.testing.assert_allclose(paired, alone, atol=1e-6)
