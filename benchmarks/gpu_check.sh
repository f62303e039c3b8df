#!/usr/bin/env bash
# GPU check for a lent machine with no network: builds dlunits in place against the system
# python's torch (no venv, no downloads), runs the tests if pytest and hypothesis are installed,
# and runs the full benchmark suite (configs/bench/full.yaml) on CUDA.
#
#   bash benchmarks/gpu_check.sh          (or: make gpu-check)
#
# Results: the benchmark's folder benchmarks/results/<host>-cuda-<gpu>-<UTC date-time>/
# (results.json, .csv, .md, speedup.png, roofline.png, and console.txt, what it printed), copied to
# $OUT/ when OUT is set (the device runner fetches what is written there). A failing build stops
# the script at once; failing tests do not stop the benchmark, but the script exits non-zero at the
# end when the tests or the benchmark failed. Takes a few minutes, most of it the CUDA build.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
TEST_TIMEOUT_S=${TEST_TIMEOUT_S:-120}

step() { printf '\n=== %s\n' "$*"; }

step "GPU"
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
echo "$gpu_name"
"$PYTHON" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")'

step "build (in place, CUDA kernels required)"
if ! DLUNITS_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 "$PYTHON" setup.py build_ext --inplace; then
    echo "gpu_check: BUILD FAILED" >&2
    exit 1
fi
"$PYTHON" -c 'import dlunits, sys; sys.exit(0 if dlunits.cuda_compiled() else "dlunits built without CUDA kernels")'

step "tests"
test_status=0
if ! "$PYTHON" -c 'import pytest, hypothesis' 2>/dev/null; then
    echo "pytest or hypothesis is not installed for $PYTHON: tests skipped"
else
    # CUDA tests first, so that their result comes back even if the rest runs out of time.
    # pytest's status 5 means that no test was selected; that is not a failure.
    for selection in "cuda" "not cuda"; do
        status=0
        timeout "$TEST_TIMEOUT_S" "$PYTHON" -m pytest -q tests -x -k "$selection" || status=$?
        if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
            echo "gpu_check: tests -k '$selection' FAILED (status $status)"
            test_status=$status
        fi
    done
fi

step "benchmark"
mkdir -p benchmarks/results
console=$(mktemp)
bench_status=0
PYTHONUNBUFFERED=1 "$PYTHON" -m dlunits.bench --suite configs/bench/full.yaml --device cuda --out benchmarks/results \
    | tee "$console" || bench_status=$?
[ "$bench_status" -eq 0 ] || echo "gpu_check: benchmark FAILED (status $bench_status)"
# The benchmark names its results folder (host, device, date) in its line "results: <folder>/".
results=$(sed -n 's|^results: \(.*\)/$|\1|p' "$console" | tail -n 1)
if [ -n "$results" ]; then
    mv "$console" "$results/console.txt"
    if [ -n "${OUT:-}" ]; then
        cp -r "$results" "$OUT/"
    fi
else
    results="(none written)"
    [ -z "${OUT:-}" ] || cp "$console" "$OUT/console.txt"
fi

step "summary"
echo "tests: status $test_status; benchmark: status $bench_status; results: $results"
[ "$test_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
