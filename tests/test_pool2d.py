"""dlunits' 2-D pooling against torch: max_pool2d (with indices, dilation, ceil_mode, NaN),
avg_pool2d (ceil_mode, count_include_pad, divisor_override), adaptive max and average pooling;
forward, every gradient and second derivatives, memory formats, unbatched and empty input, the
torch.nn modules and convert, hypothesis-drawn configurations, gradcheck and opcheck on every op,
and clear errors."""
import functools
import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch._subclasses.fake_tensor import FakeTensorMode

import dlunits
from conftest import (DEVICE_DTYPES, DEVICE_FLOAT_DTYPES, DEVICES, REL_TOL, assert_close_rel, compare_with_torch,
                      make_generator, num_threads, randn)

D = dlunits.functional
ops = torch.ops.dlunits
CL = torch.channels_last


@functools.lru_cache(maxsize=None)
def torch_cuda_channels_last_avg_backward_is_right():
    """Whether torch's CUDA avg_pool2d gives a channels_last input the gradient it gives a contiguous one.
    Before pytorch/pytorch#188345, its channels_last (NHWC) backward kernel left the padding out of each
    input element's position (pytorch/pytorch#188344): with padding > 0 every gradient came out shifted."""
    go = torch.arange(2 * 5 * 5, dtype=torch.float64, device="cuda").reshape(1, 2, 5, 5)
    grads = []
    for fmt in (torch.contiguous_format, CL):
        x = torch.zeros(1, 2, 4, 4, dtype=torch.float64, device="cuda").contiguous(memory_format=fmt)
        x.requires_grad_()
        grads.append(torch.autograd.grad(F.avg_pool2d(x, 2, 1, 1), x, go)[0])
    return torch.equal(*grads)


def torch_avg_pool2d(x, *args, **kwargs):
    """F.avg_pool2d, the reference. Where torch's CUDA channels_last backward is wrong (above), the result
    has torch's values and layout but its gradient goes through torch's NCHW kernel, which is right."""
    y = F.avg_pool2d(x, *args, **kwargs)
    if (x.is_cuda and x.dim() == 4 and x.is_contiguous(memory_format=CL)
            and not torch_cuda_channels_last_avg_backward_is_right()):
        nchw = F.avg_pool2d(x.clone(memory_format=torch.contiguous_format), *args, **kwargs)
        return torch.empty_like(y).copy_(nchw)
    return y


def pool_pair(name, *args, **kwargs):
    """(dlunits, torch) functions of one tensor: the pooling `name` with these arguments."""
    dl, th = getattr(D, name), torch_avg_pool2d if name == "avg_pool2d" else getattr(F, name)
    return (lambda x: dl(x, *args, **kwargs)), (lambda x: th(x, *args, **kwargs))


def compare(name, x, *args, dtype=torch.float64, device="cpu", **kwargs):
    return compare_with_torch(*pool_pair(name, *args, **kwargs), [x], dtype=dtype, device=device)


def assert_same_indices(name, x, *args, **kwargs):
    """Values and torch's flat indices (return_indices=True) agree exactly, NaNs included."""
    y, i = getattr(D, name)(x, *args, return_indices=True, **kwargs)
    y_ref, i_ref = getattr(F, name)(x, *args, return_indices=True, **kwargs)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0, equal_nan=True)
    assert i.dtype == torch.int64
    assert torch.equal(i, i_ref), f"indices differ:\n{i}\n{i_ref}"
    for fmt in (torch.contiguous_format, CL):
        if i_ref.dim() == 4:
            assert i.is_contiguous(memory_format=fmt) == i_ref.is_contiguous(memory_format=fmt)
    return y, i


# --------------------------------------------------------------------------------------
# The option grids
# --------------------------------------------------------------------------------------

MAX_GRID = [
    pytest.param(k, s, p, d, c, id=f"k={k}-s={s}-p={p}-d={d}-ceil={c}")
    for k, s, p, d, c in itertools.product([2, 3, (3, 2)], [None, 1, (2, 1)], [0, 1], [1, 2], [False, True])
]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", MAX_GRID)
def test_max_pool2d_grid(device, dtype, kernel, stride, padding, dilation, ceil_mode):
    x = randn(2, 3, 9, 8, gen=make_generator(1))
    compare("max_pool2d", x, kernel, stride, padding, dilation, ceil_mode, dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil_mode", MAX_GRID)
def test_max_pool2d_indices_grid(device, kernel, stride, padding, dilation, ceil_mode):
    x = randn(2, 3, 9, 8, gen=make_generator(2), device=device)
    assert_same_indices("max_pool2d", x, kernel, stride, padding, dilation, ceil_mode)


AVG_GRID = [
    pytest.param(k, s, p, c, i, d, id=f"k={k}-s={s}-p={p}-ceil={c}-include_pad={i}-divisor={d}")
    for k, s, p, c, i, d in itertools.product([2, 3, (3, 2)], [None, 1, (2, 1)], [0, 1], [False, True],
                                              [True, False], [None, 3])
]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,count_include_pad,divisor_override", AVG_GRID)
def test_avg_pool2d_grid(device, dtype, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    x = randn(2, 3, 9, 8, gen=make_generator(3))
    compare("avg_pool2d", x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, dtype=dtype,
            device=device)


ADAPTIVE_SIZES = [1, (1, 1), (3, 2), (4, None), (None, 3), 5, (9, 8), (12, 11), (2, 8)]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("name", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
@pytest.mark.parametrize("output_size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_grid(device, dtype, name, output_size):
    """Output sizes that divide the input, that don't, equal to it, larger than it (windows
    overlap), and None entries."""
    x = randn(2, 3, 9, 8, gen=make_generator(4))
    compare(name, x, output_size, dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_adaptive_empty_output(device, name):
    """An output size of 0 gives torch's empty result; its gradient is zero (torch's own backward
    refuses an empty grad_output here)."""
    x = randn(2, 3, 9, 8, gen=make_generator(4), device=device, requires_grad=True)
    y = getattr(D, name)(x, (0, 3))
    assert y.shape == getattr(F, name)(x, (0, 3)).shape == (2, 3, 0, 3)
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("output_size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_max_indices(device, output_size):
    x = randn(2, 3, 9, 8, gen=make_generator(5), device=device)
    assert_same_indices("adaptive_max_pool2d", x, output_size)


# --------------------------------------------------------------------------------------
# The window math of csrc/pool2d_windows.h, against its definition
# --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 20), kernel=st.integers(1, 6), stride=st.integers(1, 5), dilation=st.integers(1, 4),
       pad_fraction=st.floats(0, 1), ceil_mode=st.booleans(), adaptive_out=st.integers(1, 25),
       adaptive=st.booleans())
def test_pool_axis_windows_match_their_definition(size, kernel, stride, dilation, pad_fraction, ceil_mode,
                                                  adaptive_out, adaptive):
    """taps(o) are the window's positions inside the input, and covering(i) + hits() list exactly
    the outputs whose taps contain i: the CPU kernels use the first, the CUDA backward gathers over
    the second, so this checks the GPU's index math on the CPU."""
    if adaptive:
        out, pad = adaptive_out, 0
        windows = [range((o * size) // out, -(-((o + 1) * size) // out)) for o in range(out)]
    else:
        pad = int(pad_fraction * (kernel // 2))
        out = _pool_output_size(size, kernel, stride, pad, dilation, ceil_mode)
        if out < 1:
            return
        windows = [[o * stride - pad + j * dilation for j in range(kernel)] for o in range(out)]
    taps, covering = dlunits._C.pool_axis_windows(size, out, kernel, stride, pad, dilation, adaptive)
    expected_taps = [[p for p in window if 0 <= p < size] for window in windows]
    assert taps == expected_taps
    assert covering == [[o for o in range(out) if i in expected_taps[o]] for i in range(size)]


# --------------------------------------------------------------------------------------
# The max rule: ties, NaN, -inf, windows in the padding
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("call", [("max_pool2d", 2), ("max_pool2d", (3, 2), 1, 1), ("max_pool2d", 3, 2, 1, 2, True),
                                  ("adaptive_max_pool2d", (3, 4)), ("adaptive_max_pool2d", 7)], ids=str)
def test_ties_nan_and_inf(device, layout, call):
    """Repeated values (the first of equal maxima wins), NaN (propagates; the last NaN's index),
    and -inf everywhere (-inf, the window's first index), as torch decides them."""
    name, *args = call
    gen = make_generator(6)
    x = torch.randint(-2, 3, (2, 3, 7, 9), generator=gen).double()  # many ties
    x[0, 0, 1, 1] = x[0, 1, 4, 3] = x[0, 1, 4, 5] = x[1, 2, 6, 8] = float("nan")
    x[1, 0] = float("-inf")
    x[1, 1, :, :4] = float("inf")
    x = x.to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    assert_same_indices(name, x, *args)
    # and the gradient goes where torch sends it
    xr = x.clone().requires_grad_()
    xd = x.clone().requires_grad_()
    y = getattr(D, name)(xd, *args)
    go = torch.arange(1, y.numel() + 1, dtype=torch.float64, device=device).reshape(y.shape)
    y.backward(go)
    getattr(F, name)(xr, *args).backward(go)
    assert torch.equal(xd.grad, xr.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_window_entirely_in_padding(device):
    """Dilation can leave a window with no tap inside the input (2 columns, kernel 2, dilation 3,
    padding 1: taps at -1 and 2). Both give -inf there and the same (out-of-row) index; that
    output depends on no input, so dlunits sends its gradient nowhere. (torch's CPU backward adds
    it at the flat index, i.e. into the next row's, or the next plane's, first element.)"""
    x = randn(2, 3, 5, 2, gen=make_generator(7), device=device)
    args = ((1, 2), 1, (0, 1), (1, 3))
    y, _ = assert_same_indices("max_pool2d", x, *args)
    assert y.shape[-1] == 1 and torch.isneginf(y).all()
    xd = x.clone().requires_grad_()
    D.max_pool2d(xd, *args).backward(torch.ones_like(y))
    assert torch.equal(xd.grad, torch.zeros_like(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,args", [("max_pool2d", (3, 2, 1)), ("adaptive_max_pool2d", ((3, 2),))], ids=str)
def test_max_unpool_takes_our_indices(device, name, args):
    x = randn(2, 3, 9, 8, gen=make_generator(8), device=device)
    y, i = getattr(D, name)(x, *args, return_indices=True)
    y_ref, i_ref = getattr(F, name)(x, *args, return_indices=True)
    if name == "max_pool2d":
        unpooled = F.max_unpool2d(y, i, *args, output_size=x.shape[-2:])
        expected = F.max_unpool2d(y_ref, i_ref, *args, output_size=x.shape[-2:])
        assert torch.equal(unpooled, expected)
    # the maxima sit where the indices say
    torch.testing.assert_close(x.flatten(-2).gather(-1, i.flatten(-2)).view_as(y), y, rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# The seed's examples
# --------------------------------------------------------------------------------------

SEED_MAP = [[1, 1, 2, 4],
            [5, 6, 7, 8],
            [3, 2, 1, 0],
            [1, 2, 3, 4]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seed_max_pool_2x2_stride_2(dtype):
    """The lecture's 'max pooling com tamanho de pool 2 e passo 2' on a 4×4 activation map:
    each 2×2 block gives its maximum, and the map halves."""
    x = torch.tensor(SEED_MAP, dtype=dtype).reshape(1, 1, 4, 4)
    y, i = dlunits.nn.MaxPool2d(2, stride=2, return_indices=True)(x)
    assert torch.equal(y, torch.tensor([[[[6, 8], [3, 4]]]], dtype=dtype))
    assert torch.equal(i, torch.tensor([[[[5, 7], [8, 15]]]]))
    avg = dlunits.nn.AvgPool2d(2, stride=2)(x)
    assert torch.equal(avg, torch.tensor([[[[3.25, 5.25], [2, 2]]]], dtype=dtype))
    assert torch.equal(y, F.max_pool2d(x, 2, 2)) and torch.equal(avg, F.avg_pool2d(x, 2, 2))


def test_seed_progressively_smaller_maps():
    """The lecture's 128×128 → 64×64 → 32×32 → 16×16: pooling 2/2 three times."""
    x = randn(1, 2, 128, 128, gen=make_generator(9))
    pool = dlunits.nn.MaxPool2d(2)
    sizes = []
    for _ in range(3):
        x = pool(x)
        sizes.append(tuple(x.shape[-2:]))
    assert sizes == [(64, 64), (32, 32), (16, 16)]


# --------------------------------------------------------------------------------------
# Layouts and shapes
# --------------------------------------------------------------------------------------

EVERY_POOL = [
    ("max_pool2d", (3, 2, 1)),
    ("max_pool2d", ((2, 3), (1, 2), (1, 0), (2, 1), True)),
    ("avg_pool2d", (3, 2, 1, True, False)),
    ("avg_pool2d", ((2, 3), 1, (1, 1), False, True, 5)),
    ("adaptive_avg_pool2d", ((4, 3),)),
    ("adaptive_max_pool2d", ((4, 3),)),
    ("adaptive_avg_pool2d", (1,)),
]
EVERY_POOL_IDS = [f"{name}{args}" for name, args in EVERY_POOL]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("name,args", EVERY_POOL, ids=EVERY_POOL_IDS)
def test_unbatched(device, dtype, name, args):
    y, y_ref, _, _ = compare(name, randn(3, 9, 8, gen=make_generator(10)), *args, dtype=dtype, device=device)
    assert y.dim() == 3


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("name,args", EVERY_POOL, ids=EVERY_POOL_IDS)
@pytest.mark.parametrize("C", [3, 70, 130], ids=lambda c: f"C={c}")
def test_channels_last(device, dtype, name, args, C):
    """Output (and indices) channels_last as torch gives them, values and gradients equal; 70 and
    130 channels cross the CPU backward's 64-channel blocks."""
    x = randn(2, C, 9, 8, gen=make_generator(11)).contiguous(memory_format=CL)
    compare(name, x, *args, dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("args", [(2, 1, 1), (3, 2, 1, True, False), ((2, 3), 1, (1, 1), False, True, 5)], ids=str)
def test_avg_pool2d_channels_last_gradient_with_padding(device, args):
    """With padding, the channels_last gradient is the contiguous one, checked against torch's CPU result
    (torch's own CUDA channels_last backward was wrong there before pytorch/pytorch#188345)."""
    x = randn(2, 70, 9, 8, gen=make_generator(26), requires_grad=True)
    y = F.avg_pool2d(x, *args)
    go = randn(*y.shape, gen=make_generator(27))
    (expected,) = torch.autograd.grad(y, x, go)
    for fmt in (torch.contiguous_format, CL):
        xd = x.detach().to(device).contiguous(memory_format=fmt).requires_grad_()
        (g,) = torch.autograd.grad(D.avg_pool2d(xd, *args), xd, go.to(device))
        assert_close_rel(g.cpu(), expected, REL_TOL[torch.float64], f"gradient, {fmt}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,args", EVERY_POOL, ids=EVERY_POOL_IDS)
@pytest.mark.parametrize("transform", ["transposed", "sliced", "strided"])
def test_non_contiguous_input(device, name, args, transform):
    base = randn(4, 3, 10, 11, gen=make_generator(12))
    x = {"transposed": lambda t: t[:2].transpose(2, 3)[..., :9, :8],
         "sliced": lambda t: t[:2, :, 1:, :-2],
         "strided": lambda t: t[::2, :, ::1, ::2]}[transform](base)
    assert not x.is_contiguous()
    compare(name, x, *args, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,args", EVERY_POOL, ids=EVERY_POOL_IDS)
def test_non_contiguous_grad_output(device, name, args):
    x = randn(2, 3, 9, 8, gen=make_generator(13))
    compare_with_torch(*pool_pair(name, *args), [x], device=device,
                       grad_output_transform=lambda g: g.transpose(-1, -2).contiguous().transpose(-1, -2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,args", EVERY_POOL, ids=EVERY_POOL_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_zero_batch(device, name, args, layout):
    x = torch.empty(0, 3, 9, 8, dtype=torch.float64, device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    x.requires_grad_()
    y = getattr(D, name)(x, *args)
    y_ref = getattr(F, name)(x.detach(), *args)
    assert y.shape == y_ref.shape and y.is_contiguous(memory_format=CL) == y_ref.is_contiguous(memory_format=CL)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_large_window_and_odd_sizes(device, name):
    """A window as large as the input, prime sizes, stride larger than the kernel."""
    x = randn(1, 2, 13, 7, gen=make_generator(14))
    compare(name, x, (13, 7), device=device)
    compare(name, x, (2, 3), (5, 4), device=device)
    compare(name, x, 1, device=device)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("name,args", EVERY_POOL, ids=EVERY_POOL_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_threads(threads, name, args, layout):
    """The CPU kernels split planes (NCHW) or samples × channel blocks (NHWC) between threads; the
    result is the same as on one thread, bit for bit."""
    x = randn(3, 130, 9, 8, gen=make_generator(15))
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)

    def run():
        xx = x.clone().requires_grad_()
        y = getattr(D, name)(xx, *args)
        y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape))
        return y, xx.grad

    y1, g1 = run()
    with num_threads(threads):
        yt, gt = run()
    assert torch.equal(y1, yt) and torch.equal(g1, gt)
    compare(name, x, *args)


def test_deterministic_algorithms():
    """No atomics anywhere: the ops run under torch.use_deterministic_algorithms(True)."""
    x = randn(2, 3, 9, 8, gen=make_generator(16), requires_grad=True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for name, args in EVERY_POOL:
            getattr(D, name)(x, *args).sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)


# --------------------------------------------------------------------------------------
# Second derivatives, gradcheck, opcheck
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("device,dtype", DEVICE_FLOAT_DTYPES)
@pytest.mark.parametrize("name,args", EVERY_POOL, ids=EVERY_POOL_IDS)
def test_second_derivatives_match_torch(device, dtype, name, args):
    gen = make_generator(17)
    x = randn(2, 3, 9, 8, gen=gen, device=device, dtype=dtype)
    dl, th = pool_pair(name, *args)

    def run(fn):
        xx = x.clone().requires_grad_()
        y = fn(xx)
        go = torch.linspace(-2, 3, y.numel(), dtype=dtype, device=device).reshape(y.shape).requires_grad_()
        (gx,) = torch.autograd.grad(y, xx, go, create_graph=True)
        v = torch.cos(torch.arange(gx.numel(), dtype=dtype, device=device)).reshape(gx.shape)
        return torch.autograd.grad((gx * v).sum() + (gx ** 2).sum(), go)

    (g,), (g_ref,) = run(dl), run(th)
    assert g_ref.abs().max() > 0
    assert_close_rel(g, g_ref, REL_TOL[dtype], "second derivative wrt grad_output")


@pytest.mark.parametrize("name,args", EVERY_POOL, ids=EVERY_POOL_IDS)
def test_gradcheck(name, args):
    # distinct values a few multiples of the finite-difference step apart, so no max flips
    x = (torch.randperm(2 * 3 * 7 * 6, generator=make_generator(18)).double() / 10).reshape(2, 3, 7, 6)
    fn = pool_pair(name, *args)[0]
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(),))
    assert torch.autograd.gradgradcheck(fn, (x,))


def _distinct(*shape, device="cpu"):
    n = 1
    for s in shape:
        n *= s
    return (torch.randperm(n, generator=make_generator(19)).double() / 10).reshape(shape).to(device)


def test_gradcheck_backward_ops():
    x = _distinct(2, 3, 7, 6)
    max_args = ([3, 2], [2, 1], [1, 1], [1, 2], True)
    avg_args = ([3, 2], [2, 1], [1, 1], True, False, None)
    checks = [
        (lambda g: ops.max_pool2d_backward(g, x, *max_args), ops.max_pool2d(x, *max_args).shape),
        (lambda g: ops.adaptive_max_pool2d_backward(g, x), (2, 3, 4, 5)),
        (lambda g: ops.avg_pool2d_backward(g, [2, 3, 7, 6], *avg_args), ops.avg_pool2d(x, *avg_args).shape),
        (lambda g: ops.adaptive_avg_pool2d_backward(g, [2, 3, 7, 6]), (2, 3, 4, 5)),
    ]
    for fn, grad_output_size in checks:
        go = randn(*grad_output_size, gen=make_generator(20), requires_grad=True)
        assert torch.autograd.gradcheck(fn, (go,))
        assert torch.autograd.gradgradcheck(fn, (go,))


def _leaf(t):
    return t.detach().requires_grad_()


OPCHECK_INPUTS = {
    "4d": (2, 3, 9, 8),
    "3d": (3, 9, 8),
    "channels_last": (2, 3, 9, 8),
    "zero-batch": (0, 3, 9, 8),
}


def _opcheck_args(op, x):
    fixed = ([3, 2], [2, 1], [1, 1], [2, 1], True)
    avg = ([3, 2], [2, 1], [1, 1], True, False, 5)
    size = list(x.shape)
    if op in ("max_pool2d", "max_pool2d_with_indices"):
        return (_leaf(x), *fixed)
    if op == "max_pool2d_backward":
        go = randn(*ops.max_pool2d(x, *fixed).shape, gen=make_generator(21), device=x.device)
        return (_leaf(go), _leaf(x), *fixed)
    if op == "avg_pool2d":
        return (_leaf(x), *avg)
    if op == "avg_pool2d_backward":
        go = randn(*ops.avg_pool2d(x, *avg).shape, gen=make_generator(22), device=x.device)
        return (_leaf(go), size, *avg)
    if op in ("adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "adaptive_avg_pool2d"):
        return (_leaf(x), [4, 5])
    go = randn(*size[:-2], 4, 5, gen=make_generator(23), device=x.device)
    if op == "adaptive_max_pool2d_backward":
        return (_leaf(go), _leaf(x))
    return (_leaf(go), size)  # adaptive_avg_pool2d_backward


POOL_OPS = ["max_pool2d", "max_pool2d_with_indices", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
            "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "adaptive_max_pool2d_backward",
            "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("inputs", list(OPCHECK_INPUTS))
@pytest.mark.parametrize("op", POOL_OPS)
def test_opcheck(op, inputs, device):
    x = _distinct(*OPCHECK_INPUTS[inputs], device=device) if OPCHECK_INPUTS[inputs][0] else torch.empty(
        OPCHECK_INPUTS[inputs], dtype=torch.float64, device=device)
    if inputs == "channels_last":
        x = x.contiguous(memory_format=CL)
    torch.library.opcheck(getattr(ops, op), _opcheck_args(op, x), raise_exception=True)


# --------------------------------------------------------------------------------------
# hypothesis
# --------------------------------------------------------------------------------------


def _pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """torch's output size along one axis (ceil_mode's last window starts inside the input)."""
    numerator = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@st.composite
def pool_configs(draw):
    """Valid max/avg pooling configurations: padding at most half the kernel, and an input large
    enough for one window."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    max_pool = draw(st.booleans())
    dh, dw = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if max_pool else (1, 1)
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    H = draw(st.integers(max(1, span_h - 2 * ph), 11))
    W = draw(st.integers(max(1, span_w - 2 * pw), 11))
    # torch's backward misplaces the gradient of a window with no tap inside the input (see
    # test_window_entirely_in_padding), so the comparison draws only windows that read the input
    for size, k, s, p, d in [(H, kh, sh, ph, dh), (W, kw, sw, pw, dw)]:
        assume(all(any(0 <= start + j * d < size for j in range(k))
                   for start in (o * s - p for o in range(_pool_output_size(size, k, s, p, d, True)))))
    cfg = dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 4)), H=H, W=W, kernel=(kh, kw), stride=(sh, sw),
               padding=(ph, pw), ceil_mode=draw(st.booleans()), layout=draw(st.sampled_from(["nchw", "nhwc"])),
               seed=draw(st.integers(0, 2**31 - 1)))
    if max_pool:
        cfg.update(name="max_pool2d", dilation=(dh, dw))
    else:
        cfg.update(name="avg_pool2d", count_include_pad=draw(st.booleans()),
                   divisor_override=draw(st.sampled_from([None, None, 1, 2, 7])))
    return cfg


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=pool_configs())
def test_hypothesis_matches_torch(device, cfg):
    x = randn(cfg["N"], cfg["C"], cfg["H"], cfg["W"], gen=make_generator(cfg["seed"]))
    if cfg["layout"] == "nhwc":
        x = x.contiguous(memory_format=CL)
    if cfg["name"] == "max_pool2d":
        args = (cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"], cfg["ceil_mode"])
        assert_same_indices("max_pool2d", x.to(device), *args)
    else:
        args = (cfg["kernel"], cfg["stride"], cfg["padding"], cfg["ceil_mode"], cfg["count_include_pad"],
                cfg["divisor_override"])
    compare(cfg["name"], x, *args, device=device)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(H=st.integers(1, 12), W=st.integers(1, 12), OH=st.integers(1, 14), OW=st.integers(1, 14),
       name=st.sampled_from(["adaptive_avg_pool2d", "adaptive_max_pool2d"]), channels_last=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_hypothesis_adaptive_matches_torch(device, H, W, OH, OW, name, channels_last, seed):
    x = randn(2, 3, H, W, gen=make_generator(seed))
    if channels_last:
        x = x.contiguous(memory_format=CL)
    if name == "adaptive_max_pool2d":
        assert_same_indices(name, x.to(device), (OH, OW))
    compare(name, x, (OH, OW), device=device)


# --------------------------------------------------------------------------------------
# Modules and convert
# --------------------------------------------------------------------------------------

MODULES = [
    (dlunits.nn.MaxPool2d, torch.nn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)),
    (dlunits.nn.MaxPool2d, torch.nn.MaxPool2d, dict(kernel_size=(2, 3), dilation=(2, 1), return_indices=True)),
    (dlunits.nn.AvgPool2d, torch.nn.AvgPool2d, dict(kernel_size=3, stride=(2, 1), padding=1, ceil_mode=True,
                                                     count_include_pad=False, divisor_override=4)),
    (dlunits.nn.AvgPool2d, torch.nn.AvgPool2d, dict(kernel_size=2)),
    (dlunits.nn.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool2d, dict(output_size=(3, None), return_indices=True)),
    (dlunits.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d, dict(output_size=(1, 1))),
    (dlunits.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d, dict(output_size=5)),
]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("ours,theirs,kwargs", MODULES, ids=[f"{m[1].__name__}{m[2]}" for m in MODULES])
@pytest.mark.parametrize("batched", [True, False])
def test_modules_match_torch(device, dtype, ours, theirs, kwargs, batched):
    layer, ref = ours(**kwargs), theirs(**kwargs)
    assert isinstance(layer, theirs) and repr(layer) == repr(ref) and layer.state_dict().keys() == set()
    x = randn(*((2,) if batched else ()), 3, 9, 8, gen=make_generator(24))

    def first(fn):
        return lambda t: fn(t)[0] if kwargs.get("return_indices") else fn(t)

    compare_with_torch(first(layer), first(ref), [x], dtype=dtype, device=device)
    if kwargs.get("return_indices"):
        assert torch.equal(layer(x.to(device))[1], ref(x.to(device))[1])


def test_convert_swaps_every_pooling_layer_of_a_real_cnn():
    """torchvision's ResNet-18 (max pool 3/2 pad 1, adaptive average pool) and VGG-11 (max pools,
    adaptive average pool to 7×7): every conv and pooling layer swapped, same outputs and
    gradients as torch in float64."""
    torchvision = pytest.importorskip("torchvision")
    pool_types = (torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.AdaptiveMaxPool2d, torch.nn.AdaptiveAvgPool2d)
    for make, size in [(torchvision.models.resnet18, 64), (torchvision.models.vgg11, 32)]:
        torch.manual_seed(0)
        model = make(num_classes=5).double().eval()
        converted = dlunits.nn.convert(model)
        before = [type(m) for m in model.modules() if isinstance(m, pool_types)]
        after = [type(m) for m in converted.modules() if isinstance(m, pool_types)]
        assert before and len(after) == len(before)
        assert all(t.__module__ == "dlunits.nn" for t in after), after
        x = randn(1, 3, size, size, gen=make_generator(25))
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = converted(xa), model(xb)
        torch.testing.assert_close(ya, yb, rtol=1e-9, atol=1e-9)
        ya.sum().backward()
        yb.sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-9, atol=1e-9)


def test_compile_fullgraph():
    """The pooling ops inside torch.compile(fullgraph=True): forward and backward as in eager."""
    model = torch.nn.Sequential(dlunits.nn.MaxPool2d(3, 2, 1), dlunits.nn.AvgPool2d(2, ceil_mode=True),
                                dlunits.nn.AdaptiveMaxPool2d((3, 2)), dlunits.nn.AdaptiveAvgPool2d(1))
    x = randn(2, 3, 17, 15, gen=make_generator(26))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = compiled(xa), model(xb)
    ya.sum().backward()
    yb.sum().backward()
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(xa.grad, xb.grad)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------

X = lambda *shape: randn(*shape, gen=make_generator(27))  # noqa: E731

# (id, call of a module holding max_pool2d, avg_pool2d, ..., exception, dlunits' message, torch's message:
#  "same", a regex of its own, or "" for the same exception type only)
ERROR_CASES = [
    ("max-kernel-0", lambda m: m.max_pool2d(X(2, 3, 7, 7), 0, 1), RuntimeError,
     r"kernel size should be greater than zero, but got kH: 0 kW: 0", "same"),
    ("max-kernel-negative", lambda m: m.max_pool2d(X(2, 3, 7, 7), (2, -1), 1), RuntimeError,
     r"kernel size should be greater than zero, but got kH: 2 kW: -1", "same"),
    ("max-stride-0", lambda m: m.max_pool2d(X(2, 3, 7, 7), 2, 0), RuntimeError,
     r"stride should be greater than zero, but got dH: 0 dW: 0", r"stride should not be zero"),
    ("max-stride-negative", lambda m: m.max_pool2d(X(2, 3, 7, 7), 2, -1), RuntimeError,
     r"stride should be greater than zero, but got dH: -1 dW: -1", "same"),
    ("max-dilation-0", lambda m: m.max_pool2d(X(2, 3, 7, 7), 2, 1, 0, 0), RuntimeError,
     r"dilation should be greater than zero, but got dilationH: 0 dilationW: 0", "same"),
    ("max-padding-negative", lambda m: m.max_pool2d(X(2, 3, 7, 7), 2, 1, -1), RuntimeError,
     r"pad must be non-negative, but got pad: -1", "same"),
    ("max-padding-too-large", lambda m: m.max_pool2d(X(2, 3, 7, 7), 2, padding=(1, 2)), RuntimeError,
     r"pad should be at most half of effective kernel size, but got pad=2, kernel_size=2 and dilation=1", "same"),
    ("max-padding-over-half-kernel", lambda m: m.max_pool2d(X(2, 3, 7, 7), (1, 2), 1, (0, 2), (1, 3)), RuntimeError,
     r"pad should be smaller than or equal to half of kernel size, but got padW = 2, padH = 0, kW = 2, kH = 1",
     "same"),
    ("max-output-too-small", lambda m: m.max_pool2d(X(2, 3, 1, 1), 2), RuntimeError,
     r"Given input size: \(3x1x1\)\. Calculated output size: \(3x0x0\)\. Output size is too small", "same"),
    ("max-input-2d", lambda m: m.max_pool2d(X(4, 4), 2), RuntimeError,
     r"expected a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input.*but got input of size \[4, 4\]", ""),
    ("max-input-5d", lambda m: m.max_pool2d(X(1, 2, 3, 4, 5), 2), RuntimeError,
     r"expected a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input.*but got input of size \[1, 2, 3, 4, 5\]", ""),
    ("max-zero-channels", lambda m: m.max_pool2d(torch.empty(2, 0, 4, 4), 2), RuntimeError,
     r"non-zero channel and spatial sizes \(a zero batch size is fine\), but got input of size \[2, 0, 4, 4\]",
     r"\[2, 0, 4, 4\]"),
    ("max-kernel-3-values", lambda m: m.max_pool2d(X(2, 3, 7, 7), (2, 2, 2)), RuntimeError,
     r"kernel_size must either be a single int, or a tuple of two ints", "same"),
    ("max-stride-3-values", lambda m: m.max_pool2d(X(2, 3, 7, 7), 2, (1, 2, 3)), RuntimeError,
     r"stride must either be omitted, a single int, or a tuple of two ints", "same"),
    ("max-integer-input", lambda m: m.max_pool2d(torch.arange(16).reshape(1, 1, 4, 4), 2), RuntimeError,
     r"expected input to be a floating-point tensor.*but got Long", "torch accepts"),
    ("avg-kernel-0", lambda m: m.avg_pool2d(X(2, 3, 7, 7), 0, 1), RuntimeError,
     r"kernel size should be greater than zero, but got kH: 0 kW: 0", "same"),
    ("avg-stride-negative", lambda m: m.avg_pool2d(X(2, 3, 7, 7), 2, -1), RuntimeError,
     r"stride should be greater than zero, but got dH: -1 dW: -1", "same"),
    ("avg-padding-too-large", lambda m: m.avg_pool2d(X(2, 3, 7, 7), 2, padding=2), RuntimeError,
     r"pad should be at most half of effective kernel size, but got pad=2, kernel_size=2", "same"),
    ("avg-output-too-small", lambda m: m.avg_pool2d(X(2, 3, 1, 1), 2), RuntimeError,
     r"Given input size: \(3x1x1\)\. Calculated output size: \(3x0x0\)\. Output size is too small", "same"),
    ("avg-divisor-0", lambda m: m.avg_pool2d(X(2, 3, 7, 7), 2, divisor_override=0), RuntimeError,
     r"divisor must be not zero", "same"),
    ("avg-integer-input", lambda m: m.avg_pool2d(torch.arange(16).reshape(1, 1, 4, 4), 2), RuntimeError,
     r"expected input to be a floating-point tensor.*but got Long", "torch accepts"),
    ("adaptive-avg-negative-size", lambda m: m.adaptive_avg_pool2d(X(2, 3, 7, 7), (-1, 2)), RuntimeError,
     r"elements of output_size must be greater than or equal to 0", "same"),
    ("adaptive-max-negative-size", lambda m: m.adaptive_max_pool2d(X(2, 3, 7, 7), (2, -3)), RuntimeError,
     r"elements of output_size must be greater than or equal to 0", ""),
    ("adaptive-avg-input-2d", lambda m: m.adaptive_avg_pool2d(X(4, 4), 2), RuntimeError,
     r"expected a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input.*but got input of size \[4, 4\]", ""),
    ("adaptive-max-empty-height", lambda m: m.adaptive_max_pool2d(torch.empty(2, 3, 0, 3), 2), RuntimeError,
     r"non-zero channel and spatial sizes.*\[2, 3, 0, 3\]", r"\[2, 3, 0, 3\]"),
    ("adaptive-avg-empty-width", lambda m: m.adaptive_avg_pool2d(torch.empty(2, 3, 3, 0), 2), RuntimeError,
     r"non-zero spatial sizes.*\[2, 3, 3, 0\]", r"\[2, 3, 3, 0\]"),
    ("adaptive-avg-integer-input", lambda m: m.adaptive_avg_pool2d(torch.arange(16).reshape(1, 1, 4, 4), 2),
     RuntimeError, r"expected input to be a floating-point tensor.*but got Long", ""),
]


@pytest.mark.parametrize("call,exc,match,torch_match", [pytest.param(*c[1:], id=c[0]) for c in ERROR_CASES])
def test_errors(call, exc, match, torch_match):
    with pytest.raises(exc, match=match):
        call(D)
    if torch_match == "torch accepts":
        call(F)  # torch computes it: dlunits refuses integer pooling, a documented difference
        return
    with pytest.raises(Exception if torch_match == "" else exc,
                       match=match if torch_match == "same" else (torch_match or None)):
        call(F)


@pytest.mark.parametrize("call", [pytest.param(c[1], id=c[0]) for c in ERROR_CASES])
def test_errors_identical_under_fake_tensor_mode(call):
    """The fake kernels check with the same C++ code: same exception, same message."""
    def message(module):
        try:
            call(module)
        except Exception as e:  # noqa: BLE001
            return type(e), str(e)
        return None, "no exception"

    real = message(D)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        fake = message(D)
    assert fake == real


BACKWARD_ERROR_CASES = [
    ("max-backward-grad-size", lambda: ops.max_pool2d_backward(X(2, 3, 4, 4), X(2, 3, 7, 7), [2, 2], [2, 2], [0, 0],
                                                                [1, 1], False),
     r"max_pool2d_backward: expected grad_output of size \[2, 3, 3, 3\] \(the forward's output\), but got grad_output "
     r"of size \[2, 3, 4, 4\]"),
    ("max-backward-dtype", lambda: ops.max_pool2d_backward(X(2, 3, 3, 3).float(), X(2, 3, 7, 7), [2, 2], [2, 2],
                                                           [0, 0], [1, 1], False),
     r"expected grad_output and input to have the same dtype, but got grad_output Float and input Double"),
    ("avg-backward-input-size", lambda: ops.avg_pool2d_backward(X(2, 3, 3, 3), [2, 7, 7], [2, 2], [2, 2], [0, 0],
                                                                False, True, None),
     r"avg_pool2d_backward: expected grad_output of size \[2, 3, 3\] \(the forward's output\), but got"),
    ("avg-backward-input-size-2d", lambda: ops.avg_pool2d_backward(X(2, 3, 3, 3), [7, 7], [2, 2], [2, 2], [0, 0],
                                                                   False, True, None),
     r"expected input_size to have 3 or 4 values, but got input_size=\[7, 7\]"),
    ("adaptive-max-backward-grad-channels", lambda: ops.adaptive_max_pool2d_backward(X(2, 4, 3, 3), X(2, 3, 7, 7)),
     r"expected grad_output of size \[2, 3, 3, 3\] \(the forward's output\), but got grad_output of size "
     r"\[2, 4, 3, 3\]"),
    ("adaptive-avg-backward-ndim", lambda: ops.adaptive_avg_pool2d_backward(X(3, 3, 3), [2, 3, 7, 7]),
     r"expected grad_output to have as many dimensions as input_size=\[2, 3, 7, 7\], but got grad_output of size "
     r"\[3, 3, 3\]"),
]


@pytest.mark.parametrize("call,match", [pytest.param(*c[1:], id=c[0]) for c in BACKWARD_ERROR_CASES])
def test_backward_op_errors(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(RuntimeError, match=match):
        call()
