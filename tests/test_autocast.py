"""dlunits layers under torch.autocast (csrc/autocast.cpp).

CUDA: linear, conv2d and the recurrent units compute in the region's dtype, as torch's do; pooling
keeps its input's dtype. CPU: the kernels compute in float32 and float64 only, so the forward ops cast
lower-precision inputs to float32 there, and float32 and float64 models compute exactly as without
autocast."""
import copy

import pytest
import torch

import dlunits
from conftest import REL_TOL, assert_close_rel, flat_outputs, make_generator, randn, requires_cuda

# (name, module factory given torch.nn or dlunits.nn, input shape)
CASES = [
    ("Linear", lambda nn: nn.Linear(8, 5), (3, 8)),
    ("Conv2d", lambda nn: nn.Conv2d(2, 3, 3, padding=1), (2, 2, 6, 6)),
    ("MaxPool2d", lambda nn: nn.MaxPool2d(2), (2, 3, 6, 6)),
    ("AvgPool2d", lambda nn: nn.AvgPool2d(3, stride=2, padding=1), (2, 3, 7, 7)),
    ("AdaptiveAvgPool2d", lambda nn: nn.AdaptiveAvgPool2d(2), (2, 3, 5, 5)),
    ("RNNCell", lambda nn: nn.RNNCell(8, 5), (3, 8)),
    ("LSTMCell", lambda nn: nn.LSTMCell(8, 5), (3, 8)),
    # above 32 rows the CPU cell takes its matrix-product path
    ("LSTMCell-batch40", lambda nn: nn.LSTMCell(8, 5), (40, 8)),
    ("RNN", lambda nn: nn.RNN(8, 5, num_layers=2, nonlinearity="relu"), (4, 3, 8)),
    ("LSTM", lambda nn: nn.LSTM(8, 5, bidirectional=True), (4, 3, 8)),
    ("LSTM-proj", lambda nn: nn.LSTM(8, 5, proj_size=3, batch_first=True), (3, 4, 8)),
]
IDS = [c[0] for c in CASES]


def pair(factory, dtype=torch.float32, device="cpu"):
    torch.manual_seed(0)
    ref = factory(torch.nn).to(device=device, dtype=dtype)
    dl = factory(dlunits.nn).to(device=device, dtype=dtype)
    dl.load_state_dict(ref.state_dict())
    return ref, dl


def run(module, x, autocast=None):
    """Outputs, and the gradients of x and every parameter of a fixed weighting of them, with the
    forward and the backward inside torch.autocast(device, dtype=autocast) when autocast is given."""
    x = x.detach().requires_grad_(True)
    params = list(module.parameters())
    for p in params:
        p.grad = None
    ctx = torch.autocast(x.device.type, dtype=autocast) if autocast else torch.autocast(x.device.type, enabled=False)
    with ctx:
        ys = flat_outputs(module(x))
        gen = make_generator(7)
        loss = sum((y * randn(*y.shape, gen=gen, dtype=y.dtype, device=y.device)).sum() for y in ys)
        grads = torch.autograd.grad(loss, [x] + params)
    return [y.detach() for y in ys], list(grads)


@pytest.mark.parametrize("region", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name,factory,shape", CASES, ids=IDS)
def test_cpu_model_dtype_unchanged(name, factory, shape, dtype, region):
    """A float32 or float64 model computes on the CPU under autocast exactly as without it, forward
    and backward (the RNN and LSTM failed here: their input product was cast to bfloat16)."""
    _, dl = pair(factory, dtype)
    x = randn(*shape, gen=make_generator(1), dtype=dtype)
    ys, grads = run(dl, x)
    ys_ac, grads_ac = run(dl, x, autocast=region)
    for i, (a, b) in enumerate(zip(ys_ac + grads_ac, ys + grads)):
        assert a.dtype == dtype, f"result {i}: {a.dtype}"
        assert torch.equal(a, b), f"result {i} differs under autocast"


@pytest.mark.parametrize("lower", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name,factory,shape", CASES, ids=IDS)
def test_cpu_lower_precision_input(name, factory, shape, lower):
    """A lower-precision input (a torch layer's output under CPU autocast) to a float32 dlunits layer
    runs in float32, as if given in float32; its gradient comes back in its own dtype."""
    _, dl = pair(factory)
    x = randn(*shape, gen=make_generator(2), dtype=lower)
    ys, grads = run(dl, x.float())
    ys_ac, grads_ac = run(dl, x, autocast=lower)
    # (the bidirectional LSTM's two directions each cast x: their gradients add up in x's dtype)
    assert grads_ac[0].dtype == lower
    torch.testing.assert_close(grads_ac[0], grads[0].to(lower), rtol=REL_TOL[lower], atol=REL_TOL[lower])
    for i, (a, b) in enumerate(zip(ys_ac + grads_ac[1:], ys + grads[1:])):
        assert a.dtype == torch.float32, f"result {i}: {a.dtype}"
        assert torch.equal(a, b), f"result {i} differs"


def test_cpu_lower_precision_without_autocast_is_an_error():
    """Outside autocast the CPU kernels still say which dtypes they take."""
    _, dl = pair(CASES[0][1])
    with pytest.raises(RuntimeError, match=r"dlunits.linear: on the CPU input must be float32 or float64, "
                                           r"but got BFloat16"):
        dl(torch.randn(3, 8, dtype=torch.bfloat16))


def test_cpu_autocast_compiles():
    """A converted model under autocast compiles in one graph and matches eager, forward and
    backward (Dynamo traces an nn.LSTM, dlunits' included, only with allow_rnn)."""
    torch.manual_seed(0)
    model = dlunits.nn.convert(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh()))
    lstm = dlunits.nn.LSTM(8, 4, batch_first=True)
    x = torch.randn(2, 5, 6, dtype=torch.bfloat16)
    params = list(model.parameters()) + list(lstm.parameters())

    def loss(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = lstm(model(x))[0]
        assert out.dtype == torch.float32
        return out.square().sum()

    eager = torch.autograd.grad(loss(x), params)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.autograd.grad(torch.compile(loss, fullgraph=True, backend="aot_eager")(x), params)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


LOWER_PRECISION_UNITS = {"Linear", "Conv2d", "RNNCell", "LSTMCell", "RNN", "LSTM"}


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("region", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name,factory,shape", CASES, ids=IDS)
def test_cuda_autocast(name, factory, shape, region):
    """On CUDA linear, conv2d and the recurrent units answer in the region's dtype and pooling in its
    input's, as torch's do; gradients of the float32 input and parameters stay float32; the values
    are within half precision of torch's float32 results from the same rounded inputs (or no further
    from them than torch's own autocast results). One deliberate difference: torch's cuDNN RNN and LSTM compute in float16 even
    in a bfloat16 region; dlunits' compute in the region's dtype."""
    ref, dl = pair(factory, device="cuda")
    x = randn(*shape, gen=make_generator(3), dtype=torch.float32, device="cuda")
    unit = name.split("-")[0]
    peer, peer_grads = run(ref, x, autocast=region)
    ys, grads = run(dl, x, autocast=region)
    # the float32 reference from the values autocast rounds to the region's dtype (as compare_modules does)
    cast = unit in LOWER_PRECISION_UNITS
    rounded = copy.deepcopy(ref)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.to(region).float() if cast else p)
    exact, exact_grads = run(rounded, x.to(region).float() if cast else x)
    for i, y in enumerate(ys):
        assert y.dtype == (region if cast else torch.float32), f"output {i}: {y.dtype}"
        if unit not in ("RNN", "LSTM"):
            assert y.dtype == peer[i].dtype, f"output {i}: {y.dtype}, torch's {peer[i].dtype}"
    assert all(g.dtype == torch.float32 for g in grads)
    for i, (a, b, p) in enumerate(zip(ys + grads, exact + exact_grads, peer + peer_grads)):
        assert_close_rel(a.float(), b, REL_TOL[region], f"result {i}", peer=p.float(), slack=4)
