#!/usr/bin/env bash
# One run on a lent CUDA machine (see bench/README.md, "On a CUDA GPU"): the CUDA tests, the
# CUDA benchmark, then the whole suite with `auto` choosing the GPU. Logs go to $OUT.
# The machine has torch but not the rest: the command carries .whl (see bench/README.md).
set -u
OUT=${OUT:-/tmp/stembridge-device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
echo "== CUDA tests"
timeout 150 python3 -m pytest -q -rA -s -p no:cacheprovider tests/test_cuda.py tests/test_device.py 2>&1 \
    | tee "$OUT/cuda-tests.log" | grep -E "dB|PASS|FAIL|ERROR|passed|failed|Error" | tail -30
echo "== CUDA bench"
timeout 240 python3 bench/bench_cuda.py --seconds "${BENCH_SECONDS:-60}" --repeats 3 --json "$OUT/bench-cuda.json" \
    2>&1 | tee "$OUT/bench-cuda.log" | tail -14
echo "== whole suite, auto device (CUDA)"
timeout "${SUITE_TIMEOUT:-200}" python3 -m pytest -q -p no:cacheprovider --timeout 120 tests 2>&1 \
    | tee "$OUT/suite.log" | grep -E "^(FAILED|ERROR)|passed|failed" | tail -25
