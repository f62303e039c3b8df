"""The issue's LSTMCell case on the CPU: a Python loop of T steps over nn.LSTMCell, dlunits.nn against
torch.nn, timed in interleaved pairs so that a machine whose speed drifts (a shared VM) moves both
sides of each ratio alike.

    python benchmarks/cell_loop_pairs.py [--pairs 15] [--steps 50] [--batch 16] [--size 256]

Each pair times one loop of torch's cell, then one of ours, on the same inputs; the report is the
median time of each side and the median and range of the per-pair ratios (torch / dlunits), for the
forward (autograd recording), the forward+backward (the sum of every h_t, backward through time) and
the forward under no_grad. float32, torch's default threads.
"""
import argparse
import statistics
import time

import torch

import dlunits


def loop(cell, xs, state, backward):
    h, c = state
    outs = []
    for x in xs:
        h, c = cell(x, (h, c))
        outs.append(h)
    if backward:
        torch.stack(outs).sum().backward()


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="input size = hidden size")
    args = parser.parse_args()
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(args.size, args.size)
    ours = dlunits.nn.LSTMCell(args.size, args.size)
    ours.load_state_dict(ref.state_dict())
    xs = torch.randn(args.steps, args.batch, args.size)
    state = (torch.randn(args.batch, args.size), torch.randn(args.batch, args.size))
    print(f"LSTMCell loop T={args.steps} B={args.batch} {args.size}/{args.size}, float32, "
          f"{torch.get_num_threads()} threads, {args.pairs} interleaved pairs")
    for name, backward, grad in (("forward", False, True), ("forward+backward", True, True),
                                 ("forward, no_grad", False, False)):
        with torch.set_grad_enabled(grad):
            for _ in range(3):  # warm-up
                loop(ref, xs, state, backward)
                loop(ours, xs, state, backward)
            pairs = [(seconds(lambda: loop(ref, xs, state, backward)), seconds(lambda: loop(ours, xs, state, backward)))
                     for _ in range(args.pairs)]
        ratios = [t / o for t, o in pairs]
        print(f"  {name:17s} torch {statistics.median(t for t, _ in pairs) * 1e3:7.2f} ms  "
              f"dlunits {statistics.median(o for _, o in pairs) * 1e3:7.2f} ms  "
              f"ratio {statistics.median(ratios):.2f}x (pairs {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
