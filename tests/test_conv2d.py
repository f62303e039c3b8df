"""dlunits' conv2d and pad2d against torch: forward, every gradient, second derivatives,
memory formats, torch.nn.Conv2d compatibility, hypothesis-drawn configurations,
gradcheck / gradgradcheck and torch.library.opcheck on every op."""
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlunits
from conftest import (DEVICE_DTYPES, DEVICE_FLOAT_DTYPES, DEVICES, REL_TOL, assert_close_rel, compare_with_torch,
                      make_generator, num_threads, randn)

D = dlunits.functional
ops = torch.ops.dlunits
CL = torch.channels_last

# torch warns that padding='same' with an even kernel may copy the input; not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


def conv_pair(stride=1, padding=0, dilation=1, groups=1):
    """(dlunits, torch) functions of (input, weight, bias) with these options."""

    def dl(x, w, b):
        return D.conv2d(x, w, b, stride, padding, dilation, groups)

    def th(x, w, b):
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    return dl, th


def conv_case(gen, *, N=2, C=4, H=9, W=8, O=6, kernel=(3, 2), groups=1, bias=True):
    x = randn(N, C, H, W, gen=gen)
    w = randn(O, C // groups, *kernel, gen=gen)
    b = randn(O, gen=gen) if bias else None
    return [x, w, b]


# --------------------------------------------------------------------------------------
# The option grid
# --------------------------------------------------------------------------------------

STRIDES = [1, 2, (2, 1)]
PADDINGS = [0, 1, (2, 0), "valid", "same"]
DILATIONS = [1, 2]
GROUPS = [1, 2]
GRID = [
    pytest.param(s, p, d, g, b, id=f"stride={s}-padding={p}-dilation={d}-groups={g}-bias={b}")
    for s, p, d, g, b in itertools.product(STRIDES, PADDINGS, DILATIONS, GROUPS, [True, False])
    if not (p == "same" and s != 1)
]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("stride,padding,dilation,groups,bias", GRID)
def test_grid(device, dtype, stride, padding, dilation, groups, bias):
    tensors = conv_case(make_generator(7), groups=groups, bias=bias)
    compare_with_torch(*conv_pair(stride, padding, dilation, groups), tensors, dtype=dtype, device=device)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kernel", [(2, 2), (4, 3), (1, 4), (3, 3), (2, 5)], ids=str)
@pytest.mark.parametrize("dilation", [1, 2, (2, 3)], ids=str)
def test_same_padding(device, dtype, kernel, dilation):
    """padding='same' keeps H and W, with even kernels (the odd pixel of padding at the end) and
    dilation."""
    tensors = conv_case(make_generator(11), H=9, W=10, kernel=kernel, groups=2)
    y, y_ref, _, _ = compare_with_torch(*conv_pair(1, "same", dilation, 2), tensors, dtype=dtype, device=device)
    assert y.shape[2:] == (9, 10)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize(
    "C,O,groups",
    [(4, 4, 4), (3, 6, 3), (4, 8, 4), (4, 8, 2), (6, 4, 2), (6, 3, 3), (1, 5, 1)],
    ids=["depthwise", "depthwise-multiplier-2", "depthwise-multiplier-2b", "groups-2", "groups-2-fewer-out",
         "groups-3-one-out-per-group", "one-in-channel"],
)
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, (0, 1))], ids=["s1p1", "s2p01"])
def test_groups(device, dtype, C, O, groups, stride, padding):
    tensors = conv_case(make_generator(3), C=C, O=O, groups=groups)
    compare_with_torch(*conv_pair(stride, padding, 1, groups), tensors, dtype=dtype, device=device)


KERNEL_CASES = [
    # kernel, stride, padding, dilation, H, W
    ((1, 1), 1, 0, 1, 5, 6),  # pointwise: the im2col-free path
    ((1, 1), 2, 0, 1, 5, 6),
    ((1, 1), 1, 1, 1, 5, 6),
    ((1, 1), (1, 2), 0, 3, 5, 6),
    ((1, 5), 1, 0, 1, 5, 6),
    ((5, 1), 1, (0, 2), 1, 5, 6),
    ((5, 2), (3, 1), (1, 0), (1, 2), 8, 7),
    ((5, 6), 1, 0, 1, 5, 6),  # kernel == input: a 1×1 output
    ((7, 8), 1, 1, 1, 5, 6),  # kernel == padded input
    ((3, 3), 3, 1, 1, 7, 5),  # stride > 1 with the last window partly outside
    ((3, 2), 4, 2, 2, 9, 9),  # stride > kernel span
    ((2, 3), 1, (4, 3), 1, 2, 1),  # tiny input, padding larger than the input
]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("kernel,stride,padding,dilation,H,W", KERNEL_CASES, ids=[str(c) for c in KERNEL_CASES])
@pytest.mark.parametrize("bias", [True, False])
def test_kernel_shapes(device, dtype, kernel, stride, padding, dilation, H, W, bias):
    tensors = conv_case(make_generator(5), H=H, W=W, kernel=kernel, bias=bias)
    compare_with_torch(*conv_pair(stride, padding, dilation), tensors, dtype=dtype, device=device)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("padding", [0, 1, "same"])
@pytest.mark.parametrize("bias", [True, False])
def test_unbatched(device, dtype, padding, bias):
    gen = make_generator(9)
    x = randn(4, 7, 6, gen=gen)
    w = randn(6, 2, 3, 2, gen=gen)
    b = randn(6, gen=gen) if bias else None
    y, y_ref, _, _ = compare_with_torch(*conv_pair(1, padding, 1, 2), [x, w, b], dtype=dtype, device=device)
    assert y.dim() == 3


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_zero_batch(device, dtype, groups, padding_mode):
    """An empty batch gives an empty output of the right shape; the weight and bias gradients are
    zeros of the weight's and bias's shapes, the input gradient is empty."""
    torch.manual_seed(0)
    layer = dlunits.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, groups=groups, padding_mode=padding_mode)
    layer = layer.to(device=device, dtype=dtype)
    ref = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, groups=groups, padding_mode=padding_mode)
    ref = ref.to(device=device, dtype=dtype)
    ref.load_state_dict(layer.state_dict())
    x = torch.empty(0, 4, 7, 6, device=device, dtype=dtype, requires_grad=True)
    y = layer(x)
    y_ref = ref(x)
    assert y.shape == y_ref.shape == (0, 6, 4, 7)
    gx, gw, gb = torch.autograd.grad(y.sum(), (x, layer.weight, layer.bias))
    assert gx.shape == x.shape
    assert gw.shape == layer.weight.shape and gw.dtype == dtype
    assert gb.shape == layer.bias.shape and gb.dtype == dtype
    assert torch.equal(gw, torch.zeros_like(gw))
    assert torch.equal(gb, torch.zeros_like(gb))
    # and the functional form, without bias
    w = layer.weight.detach().requires_grad_()
    y = D.conv2d(x, w, None, 1, "same", 1, groups)
    assert y.shape == (0, 6, 7, 6)
    (gw,) = torch.autograd.grad(y.sum(), (w,))
    assert torch.equal(gw, torch.zeros_like(w))


# --------------------------------------------------------------------------------------
# Strides and memory formats
# --------------------------------------------------------------------------------------


def _transposed(t):
    """t's values, as a non-contiguous tensor: the transpose of a contiguous (.., W, H) tensor."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def _sliced_input(gen, N, C, H, W):
    """A (N, C, H, W) view of a bigger tensor: channel slice, stride 2 rows, column offset."""
    base = randn(N, C + 2, 2 * H, W + 1, gen=gen)
    return base[:, 1:C + 1, ::2, 1:]


def _permuted_input(gen, N, C, H, W):
    """A (N, C, H, W) tensor stored as (H, N, C, W)."""
    return randn(H, N, C, W, gen=gen).permute(1, 2, 0, 3)


NONCONTIG_CASES = ["input-transposed", "input-sliced", "input-permuted", "weight-transposed", "weight-sliced",
                   "bias-sliced", "all"]


@pytest.mark.parametrize("device,dtype", DEVICE_FLOAT_DTYPES)
@pytest.mark.parametrize("case", NONCONTIG_CASES)
@pytest.mark.parametrize("groups", [1, 2])
def test_non_contiguous_arguments(device, dtype, case, groups):
    gen = make_generator(21)
    N, C, H, W, O, kh, kw = 2, 4, 7, 6, 6, 3, 2
    x = randn(N, C, H, W, gen=gen)
    w = randn(O, C // groups, kh, kw, gen=gen)
    b = randn(O, gen=gen)
    if case in ("input-transposed", "all"):
        x = _transposed(x)
    if case == "input-sliced":
        x = _sliced_input(gen, N, C, H, W)
    if case == "input-permuted":
        x = _permuted_input(gen, N, C, H, W)
    if case in ("weight-transposed", "all"):
        w = _transposed(w)
    if case == "weight-sliced":
        w = randn(2 * O, C // groups + 1, kh, kw, gen=gen)[::2, 1:]
    if case in ("bias-sliced", "all"):
        b = randn(2 * O, gen=gen)[::2]
    assert not (x.is_contiguous() and w.is_contiguous() and b.is_contiguous())
    compare_with_torch(*conv_pair((2, 1), (1, 0), 1, groups), [x, w, b], dtype=dtype, device=device)


@pytest.mark.parametrize("device,dtype", DEVICE_FLOAT_DTYPES)
@pytest.mark.parametrize("transform", ["transposed", "expanded-batch", "expanded-all", "channels_last"])
def test_non_contiguous_grad_output(device, dtype, transform):
    """The backward ops get grad_outputs of any layout, e.g. the stride-0 one of y.sum()."""
    transforms = {
        "transposed": _transposed,
        "expanded-batch": lambda g: g[:1].expand_as(g),
        "expanded-all": lambda g: g[:1, :1, :1, :1].expand_as(g),
        "channels_last": lambda g: g.contiguous(memory_format=CL),
    }
    tensors = conv_case(make_generator(4), groups=2)
    compare_with_torch(*conv_pair(1, 1, 1, 2), tensors, dtype=dtype, device=device,
                       grad_output_transform=transforms[transform])


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("layout", ["input", "weight", "both"])
@pytest.mark.parametrize("C,O,groups,kernel", [(4, 6, 1, (3, 2)), (4, 6, 2, (3, 3)), (4, 4, 4, (3, 3)),
                                               (4, 6, 1, (1, 1))], ids=["g1", "g2", "depthwise", "pointwise"])
def test_channels_last(device, dtype, layout, C, O, groups, kernel):
    """channels_last input and/or weight: same values and gradients as torch, and the output is
    channels_last exactly when torch's is."""
    x, w, b = conv_case(make_generator(8), C=C, O=O, groups=groups, kernel=kernel)
    if layout in ("input", "both"):
        x = x.contiguous(memory_format=CL)
    if layout in ("weight", "both"):
        w = w.contiguous(memory_format=CL)
    y, y_ref, _, _ = compare_with_torch(*conv_pair(1, 1, 1, groups), [x, w, b], dtype=dtype, device=device)
    if not (x.is_contiguous() and w.is_contiguous()):  # (a (O, 1, kH, kW) weight is both)
        # torch's rule, so the check above means something: channels_last, except float64 on CUDA
        expected = CL if not (device == "cuda" and dtype == torch.float64) else torch.contiguous_format
        assert y_ref.is_contiguous(memory_format=expected)
        assert y.is_contiguous(memory_format=expected)


@pytest.mark.parametrize("device", DEVICES)
def test_contiguous_output_layout(device):
    gen = make_generator(1)
    x, w = randn(2, 3, 6, 5, gen=gen, device=device), randn(4, 3, 3, 3, gen=gen, device=device)
    y = D.conv2d(x, w)
    assert y.is_contiguous()
    assert not y.is_contiguous(memory_format=CL)


# --------------------------------------------------------------------------------------
# Threads (the suite runs single-threaded otherwise, see conftest)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("N", [1, 2, 3, 5])
@pytest.mark.parametrize("kernel,groups", [((3, 2), 2), ((1, 1), 1)], ids=["3x2-groups2", "pointwise"])
def test_threads(threads, N, kernel, groups):
    """Samples split over threads (N >= threads, per-chunk weight-gradient accumulators with an
    uneven last chunk) and samples in turn with im2col/col2im split over channels (N < threads);
    and the same call twice gives bitwise the same result (no dependence on scheduling)."""
    tensors = conv_case(make_generator(N), N=N, C=6, O=4, kernel=kernel, groups=groups)
    dl, th = conv_pair(1, 1 if kernel != (1, 1) else 0, 1, groups)
    with num_threads(threads):
        assert torch.get_num_threads() == threads
        y, _, grads, _ = compare_with_torch(dl, th, tensors)
        y2, _, grads2, _ = compare_with_torch(dl, th, tensors)
    assert torch.equal(y, y2)
    for g, g2 in zip(grads, grads2):
        assert torch.equal(g, g2)


# --------------------------------------------------------------------------------------
# pad2d (Conv2d's padding_mode)
# --------------------------------------------------------------------------------------

PAD_CASES = [
    # (left, right, top, bottom), (H, W)
    ((1, 1, 1, 1), (4, 5)),
    ((0, 2, 3, 1), (4, 5)),
    ((3, 0, 0, 2), (5, 4)),
    ((0, 0, 0, 0), (3, 3)),
    ((4, 4, 3, 3), (4, 5)),  # reflect's limit: size - 1
]


def _pad_ok(mode, pad, H, W):
    left, right, top, bottom = pad
    if mode == "reflect":
        return max(left, right) < W and max(top, bottom) < H
    if mode == "circular":
        return max(left, right) <= W and max(top, bottom) <= H
    return True


PAD_PARAMS = [
    pytest.param(mode, pad, hw, id=f"{mode}-{pad}-{hw}")
    for mode in ("reflect", "replicate", "circular")
    for pad, hw in PAD_CASES + [((5, 5, 4, 4), (4, 5)), ((7, 1, 0, 6), (1, 1)), ((2, 3, 4, 0), (1, 6))]
    if _pad_ok(mode, pad, *hw)
]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("mode,pad,hw", PAD_PARAMS)
@pytest.mark.parametrize("batched", [True, False])
def test_pad(device, dtype, mode, pad, hw, batched):
    shape = (2, 3, *hw) if batched else (3, *hw)
    x = randn(*shape, gen=make_generator(2))
    compare_with_torch(lambda t: D.pad(t, pad, mode), lambda t: F.pad(t, pad, mode), [x], dtype=dtype,
                       device=device, check_memory_format=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_pad_zero_batch(device, mode):
    x = torch.empty(0, 3, 4, 5, device=device, dtype=torch.float64, requires_grad=True)
    y = D.pad(x, (1, 2, 3, 0), mode)
    assert y.shape == F.pad(x, (1, 2, 3, 0), mode).shape == (0, 3, 7, 8)
    (gx,) = torch.autograd.grad(y.sum(), (x,))
    assert gx.shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_pad_channels_last_layout(device, mode):
    """A channels_last input is padded into torch's layout, as F.pad does: channels_last for reflect
    and replicate on the CPU; contiguous for circular, and for every mode on CUDA."""
    x = randn(2, 3, 4, 5, gen=make_generator(3), device=device).contiguous(memory_format=CL)
    compare_with_torch(lambda t: D.pad(t, (1, 2, 3, 0), mode), lambda t: F.pad(t, (1, 2, 3, 0), mode), [x],
                       device=device, check_memory_format=True)


# --------------------------------------------------------------------------------------
# dlunits.nn.Conv2d against torch.nn.Conv2d
# --------------------------------------------------------------------------------------

MODULE_CASES = [
    # in, out, kernel, kwargs
    (4, 6, 3, dict(padding=1)),
    (4, 6, (3, 2), dict(padding=(2, 1), stride=(2, 1), groups=2)),
    (4, 6, (2, 2), dict(padding="same")),
    (4, 6, (4, 3), dict(padding="same", dilation=(1, 2), groups=2)),
    (4, 4, 3, dict(padding=2, dilation=2, groups=4, bias=False)),
    (4, 8, (1, 3), dict(padding=(0, 1), groups=4)),
    (4, 6, 3, dict(padding="valid", stride=2)),
    (4, 6, (3, 1), dict(padding=(3, 0), stride=(1, 3))),
]


def module_pair(in_channels, out_channels, kernel, kwargs, padding_mode, dtype=torch.float64, device="cpu"):
    """(dlunits layer, torch layer) with the torch layer's (seeded) weights loaded into dlunits'."""
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(in_channels, out_channels, kernel, padding_mode=padding_mode, **kwargs)
    layer = dlunits.nn.Conv2d(in_channels, out_channels, kernel, padding_mode=padding_mode, **kwargs)
    with torch.no_grad():  # make sure the load below is what makes them equal
        for p in layer.parameters():
            p.add_(1.0)
    layer.load_state_dict(ref.state_dict())
    return layer.to(device=device, dtype=dtype), ref.to(device=device, dtype=dtype)


def module_fns(layer, ref):
    """Functions of (input, weight, bias) calling the layers with those parameters."""

    def call(module):
        def fn(x, w, b=None):
            params = {"weight": w} if b is None else {"weight": w, "bias": b}
            return torch.func.functional_call(module, params, (x,))

        return fn

    return call(layer), call(ref)


def module_tensors(layer, x):
    return [x, layer.weight.detach().double().cpu()] + (
        [layer.bias.detach().double().cpu()] if layer.bias is not None else [])


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("case", MODULE_CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[3]}" for c in MODULE_CASES])
def test_module_matches_torch(device, dtype, padding_mode, case):
    in_channels, out_channels, kernel, kwargs = case
    layer, ref = module_pair(in_channels, out_channels, kernel, kwargs, padding_mode)
    x = randn(2, in_channels, 7, 6, gen=make_generator(6))
    compare_with_torch(*module_fns(layer, ref), module_tensors(layer, x), dtype=dtype, device=device)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_module_backward_fills_param_grads(padding_mode):
    """The ordinary training call: loss.backward() fills .grad of the parameters and the input."""
    layer, ref = module_pair(4, 6, (3, 2), dict(padding=1, groups=2), padding_mode)
    gen = make_generator(12)
    x = randn(2, 4, 6, 5, gen=gen, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    target = randn(2, 6, 6, 6, gen=gen)
    ((layer(x) - target) ** 2).mean().backward()
    ((ref(x_ref) - target) ** 2).mean().backward()
    tol = dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad, x_ref.grad, **tol)
    torch.testing.assert_close(layer.weight.grad, ref.weight.grad, **tol)
    torch.testing.assert_close(layer.bias.grad, ref.bias.grad, **tol)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, "same"])
def test_module_unbatched(padding_mode, padding):
    layer, ref = module_pair(4, 6, (2, 3), dict(padding=padding), padding_mode)
    x = randn(4, 6, 5, gen=make_generator(13))
    y, _, _, _ = compare_with_torch(*module_fns(layer, ref), module_tensors(layer, x))
    assert y.dim() == 3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("layout", ["input", "weight"])
def test_module_channels_last(device, padding_mode, layout):
    """A channels_last input (or a channels_last layer) gives the same values, gradients and
    output memory format as torch.nn.Conv2d, whatever the padding_mode."""
    layer, ref = module_pair(4, 6, 3, dict(padding=1), padding_mode)
    x = randn(2, 4, 6, 5, gen=make_generator(14))
    tensors = module_tensors(layer, x)
    if layout == "input":
        tensors[0] = tensors[0].contiguous(memory_format=CL)
    else:
        tensors[1] = tensors[1].contiguous(memory_format=CL)
    compare_with_torch(*module_fns(layer, ref), tensors, device=device, check_memory_format=True)


def test_module_is_a_torch_conv2d():
    layer = dlunits.nn.Conv2d(3, 8, 3)
    assert isinstance(layer, torch.nn.Conv2d)
    assert isinstance(layer, torch.nn.Module)
    assert type(layer) is dlunits.nn.Conv2d


@pytest.mark.parametrize("kwargs", [dict(), dict(bias=False), dict(padding="same", padding_mode="reflect"),
                                    dict(stride=2, groups=2, dilation=(1, 2), padding=(1, 0))], ids=str)
def test_module_state_dict_and_repr(kwargs):
    ref = torch.nn.Conv2d(4, 6, (3, 2), **kwargs)
    layer = dlunits.nn.Conv2d(4, 6, (3, 2), **kwargs)
    assert list(layer.state_dict().keys()) == list(ref.state_dict().keys())
    for (name, p), (name_ref, p_ref) in zip(layer.named_parameters(), ref.named_parameters()):
        assert name == name_ref and p.shape == p_ref.shape and p.dtype == p_ref.dtype
    assert repr(layer) == repr(ref)
    assert layer.extra_repr() == ref.extra_repr()


def test_module_loads_torch_weights_unchanged():
    ref = torch.nn.Conv2d(4, 6, (3, 2), groups=2)
    layer = dlunits.nn.Conv2d(4, 6, (3, 2), groups=2)
    result = layer.load_state_dict(ref.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in ref.state_dict().items():
        assert torch.equal(layer.state_dict()[k], v)
    # and the other way round
    back = torch.nn.Conv2d(4, 6, (3, 2), groups=2)
    back.load_state_dict(layer.state_dict())
    for k, v in back.state_dict().items():
        assert torch.equal(ref.state_dict()[k], v)


def test_module_initialisation_matches_torch():
    """Same constructor, same random initialisation for the same seed."""
    torch.manual_seed(3)
    ref = torch.nn.Conv2d(4, 6, (3, 2), groups=2)
    torch.manual_seed(3)
    layer = dlunits.nn.Conv2d(4, 6, (3, 2), groups=2)
    assert torch.equal(layer.weight, ref.weight)
    assert torch.equal(layer.bias, ref.bias)


def test_module_factory_kwargs():
    layer = dlunits.nn.Conv2d(2, 3, 3, dtype=torch.float64, device="cpu")
    assert layer.weight.dtype == torch.float64 and layer.bias.dtype == torch.float64
    x = randn(1, 2, 5, 5, gen=make_generator(0))
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------
# Hypothesis: random configurations against torch, float64
# --------------------------------------------------------------------------------------


@st.composite
def conv_configs(draw):
    """Only valid configurations: groups divide both channel counts, the (padded) input holds
    the dilated kernel, padding_mode's limits hold, 'same' only with stride 1."""
    groups = draw(st.integers(1, 3))
    C = groups * draw(st.integers(1, 3))
    O = groups * draw(st.integers(1, 3))
    N = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    use_same = draw(st.sampled_from([True, False, False]))  # padding='same' (stride 1) a third of the time
    sh, sw = (1, 1) if use_same else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding_mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if use_same:
        # 'same' pads ceil((span - 1) / 2) at most on a side; reflect and circular need the input
        # larger than that
        min_h = (span_h - 1 + 1) // 2 + 1 if padding_mode in ("reflect", "circular") else 1
        min_w = (span_w - 1 + 1) // 2 + 1 if padding_mode in ("reflect", "circular") else 1
        H, W = draw(st.integers(min_h, 8)), draw(st.integers(min_w, 8))
        padding = "same"
    else:
        H, W = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        limit_h, limit_w = {"reflect": (H - 1, W - 1), "circular": (H, W)}.get(padding_mode, (3, 3))
        ph = draw(st.integers(0, min(3, limit_h)))
        pw = draw(st.integers(0, min(3, limit_w)))
        # the padded input must hold the dilated kernel: grow H, W if needed
        padding = (ph, pw)
        if H + 2 * ph < span_h or W + 2 * pw < span_w:
            H = max(H, span_h)
            W = max(W, span_w)
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(N=N, C=C, H=H, W=W, O=O, kernel=(kh, kw), stride=(sh, sw), padding=padding,
                dilation=(dh, dw), groups=groups, bias=bias, padding_mode=padding_mode, seed=seed)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=conv_configs())
def test_hypothesis_matches_torch(device, cfg):
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"],
                  bias=cfg["bias"])
    layer, ref = module_pair(cfg["C"], cfg["O"], cfg["kernel"], kwargs, cfg["padding_mode"])
    x = randn(cfg["N"], cfg["C"], cfg["H"], cfg["W"], gen=make_generator(cfg["seed"]))
    tensors = module_tensors(layer, x)
    # fresh random weights rather than the layer's initialisation
    gen = make_generator(cfg["seed"] + 1)
    tensors[1:] = [randn(*t.shape, gen=gen) for t in tensors[1:]]
    compare_with_torch(*module_fns(layer.to(device), ref.to(device)), tensors, device=device)
    if cfg["padding_mode"] == "zeros":  # and the functional form, with the same numbers
        dl, th = conv_pair(cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
        compare_with_torch(dl, th, tensors + [None] * (3 - len(tensors)), device=device)


# --------------------------------------------------------------------------------------
# gradcheck / gradgradcheck (float64)
# --------------------------------------------------------------------------------------

GRADCHECK_CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
    dict(stride=1, padding="same", dilation=(2, 1), groups=1),
    dict(stride=2, padding=1, dilation=1, groups=4),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_conv2d(case, bias):
    gen = make_generator(31)
    x = randn(2, 4, 5, 6, gen=gen, requires_grad=True)
    w = randn(4, 4 // case["groups"], 2, 3, gen=gen, requires_grad=True)
    inputs = (x, w, randn(4, gen=gen, requires_grad=True)) if bias else (x, w)
    fn = lambda x, w, b=None: D.conv2d(x, w, b, **case)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_gradcheck_module(padding_mode):
    layer, _ = module_pair(2, 2, (2, 3), dict(padding=(1, 2), stride=(1, 2)), padding_mode)
    gen = make_generator(32)
    x = randn(1, 2, 4, 5, gen=gen, requires_grad=True)
    w = randn(*layer.weight.shape, gen=gen, requires_grad=True)
    b = randn(*layer.bias.shape, gen=gen, requires_grad=True)
    fn = lambda x, w, b: torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("pad", [(1, 2, 3, 0), (2, 2, 2, 2)], ids=str)
def test_gradcheck_pad(mode, pad):
    x = randn(2, 2, 4, 3, gen=make_generator(33), requires_grad=True)
    fn = lambda t: D.pad(t, pad, mode)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


# The backward ops are differentiable themselves (dlunits/ops.py): check their own autograd.
BACKWARD_GEOMETRIES = [
    # input size, weight size, stride, padding [t, b, l, r], dilation, groups
    ([2, 4, 5, 4], [4, 2, 2, 3], [1, 2], [1, 0, 0, 2], [1, 1], 2),
    ([1, 2, 5, 5], [3, 2, 3, 2], [2, 1], [0, 1, 1, 1], [1, 2], 1),
]


def _output_size(input_size, weight_size, stride, padding, dilation):
    H = (input_size[2] + padding[0] + padding[1] - dilation[0] * (weight_size[2] - 1) - 1) // stride[0] + 1
    W = (input_size[3] + padding[2] + padding[3] - dilation[1] * (weight_size[3] - 1) - 1) // stride[1] + 1
    return [input_size[0], weight_size[0], H, W]


@pytest.mark.parametrize("geometry", BACKWARD_GEOMETRIES, ids=str)
def test_gradcheck_backward_ops(geometry):
    input_size, weight_size, stride, padding, dilation, groups = geometry
    args = (stride, padding, dilation, groups)
    gen = make_generator(34)
    go = randn(*_output_size(input_size, weight_size, stride, padding, dilation), gen=gen, requires_grad=True)
    w = randn(*weight_size, gen=gen, requires_grad=True)
    x = randn(*input_size, gen=gen, requires_grad=True)

    def backward_input(go, w):
        return ops.conv2d_backward_input(go, w, input_size, *args)

    def backward_weight(go, x):
        return ops.conv2d_backward_weight(go, x, weight_size, *args)

    for fn, inputs in [(backward_input, (go, w)), (backward_weight, (go, x)), (ops.conv2d_backward_bias, (go,))]:
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_gradcheck_pad2d_backward(mode):
    go = randn(2, 2, 7, 6, gen=make_generator(35), requires_grad=True)
    fn = lambda g: ops.pad2d_backward(g, [1, 2, 2, 1], mode)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (go,))
    assert torch.autograd.gradgradcheck(fn, (go,))


# --------------------------------------------------------------------------------------
# Second derivatives against torch
# --------------------------------------------------------------------------------------


def _double_backward(conv, x, w, b, go, v_x, v_w, v_b):
    """Gradients of <grad_input, v_x> + <grad_weight, v_w> + <grad_bias, v_b> with respect to
    x, w, b and grad_output."""
    y = conv(x, w, b)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), go, create_graph=True)
    loss = (gx * v_x).sum() + (gw * v_w).sum() + (gb * v_b).sum() + (gx ** 2).sum() * 0.5
    return torch.autograd.grad(loss, (x, w, b, go), allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("device,dtype", DEVICE_FLOAT_DTYPES)
@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_second_derivatives_match_torch(device, dtype, case):
    gen = make_generator(40)
    groups = case["groups"]
    x_size, w_size = (2, 4, 6, 5), (4 if groups == 4 else 6, 4 // groups, 3, 2)
    master = [randn(*x_size, gen=gen), randn(*w_size, gen=gen), randn(w_size[0], gen=gen)]
    dl, th = conv_pair(**case)
    y_shape = th(*master).shape
    extra = [randn(*y_shape, gen=gen), randn(*x_size, gen=gen), randn(*w_size, gen=gen), randn(w_size[0], gen=gen)]

    def run(conv):
        tensors = [t.to(device=device, dtype=dtype).requires_grad_() for t in master + extra[:1]]
        vs = [t.to(device=device, dtype=dtype) for t in extra[1:]]
        return _double_backward(conv, *tensors, *vs)

    for name, g, g_ref in zip(["input", "weight", "bias", "grad_output"], run(dl), run(th)):
        assert_close_rel(g, g_ref, REL_TOL[dtype], f"second derivative wrt {name}")


def test_grad_of_grad_input_sum_wrt_weight():
    """d/dW of sum(dL/dx): the example of the brief, against torch."""
    gen = make_generator(41)
    x, w = randn(2, 4, 6, 5, gen=gen), randn(6, 2, 3, 2, gen=gen)
    dl, th = conv_pair((2, 1), 1, 1, 2)
    go = randn(*th(x, w, None).shape, gen=gen)

    def run(conv):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        (gx,) = torch.autograd.grad(conv(xx, ww, None), (xx,), go, create_graph=True)
        (gw,) = torch.autograd.grad(gx.sum(), (ww,))
        return gw

    expected = run(th)
    assert expected.abs().max() > 0
    torch.testing.assert_close(run(dl), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_second_derivatives_through_padding_mode(padding_mode):
    layer, ref = module_pair(2, 3, (3, 2), dict(padding=(1, 2)), padding_mode)
    gen = make_generator(42)
    x = randn(2, 2, 5, 4, gen=gen)

    def run(module):
        xx = x.clone().requires_grad_()
        y = module(xx)
        (gx,) = torch.autograd.grad((y ** 2).sum(), (xx,), create_graph=True)
        return torch.autograd.grad((gx ** 3).sum(), (xx, module.weight, module.bias))

    for g, g_ref in zip(run(layer), run(ref)):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------
# torch.library.opcheck on every op
# --------------------------------------------------------------------------------------

OPCHECK_GEOMETRIES = {
    # name: (input size, weight size, stride, padding [t, b, l, r], dilation, groups, bias, layout)
    "plain-bias": ([2, 4, 6, 7], [6, 4, 3, 2], [1, 1], [0, 0, 0, 0], [1, 1], 1, True, None),
    "plain-no-bias": ([2, 4, 6, 7], [6, 4, 3, 2], [1, 1], [0, 0, 0, 0], [1, 1], 1, False, None),
    "groups-stride-asym-padding": ([2, 4, 6, 7], [6, 2, 3, 2], [2, 1], [1, 0, 2, 1], [1, 2], 2, True, None),
    "depthwise-same-even": ([1, 3, 5, 6], [6, 1, 2, 4], [1, 1], [0, 1, 1, 2], [1, 1], 3, False, None),
    "pointwise": ([3, 4, 3, 5], [2, 4, 1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 1, True, None),
    "channels_last-input": ([2, 4, 6, 7], [6, 4, 3, 3], [1, 2], [1, 1, 1, 1], [1, 1], 1, True, "input"),
    "channels_last-weight": ([2, 4, 6, 7], [6, 2, 3, 3], [1, 1], [1, 1, 0, 0], [1, 1], 2, False, "weight"),
    "zero-batch": ([0, 4, 6, 7], [6, 4, 3, 2], [1, 1], [1, 1, 1, 1], [1, 1], 1, True, None),
}


def _leaf(t):
    return t.detach().requires_grad_()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(OPCHECK_GEOMETRIES))
@pytest.mark.parametrize("op", ["conv2d", "conv2d_backward_input", "conv2d_backward_weight",
                                "conv2d_backward_bias"])
def test_opcheck_conv_ops(op, name, device):
    input_size, weight_size, stride, padding, dilation, groups, bias, layout = OPCHECK_GEOMETRIES[name]
    gen = make_generator(50)
    x = randn(*input_size, gen=gen, device=device)
    w = randn(*weight_size, gen=gen, device=device)
    b = randn(weight_size[0], gen=gen, device=device) if bias else None
    if layout == "input":
        x = x.contiguous(memory_format=CL)
    if layout == "weight":
        w = w.contiguous(memory_format=CL)
    go = randn(*_output_size(input_size, weight_size, stride, padding, dilation), gen=gen, device=device)
    if layout is not None:
        go = go.contiguous(memory_format=CL)
    conv_args = [stride, padding, dilation, groups]
    args = {
        "conv2d": (_leaf(x), _leaf(w), None if b is None else _leaf(b), *conv_args),
        "conv2d_backward_input": (_leaf(go), _leaf(w), input_size, *conv_args),
        "conv2d_backward_weight": (_leaf(go), _leaf(x), weight_size, *conv_args),
        "conv2d_backward_bias": (_leaf(go),),
    }[op]
    torch.library.opcheck(getattr(ops, op), args, raise_exception=True)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape,padding,layout", [
    ((2, 3, 5, 6), [1, 2, 3, 0], None),
    ((3, 4, 4), [3, 0, 2, 2], None),
    ((2, 3, 5, 6), [2, 1, 0, 4], "channels_last"),
    ((0, 2, 3, 3), [1, 1, 2, 2], None),
], ids=["4d", "3d", "channels_last", "zero-batch"])
@pytest.mark.parametrize("op", ["pad2d", "pad2d_backward"])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_pad_ops(device, op, mode, shape, padding, layout):
    gen = make_generator(51)
    x = randn(*shape, gen=gen, device=device)
    if op == "pad2d_backward":  # grad_output has the padded size
        x = randn(*shape[:-2], shape[-2] + padding[0] + padding[1], shape[-1] + padding[2] + padding[3], gen=gen,
                  device=device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    torch.library.opcheck(getattr(ops, op), (_leaf(x), padding, mode), raise_exception=True)
