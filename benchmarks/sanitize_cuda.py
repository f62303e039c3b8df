"""Every CUDA kernel of dlunits once, forward and backward, on small sizes: the program that
compute-sanitizer runs (memcheck, racecheck, synccheck) in benchmarks/gpu_check.sh.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_cuda.py

Conv2d (padding modes, stride, dilation, groups), max, average and adaptive pooling in both layouts
(padding, ceil_mode, dilation), linear with each activation, and the recurrent units.

Recurrent paths: the persistent kernels (one unit and several units per block, a padded last
block, batch tiles), the per-step kernels (a packed sequence; a large batch; weights too large for
shared memory; a projection), the cells (also the opt-in one-launch cell); RNN (tanh, relu) and LSTM, both directions, float32 and
float16 (the float-accumulating half path); the layers under no_grad and the backward ops asked for
only some gradients; a batch of no sequences. --quick leaves out the largest recurrent cases.
"""
import os
import sys

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import dlunits

D = dlunits.functional


def run(kind, hidden, dtype, packed=False, batch=4, **kwargs):
    torch.manual_seed(0)
    module = getattr(dlunits.nn, kind)(8, hidden, bidirectional=True, device="cuda", dtype=dtype, **kwargs)
    x = torch.randn(5, batch, 8, device="cuda", dtype=dtype, requires_grad=True)
    inp = pack_padded_sequence(x, torch.tensor([5, 3, 3, 1])) if packed else x
    out = module(inp)[0]
    out = out.data if packed else out
    out.float().square().sum().backward()
    assert torch.isfinite(x.grad).all(), (kind, hidden, dtype, packed, kwargs)


def run_cell(kind, dtype, input_size=8, batch=3, **kwargs):
    torch.manual_seed(0)
    cell = getattr(dlunits.nn, kind)(input_size, 19, device="cuda", dtype=dtype, **kwargs)
    x = torch.randn(batch, input_size, device="cuda", dtype=dtype, requires_grad=True)
    out = cell(x)
    out = out[0] + out[1] if isinstance(out, tuple) else out
    out.float().square().sum().backward()
    assert torch.isfinite(x.grad).all(), (kind, dtype, kwargs)


def run_partial(kind, dtype):
    """The paths that leave work out: under no_grad a layer writes its gates and cells to scratch; a
    backward asked for only some gradients (output_mask) skips dx, or the weights' and biases'."""
    torch.manual_seed(0)
    module = getattr(dlunits.nn, kind)(8, 19, device="cuda", dtype=dtype)
    x = torch.randn(*(() if kind.endswith("Cell") else (5,)), 4, 8, device="cuda", dtype=dtype)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    with torch.no_grad():
        first(module(x))
    first(module(x)).float().square().sum().backward()  # data in: no dx
    module.requires_grad_(False)
    x.requires_grad_()
    first(module(x)).float().square().sum().backward()  # frozen weights: only dx (and the states')
    assert torch.isfinite(x.grad).all(), (kind, dtype)


def run_empty(kind, dtype, **kwargs):
    """A batch of no sequences: the step kernels launch over no rows, the products have no rows or
    depth, and the weight gradients come back zero."""
    module = getattr(dlunits.nn, kind)(8, 19, device="cuda", dtype=dtype, **kwargs)
    x = torch.randn(5, 0, 8, device="cuda", dtype=dtype, requires_grad=True)
    out, hidden = module(x)
    (out.float().sum() + sum(h.float().sum() for h in (hidden if isinstance(hidden, tuple) else (hidden,)))).backward()
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters()), (kind, dtype, kwargs)


def backward_of(y, *inputs):
    """Runs y's backward with a random grad_output; every input got a finite gradient."""
    grads = torch.autograd.grad(y, inputs, torch.randn_like(y))
    assert all(torch.isfinite(g).all() for g in grads), y.shape


def conv_pool_linear(dtype):
    torch.manual_seed(0)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 6, 9, 11, device="cuda", dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
        w = torch.randn(4, 3, 3, 2, device="cuda", dtype=dtype, requires_grad=True)
        b = torch.randn(4, device="cuda", dtype=dtype, requires_grad=True)
        backward_of(D.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2), x, w, b)
        for mode in ("reflect", "replicate", "circular"):
            backward_of(D.pad(x, (1, 2, 2, 1), mode), x)
        backward_of(D.max_pool2d(x, 3, 2, 1, 2, True), x)
        backward_of(D.avg_pool2d(x, 3, 2, 1, True, False), x)
        backward_of(D.avg_pool2d(x, (2, 3), 1, (1, 1), False, True, 5), x)
        backward_of(D.adaptive_max_pool2d(x, (4, 5)), x)
        backward_of(D.adaptive_avg_pool2d(x, (4, 5)), x)
    x = torch.randn(5, 3, 7, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(13, 7, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(13, device="cuda", dtype=dtype, requires_grad=True)
    for activation in (None, "relu", "sigmoid", "tanh"):
        backward_of(D.linear(x, w, b, activation=activation), x, w, b)


def main(quick):
    for dtype in (torch.float32, torch.float16):
        conv_pool_linear(dtype)
        for hidden in (16, 265):                      # persistent: 1 and several units per block
            run("LSTM", hidden, dtype)
            run("RNN", hidden, dtype)
            run("RNN", hidden, dtype, nonlinearity="relu")
        if not quick:
            run("LSTM", 1024, dtype, batch=32)        # persistent, batch rows staged in tiles
            run("RNN", 2048, dtype, batch=32)
        run("LSTM", 16, dtype, packed=True)           # per step: packed
        run("RNN", 16, dtype, packed=True)
        run("LSTM", 16, dtype, batch=40)              # per step: a batch past the persistent kernels
        if not quick:
            run("LSTM", 2048, dtype)                  # per step: W_hh too large for shared memory
        run("LSTM", 16, dtype, proj_size=5)           # per step: projection
        run_cell("LSTMCell", dtype)
        run_cell("RNNCell", dtype)
        run_cell("RNNCell", dtype, nonlinearity="relu", bias=False)
        for kind in ("LSTM", "RNN", "LSTMCell", "RNNCell"):
            run_partial(kind, dtype)
        run_empty("LSTM", dtype, num_layers=2, bidirectional=True)
        run_empty("LSTM", dtype, proj_size=5)
        run_empty("RNN", dtype)
        os.environ["DLUNITS_CUDA_FUSED_CELL"] = "1"   # the one-launch cell (opt-in)
        run_cell("LSTMCell", dtype)
        run_cell("RNNCell", dtype, nonlinearity="relu", bias=False)
        run_cell("LSTMCell", dtype, input_size=3000, batch=13)  # batch rows staged in tiles
        del os.environ["DLUNITS_CUDA_FUSED_CELL"]
    torch.cuda.synchronize()
    print("sanitize_cuda: every path ran")


if __name__ == "__main__":
    # --quick: without the largest recurrent cases (racecheck instruments every shared-memory access)
    main(quick="--quick" in sys.argv[1:])
