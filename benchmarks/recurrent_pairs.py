"""The recurrent issue's CPU cases, dlunits.nn against torch.nn, timed in interleaved pairs so that a
machine whose speed drifts (a shared VM) moves both sides of each ratio alike.

    python benchmarks/recurrent_pairs.py [--case cell-loop|sequence|all] [--pairs 15] [--steps 50]
                                         [--batch 16] [--size 256]

cell-loop: a Python loop of T steps over nn.LSTMCell. sequence: nn.LSTM over the whole sequence (torch
runs oneDNN's LSTM). Each pair times torch once, then dlunits, on the same inputs; the report is the
median time of each side and the median and range of the per-pair ratios (torch / dlunits), for the
forward (autograd recording), the forward+backward (the sum of every h_t, backward through time) and
the forward under no_grad. float32, torch's default threads.
"""
import argparse
import statistics
import time

import torch

import dlunits


def cell_loop(cell, xs, state, backward):
    h, c = state
    outs = []
    for x in xs:
        h, c = cell(x, (h, c))
        outs.append(h)
    if backward:
        torch.stack(outs).sum().backward()


def sequence(lstm, xs, state, backward):
    output, _ = lstm(xs, state)
    if backward:
        output.sum().backward()


CASES = {"cell-loop": ("LSTMCell", cell_loop), "sequence": ("LSTM", sequence)}


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(name, args):
    kind, run = CASES[name]
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(args.size, args.size)
    ours = getattr(dlunits.nn, kind)(args.size, args.size)
    ours.load_state_dict(ref.state_dict())
    xs = torch.randn(args.steps, args.batch, args.size)
    lead = () if kind == "LSTMCell" else (1,)
    state = (torch.randn(*lead, args.batch, args.size), torch.randn(*lead, args.batch, args.size))
    print(f"{kind} {name} T={args.steps} B={args.batch} {args.size}/{args.size}, float32, "
          f"{torch.get_num_threads()} threads, {args.pairs} interleaved pairs")
    for pass_name, backward, grad in (("forward", False, True), ("forward+backward", True, True),
                                      ("forward, no_grad", False, False)):
        with torch.set_grad_enabled(grad):
            for _ in range(3):  # warm-up
                run(ref, xs, state, backward)
                run(ours, xs, state, backward)
            pairs = [(seconds(lambda: run(ref, xs, state, backward)), seconds(lambda: run(ours, xs, state, backward)))
                     for _ in range(args.pairs)]
        ratios = [t / o for t, o in pairs]
        print(f"  {pass_name:17s} torch {statistics.median(t for t, _ in pairs) * 1e3:7.2f} ms  "
              f"dlunits {statistics.median(o for _, o in pairs) * 1e3:7.2f} ms  "
              f"ratio {statistics.median(ratios):.2f}x (pairs {min(ratios):.2f}-{max(ratios):.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="input size = hidden size")
    args = parser.parse_args()
    for name in CASES if args.case == "all" else [args.case]:
        run_case(name, args)


if __name__ == "__main__":
    main()
