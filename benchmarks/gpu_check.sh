#!/usr/bin/env bash
# GPU check for a lent machine with no network: builds dlunits in place against the system
# python's torch (no venv, no downloads), runs the CUDA tests (with compute-sanitizer over every
# kernel beside them), profiles the recurrent units against torch.nn, and runs the
# benchmark suite on CUDA.
#
#   bash benchmarks/gpu_check.sh          (or: make gpu-check)
#
# Knobs (environment):
#   GPU_CHECK_TESTS   pytest -k expression of the tests to run (default "cuda": the CUDA tests;
#                     CI runs the rest); empty skips the tests
#   TEST_TIMEOUT_S    limit for the test run (default 240)
#   SANITIZE          1 (default): compute-sanitizer memcheck, racecheck and synccheck over
#                     benchmarks/sanitize_cuda.py, while the tests run; 0 skips it
#   PROFILE           1 (default): benchmarks/profile_recurrent_cuda.py (the issue's timings), and
#                     its sequences again on the per-step path (DLUNITS_CUDA_PERSISTENT=0)
#                     unless PROFILE_PER_STEP=0
#   BENCH_FILTER      run only the benchmark cases whose name contains it (default: all)
#   BENCH_DTYPE       comma-separated dtypes to benchmark (default: the suite's)
#   BENCH_TIMEOUT_S   limit for the benchmark (default 420); BENCH=0 skips it
#
# Results: the benchmark's folder benchmarks/results/<host>-cuda-<gpu>-<UTC date-time>/
# (results.json, .csv, .md and console.txt, what it printed); the test log, the sanitizer log and
# the recurrent profile beside it. All of it is copied to $OUT when OUT is set (the device runner
# fetches what is written there: at most 8 files, hence no plots; `dlunits-bench` draws them from
# the csv). A failing build stops the script at once; failing tests do not stop the benchmark, but
# the script exits non-zero at the end when the tests, the sanitizer or the benchmark failed.
set -euo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the in-place build, for the scripts under benchmarks/
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
GPU_CHECK_TESTS=${GPU_CHECK_TESTS-cuda}
TEST_TIMEOUT_S=${TEST_TIMEOUT_S:-240}
BENCH_TIMEOUT_S=${BENCH_TIMEOUT_S:-420}
logs=${OUT:-benchmarks/results/gpu-check-logs}
mkdir -p "$logs" benchmarks/results

step() { printf '\n=== %s  (%s s)\n' "$*" "$SECONDS"; }

step "GPU"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv,noheader
"$PYTHON" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")'

step "build (in place, CUDA kernels required)"
if ! DLUNITS_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 "$PYTHON" setup.py -q build_ext --inplace \
        > "$logs/build.log" 2>&1; then
    tail -n 60 "$logs/build.log"
    echo "gpu_check: BUILD FAILED" >&2
    exit 1
fi
"$PYTHON" -c 'import dlunits, sys; sys.exit(0 if dlunits.cuda_compiled() else "dlunits built without CUDA kernels")'
rm -f "$logs/build.log"

# compute-sanitizer over every CUDA kernel: its three tools at once, in the background while
# the tests run, each report cut to its first findings and its summary.
sanitize() {
    local tool=$1 full status
    full=$(mktemp)
    local args=()
    [ "$tool" != racecheck ] || args=(--quick)   # racecheck is the slowest by far
    timeout "${SANITIZE_TIMEOUT_S:-100}" compute-sanitizer --tool "$tool" --error-exitcode 3 \
        "$PYTHON" benchmarks/sanitize_cuda.py "${args[@]}" > "$full" 2>&1
    status=$?
    # racecheck also reports cuBLAS's own kernels (nvjet split-K): only hazards in ours fail.
    if [ "$tool" = racecheck ] && [ "$status" -eq 3 ] && ! grep "Race reported" "$full" | grep -q dlunits; then
        status=0
    fi
    echo "--- compute-sanitizer --tool $tool"
    grep -m 40 "^=========" "$full"   # the first reports: what, where
    grep "SUMMARY" "$full"
    grep -v "^=========" "$full" | grep -v -i warn | tail -n 5
    echo "--- $tool status $status"
}
sanitize_status=0
sanitizer_pids=()
if [ "${SANITIZE:-1}" = 1 ] && command -v compute-sanitizer > /dev/null; then
    for tool in memcheck racecheck synccheck; do
        ( set +e; sanitize "$tool" > "$logs/sanitizer-$tool.part" 2>&1 ) &
        sanitizer_pids+=($!)
    done
elif [ "${SANITIZE:-1}" = 1 ]; then
    echo "compute-sanitizer not found: sanitizer skipped" | tee "$logs/sanitizer.log"
fi

step "tests (-k '$GPU_CHECK_TESTS')"
test_status=0
if [ -z "$GPU_CHECK_TESTS" ]; then
    echo "tests skipped"
elif ! "$PYTHON" -c 'import pytest, hypothesis' 2>/dev/null; then
    echo "pytest or hypothesis is not installed for $PYTHON: tests skipped"
else
    parallel=()
    "$PYTHON" -c 'import xdist' 2>/dev/null && parallel=(-n 8)
    # pytest's status 5 means that no test was selected; that is not a failure.
    timeout "$TEST_TIMEOUT_S" "$PYTHON" -m pytest -q -p no:cacheprovider "${parallel[@]}" -rfE tests \
        -k "$GPU_CHECK_TESTS" > "$logs/tests.log" 2>&1 || test_status=$?
    [ "$test_status" -ne 5 ] || test_status=0
    grep -E "^(FAILED|ERROR)" "$logs/tests.log" | head -n 40 || true
    tail -n 3 "$logs/tests.log"
    [ "$test_status" -eq 0 ] || echo "gpu_check: tests FAILED (status $test_status)"
fi

if [ "${#sanitizer_pids[@]}" -gt 0 ]; then
    step "compute-sanitizer"
    wait "${sanitizer_pids[@]}" || true
    cat "$logs"/sanitizer-*.part > "$logs/sanitizer.log" && rm -f "$logs"/sanitizer-*.part
    grep -E "^---|ERROR SUMMARY|RACECHECK SUMMARY|every path ran" "$logs/sanitizer.log" || true
    if grep -q -E "status [1-9]" "$logs/sanitizer.log"; then sanitize_status=1; fi
fi

if [ "${PROFILE:-1}" = 1 ]; then
    step "recurrent units against torch.nn (the issue's timings)"
    "$PYTHON" benchmarks/profile_recurrent_cuda.py --out "$logs/recurrent-profile.md" | grep "^|" || true
    if [ "${PROFILE_PER_STEP:-1}" = 1 ]; then
        echo "the same sequences on the per-step path (DLUNITS_CUDA_PERSISTENT=0):"
        DLUNITS_CUDA_PERSISTENT=0 "$PYTHON" benchmarks/profile_recurrent_cuda.py --sequences-only \
            --out "$logs/recurrent-profile-per-step.md" | grep "^|" || true
    fi
fi

bench_status=0
results="(not run)"
if [ "${BENCH:-1}" = 1 ]; then
    step "benchmark"
    console=$(mktemp)
    PYTHONUNBUFFERED=1 timeout "$BENCH_TIMEOUT_S" "$PYTHON" -m dlunits.bench --suite configs/bench/full.yaml \
        --device cuda --out benchmarks/results --no-plots ${BENCH_FILTER:+--filter "$BENCH_FILTER"} ${BENCH_DTYPE:+--dtype "$BENCH_DTYPE"} \
        > "$console" 2>&1 || bench_status=$?
    sed -n '/^roofline/p; /^unit /,$p' "$console" | cut -c1-175 | tail -n 90
    [ "$bench_status" -eq 0 ] || echo "gpu_check: benchmark FAILED (status $bench_status)"
    # The benchmark names its results folder (host, device, date) in its line "results: <folder>/".
    results=$(sed -n 's|^results: \(.*\)/$|\1|p' "$console" | tail -n 1)
    if [ -n "$results" ]; then
        mv "$console" "$results/console.txt"
        [ -z "${OUT:-}" ] || cp -r "$results" "$OUT/"
    else
        results="(none written)"
        cp "$console" "$logs/bench-console.txt"
    fi
fi

step "summary"
echo "tests: status $test_status; sanitizer: status $sanitize_status; benchmark: status $bench_status; results: $results"
[ "$test_status" -eq 0 ] && [ "$sanitize_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
