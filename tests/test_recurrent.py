"""dlunits' recurrent units against torch: RNNCell, LSTMCell, RNN and LSTM, every option of torch.nn's,
outputs, final states and every gradient (input, initial states, all weights); packed sequences of
unequal lengths; gradcheck and torch.library.opcheck on every op; hypothesis-drawn configurations;
torch.compile; the seed's next-character example; bad input."""
import contextlib
import functools
import itertools
import re

import pytest
import torch
import torch._dynamo.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import dlunits
from conftest import (DEVICE_DTYPES, DEVICES, REL_TOL, assert_close_rel, compare_with_torch, flat_outputs, make_generator,
                      num_threads, randn, reference_dtype)

D = dlunits.functional
ops = torch.ops.dlunits


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def module_pair(kind, *args, **kwargs):
    """(torch.nn module, its dlunits twin with the same weights), both float64 on the CPU."""
    torch.manual_seed(0)
    ref = getattr(torch.nn, kind)(*args, dtype=torch.float64, **kwargs)
    dl = getattr(dlunits.nn, kind)(*args, dtype=torch.float64, **kwargs)
    dl.load_state_dict(ref.state_dict())
    assert isinstance(dl, getattr(torch.nn, kind))
    return ref, dl


def compare_modules(ref, dl, x, hx=None, *, dtype=torch.float64, device="cpu", seed=3, pack=None, rel=None):
    """Runs ref and dl on x (and hx: a tensor, a tuple, or None), float64 masters cast to dtype on
    device (the reference in reference_dtype(dtype) from the same rounded values), and compares the
    outputs, the final states and the gradients of x, hx and every parameter. pack(x) may turn the
    input into a PackedSequence after the cast."""
    rel = REL_TOL[dtype] if rel is None else rel
    ref_dtype = reference_dtype(dtype)
    dl = dl.to(device=device, dtype=dtype)
    ref = ref.to(device=device, dtype=ref_dtype)
    ref.load_state_dict({k: v.to(ref_dtype) for k, v in dl.state_dict().items()})

    def inputs(target):
        def cast(t):
            return t.detach().to(device=device, dtype=dtype).to(target).requires_grad_(True)
        xs = cast(x)
        hs = None if hx is None else (tuple(cast(h) for h in hx) if isinstance(hx, tuple) else cast(hx))
        return xs, hs

    x_dl, h_dl = inputs(dtype)
    x_ref, h_ref = inputs(ref_dtype)
    y_dl = flat_outputs(dl(pack(x_dl) if pack else x_dl, h_dl))
    y_ref = flat_outputs(ref(pack(x_ref) if pack else x_ref, h_ref))
    assert len(y_dl) == len(y_ref)
    for i, (a, b) in enumerate(zip(y_dl, y_ref)):
        assert a.dtype == dtype
        assert_close_rel(a, b, rel, f"output {i}")
    gen = make_generator(seed)
    weights = [randn(*b.shape, gen=gen, device=device, dtype=dtype) for b in y_ref]
    loss_dl = sum((a * w).sum() for a, w in zip(y_dl, weights))
    loss_ref = sum((b * w.to(ref_dtype)).sum() for b, w in zip(y_ref, weights))
    states = lambda h: [] if h is None else (list(h) if isinstance(h, tuple) else [h])  # noqa: E731
    wrt_dl = [x_dl] + states(h_dl) + list(dl.parameters())
    wrt_ref = [x_ref] + states(h_ref) + list(ref.parameters())
    g_dl = torch.autograd.grad(loss_dl, wrt_dl)
    g_ref = torch.autograd.grad(loss_ref, wrt_ref)
    names = ["input"] + [f"hx[{i}]" for i in range(len(states(h_dl)))] + [n for n, _ in dl.named_parameters()]
    for name, a, b in zip(names, g_dl, g_ref):
        assert_close_rel(a, b, rel, f"gradient of {name}")
    return y_dl, y_ref


# --------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_rnn_cell(device, dtype, nonlinearity, bias):
    gen = make_generator(5)
    B, I, H = 3, 5, 7
    tensors = [randn(B, I, gen=gen), randn(B, H, gen=gen), randn(H, I, gen=gen) / 2, randn(H, H, gen=gen) / 2]
    tensors += [randn(H, gen=gen), randn(H, gen=gen)] if bias else [None, None]
    oracle = torch.rnn_tanh_cell if nonlinearity == "tanh" else torch.rnn_relu_cell

    def dl(x, h, w_ih, w_hh, b_ih, b_hh):
        return D.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nonlinearity)

    compare_with_torch(dl, oracle, tensors, dtype=dtype, device=device)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell(device, dtype, bias):
    gen = make_generator(6)
    B, I, H = 4, 5, 6
    tensors = [randn(B, I, gen=gen), randn(B, H, gen=gen), randn(B, H, gen=gen), randn(4 * H, I, gen=gen) / 2,
               randn(4 * H, H, gen=gen) / 2]
    tensors += [randn(4 * H, gen=gen), randn(4 * H, gen=gen)] if bias else [None, None]

    def dl(x, h, c, w_ih, w_hh, b_ih, b_hh):
        return torch.cat(D.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh), dim=1)

    def th(x, h, c, w_ih, w_hh, b_ih, b_hh):
        return torch.cat(torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh), dim=1)

    compare_with_torch(dl, th, tensors, dtype=dtype, device=device)


@pytest.mark.parametrize("kind,kwargs", [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu", "bias": False}),
                                         ("LSTMCell", {}), ("LSTMCell", {"bias": False})], ids=str)
@pytest.mark.parametrize("batch", [3, 40, None], ids=["batch=3", "batch=40", "unbatched"])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cell_modules(kind, kwargs, batch, with_state, dtype):
    """The cell modules: batched and unbatched input, given or zero state, module gradients (a batch of 3
    takes the CPU's own cell products, 40 the driver's BLAS ones)."""
    ref, dl = module_pair(kind, 5, 6, **kwargs)
    gen = make_generator(8)
    lead = () if batch is None else (batch,)
    x = randn(*lead, 5, gen=gen)
    hx = None
    if with_state:
        hx = (randn(*lead, 6, gen=gen), randn(*lead, 6, gen=gen)) if kind == "LSTMCell" else randn(*lead, 6, gen=gen)
    compare_modules(ref, dl, x, hx, dtype=dtype)


def test_cell_sequence_loop():
    """An LSTMCell loop over a sequence (the issue's baseline) matches torch's, through time."""
    ref, dl = module_pair("LSTMCell", 4, 5)
    gen = make_generator(9)
    xs = randn(6, 2, 4, gen=gen)

    def loop(cell):
        def run(x, hx):
            h, c = hx
            outs = []
            for t in range(x.size(0)):
                h, c = cell(x[t], (h, c))
                outs.append(h)
            return torch.stack(outs), (h, c)
        return run

    class Loop(torch.nn.Module):
        def __init__(self, cell):
            super().__init__()
            self.cell = cell

        def forward(self, x, hx):
            return loop(self.cell)(x, hx)

    compare_modules(Loop(ref), Loop(dl), xs, (randn(2, 5, gen=gen), randn(2, 5, gen=gen)))


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_threads(threads, kind):
    """Enough rows that the CPU step passes and the bias column sum split over threads (chunks of
    16 K elements): results as torch's, whatever the split."""
    ref, dl = module_pair(kind, 8, 64, bidirectional=True)
    gen = make_generator(10)
    with num_threads(threads):
        compare_modules(ref, dl, randn(2, 300, 8, gen=gen), dtype=torch.float32)


@pytest.mark.parametrize("modified", ["h", "c", "both"])
def test_lstm_cell_outputs_modified_in_place(modified):
    """torch.nn.LSTMCell lets the caller change h' and c' in place before the backward (its backward
    saves neither); so does dlunits', with the same gradients."""
    ref, dl = module_pair("LSTMCell", 3, 5)
    gen = make_generator(31)
    x, h, c = randn(4, 3, gen=gen), randn(4, 5, gen=gen), randn(4, 5, gen=gen)
    grads = []
    for module in (ref, dl):
        xs = x.clone().requires_grad_()
        hy, cy = module(xs, (h, c))
        if modified in ("h", "both"):
            hy.mul_(2)
        if modified in ("c", "both"):
            cy.add_(1).mul_(3)
        (hy.square().sum() + cy.sin().sum()).backward()
        grads.append([xs.grad] + [p.grad for p in module.parameters()])
    for a, b in zip(*grads):
        assert_close_rel(b, a, REL_TOL[torch.float64], "gradient after an in-place change")


@pytest.mark.parametrize("used", ["h", "c"])
def test_lstm_cell_one_output_used(used):
    """Only h' or only c' reaches the loss: the other's gradient is undefined (not made as zeros by
    the C++ autograd), and the gradients are torch's."""
    ref, dl = module_pair("LSTMCell", 3, 5)
    gen = make_generator(32)
    x, h, c = randn(4, 3, gen=gen), randn(4, 5, gen=gen), randn(4, 5, gen=gen)
    grads = []
    for module in (ref, dl):
        inputs = [t.clone().requires_grad_() for t in (x, h, c)]
        hy, cy = module(inputs[0], (inputs[1], inputs[2]))
        (hy if used == "h" else cy).sin().sum().backward()
        grads.append([t.grad for t in inputs] + [p.grad for p in module.parameters()])
    for a, b in zip(*grads):
        assert_close_rel(b, a, REL_TOL[torch.float64], f"gradient with only {used}' used")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "RNN", "LSTM"])
def test_cpu_tiled_products(dtype, kind):
    """The CPU's own products (csrc/cpu/panel_gemm.h, dot_gemm.h) at sizes that reach every edge of their
    tiling. Sequences: 19 rows (balanced row tiles, 4+4+4+4+3 with AVX2 or 7+6+6 with AVX-512; a batch
    split 10/9 or 7/6/6 over threads). Cells (their forward is ours up to a batch of 16 in float64, 32 in
    float32): 13 rows, so the last tile of batch rows overlaps the one before it. Both: 270 hidden units
    (a partial last panel, a partial block of units in the cell, and K = 270 longer than one K chunk in
    float32 and float64 and not a multiple of the vector width), an input size of 131; both directions of
    the sequence, so that the backward's products run too. Everything as torch on 1 and 3 threads, and
    the outputs bit-identical between them: the recurrent products are ours (and MKL gives a sequence's
    input projection the same bits on both). The gradients are not held to it here: a sequence's backward
    products are BLAS's, which MKL splits differently by thread count on Intel processors (a float64 cell's
    bits changed between 1 and 3 threads on a Sapphire Rapids machine); a cell's are the next test's."""
    cell = kind.endswith("Cell")
    ref, dl = module_pair(kind, 131, 270, **({} if cell else {"bidirectional": True}))
    gen = make_generator(30)
    x = randn(13, 131, gen=gen) if cell else randn(3, 19, 131, gen=gen)
    h = randn(13, 270, gen=gen) if cell else randn(2, 19, 270, gen=gen)
    hx = (h, randn(*h.shape, gen=gen)) if "LSTM" in kind else h
    results = []
    for threads in (1, 3):
        with num_threads(threads):
            y_dl, _ = compare_modules(ref, dl, x, hx, dtype=dtype)
        results.append(y_dl)
    for a, b in zip(*results):
        assert torch.equal(a, b), "the CPU's tiled products depend on the number of threads"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell"])
@pytest.mark.parametrize("input_size,hidden", [(144, 272), (131, 270)], ids=["whole-vectors", "partial-panels"])
def test_cpu_cell_backward_products(dtype, kind, input_size, hidden):
    """A thin cell's backward products on the CPU are ours (csrc/cpu/recurrent.cpp): dW_ih, dW_hh and the
    bias gradient on thin_depth_gemm for any size (131 inputs, 270 units: a partial last panel, copied), dh
    and dx on panel_gemm where W's rows are whole vectors (144 inputs, 272 units; BLAS's otherwise). A batch
    of 13 (balanced row tiles of dh and dx; the gate rows split unevenly over 3 threads); as torch in
    compare_modules, and bit-identical on 1 and 3 threads, gradients included."""
    ref, dl = module_pair(kind, input_size, hidden)
    gen = make_generator(31)
    x, h = randn(13, input_size, gen=gen), randn(13, hidden, gen=gen)
    hx = (h, randn(*h.shape, gen=gen)) if kind == "LSTMCell" else h
    compare_modules(ref, dl, x, hx, dtype=dtype)
    dl = dl.to(dtype)
    states = list(hx) if isinstance(hx, tuple) else [hx]
    leaves = [t.to(dtype).requires_grad_(True) for t in [x] + states]
    weights = [randn(13, hidden, gen=gen, dtype=dtype) for _ in states]
    results = []
    for threads in (1, 3):
        with num_threads(threads):
            out = flat_outputs(dl(leaves[0], tuple(leaves[1:]) if kind == "LSTMCell" else leaves[1]))
            loss = sum((o * w).sum() for o, w in zip(out, weights))
            results.append(torch.autograd.grad(loss, leaves + list(dl.parameters())))
    names = ["input"] + [f"hx[{i}]" for i in range(len(states))] + [n for n, _ in dl.named_parameters()]
    whole = input_size % 16 == 0 and hidden % 16 == 0
    for name, a, b in zip(names, *results):
        if whole or name.startswith(("weight", "bias")) or name == "hx[1]":
            assert torch.equal(a, b), f"the gradient of {name} depends on the number of threads"


@pytest.mark.parametrize("kind,kwargs,packed", [("RNN", {}, False), ("LSTM", {}, False),
                                                ("LSTM", {"proj_size": 7}, False), ("LSTM", {}, True)],
                         ids=["RNN", "LSTM", "LSTM-proj_size", "LSTM-packed"])
def test_cpu_input_projection(kind, kwargs, packed):
    """A float32 sequence of 128 rows or more takes its input projection X·W_ihᵀ on the CPU's own product
    (csrc/cpu/recurrent.cpp, input_projection_pass): 9 steps of 17 (153 rows, split unevenly over 3
    threads), 300 inputs (K longer than one chunk, not a multiple of the vector width), 23 units (a partial
    last panel of gate rows), packed sequences too. As torch, gradients included, and the outputs
    bit-identical on 1 and 3 threads."""
    ref, dl = module_pair(kind, 300, 23, **kwargs)
    x = randn(9, 17, 300, gen=make_generator(33))
    lengths = torch.tensor([9] * 10 + [8, 8, 7, 7, 7, 5, 1])  # 144 rows
    pack = (lambda t: pack_padded_sequence(t, lengths, enforce_sorted=False)) if packed else None
    results = []
    for threads in (1, 3):
        with num_threads(threads):
            y_dl, _ = compare_modules(ref, dl, x, dtype=torch.float32, pack=pack)
        results.append(y_dl)
    for a, b in zip(*results):
        assert torch.equal(a, b), "the input projection depends on the number of threads"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind,hidden,kwargs", [("RNN", 16, {}), ("LSTM", 16, {}), ("LSTM", 20, {"proj_size": 16})],
                         ids=["RNN", "LSTM", "LSTM-proj_size"])
def test_cpu_packed_step_products(dtype, kind, hidden, kwargs):
    """A packed or projected sequence runs step by step through the driver; on the CPU each step's
    dh = dZ·W_hh, a thin batch whose rows shrink as sequences end, is panel_gemm's where the state is whole
    vectors (16 here, or 20 units projected to 16); as torch, gradients included."""
    ref, dl = module_pair(kind, 5, hidden, **kwargs)
    x = randn(5, 4, 5, gen=make_generator(32))
    lengths = torch.tensor([5, 3, 3, 1])
    compare_modules(ref, dl, x, dtype=dtype, pack=lambda t: pack_padded_sequence(t, lengths, enforce_sorted=False))


# --------------------------------------------------------------------------------------
# Whole sequences: every option of torch.nn.RNN and torch.nn.LSTM
# --------------------------------------------------------------------------------------

MODES = [("RNN", {"nonlinearity": "tanh"}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}),
         ("LSTM", {"proj_size": 3})]
OPTION_GRID = [
    pytest.param(kind, dict(kw, num_layers=layers, bidirectional=bidir, bias=bias, batch_first=bf), with_state,
                 id=f"{kind}-{kw}-layers={layers}-bidirectional={bidir}-bias={bias}-batch_first={bf}"
                    f"-state={with_state}")
    for (kind, kw), layers, bidir, bias, bf, with_state in itertools.product(
        MODES, [1, 2], [False, True], [True, False], [False, True], [False, True])
    if not (bf and not bias)  # batch_first is independent of the rest: half of the grid is enough for it
]


def initial_state(kind, kwargs, batch, gen, hidden=6, unbatched=False):
    directions = 2 if kwargs.get("bidirectional") else 1
    layers = kwargs.get("num_layers", 1) * directions
    lead = (layers,) if unbatched else (layers, batch)
    state = kwargs.get("proj_size", 0) or hidden
    if kind == "LSTM":
        return randn(*lead, state, gen=gen), randn(*lead, hidden, gen=gen)
    return randn(*lead, hidden, gen=gen)


# float64 and float32 on the CPU; float64 on CUDA, where these small padded sequences take the
# persistent kernels (the projected LSTM the per-step ones).
OPTION_DEVICE_DTYPES = [p for p in DEVICE_DTYPES if p.values[0] == "cpu" or p.values[1] == torch.float64]


@pytest.mark.parametrize("device,dtype", OPTION_DEVICE_DTYPES)
@pytest.mark.parametrize("kind,kwargs,with_state", OPTION_GRID)
def test_options(device, dtype, kind, kwargs, with_state):
    ref, dl = module_pair(kind, 4, 6, **kwargs)
    gen = make_generator(11)
    T, B = 5, 3
    x = randn(B, T, 4, gen=gen) if kwargs["batch_first"] else randn(T, B, 4, gen=gen)
    hx = initial_state(kind, kwargs, B, gen) if with_state else None
    compare_modules(ref, dl, x, hx, dtype=dtype, device=device)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kind,kwargs", [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("LSTMCell", {}),
                                         ("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {})], ids=str)
def test_nan_propagates(device, dtype, kind, kwargs):
    """A NaN in the input reaches the same outputs and gradients as torch's (the CPU's float32 exp and the
    ReLU's select once turned it into a number), the rest of the batch keeping its values."""
    ref, dl = module_pair(kind, 4, 6, **kwargs)
    ref_dtype = reference_dtype(dtype)
    dl, ref = dl.to(device=device, dtype=dtype), ref.to(device=device, dtype=ref_dtype)
    x = randn(*([2, 4] if "Cell" in kind else [3, 2, 4]), gen=make_generator(35))
    x.view(-1)[1] = float("nan")
    results = []
    for module, t in ((dl, dtype), (ref, ref_dtype)):
        xs = x.to(device=device, dtype=t).requires_grad_()
        out = flat_outputs(module(xs))
        (out[0] * torch.arange(out[0].numel(), device=device).view(out[0].shape)).nan_to_num(0.0).sum().backward()
        results.append([o.detach().to(ref_dtype) for o in out] + [xs.grad.to(ref_dtype)])
    assert torch.isnan(results[1][0]).any() and not torch.isnan(results[1][0]).all()
    for i, (a, b) in enumerate(zip(*results)):  # outputs, then the input's gradient (NaN-free through a ReLU)
        assert torch.equal(torch.isnan(a), torch.isnan(b)), f"NaN pattern of result {i}"
        torch.testing.assert_close(a, b, rtol=REL_TOL[dtype], atol=REL_TOL[dtype] * 10, equal_nan=True)


@pytest.mark.parametrize("kind,kwargs,used", [
    ("RNN", {}, "output"), ("RNN", {}, "h_n"),
    ("LSTM", {}, "output"), ("LSTM", {}, "h_n"), ("LSTM", {}, "c_n"),
    ("LSTM", {"proj_size": 3}, "h_n"), ("LSTM", {"proj_size": 3}, "c_n")], ids=str)
def test_one_output_used(kind, kwargs, used):
    """Only the output, only h_n or only c_n reaches the loss, through two bidirectional layers: the
    others' gradients reach the layers' backward undefined (the autograd materialises no zeros),
    and the gradients are torch's."""
    ref, dl = module_pair(kind, 4, 6, num_layers=2, bidirectional=True, **kwargs)
    gen = make_generator(33)
    x = randn(5, 3, 4, gen=gen)
    hx = initial_state(kind, dict(kwargs, num_layers=2, bidirectional=True), 3, gen)
    grads = []
    for module in (ref, dl):
        xs = x.clone().requires_grad_()
        states = tuple(h.clone().requires_grad_() for h in (hx if kind == "LSTM" else (hx,)))
        output, final = module(xs, states if kind == "LSTM" else states[0])
        finals = final if kind == "LSTM" else (final,)
        chosen = {"output": output, "h_n": finals[0], "c_n": finals[-1]}[used]
        chosen.sin().sum().backward()
        grads.append([xs.grad, *(h.grad for h in states), *(p.grad for p in module.parameters())])
    for a, b in zip(*grads):
        assert_close_rel(b, a, REL_TOL[torch.float64], f"gradient with only {used} used")


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kind,kwargs", [("RNN", {"num_layers": 2, "bidirectional": True}),
                                         ("LSTM", {"num_layers": 2, "bidirectional": True}),
                                         ("LSTM", {"proj_size": 4, "batch_first": True})], ids=str)
def test_devices(device, dtype, kind, kwargs):
    """Every device and dtype (float16 and bfloat16 on CUDA, against torch in float32)."""
    ref, dl = module_pair(kind, 8, 16, **kwargs)
    gen = make_generator(12)
    x = randn(3, 7, 8, gen=gen) if kwargs.get("batch_first") else randn(7, 3, 8, gen=gen)
    compare_modules(ref, dl, x, initial_state(kind, kwargs, 3, gen, hidden=16), dtype=dtype, device=device)


CUDA_PATHS = [
    # (kind, hidden, batch, packed): which CUDA recurrence runs (float32 on a 132-SM H100/H200;
    # other dtypes and devices fit these sizes differently, and every size is right on every path)
    pytest.param("LSTM", 16, 4, False, id="LSTM-persistent"),
    pytest.param("RNN", 16, 4, False, id="RNN-persistent"),
    # 265 hidden units: several units per block and a padded last block on 114-132 SMs
    pytest.param("LSTM", 265, 4, False, id="LSTM-persistent-several-units-per-block"),
    pytest.param("RNN", 265, 4, False, id="RNN-persistent-several-units-per-block"),
    # more batch rows than shared memory holds at once: the staged operand comes in tiles
    # (batch ≤ 32, above which the per-step path runs)
    pytest.param("LSTM", 1024, 32, False, id="LSTM-persistent-batch-tiles"),
    pytest.param("RNN", 2048, 32, False, id="RNN-persistent-batch-tiles"),
    pytest.param("LSTM", 16, 4, True, id="LSTM-packed-per-step"),
    pytest.param("RNN", 16, 4, True, id="RNN-packed-per-step"),
    pytest.param("LSTM", 16, 40, False, id="LSTM-large-batch-per-step"),
    pytest.param("LSTM", 2048, 4, False, id="LSTM-too-large-for-shared-memory-per-step"),
    pytest.param("RNN", 4096, 4, False, id="RNN-too-large-for-shared-memory-per-step"),
]


@pytest.mark.parametrize("device,dtype", [p for p in DEVICE_DTYPES if p.values[0] == "cuda"])
@pytest.mark.parametrize("kind,hidden,batch,packed", CUDA_PATHS)
def test_cuda_paths(device, dtype, kind, hidden, batch, packed):
    """The CUDA recurrence's paths: the persistent kernels (a padded sequence whose W_hh fits in
    shared memory), and the per-step kernels (packed sequences; weights too large), both directions."""
    ref, dl = module_pair(kind, 8, hidden, bidirectional=True)
    gen = make_generator(21)
    x = randn(5, batch, 8, gen=gen)
    pack = None
    if packed:
        lengths = torch.tensor([5, 3, 3, 1])
        pack = lambda t: pack_padded_sequence(t, lengths)  # noqa: E731
    compare_modules(ref, dl, x, initial_state(kind, {"bidirectional": True}, batch, gen, hidden=hidden), dtype=dtype,
                    device=device, pack=pack)


FUSED_CELL_SIZES = [
    # (input, hidden, batch): fused_cell_kernel's cases (DLUNITS_CUDA_FUSED_CELL=1), float32 sizes
    pytest.param(256, 256, 16, id="issue-size"),
    pytest.param(5, 7, 13, id="odd-hidden-partial-warp-group"),
    pytest.param(300, 301, 32, id="batch-tiles"),  # x and h0 of 32 rows exceed 48 KiB: tiles of rows
    pytest.param(7000, 6, 3, id="one-row-tiles"),  # float32; float64 falls back, half has 3-row tiles
    pytest.param(8, 16, 33, id="batch-above-limit-cublas"),
    pytest.param(26000, 4, 2, id="too-large-for-shared-memory-cublas"),  # one row over 48 KiB in half too
]


@pytest.mark.parametrize("device,dtype", [p for p in DEVICE_DTYPES if p.values[0] == "cuda"])
@pytest.mark.parametrize("kind,kwargs", [("LSTMCell", {}), ("RNNCell", {"nonlinearity": "relu", "bias": False}),
                                         ("RNNCell", {})], ids=str)
@pytest.mark.parametrize("input_size,hidden,batch", FUSED_CELL_SIZES)
def test_cuda_fused_cell(device, dtype, kind, kwargs, input_size, hidden, batch, monkeypatch):
    """The opt-in one-launch cell (DLUNITS_CUDA_FUSED_CELL=1, read at each call): forward and every
    gradient as torch's, at sizes that reach its batch tiles, its partial blocks and its fallbacks."""
    monkeypatch.setenv("DLUNITS_CUDA_FUSED_CELL", "1")
    ref, dl = module_pair(kind, input_size, hidden, **kwargs)
    gen = make_generator(33)
    x = randn(batch, input_size, gen=gen)
    hx = randn(batch, hidden, gen=gen)
    compare_modules(ref, dl, x, (hx, randn(batch, hidden, gen=gen)) if kind == "LSTMCell" else hx, dtype=dtype,
                    device=device)


@pytest.mark.parametrize("kind,kwargs", [("RNN", {"num_layers": 2}), ("LSTM", {"bidirectional": True}),
                                         ("LSTM", {"proj_size": 2, "batch_first": True})], ids=str)
@pytest.mark.parametrize("with_state", [True, False])
def test_unbatched(kind, kwargs, with_state):
    ref, dl = module_pair(kind, 4, 5, **kwargs)
    gen = make_generator(13)
    hx = initial_state(kind, kwargs, None, gen, hidden=5, unbatched=True) if with_state else None
    y, _ = compare_modules(ref, dl, randn(6, 4, gen=gen), hx)
    assert y[0].shape[0] == 6 and y[1].dim() == 2


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kind,kwargs", [("RNN", {"num_layers": 2, "bidirectional": True}),
                                         ("LSTM", {"num_layers": 2}),
                                         ("LSTM", {"proj_size": 2, "bidirectional": True, "batch_first": True}),
                                         ("RNNCell", {}), ("LSTMCell", {})], ids=str)
@pytest.mark.parametrize("with_state", [True, False])
def test_empty_batch(device, dtype, kind, kwargs, with_state):
    """A batch of no sequences (torch.nn takes it): outputs and states of the right empty shapes,
    and gradients of every parameter, all zero, as torch's."""
    ref, dl = module_pair(kind, 4, 5, **kwargs)
    gen = make_generator(14)
    if kind.endswith("Cell"):
        x = randn(0, 4, gen=gen)
        hx = (randn(0, 5, gen=gen), randn(0, 5, gen=gen)) if kind == "LSTMCell" else randn(0, 5, gen=gen)
    else:
        x = randn(0, 6, 4, gen=gen) if kwargs.get("batch_first") else randn(6, 0, 4, gen=gen)
        hx = initial_state(kind, kwargs, 0, gen, hidden=5)
    y_dl, y_ref = compare_modules(ref, dl, x, hx if with_state else None, dtype=dtype, device=device)
    assert [t.shape for t in y_dl] == [t.shape for t in y_ref] and all(t.numel() == 0 for t in y_dl)


@pytest.mark.parametrize("kind,kwargs", [("RNN", {}), ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
                                         ("LSTM", {}), ("LSTM", {"num_layers": 2, "bidirectional": True}),
                                         ("LSTM", {"proj_size": 3, "bidirectional": True, "batch_first": True}),
                                         ("RNN", {"bidirectional": True, "bias": False})], ids=str)
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_packed(kind, kwargs, enforce_sorted, with_state, dtype):
    """PackedSequence of unequal lengths in and out: output data, h_n and c_n per sequence (at each
    one's own last step), every gradient; unsorted lengths go through sorted_indices."""
    ref, dl = module_pair(kind, 4, 6, **kwargs)
    gen = make_generator(14)
    lengths = [7, 7, 4, 2, 1] if enforce_sorted else [2, 7, 1, 5, 7]
    B, T = len(lengths), max(lengths)
    batch_first = kwargs.get("batch_first", False)
    x = randn(B, T, 4, gen=gen) if batch_first else randn(T, B, 4, gen=gen)
    hx = initial_state(kind, kwargs, B, gen) if with_state else None

    def pack(t):
        return pack_padded_sequence(t, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=enforce_sorted)

    compare_modules(ref, dl, x, hx, pack=pack, dtype=dtype)
    out, _ = dl(pack(x.to(dtype)))
    _, out_lengths = pad_packed_sequence(out, batch_first=batch_first)
    assert out_lengths.tolist() == lengths


def test_packed_matches_separate_sequences():
    """Packing is only bookkeeping: each sequence of a packed batch gets what it gets alone."""
    _, dl = module_pair("LSTM", 3, 5, bidirectional=True)
    gen = make_generator(15)
    seqs = [randn(n, 3, gen=gen) for n in (6, 3, 1)]
    packed = torch.nn.utils.rnn.pack_sequence(seqs)
    out, (h, c) = dl(packed)
    padded, _ = pad_packed_sequence(out)
    for b, s in enumerate(seqs):
        alone, (h1, c1) = dl(s.unsqueeze(1))
        assert_close_rel(padded[: len(s), b], alone[:, 0], 1e-12, f"sequence {b}")
        assert_close_rel(h[:, b], h1[:, 0], 1e-12, f"h_n of sequence {b}")
        assert_close_rel(c[:, b], c1[:, 0], 1e-12, f"c_n of sequence {b}")


# --------------------------------------------------------------------------------------
# Dropout between layers, drop-in behaviour
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_dropout_one_zeroes_between_layers(kind):
    """dropout=1 in training zeroes the second layer's input, in torch and in dlunits: a deterministic
    comparison of the dropout path."""
    ref, dl = module_pair(kind, 4, 5, num_layers=3, dropout=1.0)
    ref.train(), dl.train()
    gen = make_generator(16)
    compare_modules(ref, dl, randn(4, 2, 4, gen=gen))


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_dropout_training_and_eval(kind):
    _, dl = module_pair(kind, 4, 8, num_layers=2, dropout=0.5)
    x = randn(5, 3, 4, gen=make_generator(17))
    dl.eval()
    y_eval = dl(x)[0]
    assert torch.equal(y_eval, dl(x)[0])
    dl.train()
    torch.manual_seed(1)
    y1 = dl(x)[0]
    torch.manual_seed(1)
    y2 = dl(x)[0]
    torch.manual_seed(2)
    y3 = dl(x)[0]
    assert torch.equal(y1, y2), "the same seed gives the same mask"
    assert not torch.allclose(y1, y_eval) and not torch.allclose(y1, y3), "training draws a mask"
    # The last layer's input has about half its elements zeroed: check the mask rate directly.
    keep = torch.empty(100000, dtype=torch.float64)
    rate = (D._dropout_mask(keep.fill_(1.0), 0.5) == 0).double().mean().item()
    assert abs(rate - 0.5) < 0.01


def test_state_dict_and_convert():
    """torch's weights load unchanged; convert swaps every recurrent layer and keeps the weights."""
    model = torch.nn.ModuleDict({"rnn": torch.nn.RNN(3, 4, num_layers=2, bidirectional=True),
                                 "lstm": torch.nn.LSTM(4, 6, proj_size=2, bias=False),
                                 "rnn_cell": torch.nn.RNNCell(3, 4, nonlinearity="relu"),
                                 "lstm_cell": torch.nn.LSTMCell(3, 4)})
    converted = dlunits.nn.convert(model)
    for name, module in converted.items():
        twin = dlunits.nn.TWINS[type(model[name])]
        assert type(module) is twin and type(model[name]) is not twin
    assert list(converted.state_dict()) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(converted.state_dict()[k], v)
    assert "weight_hr_l0" in converted["lstm"].state_dict() and "bias_ih_l1_reverse" in converted["rnn"].state_dict()
    fresh = dlunits.nn.LSTM(4, 6, proj_size=2, bias=False)
    fresh.load_state_dict(model["lstm"].state_dict())  # strict: the same keys
    fresh.flatten_parameters()
    assert repr(fresh) == repr(model["lstm"])
    x = torch.randn(5, 2, 4)
    assert torch.allclose(fresh(x)[0], model["lstm"](x)[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "RNN", "LSTM"])
def test_functorch(kind):
    """vmap of a forward runs (torch's fallback: one call per sample) and matches the loop; torch.func.grad
    refuses the units' C++ autograd nodes with torch's error rather than answering wrongly."""
    _, dl = module_pair(kind, 3, 4)
    xs = randn(*([5, 2, 3] if "Cell" in kind else [5, 4, 2, 3]), gen=make_generator(20))

    def first(x):
        out = dl(x)
        return out if torch.is_tensor(out) else out[0]

    assert_close_rel(torch.func.vmap(first)(xs), torch.stack([first(x) for x in xs]), 1e-12, "vmap")
    with pytest.raises(RuntimeError, match=r"cannot use C\+\+ torch::autograd::Function with functorch transforms"):
        torch.func.grad(lambda x: first(x).sum())(xs[0])


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "RNN", "LSTM"])
def test_double_backward_raises(kind):
    """The units' autograd is C++ (csrc/recurrent_autograd.cpp); under create_graph their backward ops run
    through autograd, whose Python registration refuses."""
    _, dl = module_pair(kind, 3, 4)
    x = randn(*([2, 3] if "Cell" in kind else [4, 2, 3]), gen=make_generator(18), requires_grad=True)
    out = dl(x)
    (g,) = torch.autograd.grad((out if torch.is_tensor(out) else out[0]).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward through the recurrent units is not implemented"):
        g.sum().backward()


def test_compile_lstm():
    """torch.compile(fullgraph=True): no graph break through the fake kernels and autograd.

    Dynamo refuses to trace any instance of torch.nn.RNN / GRU / LSTM (subclasses included, so
    dlunits.nn.LSTM, which is one) unless torch._dynamo.config.allow_rnn is set: the module is compiled
    with that flag; the same recurrence through dlunits.functional.recurrent_layers needs no flag."""
    _, dl = module_pair("LSTM", 4, 6, num_layers=2, bidirectional=True, batch_first=True)
    x = randn(3, 5, 4, gen=make_generator(19), requires_grad=True)
    params = list(dl.parameters())
    weights = dl._layer_weights()

    def loss_of(out, h, c):
        return out.square().sum() + h.sum() + c.sum()

    def module_loss(x):
        out, (h, c) = dl(x)
        return loss_of(out, h, c)

    def functional_loss(x):
        rows = x.transpose(0, 1).reshape(-1, 4)
        h0 = torch.zeros(4, 3, 6, dtype=x.dtype)
        out, h, c = D.recurrent_layers("LSTM", rows, [3] * 5, h0, h0, weights, 2, True)
        return loss_of(out, h, c)

    def grads(loss):  # the compiled forward's backward graph (aot_eager) runs here
        return torch.autograd.grad(loss, [x] + params)

    expected = grads(module_loss(x))
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = grads(torch.compile(module_loss, fullgraph=True, backend="aot_eager")(x))
    for a, b in zip(compiled, expected):
        assert_close_rel(a, b, 1e-12, "compiled module gradient")
    torch._dynamo.reset()
    compiled = grads(torch.compile(functional_loss, fullgraph=True, backend="aot_eager")(x))
    for a, b in zip(compiled, expected):
        assert_close_rel(a, b, 1e-12, "compiled functional gradient")
    torch._dynamo.reset()
    with torch.no_grad():  # the layers keep nothing for a backward (save=False), traced through the fake kernel
        assert_close_rel(torch.compile(functional_loss, fullgraph=True, backend="aot_eager")(x),
                         functional_loss(x), 1e-12, "compiled functional under no_grad")


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell"])
def test_compile_cell_loop(kind):
    """torch.compile(fullgraph=True) of a loop over a cell: the cells' C++ autograd traces through
    their fake kernels, forward and backward, and gives eager's gradients."""
    _, dl = module_pair(kind, 4, 6)
    gen = make_generator(20)
    x, h0 = randn(5, 3, 4, gen=gen, requires_grad=True), randn(3, 6, gen=gen, requires_grad=True)
    params = list(dl.parameters())

    def loss(x, h0):
        state = h0 if kind == "RNNCell" else (h0, h0.cos())
        total = 0
        for t in range(x.size(0)):
            state = dl(x[t], state)
            h = state if kind == "RNNCell" else state[0] * state[1]
            total = total + h.square().sum()
        return total

    expected = torch.autograd.grad(loss(x, h0), [x, h0] + params)
    torch._dynamo.reset()
    compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True, backend="aot_eager")(x, h0), [x, h0] + params)
    for a, b in zip(compiled, expected):
        assert_close_rel(a, b, 1e-12, "compiled cell-loop gradient")


def _state_for(kind, batch, size, gen):
    """An initial state of a cell or a one-layer, one-direction sequence (a tuple for the LSTMs)."""
    shape = (batch, size) if "Cell" in kind else (1, batch, size)
    h = randn(*shape, gen=gen, requires_grad=True)
    return (h, randn(*shape, gen=gen, requires_grad=True)) if "LSTM" in kind else h


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "RNN", "LSTM"])
def test_compile_dynamic_shapes(kind):
    """torch.compile over a changing batch (and sequence length): the second shape compiles one graph with
    symbolic sizes and every later shape reuses it, as for torch.nn. The fake kernels' checks record how
    the batch of the input, the states and the gradients relate instead of fixing it, and a padded
    sequence's layer op names no size (batch_sizes = []). Each shape's outputs and gradients match torch.nn
    in float64."""
    ref, dl = module_pair(kind, 4, 6)
    gen = make_generator(21)

    def loss(module, x, state):
        return sum((t * t.cos()).sum() for t in flat_outputs(module(x, state)))

    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(functools.partial(loss, dl), fullgraph=True, backend=counter)
        for steps, batch in [(3, 2), (5, 3), (2, 7), (6, 4)]:
            x = randn(*([batch, 4] if "Cell" in kind else [steps, batch, 4]), gen=gen, requires_grad=True)
            state = _state_for(kind, batch, 6, gen)
            states = list(state) if isinstance(state, tuple) else [state]
            got = torch.autograd.grad(compiled(x, state), [x, *states, *dl.parameters()])
            expected = torch.autograd.grad(loss(ref, x, state), [x, *states, *ref.parameters()])
            for i, (a, b) in enumerate(zip(got, expected)):
                assert_close_rel(a, b, 1e-12, f"compiled gradient {i} at {steps} steps, batch {batch}")
    assert counter.frame_count == 2, f"expected one static and one dynamic graph, got {counter.frame_count} graphs"


@pytest.mark.parametrize("kind,kwargs", [
    ("RNNCell", dict(nonlinearity="relu")), ("LSTMCell", {}),
    ("RNN", dict(num_layers=2, batch_first=True)),
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=3)),
])
def test_export_dynamic_shapes(kind, kwargs):
    """torch.export with a dynamic batch (and sequence length): one exported program runs other shapes
    and gives torch.nn's outputs and final states in float64."""
    ref, dl = module_pair(kind, 4, 6, **kwargs)
    gen = make_generator(22)
    cell = "Cell" in kind
    batch_dim = 0 if cell or kwargs.get("batch_first") else 1
    batch, steps = torch.export.Dim("batch", min=2), torch.export.Dim("steps", min=2)

    def example(n_steps, n_batch):
        shape = [n_steps, n_steps]
        shape[batch_dim] = n_batch
        return randn(*([n_batch, 4] if cell else shape + [4]), gen=gen)

    dynamic = {batch_dim: batch} if cell else {batch_dim: batch, 1 - batch_dim: steps}
    program = torch.export.export(dl, (example(3, 2),), dynamic_shapes=(dynamic,))
    for n_steps, n_batch in [(5, 3), (2, 9)]:
        x = example(n_steps, n_batch)
        got, expected = flat_outputs(program.module()(x)), flat_outputs(ref(x))
        assert len(got) == len(expected)
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_close_rel(a, b, 1e-12, f"exported output {i} at {n_steps} steps, batch {n_batch}")


class _Tagger(torch.nn.Module):
    """A sequence model as users write it: an LSTM and a Linear over its every output."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 6, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def test_export_converted_model():
    """dlunits.nn.convert, then torch.export with a dynamic batch and length: the program runs other shapes
    and gives the torch.nn model's output in float64."""
    torch.manual_seed(0)
    ref = _Tagger().double()
    model = dlunits.nn.convert(ref)
    assert isinstance(model.lstm, dlunits.nn.LSTM) and isinstance(model.head, dlunits.nn.Linear)
    gen = make_generator(24)
    dynamic = {0: torch.export.Dim("batch", min=2), 1: torch.export.Dim("steps", min=2)}
    program = torch.export.export(model, (randn(3, 5, 4, gen=gen),), dynamic_shapes=(dynamic,))
    for batch, steps in [(2, 9), (7, 3)]:
        x = randn(batch, steps, 4, gen=gen)
        assert_close_rel(program.module()(x), ref(x), 1e-12, f"exported output at batch {batch}, {steps} steps")


@pytest.mark.parametrize("kind,kwargs", [("RNNCell", {}), ("LSTMCell", {}), ("RNN", dict(num_layers=2)),
                                         ("LSTM", dict(num_layers=2, bidirectional=True))])
def test_jit_trace(kind, kwargs):
    """torch.jit.trace passes its own check (the graph does not depend on the grad mode it is traced in) and
    the traced module runs other batches and lengths with torch.nn's outputs and gradients in float64."""
    ref, dl = module_pair(kind, 4, 6, **kwargs)
    gen = make_generator(25)
    cell = "Cell" in kind

    def example(steps, batch):
        return randn(*([batch, 4] if cell else [steps, batch, 4]), gen=gen, requires_grad=True)

    with pytest.warns(Warning):  # torch's deprecation of jit.trace; torch.nn's own checks warn too
        traced = torch.jit.trace(dl, (example(3, 2),))
    for steps, batch in [(5, 3), (2, 7)]:
        x = example(steps, batch)
        got, expected = flat_outputs(traced(x)), flat_outputs(ref(x))
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_close_rel(a, b, 1e-12, f"traced output {i} at {steps} steps, batch {batch}")
        loss = lambda outs: sum((t * t.cos()).sum() for t in outs)  # noqa: E731
        g_got = torch.autograd.grad(loss(got), [x, *dl.parameters()])
        g_expected = torch.autograd.grad(loss(expected), [x, *ref.parameters()])
        for i, (a, b) in enumerate(zip(g_got, g_expected)):
            assert_close_rel(a, b, 1e-12, f"traced gradient {i} at {steps} steps, batch {batch}")


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_layer_padded_batch_sizes(kind):
    """A layer op's batch_sizes = [] (a padded sequence, T = N / B) is batch_sizes = [B] * T, bit for bit,
    forward and backward."""
    gen = make_generator(23)
    steps, batch, gates = 4, 3, 4 if kind == "lstm" else 1
    x = randn(steps * batch, 5, gen=gen, requires_grad=True)
    states = [randn(batch, 6, gen=gen, requires_grad=True) for _ in range(2 if kind == "lstm" else 1)]
    weights = [randn(gates * 6, 5, gen=gen, requires_grad=True), randn(gates * 6, 6, gen=gen, requires_grad=True),
               randn(gates * 6, gen=gen, requires_grad=True), randn(gates * 6, gen=gen, requires_grad=True)]

    def run(batch_sizes):
        if kind == "lstm":
            out, h, c, _, _ = ops.lstm_layer(x, *states, *weights, None, batch_sizes, False)
            outs = [out, h, c]
        else:
            outs = list(ops.rnn_layer(x, *states, *weights, batch_sizes, False, "tanh"))
        loss = sum((t * t.sin()).sum() for t in outs)
        return outs + list(torch.autograd.grad(loss, [x, *states, *weights]))

    for a, b in zip(run([]), run([batch] * steps)):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------
# gradcheck and opcheck on every op
# --------------------------------------------------------------------------------------


def _g(*shape, seed, scale=1.0):
    return (randn(*shape, gen=make_generator(seed)) * scale).requires_grad_(True)


def op_cases():
    """(name, op, args) for every forward op, in float64, requiring grad where differentiable."""
    B, I, H, P = 3, 4, 5, 2
    bs_packed = [3, 3, 2, 1]
    N = sum(bs_packed)
    cases = []
    for act, bias in itertools.product(["tanh", "relu"], [True, False]):
        b = (_g(H, seed=5), _g(H, seed=6)) if bias else (None, None)
        cases.append((f"rnn_cell-{act}-bias={bias}", ops.rnn_cell,
                      (_g(B, I, seed=1), _g(B, H, seed=2), _g(H, I, seed=3, scale=0.5), _g(H, H, seed=4, scale=0.5),
                       *b, act)))
        for reverse in (False, True):
            cases.append((f"rnn_layer-{act}-bias={bias}-reverse={reverse}", ops.rnn_layer,
                          (_g(N, I, seed=7), _g(B, H, seed=8), _g(H, I, seed=9, scale=0.5),
                           _g(H, H, seed=10, scale=0.5), *b, bs_packed, reverse, act)))
    for bias in (True, False):
        b = (_g(4 * H, seed=15), _g(4 * H, seed=16)) if bias else (None, None)
        cases.append((f"lstm_cell-bias={bias}", ops.lstm_cell,
                      (_g(B, I, seed=11), _g(B, H, seed=12), _g(B, H, seed=13), _g(4 * H, I, seed=14, scale=0.5),
                       _g(4 * H, H, seed=17, scale=0.5), *b)))
        for reverse, proj in itertools.product((False, True), (False, True)):
            P_ = P if proj else H
            cases.append((f"lstm_layer-bias={bias}-reverse={reverse}-proj={proj}", ops.lstm_layer,
                          (_g(N, I, seed=18), _g(B, P_, seed=19), _g(B, H, seed=20), _g(4 * H, I, seed=21, scale=0.5),
                           _g(4 * H, P_, seed=22, scale=0.5), *b, _g(P, H, seed=23) if proj else None, bs_packed,
                           reverse)))
    return cases


OP_CASES = op_cases()


def _on(device, args):
    """args on device: tensors keep requires_grad, as leaves."""
    return tuple(a.detach().to(device).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in args)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,op,args", OP_CASES, ids=[c[0] for c in OP_CASES])
def test_gradcheck(name, op, args, device):
    def differentiable(*a):
        out = op(*a)
        return out[:3] if name.startswith("lstm_layer") else (out[:2] if name.startswith("lstm_cell") else out)

    assert torch.autograd.gradcheck(differentiable, _on(device, args), eps=1e-6, atol=1e-7)


def _detached(args):
    return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)


def _backward_call(name, op, args, device):
    """(backward op, its arguments) for the saved tensors op's backward would get, grads drawn at random."""
    args = _on(device, args)
    out = op(*args)
    gen = make_generator(30)
    draw = functools.partial(randn, gen=gen, device=device)
    a = _detached(args)
    if name.startswith("rnn_cell"):
        return ops.rnn_cell_backward, (draw(*out.shape), a[0], a[1], a[2], a[3], out.detach(), a[6], a[4] is not None)
    if name.startswith("lstm_cell"):
        hy, cy, gates, cells = (o.detach() for o in out)
        assert torch.equal(cells, cy)
        return ops.lstm_cell_backward, (draw(*hy.shape), draw(*cy.shape), a[0], a[1], a[2], a[3], a[4], cells, gates,
                                        a[5] is not None)
    if name.startswith("rnn_layer"):
        output, h_n = (o.detach() for o in out)
        return ops.rnn_layer_backward, (draw(*output.shape), draw(*h_n.shape), a[0], a[1], a[2], a[3], output, a[6],
                                        a[7], a[8], a[4] is not None)
    output, h_n, c_n, gates, cells = (o.detach() for o in out)
    return ops.lstm_layer_backward, (draw(*output.shape), draw(*h_n.shape), draw(*c_n.shape), a[0], a[1], a[2],
                                     a[3], a[4], a[7], output, gates, cells, a[8], a[9], a[5] is not None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,op,args", OP_CASES, ids=[c[0] for c in OP_CASES])
def test_opcheck(name, op, args, device):
    """opcheck the forward op, then its backward op on the saved tensors it would get."""
    torch.library.opcheck(op, _on(device, args))
    torch.library.opcheck(*_backward_call(name, op, args, device))


# The outputs of each backward op that output_mask governs: (the input's gradient, the weights' and biases').
MASKED_OUTPUTS = {"rnn_cell": ([0], [2, 3, 4]), "lstm_cell": ([0], [3, 4, 5]), "rnn_layer": ([0], [2, 3, 4]),
                  "lstm_layer": ([0], [3, 4, 5, 6])}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", [(False, True), (True, False), (False, False)], ids=str)
@pytest.mark.parametrize("name,op,args", OP_CASES, ids=[c[0] for c in OP_CASES])
def test_backward_output_mask(name, op, args, device, mask):
    """A backward op computes only the gradients its output_mask asks for: those are bit-identical to the
    full mask's, the others come back with no rows; opcheck'd with the mask (its fake kernel agrees)."""
    backward, call = _backward_call(name, op, args, device)
    full = backward(*call)
    masked = backward(*call, list(mask))
    governed = MASKED_OUTPUTS[name.split("-")[0]]
    for i, (a, b) in enumerate(zip(full, masked)):
        wanted = all(mask[group] for group in (0, 1) if i in governed[group])
        if wanted:
            assert torch.equal(a, b), f"output {i} differs under output_mask={mask}"
        else:
            assert b.shape[0] == 0 and b.shape[1:] == a.shape[1:], f"output {i}: {tuple(b.shape)} under {mask}"
    torch.library.opcheck(backward, (*call, list(mask)))


class _RecordMasks(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the output_mask of every recurrent backward op that runs (autograd calls them in C++)."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "dlunits" and "_backward" in func.__name__:
            schema_args = func._schema.arguments
            index = [a.name for a in schema_args].index("output_mask")
            self.masks.append(tuple(kwargs.get("output_mask", args[index] if index < len(args) else (True, True))))
        return func(*args, **kwargs)


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "RNN", "LSTM"])
@pytest.mark.parametrize("frozen", ["input", "weights"])
def test_gradients_only_where_wanted(kind, frozen):
    """An input that needs no gradient (data into the first layer, a cell loop's inputs) or frozen weights:
    autograd asks the backward op for the other gradients only (output_mask), and those are torch's."""
    ref, dl = module_pair(kind, 5, 7, **({} if kind.endswith("Cell") else {"num_layers": 2, "bias": False}))
    gen = make_generator(41)
    x = randn(3, 4, 5, gen=gen)
    results = []
    record = _RecordMasks()
    for module in (ref, dl):
        for p in module.parameters():
            p.requires_grad_(frozen != "weights")
        xs = x.clone().requires_grad_(frozen != "input")
        with record if module is dl else contextlib.nullcontext():
            if kind.endswith("Cell"):
                h = None
                outs = []
                for step in xs:
                    h = module(step, h)
                    outs.append(h[0] if isinstance(h, tuple) else h)
                out = torch.stack(outs)
            else:
                out = module(xs)[0]
            out.sin().sum().backward()
        wanted = [xs] if frozen != "input" else list(module.parameters())
        assert all(t.grad is not None for t in wanted)
        unwanted = [xs] if frozen == "input" else list(module.parameters())
        assert all(t.grad is None for t in unwanted)
        results.append([t.grad for t in wanted])
    for i, (a, b) in enumerate(zip(*results)):
        assert_close_rel(b, a, REL_TOL[torch.float64], f"gradient {i} with the {frozen} frozen")
    expected = (False, True) if frozen == "input" else (True, False)
    if kind.endswith("Cell"):
        assert record.masks == [expected] * len(x), record.masks
    else:  # the second layer's input is the first layer's output, which needs its gradient
        assert sorted(record.masks) == sorted([expected, (True, expected[1])]), record.masks


LSTM_LAYER_CASES = [c for c in OP_CASES if c[0].startswith("lstm_layer")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,op,args", LSTM_LAYER_CASES, ids=[c[0] for c in LSTM_LAYER_CASES])
def test_lstm_layer_without_save(name, op, args, device):
    """save=False (no backward follows): the same output, h_n and c_n, bit for bit, and gates and cells with
    no rows; opcheck'd (its fake kernel says so too)."""
    args = _detached(_on(device, args))
    saved = op(*args)
    unsaved = op(*args, False)
    for i, (a, b) in enumerate(zip(saved[:3], unsaved[:3])):
        assert torch.equal(a, b), f"output {i} differs without save"
    assert unsaved[3].shape == (0, saved[3].shape[1]) and unsaved[4].shape == (0, saved[4].shape[1])
    torch.library.opcheck(op, (*args, False))


class _RecordSave:
    """torch.ops.dlunits with lstm_layer's save argument recorded."""

    def __init__(self):
        self.saves = []

    def __getattr__(self, name):
        return getattr(ops, name)

    def lstm_layer(self, *args):
        self.saves.append(args[10])
        return ops.lstm_layer(*args)


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}, {"proj_size": 3}], ids=str)
@pytest.mark.parametrize("packed", [False, True])
def test_lstm_no_grad_and_frozen_layer(kwargs, packed, monkeypatch):
    """Under no_grad every layer runs without saving (lstm_layer's save=False), with torch's results; with
    the first layer frozen and an input that needs no gradient, the first layer saves nothing and the
    second layer's gradients are still torch's."""
    ref, dl = module_pair("LSTM", 4, 6, **kwargs)
    gen = make_generator(34)
    x = randn(5, 3, 4, gen=gen)
    wrap = (lambda t: pack_padded_sequence(t, [5, 4, 2])) if packed else (lambda t: t)
    record = _RecordSave()
    monkeypatch.setattr(D, "_ops", record)
    with torch.no_grad():
        for i, (a, b) in enumerate(zip(flat_outputs(dl(wrap(x))), flat_outputs(ref(wrap(x))))):
            assert_close_rel(a, b, REL_TOL[torch.float64], f"no_grad output {i}")
    assert record.saves and not any(record.saves)
    if kwargs.get("num_layers", 1) < 2:
        return
    record.saves.clear()
    grads = []
    for module in (ref, dl):
        for name, p in module.named_parameters():
            p.requires_grad_(not name.endswith("_l0") and not name.endswith("_l0_reverse"))
        out = flat_outputs(module(wrap(x)))
        (out[0].sin().sum() + out[1].sum()).backward()
        grads.append([p.grad for p in module.parameters() if p.requires_grad])
    assert record.saves == [False, False, True, True]  # layer 0 both directions, then layer 1
    assert len(grads[1]) == 4 * 2
    for a, b in zip(*grads):
        assert_close_rel(b, a, REL_TOL[torch.float64], "gradient with a frozen first layer")


# --------------------------------------------------------------------------------------
# Hypothesis: random configurations, padded and packed
# --------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["RNN_TANH", "RNN_RELU", "LSTM"]), input_size=st.integers(1, 6),
       hidden=st.integers(2, 8), layers=st.integers(1, 3), bidir=st.booleans(), bias=st.booleans(),
       batch_first=st.booleans(), proj=st.booleans(), with_state=st.booleans(),
       lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), packed=st.booleans(), seed=st.integers(0, 99))
@pytest.mark.parametrize("device", DEVICES)
def test_hypothesis(kind, input_size, hidden, layers, bidir, bias, batch_first, proj, with_state, lengths, packed,
                    seed, device):
    kwargs = dict(num_layers=layers, bidirectional=bidir, bias=bias, batch_first=batch_first)
    name = "LSTM" if kind == "LSTM" else "RNN"
    if kind != "LSTM":
        kwargs["nonlinearity"] = "relu" if kind == "RNN_RELU" else "tanh"
    elif proj:
        kwargs["proj_size"] = hidden - 1
    ref, dl = module_pair(name, input_size, hidden, **kwargs)
    gen = make_generator(seed)
    B, T = len(lengths), max(lengths)
    x = randn(B, T, input_size, gen=gen) if batch_first else randn(T, B, input_size, gen=gen)
    hx = initial_state(name, kwargs, B, gen, hidden=hidden) if with_state else None
    pack = None
    if packed:
        def pack(t):
            return pack_padded_sequence(t, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    compare_modules(ref, dl, x, hx, pack=pack, device=device)


# Sizes off the vector width, and whole vectors of it (8, 16 and 48 floats: the backward's dh and dx are ours there).
CELL_SIZES = st.one_of(st.integers(1, 40), st.sampled_from([8, 16, 48]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["RNNCell-tanh", "RNNCell-relu", "LSTMCell"]), input_size=CELL_SIZES,
       hidden=CELL_SIZES, batch=st.integers(1, 36), bias=st.booleans(), threads=st.sampled_from([1, 2]),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 99))
def test_cell_hypothesis(kind, input_size, hidden, batch, bias, threads, dtype, seed):
    """Cells of drawn sizes on the CPU: up to a batch of 16 in float64 (32 in float32) the cell's own
    products (forward, csrc/cpu/dot_gemm.h: batches and gate blocks below a whole tile, tiles overlapping
    at the edges, input and hidden sizes off the vector width; backward, panel_gemm's dh and dx where the
    sizes are whole vectors, thin_depth_gemm's weight gradients at any size), above it the driver's BLAS
    path."""
    name, _, nonlinearity = kind.partition("-")
    ref, dl = module_pair(name, input_size, hidden, bias=bias, **({"nonlinearity": nonlinearity} if nonlinearity else {}))
    gen = make_generator(seed)
    x, h = randn(batch, input_size, gen=gen), randn(batch, hidden, gen=gen)
    with num_threads(threads):
        compare_modules(ref, dl, x, (h, randn(batch, hidden, gen=gen)) if name == "LSTMCell" else h, dtype=dtype)


# --------------------------------------------------------------------------------------
# The seed's example: predict the next character of "hello"
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_hello_next_character(kind):
    """One-hot h, e, l, o (the seed's encoding); from "hell" the model learns to predict "ello":
    after h comes e, after e l, after the first l another l, after the second l o. A recurrent layer
    and a linear read-out y = W_y h_t + b_y, trained with Adam, reach 100% accuracy."""
    chars = "helo"
    onehot = torch.eye(4, dtype=torch.float64)
    x = onehot[[chars.index(c) for c in "hell"]].unsqueeze(1)  # (T=4, B=1, 4)
    target = torch.tensor([chars.index(c) for c in "ello"])
    torch.manual_seed(0)
    layer = getattr(dlunits.nn, kind)(4, 8, dtype=torch.float64)
    readout = torch.nn.Linear(8, 4, dtype=torch.float64)
    params = list(layer.parameters()) + list(readout.parameters())
    optimizer = torch.optim.Adam(params, lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        logits = readout(layer(x)[0][:, 0])
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        optimizer.step()
    predicted = readout(layer(x)[0][:, 0]).argmax(dim=1)
    assert "".join(chars[i] for i in predicted) == "ello"
    assert (predicted == target).double().mean().item() == 1.0
    assert loss.item() < 0.05


# --------------------------------------------------------------------------------------
# Bad input: torch-like errors
# --------------------------------------------------------------------------------------


def _both(kind, *args, **kwargs):
    torch.manual_seed(0)
    return getattr(torch.nn, kind)(*args, **kwargs), getattr(dlunits.nn, kind)(*args, **kwargs)


def _same_error(fn_ref, fn_dl, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn_ref()
    with pytest.raises(exc, match=pattern):
        fn_dl()


def _x(*shape):
    return torch.randn(*shape, generator=make_generator(len(shape)))


CELL_ERRORS = [
    ("input-size", lambda m: m(_x(3, 4)), RuntimeError, r"input has inconsistent input_size: got 4 expected 5"),
    ("hidden-size", lambda m: m(_x(3, 5), _x(3, 7)), RuntimeError,
     r"hidden0 has inconsistent hidden_size: got 7, expected 6"),
    ("batch-mismatch", lambda m: m(_x(3, 5), _x(2, 6)), RuntimeError,
     r"Input batch size 3 doesn't match hidden0 batch size 2"),
    ("input-3d", lambda m: m(_x(2, 3, 5)), ValueError, r"RNNCell: Expected input to be 1D or 2D, got 3D instead"),
]


@pytest.mark.parametrize("case", CELL_ERRORS, ids=[c[0] for c in CELL_ERRORS])
def test_cell_errors(case):
    _, call, exc, pattern = case
    ref, dl = _both("RNNCell", 5, 6)
    _same_error(lambda: call(ref), lambda: call(dl), exc, pattern)


LSTM_CELL_ERRORS = [
    ("cell-size", lambda m: m(_x(3, 5), (_x(3, 6), _x(3, 4))), RuntimeError,
     r"hidden1 has inconsistent hidden_size: got 4, expected 6"),
    ("cell-batch", lambda m: m(_x(3, 5), (_x(3, 6), _x(2, 6))), RuntimeError,
     r"Input batch size 3 doesn't match hidden1 batch size 2"),
    ("one-state", lambda m: m(_x(3, 5), (_x(3, 6),)), RuntimeError, r"lstm_cell expects two hidden states"),
    ("three-states", lambda m: m(_x(3, 5), (_x(3, 6), _x(3, 6), _x(3, 6))), RuntimeError,
     r"lstm_cell expects two hidden states"),
    ("state-not-a-tuple", lambda m: m(_x(3, 5), _x(3, 6)), TypeError,
     r"lstm_cell\(\): argument 'hx' \(position 2\) must be tuple of Tensors, not Tensor"),
]


@pytest.mark.parametrize("case", LSTM_CELL_ERRORS, ids=[c[0] for c in LSTM_CELL_ERRORS])
def test_lstm_cell_errors(case):
    _, call, exc, pattern = case
    ref, dl = _both("LSTMCell", 5, 6)
    _same_error(lambda: call(ref), lambda: call(dl), exc, pattern)


SEQUENCE_ERRORS = [
    ("input-size", lambda m: m(_x(4, 2, 3)), RuntimeError,
     r"input.size\(-1\) must be equal to input_size. Expected 5, got 3"),
    ("input-4d", lambda m: m(_x(4, 2, 3, 5)), ValueError, r"Expected input to be 2D or 3D, got 4D"),
    ("hidden-shape", lambda m: m(_x(4, 2, 5), _x(1, 2, 7)), RuntimeError,
     r"Expected hidden size \(1, 2, 6\), got \[1, 2, 7\]"),
    ("batch-mismatch", lambda m: m(_x(4, 2, 5), _x(1, 3, 6)), RuntimeError,
     r"Expected hidden size \(1, 2, 6\), got \[1, 3, 6\]"),
    ("hidden-2d-for-batched", lambda m: m(_x(4, 2, 5), _x(2, 6)), RuntimeError,
     r"For batched 3-D input, hx should also be 3-D but got 2-D tensor"),
]


@pytest.mark.parametrize("case", SEQUENCE_ERRORS, ids=[c[0] for c in SEQUENCE_ERRORS])
def test_rnn_errors(case):
    _, call, exc, pattern = case
    ref, dl = _both("RNN", 5, 6)
    _same_error(lambda: call(ref), lambda: call(dl), exc, pattern)


def test_lstm_errors():
    ref, dl = _both("LSTM", 5, 6)
    good = _x(1, 2, 6)
    _same_error(lambda: ref(_x(4, 2, 5), (good, _x(1, 3, 6))), lambda: dl(_x(4, 2, 5), (good, _x(1, 3, 6))),
                RuntimeError, r"Expected hidden\[1\] size \(1, 2, 6\), got \[1, 3, 6\]")
    _same_error(lambda: ref(_x(4, 2, 5), (_x(2, 6), good)), lambda: dl(_x(4, 2, 5), (_x(2, 6), good)),
                RuntimeError, r"hx and cx should also be 3-D but got \(2-D, 3-D\) tensors")
    _same_error(lambda: ref(_x(4, 2, 5).double()), lambda: dl(_x(4, 2, 5).double()), ValueError,
                r"RNN input dtype \(torch.float64\) does not match weight dtype \(torch.float32\)")


def test_lstm_hidden_state_count():
    ref, dl = _both("LSTM", 5, 6)
    three = (_x(1, 2, 6),) * 3
    _same_error(lambda: ref(_x(4, 2, 5), three), lambda: dl(_x(4, 2, 5), three), RuntimeError,
                r"lstm expects two hidden states")


# Where torch.nn's layers fail on a malformed hx with an IndexError or an AttributeError (or, for an
# LSTM given one tensor, a message about its slices' dimensions), dlunits says what hx must be.
@pytest.mark.parametrize("kind,hx,exc,pattern", [
    ("LSTM", lambda: _x(1, 2, 6), TypeError, r"LSTM: expected hx to be a tuple \(h_0, c_0\) of Tensors, but got Tensor"),
    ("LSTM", lambda: (_x(1, 2, 6), "c"), TypeError, r"LSTM: expected hx to be a tuple \(h_0, c_0\) of Tensors"),
    ("LSTM", lambda: (_x(1, 2, 6),), RuntimeError, r"lstm expects two hidden states, but got 1"),
    ("RNN", lambda: (_x(1, 2, 6),), TypeError, r"RNN: expected hx to be a Tensor \(h_0\), but got tuple"),
], ids=["lstm-tensor", "lstm-not-tensors", "lstm-one-state", "rnn-tuple"])
@pytest.mark.parametrize("packed", [False, True])
def test_hidden_state_type_errors(kind, hx, exc, pattern, packed):
    dl = getattr(dlunits.nn, kind)(5, 6)
    x = torch.nn.utils.rnn.pack_sequence([_x(4, 5), _x(3, 5)]) if packed else _x(4, 2, 5)
    with pytest.raises(exc, match=pattern):
        dl(x, hx())


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("kwargs,exc,pattern", [
    ({"num_layers": 0}, ValueError, r"num_layers must be greater than zero"),
    ({"dropout": 1.5}, ValueError, r"dropout should be a number in range \[0, 1\]"),
    ({"dropout": -0.1}, ValueError, r"dropout should be a number in range \[0, 1\]"),
], ids=["num_layers=0", "dropout=1.5", "dropout=-0.1"])
def test_constructor_errors(kind, kwargs, exc, pattern):
    _same_error(lambda: getattr(torch.nn, kind)(5, 6, **kwargs), lambda: getattr(dlunits.nn, kind)(5, 6, **kwargs),
                exc, pattern)


OP_ERRORS = [
    ("nonlinearity", lambda: ops.rnn_cell(_x(2, 3), _x(2, 4), _x(4, 3), _x(4, 4), None, None, "sigmoid"),
     r"expected nonlinearity to be 'tanh' or 'relu', but got 'sigmoid'"),
    ("weight-hh", lambda: ops.rnn_cell(_x(2, 3), _x(2, 4), _x(4, 3), _x(4, 5), None, None, "tanh"),
     r"expected weight_hh of size \[4, 4\] to match weight_ih of size \[4, 3\], but got weight_hh of size \[4, 5\]"),
    ("lstm-weight-rows", lambda: ops.lstm_cell(_x(2, 3), _x(2, 4), _x(2, 4), _x(6, 3), _x(6, 4), None, None),
     r"expected weight_ih to have a positive multiple of 4 rows"),
    ("bias", lambda: ops.rnn_cell(_x(2, 3), _x(2, 4), _x(4, 3), _x(4, 4), _x(5), None, "tanh"),
     r"expected bias_ih of size \[4\], but got \[5\]"),
    ("batch-sizes-sum",
     lambda: ops.rnn_layer(_x(5, 3), _x(2, 4), _x(4, 3), _x(4, 4), None, None, [2, 2], False, "tanh"),
     r"expected input to have sum\(batch_sizes\) = 4 rows, but got 5 rows"),
    ("batch-sizes-increasing", lambda: ops.rnn_layer(_x(5, 3), _x(2, 4), _x(4, 3), _x(4, 4), None, None, [2, 3],
                                                     False, "tanh"),
     r"expected batch_sizes to be positive \(or all zero, an empty batch\) and non-increasing"),
    ("padded-rows", lambda: ops.rnn_layer(_x(5, 3), _x(2, 4), _x(4, 3), _x(4, 4), None, None, [], False, "tanh"),
     r"dlunits.rnn_layer: expected input to have a multiple of the batch \(2\) rows for a padded sequence "
     r"\(batch_sizes = \[\], steps = rows / batch\), but got 5 rows"),
    ("padded-no-steps", lambda: ops.rnn_layer(_x(0, 3), _x(2, 4), _x(4, 3), _x(4, 4), None, None, [], False, "tanh"),
     r"expected a padded sequence \(batch_sizes = \[\]\) to have at least one time step, but got input with 0 rows"),
    ("padded-empty-batch", lambda: ops.rnn_layer(_x(3, 3), _x(0, 4), _x(4, 3), _x(4, 4), None, None, [], False,
                                                 "tanh"),
     r"expected input to have 0 rows for a padded sequence of an empty batch \(batch_sizes = \[\], hidden0 of "
     r"size \[0, 4\]\), but got 3 rows"),
    ("proj", lambda: ops.lstm_layer(_x(4, 3), _x(2, 5), _x(2, 4), _x(16, 3), _x(16, 5), None, None, _x(5, 4), [2, 2],
                                    False),
     r"expected weight_hr of size \(proj_size, 4\) with 0 < proj_size < 4"),
    ("save-with-grad", lambda: ops.lstm_layer(_x(4, 3), _x(2, 4), _x(2, 4), _x(16, 3).requires_grad_(), _x(16, 4),
                                              None, None, None, [2, 2], False, False),
     r"save=False keeps no gates and cells for a backward, but a gradient is needed here"),
    ("dtype", lambda: ops.rnn_cell(_x(2, 3), _x(2, 4).double(), _x(4, 3), _x(4, 4), None, None, "tanh"),
     r"expected input and hidden0 to have the same dtype"),
    ("half-on-cpu", lambda: ops.rnn_cell(_x(2, 3).half(), _x(2, 4).half(), _x(4, 3).half(), _x(4, 4).half(), None,
                                         None, "tanh"),
     r"on the CPU input must be float32 or float64"),
]


@pytest.mark.parametrize("case", OP_ERRORS, ids=[c[0] for c in OP_ERRORS])
def test_op_errors(case):
    """The ops' own checks, in eager mode and under FakeTensorMode (the fake kernels' shared C++ checks)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    _, call, pattern = case
    with pytest.raises(RuntimeError, match=pattern):
        call()
    with FakeTensorMode(), pytest.raises(RuntimeError, match=pattern):
        call()
