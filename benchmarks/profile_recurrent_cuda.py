"""The issue's recurrent timings on a GPU, dlunits against torch in the same run, and where dlunits'
time goes (torch.profiler: the CUDA kernels of one call, and for the cell loop the host's time by op).

    python benchmarks/profile_recurrent_cuda.py [--out results.md]

Float32, TF32 off, as the issue measures: nn.LSTM over T=100 steps at batch 16 (256/256) and batch 128
(512/512), forward and forward+backward, dlunits.nn.LSTM against torch.nn.LSTM (cuDNN); and a Python
loop of T=100 steps over nn.LSTMCell (batch 16, 256/256), dlunits.nn.LSTMCell against torch.nn.LSTMCell,
also with the opt-in one-launch cell (DLUNITS_CUDA_FUSED_CELL=1).
Each time is a median as dlunits-bench measures it (dlunits.bench.measure.time_call). The runs recorded
under benchmarks/results/vm-cuda-nvidia-h200-20261127-*/ were timed by this script's earlier own timer
(the median of 20 calls between CUDA events, after 5 warm-up calls).
"""
import argparse
import os

import torch

import dlunits
from dlunits.bench.measure import time_call

SEQUENCES = [dict(T=100, B=16, I=256, H=256), dict(T=100, B=128, I=512, H=512)]
CELL_LOOP = dict(T=100, B=16, I=256, H=256)


def median_ms(fn):
    """The median time of fn() in ms, timed as dlunits-bench times (torch.utils.benchmark, CUDA
    synchronised around each block)."""
    return time_call(fn, min_run_time=0.2, max_run_time=1.0, num_threads=torch.get_num_threads()).median * 1e3


def twins(kind, I, H):
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(I, H, device="cuda")
    ours = getattr(dlunits.nn, kind)(I, H, device="cuda")
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def sequence_passes(module, x, state):
    def forward():
        return module(x, state)

    def forward_backward():
        out, (h, c) = module(x, state)
        (out.sum() + h.sum() + c.sum()).backward()
    return forward, forward_backward


def cell_loop_passes(module, xs, state):
    def run():
        h, c = state
        outs = []
        for x in xs:
            h, c = module(x, (h, c))
            outs.append(h)
        return outs, c

    def forward_backward():
        outs, c = run()
        (sum(o.sum() for o in outs) + c.sum()).backward()
    return run, forward_backward


def kernel_table(fn, rows=12):
    """The CUDA kernels of one call of fn: name, calls, total µs."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in events)
    lines = [f"    {'kernel':<70} {'calls':>6} {'µs':>10}", f"    {'(all)':<70} {'':>6} {total:10.1f}"]
    for e in events[:rows]:
        lines.append(f"    {e.key[:70]:<70} {e.count:>6} {e.device_time_total:10.1f}")
    return "\n".join(lines)


def host_table(fn, rows=20):
    """Where the host's time goes in one call of fn: torch.profiler's CPU-side ops by self time (a
    cell loop is bound by it, not by its kernels)."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--sequences-only", action="store_true", help="skip the LSTMCell loop")
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    gen = torch.Generator(device="cuda").manual_seed(1)
    report = [f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()},"
              f" float32, TF32 off", "", "| case | pass | torch.nn ms | dlunits ms | speed-up |", "|---|---|---|---|---|"]
    profiles = []

    def row(case, pass_name, torch_fn, ours_fn):
        t_ref, t_ours = median_ms(torch_fn), median_ms(ours_fn)
        report.append(f"| {case} | {pass_name} | {t_ref:.3f} | {t_ours:.3f} | {t_ref / t_ours:.2f}x |")
        print(report[-1], flush=True)

    for s in SEQUENCES:
        T, B, I, H = s["T"], s["B"], s["I"], s["H"]
        ref, ours = twins("LSTM", I, H)
        x = torch.randn(T, B, I, device="cuda", generator=gen, requires_grad=True)
        state = tuple(torch.randn(1, B, H, device="cuda", generator=gen, requires_grad=True) for _ in range(2))
        case = f"LSTM T={T} B={B} {I}/{H}"
        with torch.no_grad():
            out_ref, out_ours = ref(x, state)[0], ours(x, state)[0]
        err = ((out_ref - out_ours).norm() / out_ref.norm()).item()
        report.append(f"| {case} | output rel. error | {err:.2e} | | |")
        ref_passes, our_passes = sequence_passes(ref, x, state), sequence_passes(ours, x, state)
        row(case, "forward", ref_passes[0], our_passes[0])
        row(case, "forward+backward", ref_passes[1], our_passes[1])
        profiles.append((f"dlunits {case}, forward+backward: CUDA kernels of one call", kernel_table(our_passes[1])))
        profiles.append((f"torch.nn {case}, forward+backward: CUDA kernels of one call", kernel_table(ref_passes[1])))

    if args.sequences_only:
        return finish(report, profiles, args.out)
    T, B, I, H = CELL_LOOP["T"], CELL_LOOP["B"], CELL_LOOP["I"], CELL_LOOP["H"]
    ref, ours = twins("LSTMCell", I, H)
    xs = [torch.randn(B, I, device="cuda", generator=gen, requires_grad=True) for _ in range(T)]
    state = tuple(torch.randn(B, H, device="cuda", generator=gen, requires_grad=True) for _ in range(2))
    case = f"LSTMCell loop T={T} B={B} {I}/{H}"
    ref_passes, our_passes = cell_loop_passes(ref, xs, state), cell_loop_passes(ours, xs, state)
    row(case, "forward", ref_passes[0], our_passes[0])
    row(case, "forward+backward", ref_passes[1], our_passes[1])
    os.environ["DLUNITS_CUDA_FUSED_CELL"] = "1"  # the opt-in one-launch cell, read at each call
    row(case + " (DLUNITS_CUDA_FUSED_CELL=1)", "forward", ref_passes[0], our_passes[0])
    row(case + " (DLUNITS_CUDA_FUSED_CELL=1)", "forward+backward", ref_passes[1], our_passes[1])
    profiles.append((f"dlunits {case}, forward, fused cell: CUDA kernels of one call", kernel_table(our_passes[0])))
    del os.environ["DLUNITS_CUDA_FUSED_CELL"]
    profiles.append((f"dlunits {case}, forward: CUDA kernels of one call", kernel_table(our_passes[0])))
    profiles.append((f"torch.nn {case}, forward: CUDA kernels of one call", kernel_table(ref_passes[0])))
    profiles.append((f"dlunits {case}, forward+backward: host time by op", host_table(our_passes[1])))
    profiles.append((f"torch.nn {case}, forward+backward: host time by op", host_table(ref_passes[1])))
    finish(report, profiles, args.out)


def finish(report, profiles, out):
    for title, table in profiles:
        report += ["", f"{title}", "", "```", table, "```"]
    text = "\n".join(report)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
