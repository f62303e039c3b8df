"""The CPU's recurrent products (csrc/cpu/panel_gemm.h) built for this machine and for AVX2 only,
against MKL's sgemm, interleaved in one process on one thread.

    python benchmarks/panel_gemm_widths.py [--rounds 9] [--reps 500]

Builds benchmarks/panel_gemm_widths.cpp twice with torch.utils.cpp_extension (-march=native, and
-march=x86-64-v3: AVX2 and FMA, no AVX-512), then each round times the three on the same inputs:
the sequence's step product (8 rows x 1024 columns, K = 256, W_hh packed once) and the cell's
(512 gate rows of W read in place x 16 batch columns, K = 256). Reports each one's median GFLOP/s
over the rounds, and the ratio of the native build to the AVX2 build per round (median and range).
On a machine without AVX-512 both builds are the same code.
"""
import argparse
import os
import statistics
import time

import torch
from torch.utils import cpp_extension

HERE = os.path.dirname(os.path.abspath(__file__))


def build(name, march):
    return cpp_extension.load(name=name, sources=[os.path.join(HERE, "panel_gemm_widths.cpp")],
                              extra_include_paths=[os.path.join(HERE, "..", "csrc")],
                              extra_cflags=["-O3", f"-march={march}"], verbose=False)


def mkl_seconds(a, b, reps, trials):
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--reps", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    native, avx2 = build("panel_gemm_native", "native"), build("panel_gemm_avx2", "x86-64-v3")
    gen = torch.Generator().manual_seed(0)
    h, w_hh = torch.randn(8, 256, generator=gen), torch.randn(1024, 256, generator=gen)
    w, x = torch.randn(512, 256, generator=gen), torch.randn(16, 256, generator=gen)
    cases = {"step 8x1024, K=256": (2 * 8 * 1024 * 256, lambda m: m.step(h, w_hh, args.reps, 3),
                                    lambda: mkl_seconds(h, w_hh.t(), args.reps, 3)),
             "cell 512x16, K=256": (2 * 512 * 16 * 256, lambda m: m.cell(w, x, args.reps, 3),
                                    lambda: mkl_seconds(w, x.t(), args.reps, 3))}
    print(f"one thread; native build: {native.vector_bytes}-byte vectors, AVX2 build: {avx2.vector_bytes}; "
          f"{args.rounds} interleaved rounds, each the best of 3 x {args.reps} calls")
    for name, (flops, ours, mkl) in cases.items():
        rates = {"native": [], "avx2": [], "mkl": []}
        for _ in range(args.rounds):
            for label, module in (("native", native), ("avx2", avx2)):
                seconds, error = ours(module)
                assert error < 1e-5, f"{label} {name}: relative error {error:.2g}"
                rates[label].append(flops / seconds / 1e9)
            rates["mkl"].append(flops / mkl() / 1e9)
        ratios = [n / a for n, a in zip(rates["native"], rates["avx2"])]
        print(f"  {name}: " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in rates.items()) +
              f" GFLOP/s; native / avx2 {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
