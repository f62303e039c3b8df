"""Fake kernels and autograd for the ops declared in csrc/ops.cpp.

Fake kernels validate through the same C++ checks as the real kernels
(csrc/shape_checks.h, exposed as dlunits._C) and give the same sizes and memory
formats, so torch.compile traces dlunits models without graph breaks.

Every backward op is itself differentiable, so double backward works:
conv2d_backward_input and conv2d_backward_weight are bilinear in their two
tensor arguments, and their derivatives are the other two conv2d ops.
"""
import torch

from . import _C

ops = torch.ops.dlunits


def _empty(size, like, channels_last=False):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(size, dtype=like.dtype, device=like.device, memory_format=memory_format)


# --- fake kernels ------------------------------------------------------------


@torch.library.register_fake("dlunits::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    size = _C.conv2d_output_size(input, weight, bias, stride, padding, dilation, groups)
    return _empty(size, input, _C.conv2d_output_channels_last(input, weight))


@torch.library.register_fake("dlunits::conv2d_backward_input")
def _conv2d_backward_input_fake(grad_output, weight, input_size, stride, padding, dilation, groups):
    _C.check_conv2d_backward_input(grad_output, weight, [int(s) for s in input_size], stride, padding,
                                   dilation, groups)
    return _empty(input_size, grad_output, _C.suggests_channels_last(grad_output))


@torch.library.register_fake("dlunits::conv2d_backward_weight")
def _conv2d_backward_weight_fake(grad_output, input, weight_size, stride, padding, dilation, groups):
    _C.check_conv2d_backward_weight(grad_output, input, [int(s) for s in weight_size], stride, padding,
                                    dilation, groups)
    return _empty(weight_size, grad_output)


@torch.library.register_fake("dlunits::conv2d_backward_bias")
def _conv2d_backward_bias_fake(grad_output):
    _C.check_conv2d_backward_bias(grad_output)
    return _empty((grad_output.shape[1],), grad_output)


@torch.library.register_fake("dlunits::pad2d")
def _pad2d_fake(input, padding, mode):
    return _empty(_C.pad2d_output_size(input, padding, mode), input, _C.pad2d_channels_last(input, mode))


@torch.library.register_fake("dlunits::pad2d_backward")
def _pad2d_backward_fake(grad_output, padding, mode):
    size = _C.pad2d_backward_size(grad_output, padding, mode)
    return _empty(size, grad_output, _C.pad2d_channels_last(grad_output, mode))


# --- autograd ------------------------------------------------------------------
# Each setup saves only what its backward will use, given which inputs need grad.


def _conv2d_setup(ctx, inputs, output):
    input, weight, _bias, *conv_args = inputs
    ctx.conv_args = conv_args
    ctx.input_size, ctx.weight_size = list(input.shape), list(weight.shape)
    need_input, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    ctx.save_for_backward(weight if need_input else None, input if need_weight else None)


def _conv2d_backward(ctx, grad):
    weight, input = ctx.saved_tensors
    grad_input = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = ops.conv2d_backward_input(grad, weight, ctx.input_size, *ctx.conv_args)
    if ctx.needs_input_grad[1]:
        grad_weight = ops.conv2d_backward_weight(grad, input, ctx.weight_size, *ctx.conv_args)
    if ctx.needs_input_grad[2]:
        grad_bias = ops.conv2d_backward_bias(grad)
    return grad_input, grad_weight, grad_bias, None, None, None, None


def _conv2d_backward_input_setup(ctx, inputs, output):
    grad_output, weight, _input_size, *conv_args = inputs
    ctx.conv_args = conv_args
    ctx.weight_size = list(weight.shape)
    need_grad_output, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    ctx.save_for_backward(weight if need_grad_output else None, grad_output if need_weight else None)


def _conv2d_backward_input_backward(ctx, v):
    # grad_input = B(grad_output, weight), bilinear; v has the input's shape.
    weight, grad_output = ctx.saved_tensors
    d_grad_output = d_weight = None
    if ctx.needs_input_grad[0]:
        d_grad_output = ops.conv2d(v, weight, None, *ctx.conv_args)
    if ctx.needs_input_grad[1]:
        d_weight = ops.conv2d_backward_weight(grad_output, v, ctx.weight_size, *ctx.conv_args)
    return d_grad_output, d_weight, None, None, None, None, None


def _conv2d_backward_weight_setup(ctx, inputs, output):
    grad_output, input, _weight_size, *conv_args = inputs
    ctx.conv_args = conv_args
    ctx.input_size = list(input.shape)
    need_grad_output, need_input = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    ctx.save_for_backward(input if need_grad_output else None, grad_output if need_input else None)


def _conv2d_backward_weight_backward(ctx, u):
    # grad_weight = B(grad_output, input), bilinear; u has the weight's shape.
    input, grad_output = ctx.saved_tensors
    d_grad_output = d_input = None
    if ctx.needs_input_grad[0]:
        d_grad_output = ops.conv2d(input, u, None, *ctx.conv_args)
    if ctx.needs_input_grad[1]:
        d_input = ops.conv2d_backward_input(grad_output, u, ctx.input_size, *ctx.conv_args)
    return d_grad_output, d_input, None, None, None, None, None


def _conv2d_backward_bias_setup(ctx, inputs, output):
    ctx.grad_output_size = list(inputs[0].shape)


def _conv2d_backward_bias_backward(ctx, t):
    return t.view(1, -1, 1, 1).expand(ctx.grad_output_size)


def _pad2d_setup(ctx, inputs, output):
    _, ctx.padding, ctx.mode = inputs


def _pad2d_backward(ctx, grad):
    return ops.pad2d_backward(grad, ctx.padding, ctx.mode), None, None


def _pad2d_backward_backward(ctx, grad):
    return ops.pad2d(grad, ctx.padding, ctx.mode), None, None


torch.library.register_autograd("dlunits::conv2d", _conv2d_backward, setup_context=_conv2d_setup)
torch.library.register_autograd("dlunits::conv2d_backward_input", _conv2d_backward_input_backward,
                                setup_context=_conv2d_backward_input_setup)
torch.library.register_autograd("dlunits::conv2d_backward_weight", _conv2d_backward_weight_backward,
                                setup_context=_conv2d_backward_weight_setup)
torch.library.register_autograd("dlunits::conv2d_backward_bias", _conv2d_backward_bias_backward,
                                setup_context=_conv2d_backward_bias_setup)
torch.library.register_autograd("dlunits::pad2d", _pad2d_backward, setup_context=_pad2d_setup)
torch.library.register_autograd("dlunits::pad2d_backward", _pad2d_backward_backward, setup_context=_pad2d_setup)


# --- linear ------------------------------------------------------------------------
# The forward saves its output when the fused activation needs it: every activation's
# derivative is written through y = act(z) (relu 1[y > 0], sigmoid y(1 - y), tanh 1 - y²),
# so z is never kept. linear_backward_input and linear_backward_weight are bilinear;
# their derivatives are the other linear ops, as for conv2d.


@torch.library.register_fake("dlunits::linear")
def _linear_fake(input, weight, bias, activation="none"):
    return _empty(_C.linear_output_size(input, weight, bias, activation), input)


@torch.library.register_fake("dlunits::linear_activation_backward")
def _linear_activation_backward_fake(grad_output, output, activation):
    _C.check_linear_activation_backward(grad_output, output, activation)
    return _empty(grad_output.shape, grad_output)


@torch.library.register_fake("dlunits::linear_backward_input")
def _linear_backward_input_fake(grad_output, weight):
    return _empty(_C.linear_backward_input_size(grad_output, weight), grad_output)


@torch.library.register_fake("dlunits::linear_backward_weight")
def _linear_backward_weight_fake(grad_output, input):
    return _empty(_C.linear_backward_weight_size(grad_output, input), grad_output)


@torch.library.register_fake("dlunits::linear_backward_bias")
def _linear_backward_bias_fake(grad_output):
    return _empty((_C.linear_backward_bias_size(grad_output),), grad_output)


def _linear_setup(ctx, inputs, output):
    input, weight, _bias, *rest = inputs
    ctx.activation = rest[0] if rest else "none"
    need_input, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    ctx.save_for_backward(weight if need_input else None, input if need_weight else None,
                          output if ctx.activation != "none" else None)


def _linear_backward(ctx, grad):
    weight, input, output = ctx.saved_tensors
    if ctx.activation != "none":
        grad = ops.linear_activation_backward(grad, output, ctx.activation)
    grad_input = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = ops.linear_backward_input(grad, weight)
    if ctx.needs_input_grad[1]:
        grad_weight = ops.linear_backward_weight(grad, input)
    if ctx.needs_input_grad[2]:
        grad_bias = ops.linear_backward_bias(grad)
    return grad_input, grad_weight, grad_bias, None


def _linear_activation_backward_setup(ctx, inputs, output):
    grad_output, out, ctx.activation = inputs
    ctx.save_for_backward(grad_output, out)


def _linear_activation_backward_backward(ctx, v):
    # gz = dy · act'(y): linear in dy; in y through act'(y)'s derivative
    # (relu 0, sigmoid 1 - 2y, tanh -2y).
    grad_output, out = ctx.saved_tensors
    d_grad_output = d_out = None
    if ctx.needs_input_grad[0]:
        d_grad_output = ops.linear_activation_backward(v, out, ctx.activation)
    if ctx.needs_input_grad[1]:
        if ctx.activation == "sigmoid":
            d_out = v * grad_output * (1 - 2 * out)
        elif ctx.activation == "tanh":
            d_out = v * grad_output * (-2 * out)
        else:
            d_out = torch.zeros_like(out)
    return d_grad_output, d_out, None


def _linear_backward_input_setup(ctx, inputs, output):
    grad_output, weight = inputs
    need_grad_output, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    ctx.save_for_backward(weight if need_grad_output else None, grad_output if need_weight else None)


def _linear_backward_input_backward(ctx, v):
    # grad_input = grad_output · W; v has the input's shape.
    weight, grad_output = ctx.saved_tensors
    d_grad_output = d_weight = None
    if ctx.needs_input_grad[0]:
        d_grad_output = ops.linear(v, weight, None)
    if ctx.needs_input_grad[1]:
        d_weight = ops.linear_backward_weight(grad_output, v)
    return d_grad_output, d_weight


def _linear_backward_weight_setup(ctx, inputs, output):
    grad_output, input = inputs
    need_grad_output, need_input = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    ctx.save_for_backward(input if need_grad_output else None, grad_output if need_input else None)


def _linear_backward_weight_backward(ctx, u):
    # grad_weight = grad_outputᵀ · input; u has the weight's shape.
    input, grad_output = ctx.saved_tensors
    d_grad_output = d_input = None
    if ctx.needs_input_grad[0]:
        d_grad_output = ops.linear(input, u, None)
    if ctx.needs_input_grad[1]:
        d_input = ops.linear_backward_input(grad_output, u)
    return d_grad_output, d_input


def _linear_backward_bias_setup(ctx, inputs, output):
    ctx.grad_output_size = list(inputs[0].shape)


def _linear_backward_bias_backward(ctx, t):
    return t.expand(ctx.grad_output_size)


torch.library.register_autograd("dlunits::linear", _linear_backward, setup_context=_linear_setup)
torch.library.register_autograd("dlunits::linear_activation_backward", _linear_activation_backward_backward,
                                setup_context=_linear_activation_backward_setup)
torch.library.register_autograd("dlunits::linear_backward_input", _linear_backward_input_backward,
                                setup_context=_linear_backward_input_setup)
torch.library.register_autograd("dlunits::linear_backward_weight", _linear_backward_weight_backward,
                                setup_context=_linear_backward_weight_setup)
torch.library.register_autograd("dlunits::linear_backward_bias", _linear_backward_bias_backward,
                                setup_context=_linear_backward_bias_setup)
