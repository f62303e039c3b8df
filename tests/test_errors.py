"""Bad arguments get a clear Python exception like torch's, never a crash.

Each case checks that dlunits raises the expected exception type with a message that names the
argument and its values; where torch rejects the same call, that torch rejects it too (so dlunits
stays torch-like), with the same message where torch's wording is the reference; and that the
checks run identically under FakeTensorMode (the fake kernels validate with the same C++ checks,
so torch.compile reports the same error as eager).
"""
import re

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

import dlunits
from conftest import make_generator, randn

D = dlunits.functional
ops = torch.ops.dlunits
TORCH_ACCEPTS = "torch accepts"  # marker: torch computes this call, dlunits (by design) refuses it


def _x(*shape, dtype=torch.float64):
    return randn(*shape, gen=make_generator(sum(shape) + len(shape))).to(dtype)


def _int(*shape):
    return torch.randint(-3, 4, shape, generator=make_generator(len(shape)))


# (id, function of a conv2d-like callable, exception, dlunits' message regex,
#  torch's message regex: a regex torch must match too, "" for "raises the same exception type,
#  different words", or TORCH_ACCEPTS)
CONV_CASES = [
    ("input-2d", lambda f: f(_x(6, 6), _x(6, 4, 3, 3)), RuntimeError,
     r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: \[6, 6\]", "same"),
    ("input-5d", lambda f: f(_x(1, 2, 4, 6, 6), _x(6, 4, 3, 3)), RuntimeError,
     r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: \[1, 2, 4, 6, 6\]",
     "same"),
    ("weight-3d", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3)), RuntimeError,
     r"weight to be 4-D.*3-D weight of size \[6, 4, 3\]", ""),
    ("weight-5d", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3, 1)), RuntimeError,
     r"weight to be 4-D.*5-D weight of size \[6, 4, 3, 3, 1\]", ""),
    ("channel-mismatch", lambda f: f(_x(2, 4, 6, 6), _x(6, 3, 3, 3)), RuntimeError,
     r"Given groups=1, weight of size \[6, 3, 3, 3\], expected input\[2, 4, 6, 6\] to have 3 channels, "
     r"but got 4 channels instead", "same"),
    ("groups-not-dividing-out-channels", lambda f: f(_x(2, 4, 6, 6), _x(5, 2, 3, 3), groups=2), RuntimeError,
     r"Given groups=2, expected weight to be divisible by 2 at dimension 0, but got weight of size", "same"),
    ("groups-not-dividing-in-channels", lambda f: f(_x(2, 5, 6, 6), _x(6, 2, 3, 3), groups=3), RuntimeError,
     r"Given groups=3, weight of size \[6, 2, 3, 3\], expected input\[2, 5, 6, 6\] to have 6 channels, "
     r"but got 5 channels instead", "same"),
    ("groups-larger-than-out-channels", lambda f: f(_x(2, 4, 6, 6), _x(2, 1, 3, 3), groups=4), RuntimeError,
     r"Given groups=4, expected weight to be at least 4 at dimension 0, but got weight of size", "same"),
    ("zero-out-channels", lambda f: f(_x(2, 4, 6, 6), _x(0, 4, 3, 3)), RuntimeError,
     r"expected weight to be at least 1 at dimension 0, but got weight of size \[0, 4, 3, 3\]", "same"),
    ("kernel-larger-than-input", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 7, 3)), RuntimeError,
     r"Calculated padded input size per channel: \(6 x 6\)\. Kernel size: \(7 x 3\)\. "
     r"Kernel size can't be greater than actual input size", "same"),
    ("dilated-kernel-larger-than-input", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), dilation=(3, 1)),
     RuntimeError, r"Calculated padded input size per channel: \(6 x 6\)\. Kernel size: \(7 x 3\)", "same"),
    ("kernel-larger-than-padded-input", lambda f: f(_x(2, 4, 3, 3), _x(6, 4, 6, 3), padding=1), RuntimeError,
     r"Calculated padded input size per channel: \(5 x 5\)\. Kernel size: \(6 x 3\)", "same"),
    ("zero-size-kernel", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 0, 3)), RuntimeError,
     r"kernel.*\[6, 4, 0, 3\]", r"kernel size"),
    ("stride-0", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), stride=0), RuntimeError,
     r"non-positive stride is not supported.*stride=\[0, 0\]", r"non-positive stride is not supported"),
    ("stride-negative", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), stride=(1, -2)), RuntimeError,
     r"non-positive stride is not supported.*stride=\[1, -2\]", r"non-positive stride is not supported"),
    ("stride-3-values", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), stride=(1, 2, 3)), RuntimeError,
     r"expected stride to be a single integer value or a list of 2 values.*stride=\[1, 2, 3\]", "same"),
    ("dilation-0", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), dilation=0), RuntimeError,
     r"dilation.*\[0, 0\]", r"dilation.*\[0, 0\]"),
    ("dilation-negative", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), dilation=(2, -1)), RuntimeError,
     r"dilation.*\[2, -1\]", r"dilation should be greater than zero"),
    ("padding-negative", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), padding=-1), RuntimeError,
     r"negative padding is not supported.*padding=\[-1, -1, -1, -1\]", r"negative padding is not supported"),
    ("padding-negative-one-side", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), padding=(1, -2)), RuntimeError,
     r"negative padding is not supported.*-2", r"negative padding is not supported"),
    ("groups-0", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), groups=0), RuntimeError,
     r"non-positive groups is not supported.*groups=0", r"non-positive groups is not supported"),
    ("groups-negative", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), groups=-2), RuntimeError,
     r"non-positive groups is not supported.*groups=-2", r"non-positive groups is not supported"),
    ("integer-dtype", lambda f: f(_int(2, 4, 6, 6), _int(6, 4, 3, 3)), RuntimeError,
     r"dlunits\.conv2d: expected input to be a floating-point tensor.*but got Long", TORCH_ACCEPTS),
    ("complex-dtype", lambda f: f(_x(2, 4, 6, 6).to(torch.complex64), _x(6, 4, 3, 3).to(torch.complex64)),
     RuntimeError, r"expected input to be a floating-point tensor.*but got ComplexFloat", TORCH_ACCEPTS),
    ("float16-on-cpu", lambda f: f(_x(2, 4, 6, 6, dtype=torch.float16), _x(6, 4, 3, 3, dtype=torch.float16)),
     RuntimeError, r"dlunits\.conv2d: on the CPU input must be float32 or float64, but got Half", TORCH_ACCEPTS),
    ("bfloat16-on-cpu", lambda f: f(_x(2, 4, 6, 6, dtype=torch.bfloat16), _x(6, 4, 3, 3, dtype=torch.bfloat16)),
     RuntimeError, r"on the CPU input must be float32 or float64, but got BFloat16", TORCH_ACCEPTS),
    ("input-weight-dtypes", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3, dtype=torch.float32)), RuntimeError,
     r"expected input and weight to have the same dtype, but got input Double and weight Float", ""),
    ("input-weight-dtypes-2", lambda f: f(_x(2, 4, 6, 6, dtype=torch.float32), _x(6, 4, 3, 3)), RuntimeError,
     r"expected input and weight to have the same dtype, but got input Float and weight Double", ""),
    ("bias-wrong-size", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), _x(5)), RuntimeError,
     r"Given weight of size \[6, 4, 3, 3\], expected bias to be 1-dimensional with 6 elements, "
     r"but got bias of size \[5\] instead", "same"),
    ("bias-2d", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), _x(6, 1)), RuntimeError,
     r"expected bias to be 1-dimensional with 6 elements, but got bias of size \[6, 1\] instead", "same"),
    ("bias-dtype", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), _x(6, dtype=torch.float32)), RuntimeError,
     r"expected input and bias to have the same dtype, but got input Double and bias Float", r"bias"),
    ("padding-string-invalid", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), padding="full"), RuntimeError,
     r"Invalid padding string: 'full'", "same"),
    ("padding-same-stride-2", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), padding="same", stride=2), RuntimeError,
     r"padding='same' is not supported for strided convolutions", "same"),
    ("padding-same-stride-1-2", lambda f: f(_x(2, 4, 6, 6), _x(6, 4, 3, 3), padding="same", stride=(1, 2)),
     RuntimeError, r"padding='same' is not supported for strided convolutions", "same"),
]


@pytest.mark.parametrize("make,exc,match,torch_match", [pytest.param(*c[1:], id=c[0]) for c in CONV_CASES])
def test_conv2d_errors(make, exc, match, torch_match):
    with pytest.raises(exc, match=match):
        make(D.conv2d)
    if torch_match == TORCH_ACCEPTS:
        make(F.conv2d)  # torch computes it: dlunits' refusal is a documented difference
        return
    torch_regex = match if torch_match == "same" else (torch_match or None)  # "": the exception type only
    with pytest.raises(exc, match=torch_regex):
        make(F.conv2d)


def _message(make, conv):
    try:
        make(conv)
    except Exception as e:  # noqa: BLE001  (we compare whatever is raised)
        return type(e), str(e)
    return None, "no exception"


@pytest.mark.parametrize("make", [pytest.param(c[1], id=c[0]) for c in CONV_CASES])
def test_conv2d_errors_identical_under_fake_tensor_mode(make):
    """The same exception type and message for fake tensors (what torch.compile traces with)."""
    real = _message(make, D.conv2d)
    assert real[0] is not None
    mode = FakeTensorMode()

    def fake_conv(x, w, b=None, *args, **kwargs):
        with mode:
            fx, fw = mode.from_tensor(x), mode.from_tensor(w)
            fb = None if b is None else mode.from_tensor(b)
            return D.conv2d(fx, fw, fb, *args, **kwargs)

    assert _message(make, fake_conv) == real


# --------------------------------------------------------------------------------------
# nn.Conv2d
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(padding_mode="mirror"), r"padding_mode must be one of .*but got padding_mode='mirror'"),
    (dict(padding_mode="zero"), r"padding_mode must be one of .*but got padding_mode='zero'"),
    (dict(padding="same", stride=2), r"padding='same' is not supported for strided convolutions"),
    (dict(padding="full"), r"Invalid padding string 'full'"),
], ids=["padding_mode-mirror", "padding_mode-zero", "same-stride-2", "padding-string"])
def test_module_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dlunits.nn.Conv2d(2, 4, 3, **kwargs)
    with pytest.raises(ValueError, match=match):
        torch.nn.Conv2d(2, 4, 3, **kwargs)


MODULE_FORWARD_CASES = [
    ("reflect-padding-too-large", dict(padding=3, padding_mode="reflect"), (1, 2, 3, 5), RuntimeError,
     r"Padding size should be less than the corresponding input dimension, but got: padding \(3, 3, 3, 3\) "
     r"for input of size \[1, 2, 3, 5\] in reflect mode",
     r"Padding size should be less than the corresponding input dimension"),
    ("reflect-padding-equal-size", dict(padding=(0, 4), padding_mode="reflect"), (1, 2, 5, 4), RuntimeError,
     r"Padding size should be less than the corresponding input dimension.*padding \(4, 4, 0, 0\)",
     r"Padding size should be less than the corresponding input dimension"),
    ("circular-padding-too-large", dict(padding=(1, 4), padding_mode="circular"), (1, 2, 5, 3), RuntimeError,
     r"Padding value causes wrapping around more than once.*padding \(4, 4, 1, 1\).*\[1, 2, 5, 3\]",
     r"Padding value causes wrapping around more than once"),
    ("reflect-same-too-large", dict(padding="same", padding_mode="reflect", kernel_size=(5, 2)), (1, 2, 2, 4),
     RuntimeError, r"Padding size should be less than the corresponding input dimension.*reflect mode",
     r"Padding size should be less than the corresponding input dimension"),
    ("channel-mismatch", dict(padding=1), (1, 3, 5, 5), RuntimeError,
     r"expected input\[1, 3, 5, 5\] to have 2 channels, but got 3 channels instead", "same"),
    ("channel-mismatch-reflect", dict(padding=1, padding_mode="reflect"), (1, 3, 5, 5), RuntimeError,
     r"expected input\[1, 3, 7, 7\] to have 2 channels, but got 3 channels instead", "same"),
]


@pytest.mark.parametrize("kwargs,shape,exc,match,torch_match", [pytest.param(*c[1:], id=c[0])
                                                                for c in MODULE_FORWARD_CASES])
def test_module_forward_errors(kwargs, shape, exc, match, torch_match):
    kwargs = dict(kwargs)
    kernel = kwargs.pop("kernel_size", 3)
    layer = dlunits.nn.Conv2d(2, 4, kernel, **kwargs).double()
    ref = torch.nn.Conv2d(2, 4, kernel, **kwargs).double()
    x = _x(*shape)
    with pytest.raises(exc, match=match):
        layer(x)
    with pytest.raises(exc, match=match if torch_match == "same" else torch_match):
        ref(x)


# --------------------------------------------------------------------------------------
# pad
# --------------------------------------------------------------------------------------

PAD_CASES = [
    ("mode-constant", lambda: D.pad(_x(1, 2, 4, 4), (1, 1, 1, 1), "constant"), ValueError,
     r"mode must be one of \('reflect', 'replicate', 'circular'\), but got mode='constant'"),
    ("pad-2-values", lambda: D.pad(_x(1, 2, 4, 4), (1, 1), "reflect"), ValueError,
     r"expected pad to have 4 values \(left, right, top, bottom\), but got pad=\[1, 1\]"),
    ("reflect-too-large", lambda: D.pad(_x(1, 2, 3, 5), (1, 1, 3, 0), "reflect"), RuntimeError,
     r"Padding size should be less than the corresponding input dimension.*padding \(1, 1, 3, 0\).*"
     r"\[1, 2, 3, 5\].*reflect"),
    ("circular-too-large", lambda: D.pad(_x(2, 3, 3), (4, 0, 0, 0), "circular"), RuntimeError,
     r"Padding value causes wrapping around more than once.*padding \(4, 0, 0, 0\).*\[2, 3, 3\]"),
    ("negative-padding", lambda: D.pad(_x(1, 2, 4, 4), (-1, 1, 1, 1), "replicate"), RuntimeError,
     r"expected padding >= 0, but got padding=\[1, 1, -1, 1\]"),
    ("input-2d", lambda: D.pad(_x(4, 4), (1, 1, 1, 1), "reflect"), RuntimeError,
     r"expected a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, but got input of size \[4, 4\]"),
    ("input-5d", lambda: D.pad(_x(1, 1, 2, 4, 4), (1, 1, 1, 1), "reflect"), RuntimeError,
     r"expected a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, but got input of size \[1, 1, 2, 4, 4\]"),
    ("zero-channels", lambda: D.pad(_x(2, 0, 3, 3), (1, 1, 1, 1), "replicate"), RuntimeError,
     r"non-zero channel and spatial sizes.*\[2, 0, 3, 3\]"),
    ("integer-dtype", lambda: D.pad(_int(1, 2, 4, 4), (1, 1, 1, 1), "reflect"), RuntimeError,
     r"dlunits\.pad2d: expected input to be a floating-point tensor.*but got Long"),
    ("float16-on-cpu", lambda: D.pad(_x(1, 2, 4, 4, dtype=torch.float16), (1, 1, 1, 1), "reflect"), RuntimeError,
     r"dlunits\.pad2d: on the CPU input must be float32 or float64, but got Half"),
    ("op-mode", lambda: ops.pad2d(_x(1, 2, 4, 4), [1, 1, 1, 1], "zeros"), RuntimeError,
     r"expected mode to be one of 'reflect', 'replicate', 'circular', but got 'zeros'"),
    ("op-3-values", lambda: ops.pad2d(_x(1, 2, 4, 4), [1, 1, 1], "reflect"), RuntimeError,
     r"expected padding to have 4 values \(top, bottom, left, right\), but got padding=\[1, 1, 1\]"),
]


@pytest.mark.parametrize("call,exc,match", [pytest.param(*c[1:], id=c[0]) for c in PAD_CASES])
def test_pad_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_pad_errors_torch_agrees():
    """Where torch's F.pad refuses the same padding, it refuses it too."""
    with pytest.raises(RuntimeError, match="Padding size should be less than the corresponding input dimension"):
        F.pad(_x(1, 2, 3, 5), (1, 1, 3, 0), "reflect")
    with pytest.raises(RuntimeError, match="Padding value causes wrapping around more than once"):
        F.pad(_x(2, 3, 3), (4, 0, 0, 0), "circular")
    with pytest.raises(RuntimeError, match=r"non-zero dimensions for input, but got: \[2, 0, 3, 3\]"):
        F.pad(_x(2, 0, 3, 3), (1, 1, 1, 1), "replicate")


# --------------------------------------------------------------------------------------
# The backward ops
# --------------------------------------------------------------------------------------

_CONV = ([1, 1], [0, 0, 0, 0], [1, 1], 1)  # stride, padding, dilation, groups
_GO = (2, 6, 4, 4)  # conv2d's output size for input (2, 4, 6, 6) and weight (6, 4, 3, 3)

BACKWARD_CASES = [
    ("backward_input-grad_output-size",
     lambda: ops.conv2d_backward_input(_x(2, 6, 5, 4), _x(6, 4, 3, 3), [2, 4, 6, 6], *_CONV), RuntimeError,
     r"dlunits\.conv2d_backward_input: expected grad_output of size \[2, 6, 4, 4\], but got \[2, 6, 5, 4\]"),
    ("backward_input-grad_output-channels",
     lambda: ops.conv2d_backward_input(_x(2, 5, 4, 4), _x(6, 4, 3, 3), [2, 4, 6, 6], *_CONV), RuntimeError,
     r"conv2d_backward_input: expected grad_output of size \[2, 6, 4, 4\], but got \[2, 5, 4, 4\]"),
    ("backward_input-grad_output-3d",
     lambda: ops.conv2d_backward_input(_x(6, 4, 4), _x(6, 4, 3, 3), [2, 4, 6, 6], *_CONV), RuntimeError,
     r"conv2d_backward_input: expected grad_output of size \[2, 6, 4, 4\], but got \[6, 4, 4\]"),
    ("backward_input-dtypes",
     lambda: ops.conv2d_backward_input(_x(*_GO), _x(6, 4, 3, 3, dtype=torch.float32), [2, 4, 6, 6], *_CONV),
     RuntimeError, r"expected grad_output and weight to have the same dtype, but got grad_output Double and "
                   r"weight Float"),
    ("backward_input-input_size-channels",
     lambda: ops.conv2d_backward_input(_x(*_GO), _x(6, 4, 3, 3), [2, 5, 6, 6], *_CONV), RuntimeError,
     r"expected input\[2, 5, 6, 6\] to have 4 channels, but got 5 channels instead"),
    ("backward_input-input_size-3-values",
     lambda: ops.conv2d_backward_input(_x(*_GO), _x(6, 4, 3, 3), [2, 4, 6], *_CONV), RuntimeError,
     r"4-D.*\[2, 4, 6\]"),
    ("backward_weight-grad_output-size",
     lambda: ops.conv2d_backward_weight(_x(2, 6, 5, 4), _x(2, 4, 6, 6), [6, 4, 3, 3], *_CONV), RuntimeError,
     r"dlunits\.conv2d_backward_weight: expected grad_output of size \[2, 6, 4, 4\], but got \[2, 6, 5, 4\]"),
    ("backward_weight-grad_output-batch",
     lambda: ops.conv2d_backward_weight(_x(3, 6, 4, 4), _x(2, 4, 6, 6), [6, 4, 3, 3], *_CONV), RuntimeError,
     r"conv2d_backward_weight: expected grad_output of size \[2, 6, 4, 4\], but got \[3, 6, 4, 4\]"),
    ("backward_weight-dtypes",
     lambda: ops.conv2d_backward_weight(_x(*_GO), _x(2, 4, 6, 6, dtype=torch.float32), [6, 4, 3, 3], *_CONV),
     RuntimeError, r"expected grad_output and input to have the same dtype, but got grad_output Double and "
                   r"input Float"),
    ("backward_weight-integer",
     lambda: ops.conv2d_backward_weight(_int(*_GO), _int(2, 4, 6, 6), [6, 4, 3, 3], *_CONV), RuntimeError,
     r"conv2d_backward_weight: expected grad_output to be a floating-point tensor.*but got Long"),
    ("backward_bias-grad_output-3d", lambda: ops.conv2d_backward_bias(_x(6, 4, 4)), RuntimeError,
     r"dlunits\.conv2d_backward_bias: expected grad_output to be 4-D \(N, C, H, W\), but got 3-D"),
    ("backward_bias-integer", lambda: ops.conv2d_backward_bias(_int(*_GO)), RuntimeError,
     r"dlunits\.conv2d_backward_bias: expected grad_output to be a floating-point tensor.*but got Long"),
    ("backward_bias-float16-on-cpu", lambda: ops.conv2d_backward_bias(_x(*_GO, dtype=torch.float16)), RuntimeError,
     r"dlunits\.conv2d_backward_bias: on the CPU grad_output must be float32 or float64, but got Half"),
    ("pad2d_backward-grad_output-smaller-than-padding",
     lambda: ops.pad2d_backward(_x(2, 3, 2, 2), [2, 2, 2, 2], "reflect"), RuntimeError,
     r"pad2d_backward.*grad_output.*\[2, 3, 2, 2\]"),
    ("pad2d_backward-grad_output-equal-to-padding",
     lambda: ops.pad2d_backward(_x(2, 3, 4, 5), [2, 2, 1, 1], "replicate"), RuntimeError,
     r"pad2d_backward.*grad_output.*\[2, 3, 4, 5\]"),
    ("pad2d_backward-grad_output-2d", lambda: ops.pad2d_backward(_x(6, 6), [1, 1, 1, 1], "reflect"), RuntimeError,
     r"pad2d_backward: expected a 3-D or 4-D grad_output.*grad_output of size \[6, 6\]"),
    ("pad2d_backward-reflect-too-large",
     lambda: ops.pad2d_backward(_x(2, 3, 7, 7), [3, 2, 1, 1], "reflect"), RuntimeError,
     r"Padding size should be less than the corresponding input dimension"),
    ("pad2d_backward-mode", lambda: ops.pad2d_backward(_x(2, 3, 7, 7), [1, 1, 1, 1], "zeros"), RuntimeError,
     r"expected mode to be one of 'reflect', 'replicate', 'circular', but got 'zeros'"),
]


@pytest.mark.parametrize("call,exc,match", [pytest.param(*c[1:], id=c[0]) for c in BACKWARD_CASES])
def test_backward_op_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("call", [pytest.param(c[1], id=c[0]) for c in BACKWARD_CASES])
def test_backward_op_errors_identical_under_fake_tensor_mode(call):
    """Every op's fake kernel rejects what its real kernel rejects, with the same message."""
    try:
        call()
    except RuntimeError as e:
        real = str(e)
    else:
        pytest.fail("the real kernel accepted the call")
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        with pytest.raises(RuntimeError) as info:
            call()
    assert str(info.value) == real


# --------------------------------------------------------------------------------------
# No crash on anything else odd
# --------------------------------------------------------------------------------------


def test_error_leaves_state_usable():
    """After an error the next good call works (nothing half-initialised)."""
    x, w = _x(2, 4, 6, 6), _x(6, 4, 3, 3)
    with pytest.raises(RuntimeError):
        D.conv2d(x, _x(6, 3, 3, 3))
    torch.testing.assert_close(D.conv2d(x, w), F.conv2d(x, w), rtol=1e-10, atol=1e-10)


def test_messages_name_dlunits_op():
    """dlunits' own checks say which op complained."""
    with pytest.raises(RuntimeError, match=re.escape("dlunits.conv2d:")):
        D.conv2d(_x(2, 4, 6, 6), _x(6, 4, 3, 3, dtype=torch.float32))
    with pytest.raises(RuntimeError, match=re.escape("dlunits.pad2d:")):
        D.pad(_int(1, 2, 4, 4), (1, 1, 1, 1), "reflect")
