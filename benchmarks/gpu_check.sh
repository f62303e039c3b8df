#!/usr/bin/env bash
# GPU check for a lent machine with no network: builds dlunits in place against the system
# python's torch (no venv, no downloads), runs the tests if pytest and hypothesis are installed,
# and benchmarks the conv suite on CUDA.
#
#   bash benchmarks/gpu_check.sh          (or: make gpu-check)
#
# Results: benchmarks/results/<gpu-name-slug>-<UTC date-time>.{json,txt}, copied to $OUT/ when OUT
# is set (the device runner fetches what is written there). A failing build stops the script at
# once; failing tests do not stop the benchmark, but the script exits non-zero at the end when the
# tests or the benchmark failed. Takes a few minutes, most of it the CUDA build.
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
slug=$(printf '%s' "$gpu_name" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-*//; s/-*$//')
stem="benchmarks/results/${slug}-$(date -u +%Y%m%d-%H%M)"
bench_status=0
"$PYTHON" -m benchmarks.conv_bench --config configs/bench_conv.yaml --device cuda --json "$stem.json" \
    | tee "$stem.txt" || bench_status=$?
[ "$bench_status" -eq 0 ] || echo "gpu_check: benchmark FAILED (status $bench_status)"

if [ -n "${OUT:-}" ]; then
    cp "$stem".* "$OUT/" 2>/dev/null || true
fi

step "summary"
echo "tests: status $test_status; benchmark: status $bench_status; results: $stem.{json,txt}"
[ "$test_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
