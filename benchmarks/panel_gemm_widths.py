"""The CPU's recurrent products (csrc/cpu/panel_gemm.h, dot_gemm.h) built for this machine and for AVX2 only,
against MKL's sgemm, interleaved in one process on one thread.

    python benchmarks/panel_gemm_widths.py [--rounds 9] [--reps 500]

Builds benchmarks/panel_gemm_widths.cpp twice with torch.utils.cpp_extension (-march=native, and
-march=x86-64-v3: AVX2 and FMA, no AVX-512), then each round times them and MKL on the same inputs:
the sequence's step product (8 rows x 1024 columns, K = 256, W_hh packed once; panel_gemm.h) and the
cell's (16 batch rows x 512 gate rows, x · W_ihᵀ + h · W_hhᵀ, K = 256 each, the weights read in place;
dot_gemm.h, and panel_gemm as the cell ran it before). Reports each one's median GFLOP/s over the
rounds, and the ratio of the native build to each other per round (median and range).
On a machine without AVX-512 both builds are the same code.
"""
import argparse
import hashlib
import os
import statistics
import time

import torch
from torch.utils import cpp_extension

HERE = os.path.dirname(os.path.abspath(__file__))


def build(name, march):
    # cpp_extension rebuilds when the .cpp changes, not its headers: their digest goes into the name.
    sources = [os.path.join(HERE, "panel_gemm_widths.cpp")] + [
        os.path.join(HERE, "..", "csrc", "cpu", header) for header in ("panel_gemm.h", "dot_gemm.h", "vector_math.h")]
    digest = hashlib.sha1(b"".join(open(path, "rb").read() for path in sources)).hexdigest()[:12]
    return cpp_extension.load(name=f"{name}_{digest}", sources=sources[:1],
                              extra_include_paths=[os.path.join(HERE, "..", "csrc")],
                              extra_cflags=["-O3", f"-march={march}"], verbose=False)


def mkl_seconds(run, reps, trials):
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(reps):
            run()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def ours(run, name, label):
    seconds, error = run()
    assert error < 1e-5, f"{label} {name}: relative error {error:.2g}"
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--reps", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    native, avx2 = build("panel_gemm_native", "native"), build("panel_gemm_avx2", "x86-64-v3")
    gen = torch.Generator().manual_seed(0)
    h, w_hh = torch.randn(8, 256, generator=gen), torch.randn(1024, 256, generator=gen)
    w_i, w_h = torch.randn(512, 256, generator=gen), torch.randn(512, 256, generator=gen)
    x, hc = torch.randn(16, 256, generator=gen), torch.randn(16, 256, generator=gen)
    r, t = args.reps, 3
    cases = {
        "step 8x1024, K=256": (2 * 8 * 1024 * 256, {
            "native": lambda: native.step(h, w_hh, r, t), "avx2": lambda: avx2.step(h, w_hh, r, t),
            "mkl": lambda: (mkl_seconds(lambda: torch.mm(h, w_hh.t()), r, t), 0.0)}),
        "cell 16x512, K=256+256": (2 * 2 * 512 * 16 * 256, {
            "native": lambda: native.cell(w_i, x, w_h, hc, True, r, t),
            "avx2": lambda: avx2.cell(w_i, x, w_h, hc, True, r, t),
            "native, as before dot_gemm": lambda: native.cell(w_i, x, w_h, hc, False, r, t),
            "avx2, as before dot_gemm": lambda: avx2.cell(w_i, x, w_h, hc, False, r, t),
            "mkl": lambda: (mkl_seconds(lambda: torch.mm(x, w_i.t()).addmm_(hc, w_h.t()), r, t), 0.0)}),
    }
    print(f"one thread; native build: {native.vector_bytes}-byte vectors, AVX2 build: {avx2.vector_bytes}; "
          f"{args.rounds} interleaved rounds, each the best of 3 x {args.reps} calls")
    for name, (flops, runs) in cases.items():
        rates = {label: [] for label in runs}
        for _ in range(args.rounds):
            for label, run in runs.items():
                rates[label].append(flops / ours(run, name, label) / 1e9)
        print(f"  {name}: " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in rates.items()) + " GFLOP/s")
        pairs = [("native", other) for other in runs if other != "native"]
        pairs += [("avx2", "avx2, as before dot_gemm")] if "avx2, as before dot_gemm" in runs else []
        for ours_label, other in pairs:
            ratios = [n / a for n, a in zip(rates[ours_label], rates[other])]
            print(f"    {ours_label} / {other}: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
