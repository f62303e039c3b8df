"""Fake kernels and autograd for the ops declared in csrc/ops.cpp (the recurrent cells'
autograd is C++, csrc/recurrent_autograd.cpp).

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


# --- a symbolic batch in the conv, pad and pool fake kernels -------------------------
# Traced by torch.compile or torch.export with a dynamic batch, a fake tensor's batch (dim 0 of a
# 4-D tensor) is a SymInt. The conv, pad and pool checks (shape_checks.h) read sizes as integers,
# which would fix the batch to the traced example's. They never compare a batch with anything but
# another argument's batch, so their fake kernels check stand-ins whose batch is its example value
# (a check that fails gives eager's message for that example), give the result the symbolic batch,
# and record with torch._check that the arguments' batches agree. (The recurrent and linear checks
# compare symbolic sizes in C++: recurrent_checks.h, linear_checks.h.)


def _batch(t):
    """t's batch where it is symbolic (t is 4-D), else None."""
    return t.shape[0] if t.dim() == 4 and isinstance(t.shape[0], torch.SymInt) else None


def _example(size):
    """The value a symbolic size was traced with."""
    return size.node.hint if size.node.has_hint() else int(size)


def _with_example_batch(t):
    """t, or where its batch is symbolic an empty fake stand-in with the batch's example value."""
    if _batch(t) is None:
        return t
    return t.new_empty_strided((_example(t.shape[0]), *t.shape[1:]), t.stride())


def _example_sizes(sizes):
    """A size list (an op's input_size) with a symbolic batch given as its example value."""
    sizes = list(sizes)
    if len(sizes) == 4 and isinstance(sizes[0], torch.SymInt):
        sizes[0] = _example(sizes[0])
    return [int(s) for s in sizes]


def _batched_as(size, batch):
    """A checked result size whose batch is `batch` (left as it is where batch is None)."""
    return size if batch is None else [batch, *size[1:]]


def _same_batch(op, name, t, other_name, batch):
    """Records that t's batch is `batch` (other_name's), where either is symbolic."""
    if isinstance(batch, torch.SymInt) or _batch(t) is not None:
        torch._check(t.shape[0] == batch, lambda: f"{op}: expected {name} to have the batch of {other_name} "
                                                  f"({batch}), but got {name} of size {list(t.shape)}")


# --- fake kernels ------------------------------------------------------------


@torch.library.register_fake("dlunits::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    size = _C.conv2d_output_size(_with_example_batch(input), weight, bias, stride, padding, dilation, groups)
    return _empty(_batched_as(size, _batch(input)), input, _C.conv2d_output_channels_last(input, weight))


@torch.library.register_fake("dlunits::conv2d_backward_input")
def _conv2d_backward_input_fake(grad_output, weight, input_size, stride, padding, dilation, groups):
    _C.check_conv2d_backward_input(_with_example_batch(grad_output), weight, _example_sizes(input_size), stride,
                                   padding, dilation, groups)
    _same_batch("dlunits.conv2d_backward_input", "grad_output", grad_output, "input_size", input_size[0])
    return _empty(input_size, grad_output, _C.suggests_channels_last(grad_output))


@torch.library.register_fake("dlunits::conv2d_backward_weight")
def _conv2d_backward_weight_fake(grad_output, input, weight_size, stride, padding, dilation, groups):
    _C.check_conv2d_backward_weight(_with_example_batch(grad_output), _with_example_batch(input),
                                    [int(s) for s in weight_size], stride, padding, dilation, groups)
    _same_batch("dlunits.conv2d_backward_weight", "grad_output", grad_output, "input", input.shape[0])
    return _empty(weight_size, grad_output)


@torch.library.register_fake("dlunits::conv2d_backward_bias")
def _conv2d_backward_bias_fake(grad_output):
    _C.check_conv2d_backward_bias(grad_output)
    return _empty((grad_output.shape[1],), grad_output)


@torch.library.register_fake("dlunits::pad2d")
def _pad2d_fake(input, padding, mode):
    size = _C.pad2d_output_size(_with_example_batch(input), padding, mode)
    return _empty(_batched_as(size, _batch(input)), input, _C.pad2d_channels_last(input, mode))


@torch.library.register_fake("dlunits::pad2d_backward")
def _pad2d_backward_fake(grad_output, padding, mode):
    size = _C.pad2d_backward_size(_with_example_batch(grad_output), padding, mode)
    return _empty(_batched_as(size, _batch(grad_output)), grad_output, _C.pad2d_channels_last(grad_output, mode))


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


# --- pooling -------------------------------------------------------------------------
# Results take the layout of the tensor pooled (channels_last stays channels_last).
# The max ops' backward recomputes each window's argmax from the saved input, and
# every backward op is linear in grad_output, so its own derivative is a pooling
# (avg) or a gather at the argmax (max).


def _pooled(size, like, dtype=None):
    result = _empty(size, like, _C.suggests_channels_last(like))
    return result if dtype is None else result.to(dtype)


def _pool_fake(check, input, *args, dtypes=(None,)):
    """A pooling forward's fake result(s): the checked size, with the input's batch."""
    size = _batched_as(check(_with_example_batch(input), *args), _batch(input))
    results = tuple(_pooled(size, input, dtype) for dtype in dtypes)
    return results if len(results) > 1 else results[0]


def _pool_backward_fake(op, check, grad_output, input, *args):
    """A max pooling backward's fake gradient: input's size, with grad_output's batch recorded as input's."""
    check(_with_example_batch(grad_output), _with_example_batch(input), *args)
    _same_batch(op, "grad_output", grad_output, "input", input.shape[0])
    return _pooled(input.shape, input)


def _pool_backward_to_size_fake(op, check, grad_output, input_size, *args):
    """An average pooling backward's fake gradient, of size input_size."""
    size = check(_with_example_batch(grad_output), _example_sizes(input_size), *args)
    _same_batch(op, "grad_output", grad_output, "input_size", input_size[0])
    return _pooled(_batched_as(size, input_size[0] if isinstance(input_size[0], torch.SymInt) else None),
                   grad_output)


@torch.library.register_fake("dlunits::max_pool2d")
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    return _pool_fake(_C.max_pool2d_output_size, input, kernel_size, stride, padding, dilation, ceil_mode)


@torch.library.register_fake("dlunits::max_pool2d_with_indices")
def _max_pool2d_with_indices_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    return _pool_fake(_C.max_pool2d_output_size, input, kernel_size, stride, padding, dilation, ceil_mode,
                      dtypes=(None, torch.int64))


@torch.library.register_fake("dlunits::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, input, kernel_size, stride, padding, dilation, ceil_mode):
    return _pool_backward_fake("dlunits.max_pool2d_backward", _C.max_pool2d_backward_size, grad_output, input,
                               kernel_size, stride, padding, dilation, ceil_mode)


@torch.library.register_fake("dlunits::adaptive_max_pool2d")
def _adaptive_max_pool2d_fake(input, output_size):
    return _pool_fake(_C.adaptive_pool2d_output_size, input, output_size, True)


@torch.library.register_fake("dlunits::adaptive_max_pool2d_with_indices")
def _adaptive_max_pool2d_with_indices_fake(input, output_size):
    return _pool_fake(_C.adaptive_pool2d_output_size, input, output_size, True, dtypes=(None, torch.int64))


@torch.library.register_fake("dlunits::adaptive_max_pool2d_backward")
def _adaptive_max_pool2d_backward_fake(grad_output, input):
    return _pool_backward_fake("dlunits.adaptive_max_pool2d_backward", _C.adaptive_max_pool2d_backward_size,
                               grad_output, input)


@torch.library.register_fake("dlunits::avg_pool2d")
def _avg_pool2d_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _pool_fake(_C.avg_pool2d_output_size, input, kernel_size, stride, padding, ceil_mode, divisor_override)


@torch.library.register_fake("dlunits::avg_pool2d_backward")
def _avg_pool2d_backward_fake(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override):
    return _pool_backward_to_size_fake("dlunits.avg_pool2d_backward", _C.avg_pool2d_backward_size, grad_output,
                                       input_size, kernel_size, stride, padding, ceil_mode, divisor_override)


@torch.library.register_fake("dlunits::adaptive_avg_pool2d")
def _adaptive_avg_pool2d_fake(input, output_size):
    return _pool_fake(_C.adaptive_pool2d_output_size, input, output_size, False)


@torch.library.register_fake("dlunits::adaptive_avg_pool2d_backward")
def _adaptive_avg_pool2d_backward_fake(grad_output, input_size):
    return _pool_backward_to_size_fake("dlunits.adaptive_avg_pool2d_backward", _C.adaptive_avg_pool2d_backward_size,
                                       grad_output, input_size)


def _gather_at(values, indices):
    """values (shaped like a pooled input) read at each window's argmax: indices are flat over (H, W)."""
    flat_indices = indices.reshape(*indices.shape[:-2], indices.shape[-2] * indices.shape[-1])
    flat_values = values.reshape(*values.shape[:-2], values.shape[-2] * values.shape[-1])
    return flat_values.gather(-1, flat_indices).reshape(indices.shape)


def _max_pool2d_setup(ctx, inputs, output):
    input, *ctx.pool_args = inputs
    ctx.save_for_backward(input)


def _max_pool2d_backward(ctx, grad, *_grad_indices):
    (input,) = ctx.saved_tensors
    return (ops.max_pool2d_backward(grad, input, *ctx.pool_args),) + (None,) * len(ctx.pool_args)


def _max_pool2d_backward_setup(ctx, inputs, output):
    _grad_output, input, *ctx.pool_args = inputs
    ctx.save_for_backward(input)


def _max_pool2d_backward_backward(ctx, v):
    # grad_input = scatter of grad_output to the argmax: linear in grad_output, constant in input.
    (input,) = ctx.saved_tensors
    _, indices = ops.max_pool2d_with_indices(input, *ctx.pool_args)
    return (_gather_at(v, indices), None) + (None,) * len(ctx.pool_args)


def _adaptive_max_pool2d_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _adaptive_max_pool2d_backward(ctx, grad, *_grad_indices):
    (input,) = ctx.saved_tensors
    return ops.adaptive_max_pool2d_backward(grad, input), None


def _adaptive_max_pool2d_backward_setup(ctx, inputs, output):
    grad_output, input = inputs
    ctx.output_size = list(grad_output.shape[-2:])
    ctx.save_for_backward(input)


def _adaptive_max_pool2d_backward_backward(ctx, v):
    (input,) = ctx.saved_tensors
    _, indices = ops.adaptive_max_pool2d_with_indices(input, ctx.output_size)
    return _gather_at(v, indices), None


def _avg_pool2d_setup(ctx, inputs, output):
    input, *ctx.pool_args = inputs
    ctx.input_size = list(input.shape)


def _avg_pool2d_backward(ctx, grad):
    return (ops.avg_pool2d_backward(grad, ctx.input_size, *ctx.pool_args),) + (None,) * len(ctx.pool_args)


def _avg_pool2d_backward_setup(ctx, inputs, output):
    _grad_output, _input_size, *ctx.pool_args = inputs


def _avg_pool2d_backward_backward(ctx, v):
    return (ops.avg_pool2d(v, *ctx.pool_args), None) + (None,) * len(ctx.pool_args)


def _adaptive_avg_pool2d_setup(ctx, inputs, output):
    ctx.input_size = list(inputs[0].shape)


def _adaptive_avg_pool2d_backward(ctx, grad):
    return ops.adaptive_avg_pool2d_backward(grad, ctx.input_size), None


def _adaptive_avg_pool2d_backward_setup(ctx, inputs, output):
    ctx.output_size = list(inputs[0].shape[-2:])


def _adaptive_avg_pool2d_backward_backward(ctx, v):
    return ops.adaptive_avg_pool2d(v, ctx.output_size), None


for _name, _backward, _setup in [
    ("max_pool2d", _max_pool2d_backward, _max_pool2d_setup),
    ("max_pool2d_with_indices", _max_pool2d_backward, _max_pool2d_setup),
    ("max_pool2d_backward", _max_pool2d_backward_backward, _max_pool2d_backward_setup),
    ("adaptive_max_pool2d", _adaptive_max_pool2d_backward, _adaptive_max_pool2d_setup),
    ("adaptive_max_pool2d_with_indices", _adaptive_max_pool2d_backward, _adaptive_max_pool2d_setup),
    ("adaptive_max_pool2d_backward", _adaptive_max_pool2d_backward_backward, _adaptive_max_pool2d_backward_setup),
    ("avg_pool2d", _avg_pool2d_backward, _avg_pool2d_setup),
    ("avg_pool2d_backward", _avg_pool2d_backward_backward, _avg_pool2d_backward_setup),
    ("adaptive_avg_pool2d", _adaptive_avg_pool2d_backward, _adaptive_avg_pool2d_setup),
    ("adaptive_avg_pool2d_backward", _adaptive_avg_pool2d_backward_backward, _adaptive_avg_pool2d_backward_setup),
]:
    torch.library.register_autograd(f"dlunits::{_name}", _backward, setup_context=_setup)
# --- recurrent units (csrc/recurrent_driver.h) ------------------------------------------------------------------------
# Fake kernels check through the same C++ (recurrent_checks.h). The forward ops save the inputs and their
# activations; the backward ops are not differentiable (double backward raises a clear error).


@torch.library.register_fake("dlunits::rnn_cell")
def _rnn_cell_fake(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity):
    _C.check_rnn_activation(nonlinearity, "dlunits.rnn_cell")
    _C.check_recurrent_cell(input, hx, None, weight_ih, weight_hh, bias_ih, bias_hh, "dlunits.rnn_cell")
    return input.new_empty(hx.shape)


def _masked_grads(input, output_mask, weights, has_bias):
    """The shapes of a recurrent backward op's gradients of the input, the weights and the bias, as its
    output_mask leaves them: an unwanted one has no rows (the bias gradient is [0] without a bias)."""
    want_input, want_weights = output_mask
    grad_input = input.new_empty((input.shape[0] if want_input else 0, input.shape[1]))
    grad_weights = [input.new_empty((w.shape[0] if want_weights else 0, *w.shape[1:])) for w in weights]
    grad_bias = input.new_empty((weights[0].shape[0] if has_bias and want_weights else 0,))
    return grad_input, grad_weights, grad_bias


@torch.library.register_fake("dlunits::rnn_cell_backward")
def _rnn_cell_backward_fake(grad_hy, input, hx, weight_ih, weight_hh, hy, nonlinearity, has_bias,
                            output_mask=(True, True)):
    op = "dlunits.rnn_cell_backward"
    _C.check_rnn_activation(nonlinearity, op)
    _C.check_recurrent_cell(input, hx, None, weight_ih, weight_hh, None, None, op)
    for name, t in (("grad_hy", grad_hy), ("hy", hy)):
        _C.check_recurrent_backward_tensor(input, t, list(hx.shape), name, op)
    grad_input, (grad_weight_ih, grad_weight_hh), grad_bias = _masked_grads(input, output_mask,
                                                                            (weight_ih, weight_hh), has_bias)
    return grad_input, input.new_empty(hx.shape), grad_weight_ih, grad_weight_hh, grad_bias


@torch.library.register_fake("dlunits::lstm_cell")
def _lstm_cell_fake(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh):
    _C.check_recurrent_cell(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, "dlunits.lstm_cell")
    return (input.new_empty(hx.shape), input.new_empty(cx.shape), input.new_empty((hx.shape[0], weight_ih.shape[0])),
            input.new_empty(cx.shape))


@torch.library.register_fake("dlunits::lstm_cell_backward")
def _lstm_cell_backward_fake(grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh, cy, gates, has_bias,
                             output_mask=(True, True)):
    op = "dlunits.lstm_cell_backward"
    _C.check_recurrent_cell(input, hx, cx, weight_ih, weight_hh, None, None, op)
    for name, t in (("grad_hy", grad_hy), ("grad_cy", grad_cy), ("cy", cy)):
        _C.check_recurrent_backward_tensor(input, t, list(hx.shape), name, op)
    _C.check_recurrent_backward_tensor(input, gates, [hx.shape[0], weight_ih.shape[0]], "gates", op)
    grad_input, (grad_weight_ih, grad_weight_hh), grad_bias = _masked_grads(input, output_mask,
                                                                            (weight_ih, weight_hh), has_bias)
    return grad_input, input.new_empty(hx.shape), input.new_empty(cx.shape), grad_weight_ih, grad_weight_hh, grad_bias


@torch.library.register_fake("dlunits::rnn_layer")
def _rnn_layer_fake(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes, reverse, nonlinearity):
    _C.check_rnn_activation(nonlinearity, "dlunits.rnn_layer")
    _C.check_recurrent_layer(input, h0, None, weight_ih, weight_hh, bias_ih, bias_hh, None, batch_sizes,
                             "dlunits.rnn_layer")
    return input.new_empty((input.shape[0], h0.shape[1])), input.new_empty(h0.shape)


@torch.library.register_fake("dlunits::rnn_layer_backward")
def _rnn_layer_backward_fake(grad_output, grad_h_n, input, h0, weight_ih, weight_hh, output, batch_sizes, reverse,
                             nonlinearity, has_bias, output_mask=(True, True)):
    op = "dlunits.rnn_layer_backward"
    _C.check_rnn_activation(nonlinearity, op)
    _C.check_recurrent_layer(input, h0, None, weight_ih, weight_hh, None, None, None, batch_sizes, op)
    rows = [input.shape[0], h0.shape[1]]
    for name, t, size in (("grad_output", grad_output, rows), ("grad_h_n", grad_h_n, list(h0.shape)),
                          ("output", output, rows)):
        _C.check_recurrent_backward_tensor(input, t, size, name, op)
    grad_input, (grad_weight_ih, grad_weight_hh), grad_bias = _masked_grads(input, output_mask,
                                                                            (weight_ih, weight_hh), has_bias)
    return grad_input, input.new_empty(h0.shape), grad_weight_ih, grad_weight_hh, grad_bias


@torch.library.register_fake("dlunits::lstm_layer")
def _lstm_layer_fake(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes, reverse,
                     save=True):
    _C.check_recurrent_layer(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes,
                             "dlunits.lstm_layer")
    rows = input.shape[0]
    saved = rows if save else 0
    return (input.new_empty((rows, h0.shape[1])), input.new_empty(h0.shape), input.new_empty(c0.shape),
            input.new_empty((saved, weight_ih.shape[0])), input.new_empty((saved, c0.shape[1])))


@torch.library.register_fake("dlunits::lstm_layer_backward")
def _lstm_layer_backward_fake(grad_output, grad_h_n, grad_c_n, input, h0, c0, weight_ih, weight_hh, weight_hr,
                              output, gates, cells, batch_sizes, reverse, has_bias, output_mask=(True, True)):
    op = "dlunits.lstm_layer_backward"
    _C.check_recurrent_layer(input, h0, c0, weight_ih, weight_hh, None, None, weight_hr, batch_sizes, op)
    rows = input.shape[0]
    for name, t, size in (("grad_output", grad_output, [rows, h0.shape[1]]), ("grad_h_n", grad_h_n, list(h0.shape)),
                          ("grad_c_n", grad_c_n, list(c0.shape)), ("output", output, [rows, h0.shape[1]]),
                          ("gates", gates, [rows, weight_ih.shape[0]]), ("cells", cells, [rows, c0.shape[1]])):
        _C.check_recurrent_backward_tensor(input, t, size, name, op)
    weights = (weight_ih, weight_hh) + ((weight_hr,) if weight_hr is not None else ())
    grad_input, grad_weights, grad_bias = _masked_grads(input, output_mask, weights, has_bias)
    grad_weight_hr = grad_weights[2] if weight_hr is not None else input.new_empty((0,))
    return (grad_input, input.new_empty(h0.shape), input.new_empty(c0.shape), grad_weights[0], grad_weights[1],
            grad_bias, grad_weight_hr)


# The recurrent units' autograd is C++ (csrc/recurrent_autograd.cpp): a cell runs once per time step and a
# layer once per layer and direction, and torch.library's Python wrapper cost ~80 µs a call, as much as a
# cell step's arithmetic or a short sequence's. The backward ops' autograd below only refuses double backward.


def _no_double_backward(name):
    def backward(ctx, *grads):
        raise RuntimeError(f"dlunits.{name}: double backward through the recurrent units is not implemented "
                           "(their backward ops have no derivative)")
    return backward


def _nothing_to_save(ctx, inputs, output):
    pass


for _name in ("rnn_cell_backward", "lstm_cell_backward", "rnn_layer_backward", "lstm_layer_backward"):
    torch.library.register_autograd(f"dlunits::{_name}", _no_double_backward(_name), setup_context=_nothing_to_save)
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
