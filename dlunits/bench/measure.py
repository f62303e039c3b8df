"""Measuring: the machine's roofline at start, the time of one call, and errors against a reference.

Timing is torch.utils.benchmark's: Timer.timeit for a warm-up, then adaptive_autorange, which picks
a block size that makes the timer's overhead negligible, times at least 4 blocks and goes on until
the blocks' IQR falls under SPREAD_TARGET of their median or max_run_time is spent. The timer
synchronises CUDA around every block. On CUDA a call's inputs are rotated among several copies
(rotation_copies) so that no call finds them in the L2 cache that the previous one filled.
"""
import dataclasses
import itertools
import math
import sys
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch.utils import benchmark

GEMM_SIZE = {"cpu": 1536, "cuda": 8192}  # square matrices of the roofline's matrix product
COPY_BYTES = 256 * 2**20  # the roofline's copy: well past any cache
SPREAD_TARGET = 0.05
MIN_BLOCKS_FOR_IQR = 4
L2_FALLBACK_BYTES = 50 * 2**20
MAX_COPIES = 256


@dataclasses.dataclass(frozen=True)
class Timing:
    """Median, interquartile range (None when too few blocks ran for quartiles) and fastest block of
    one call in seconds, and how many calls were timed."""

    median: float
    iqr: Optional[float]
    fastest: float
    runs: int


def time_call(fn: Callable[[], object], min_run_time: float, max_run_time: float, num_threads: int) -> Timing:
    """Warm-up, then the time of fn() by torch.utils.benchmark's adaptive_autorange."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=num_threads)
    timer.timeit(number=1)  # warm-up: Timer.timeit runs fn twice untimed before its timed call
    result = timer.adaptive_autorange(threshold=SPREAD_TARGET, min_run_time=min_run_time,
                                      max_run_time=max_run_time)
    iqr = result.iqr if len(result.times) >= MIN_BLOCKS_FOR_IQR else None
    return Timing(result.median, iqr, min(result.times), len(result.times) * result.number_per_run)


def rotation_copies(device: str, input_bytes: int) -> int:
    """How many copies of a call's inputs to rotate among: on CUDA enough that the others span twice the
    L2 cache, so each call reads its inputs from memory; on the CPU one (its caches stay warm, as in a
    training loop)."""
    if device != "cuda":
        return 1
    l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or L2_FALLBACK_BYTES
    return min(MAX_COPIES, 1 + math.ceil(2 * l2_bytes / max(input_bytes, 1)))


def rotating(calls: Sequence[Callable[[], object]]) -> Callable[[], object]:
    """One call that runs the given calls in turn, the next one each time."""
    if len(calls) == 1:
        return calls[0]
    order = itertools.cycle(calls)
    return lambda: next(order)()


def max_errors(outputs: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> Tuple[float, float]:
    """(max abs error, max rel error) over pairs of tensors; a tensor's rel error is its max |out - ref|
    over max |ref|. NaN anywhere gives NaN."""
    abs_errors, rel_errors = [], []
    for out, ref in zip(outputs, references):
        error = (out.double() - ref.double()).abs().max().item()
        abs_errors.append(error)
        rel_errors.append(error / max(ref.abs().max().item(), sys.float_info.min))
    return max(abs_errors), max(rel_errors)


# --- the roofline ------------------------------------------------------------------------------------


# The roofline is what the machine can do at all: its rates come from the fastest block, which a
# passing load on a shared machine slows least.


def gemm_gflops(device: str, dtype: torch.dtype, min_run_time: float, max_run_time: float,
                num_threads: int) -> float:
    """GFLOP/s of a large square torch.mm (BLAS or cuBLAS; TF32 must be off for float32)."""
    size = GEMM_SIZE[device]
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    seconds = time_call(lambda: torch.mm(a, b), min_run_time, max_run_time, num_threads).fastest
    return 2 * size**3 / seconds / 1e9


def copy_gbps(device: str, min_run_time: float, max_run_time: float, num_threads: int) -> float:
    """GB/s of a COPY_BYTES copy, counting the read and the write."""
    src = torch.ones(COPY_BYTES, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = time_call(lambda: dst.copy_(src), min_run_time, max_run_time, num_threads).fastest
    return 2 * COPY_BYTES / seconds / 1e9


def measure_rooflines(pairs: Sequence[Tuple[str, str]], min_run_time: Dict[str, float],
                      max_run_time: Dict[str, float], num_threads: int) -> list:
    """[{device, dtype, gemm_gflops, copy_gbps}] for each (device, dtype name); the copy once per device."""
    bandwidth = {}
    rooflines = []
    for device, dtype in pairs:
        times = (min_run_time[device], max_run_time[device], num_threads)
        if device not in bandwidth:
            bandwidth[device] = copy_gbps(device, *times)
        rooflines.append({"device": device, "dtype": dtype,
                          "gemm_gflops": gemm_gflops(device, getattr(torch, dtype), *times),
                          "copy_gbps": bandwidth[device]})
    return rooflines


def roofline_percent(gflops: float, flops: int, nbytes: int, roofline: dict) -> float:
    """Achieved GFLOP/s as a percentage of min(peak GFLOP/s, GB/s × FLOPs per byte)."""
    bound = min(roofline["gemm_gflops"], roofline["copy_gbps"] * flops / nbytes)
    return 100 * gflops / bound
