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
    assert side_by_side.plan(torch.device("cuda")) == []
    assert side_by_side.plan(torch.device("mps")) == []
    splits = side_by_side.plan(torch.device("cpu"))
    if threads < 2:
        assert splits == []
    else:
        # Most calls first, each on its share of the threads; pairs for when fewer are ready.
        assert splits[-1] == (2, threads // 2)
        assert splits[0] == (min(side_by_side.MAX_CALLS, threads) if threads >= 4 else 2,
                             threads // (4 if threads >= 4 else 2))
    torch.set_num_threads(2)
    try:
        assert side_by_side.plan(torch.device("cpu")) == [(2, 1)]   # two cores: a call on each
        assert side_by_side.most_calls(torch.device("cpu")) == 2
        assert side_by_side.most_calls(torch.device("cuda")) == 1
        monkeypatch.setenv(side_by_side.OPT_OUT, "0")
        assert side_by_side.plan(torch.device("cpu")) == []
    finally:
        torch.set_num_threads(threads)


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

    most_calls = side_by_side.most_calls(torch.device("cpu"))
    paired, paired_threads = separate()
    monkeypatch.setenv(side_by_side.OPT_OUT, "0")
    alone, alone_threads = separate()
    # 20 s in 7.8 s segments every 5.85 s: four segments, all run side by side (two pairs on
    # two cores, one batch of four on four or more).
    assert len(paired_threads) == 4
    assert all(name.startswith("stembridge-call-") for name in paired_threads)
    assert len(set(paired_threads)) == min(4, most_calls)
    assert alone_threads == [threading.current_thread().name] * 4
    np.testing.assert_allclose(paired, alone, atol=1e-6)


def test_a_short_batch_runs_in_the_pool_it_fills_and_the_rest_alone(model_repo):
    """With four threads the CPU runs four calls at once, or two; three ready segments run
    as a pair side by side and the third alone on every thread, in this thread."""
    bag = load_model("htdemucs", model_repo).model
    x = (np.random.default_rng(5).standard_normal((44100 * 12, 2)) * 0.1).astype(np.float32)
    params = SeparationParams(shifts=0, overlap=0.25, skip_silence=False)
    threads_before = torch.get_num_threads()
    names: list[str] = []
    hook = bag.models[0].register_forward_hook(lambda *_: names.append(threading.current_thread().name))
    torch.set_num_threads(4)
    try:
        assert side_by_side.plan(torch.device("cpu")) == [(4, 1), (2, 2)]
        got = np.concatenate(list(StreamSeparator(bag, "cpu", params).separate([x], len(x), Normalisation(0.0, 1.0))),
                             axis=1)
    finally:
        torch.set_num_threads(threads_before)
        hook.remove()
    # 12 s in 7.8 s segments every 5.85 s: three segments.
    assert sorted(names) == sorted(["stembridge-call-0", "stembridge-call-1", threading.current_thread().name])
    default = np.concatenate(list(StreamSeparator(bag, "cpu", params).separate([x], len(x), Normalisation(0.0, 1.0))),
                           axis=1)
    np.testing.assert_allclose(got, default, atol=1e-6)
