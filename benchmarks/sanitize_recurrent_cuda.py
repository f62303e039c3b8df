"""Every CUDA kernel of the recurrent units once, forward and backward, on small sizes: the program that
compute-sanitizer runs (memcheck, racecheck, synccheck) in benchmarks/gpu_check.sh.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_recurrent_cuda.py

Paths: the persistent kernels (one unit and several units per block, a padded last block, batch
tiles), the
per-step kernels (a packed sequence; weights too large for shared memory; a projection), the cells;
RNN (tanh, relu) and LSTM, both directions, float32 and float16 (the float-accumulating half path).
"""
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import dlunits


def run(kind, hidden, dtype, packed=False, batch=4, **kwargs):
    torch.manual_seed(0)
    module = getattr(dlunits.nn, kind)(8, hidden, bidirectional=True, device="cuda", dtype=dtype, **kwargs)
    x = torch.randn(5, batch, 8, device="cuda", dtype=dtype, requires_grad=True)
    inp = pack_padded_sequence(x, torch.tensor([5, 3, 3, 1])) if packed else x
    out = module(inp)[0]
    out = out.data if packed else out
    out.float().square().sum().backward()
    assert torch.isfinite(x.grad).all(), (kind, hidden, dtype, packed, kwargs)


def run_cell(kind, dtype, **kwargs):
    torch.manual_seed(0)
    cell = getattr(dlunits.nn, kind)(8, 19, device="cuda", dtype=dtype, **kwargs)
    x = torch.randn(3, 8, device="cuda", dtype=dtype, requires_grad=True)
    out = cell(x)
    out = out[0] + out[1] if isinstance(out, tuple) else out
    out.float().square().sum().backward()
    assert torch.isfinite(x.grad).all(), (kind, dtype, kwargs)


def main():
    for dtype in (torch.float32, torch.float16):
        for hidden in (16, 265):                      # persistent: 1 and several units per block
            run("LSTM", hidden, dtype)
            run("RNN", hidden, dtype)
            run("RNN", hidden, dtype, nonlinearity="relu")
        run("LSTM", 1024, dtype, batch=32)            # persistent, batch rows staged in tiles
        run("RNN", 1024, dtype, batch=64)
        run("LSTM", 16, dtype, packed=True)           # per step: packed
        run("RNN", 16, dtype, packed=True)
        run("LSTM", 2048, dtype)                      # per step: W_hh too large for shared memory
        run("LSTM", 16, dtype, proj_size=5)           # per step: projection
        run_cell("LSTMCell", dtype)
        run_cell("RNNCell", dtype)
        run_cell("RNNCell", dtype, nonlinearity="relu", bias=False)
    torch.cuda.synchronize()
    print("sanitize_recurrent_cuda: every path ran")


if __name__ == "__main__":
    main()
