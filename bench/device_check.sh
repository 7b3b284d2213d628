#!/usr/bin/env bash
# One run on a lent CUDA machine (see bench/README.md, "On a CUDA GPU"). Steps, in order, as
# chosen by STEPS (default: all):
#   tests  the CUDA and device tests
#   bench  the CUDA benchmark (BENCH_SECONDS of audio, BENCH_ONLY measurements)
#   cpu    the machine's CPU (CPU_ONLY measurements): how to split its threads into calls side by side, and segment
#          pairs side by side vs alone (bench_separation.py split,sidebyside)
#   suite  the whole suite with `auto` choosing the GPU
# Logs go to $OUT. The machine has torch but not the rest: the command carries .whl.
set -u
OUT=${OUT:-/tmp/stembridge-device}
STEPS=${STEPS:-tests,bench,cpu,suite}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import os, sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available(),
    'cpus', os.cpu_count(), 'torch threads', torch.get_num_threads())" | tee -a "$OUT/gpu.txt"
step() { [[ ",$STEPS," == *",$1,"* ]]; }
if step tests; then
    echo "== CUDA tests"
    timeout 150 python3 -m pytest -q -rA -s -p no:cacheprovider tests/test_cuda.py tests/test_device.py \
        tests/test_side_by_side.py 2>&1 | tee "$OUT/cuda-tests.log" | grep -E "dB|PASS|FAIL|ERROR|passed|failed|Error" | tail -30
fi
if step bench; then
    echo "== CUDA bench"
    timeout 240 python3 bench/bench_cuda.py --seconds "${BENCH_SECONDS:-60}" --repeats 3 \
        --only "${BENCH_ONLY:-calls,render,preview,drift,profile}" --json "$OUT/bench-cuda.json" \
        2>&1 | tee "$OUT/bench-cuda.log" | tail -14
fi
if step cpu; then
    echo "== CPU: thread splits and segment pairs"
    timeout "${CPU_TIMEOUT:-200}" python3 bench/bench_separation.py --only "${CPU_ONLY:-split,sidebyside}" --repeats 2 \
        2>&1 | tee "$OUT/bench-cpu.log" | grep -vE "^  " | tail -12
    cp bench/results/*.json "$OUT/" 2>/dev/null
fi
if step suite; then
    echo "== whole suite, auto device (CUDA)"
    timeout "${SUITE_TIMEOUT:-200}" python3 -m pytest -q -p no:cacheprovider --timeout 120 tests 2>&1 \
        | tee "$OUT/suite.log" | grep -E "^(FAILED|ERROR)|passed|failed" | tail -25
fi
