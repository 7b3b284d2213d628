"""The allocator tuning: freed separation memory is reused without page faults, and goes
back to the system on request. Measured in fresh processes (the kernel's own counters), since
the one-arena setting only holds for threads a process starts afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bridge import allocator

pytestmark = pytest.mark.skipif(not allocator.available(), reason="tuning needs glibc")

CHILD = """
import json, resource, sys, threading
import psutil
import torch
from bridge import allocator

if sys.argv[1] == "tuned":
    assert allocator.keep_freed_memory()
report = {"faults": []}

def rss_mib():
    return psutil.Process().memory_info().rss / 2**20

def work():
    # Like the model worker: a thread that repeatedly allocates and frees activations far
    # bigger than an arena (66 and 132 MB), as each segment's model call does.
    x = torch.randn(1, 48, 1024, 336)
    for _ in range(6):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            y = x * 2
            z = torch.cat([y, x], 1)
            w = torch.relu(z[:, :48] + y)
            del y, z, w
        report["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
    report["before_return"] = rss_mib()
    allocator.return_freed_memory()
    report["after_return"] = rss_mib()

thread = threading.Thread(target=work)
thread.start()
thread.join()
print(json.dumps(report))
"""


def run_child(mode: str) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tuned_allocator_stops_refaulting_and_returns_memory_on_request():
    tuned = run_child("tuned")
    default = run_child("default")
    # glibc's default unmaps every freed activation, so each round faults them all in again
    # (that kernel time is what the tuning saves: ~20 % of a segment's CPU time).
    assert min(default["faults"]) > 200_000
    # Tuned: once the heap has grown to the working set, rounds reuse it.
    assert sum(tuned["faults"][3:]) < 0.1 * sum(default["faults"][3:])
    # Returned on request: the heap's free pages go back to the system.
    assert tuned["before_return"] - tuned["after_return"] > 300


def test_untuned_libraries_are_a_no_op(monkeypatch):
    monkeypatch.setattr(allocator, "_libc", None)
    assert allocator.keep_freed_memory() is False
    allocator.return_freed_memory()  # must not raise


def test_opting_out_leaves_the_allocator_alone(monkeypatch):
    monkeypatch.setenv(allocator.OPT_OUT, "0")
    assert allocator.keep_freed_memory() is False
