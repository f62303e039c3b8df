"""torch.nn.functional's signatures, computed by dlunits' kernels.

Thin wrappers: they normalise arguments the way torch does (ints to pairs,
padding strings, unbatched input) and call torch.ops.dlunits.*; every check on
sizes, dtypes and devices happens in the ops (csrc/shape_checks.h).
"""
from typing import Optional, Sequence, Union

import torch

_ops = torch.ops.dlunits

_IntOrPair = Union[int, Sequence[int]]


def _pair(value: _IntOrPair, name: str) -> list:
    """An int or a 1- or 2-sequence as a list of 2 ints, with torch's message otherwise."""
    if isinstance(value, int):
        return [value, value]
    values = list(value)
    if len(values) == 1:
        return values * 2
    if len(values) != 2:
        raise RuntimeError(f"expected {name} to be a single integer value or a list of 2 values to match "
                           f"the convolution dimensions, but got {name}={values}")
    return [int(v) for v in values]


def conv2d_padding(padding: Union[str, _IntOrPair], kernel_size: Sequence[int], stride: Sequence[int],
                   dilation: Sequence[int]) -> list:
    """conv2d's padding argument as [top, bottom, left, right].

    'same' pads d·(k-1) in all per axis, the odd one out at the end, as torch does.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: '{padding}'")
        if any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        result = []
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)
            result += [total // 2, total - total // 2]
        return result
    ph, pw = _pair(padding, "padding")
    return [ph, ph, pw, pw]


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           stride: _IntOrPair = 1, padding: Union[str, _IntOrPair] = 0, dilation: _IntOrPair = 1,
           groups: int = 1) -> torch.Tensor:
    """The conv2d of torch.nn.functional, same signature: cross-correlation of input (N, C, H, W) or (C, H, W) with weight
    (out_channels, C/groups, kH, kW), plus bias."""
    if input.dim() not in (3, 4):
        raise RuntimeError("Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: "
                           f"{list(input.shape)}")
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if weight.dim() != 4:
        raise RuntimeError("dlunits.conv2d: expected weight to be 4-D (out_channels, in_channels/groups, kH, kW), "
                           f"but got {weight.dim()}-D weight of size {list(weight.shape)}")
    pads = conv2d_padding(padding, weight.shape[2:], stride, dilation)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    y = _ops.conv2d(x, weight, bias, stride, pads, dilation, groups)
    return y if batched else y.squeeze(0)


_PAD_MODES = ("reflect", "replicate", "circular")


def pad(input: torch.Tensor, pad: Sequence[int], mode: str = "reflect") -> torch.Tensor:
    """torch.nn.functional.pad for the last two dimensions of a 3-D or 4-D input in the modes that
    Conv2d's padding_mode uses. pad is (left, right, top, bottom), as for F.pad."""
    if mode not in _PAD_MODES:
        raise ValueError(f"dlunits.functional.pad: mode must be one of {_PAD_MODES}, but got mode='{mode}'")
    pad = list(pad)
    if len(pad) != 4:
        raise ValueError(f"dlunits.functional.pad: expected pad to have 4 values (left, right, top, bottom), "
                         f"but got pad={pad}")
    left, right, top, bottom = pad
    return _ops.pad2d(input, [top, bottom, left, right], mode)


# --- pooling ---------------------------------------------------------------------------


def _pool_pair(value, op: str, name: str, default=None) -> list:
    """A pooling argument as [height, width], with torch's message otherwise. default (the
    kernel size) stands in for a stride that is None or empty."""
    if default is not None and (value is None or (not isinstance(value, int) and len(value) == 0)):
        return list(default)
    if isinstance(value, int):
        return [value, value]
    values = [int(v) for v in value]
    if len(values) == 1:
        return values * 2
    if len(values) != 2:
        either = "either be omitted, a single int" if default is not None else "either be a single int"
        raise RuntimeError(f"{op}: {name} must {either}, or a tuple of two ints, but got {name}={tuple(values)}")
    return values


def max_pool2d(input: torch.Tensor, kernel_size: _IntOrPair, stride: Optional[_IntOrPair] = None,
               padding: _IntOrPair = 0, dilation: _IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False):
    """The max_pool2d of torch.nn.functional, same signature: the max of each window of input (N, C, H, W) or
    (C, H, W); with return_indices also torch's flat index (ih·W + iw) of each max."""
    kernel_size = _pool_pair(kernel_size, "max_pool2d", "kernel_size")
    args = (kernel_size, _pool_pair(stride, "max_pool2d", "stride", kernel_size),
            _pool_pair(padding, "max_pool2d", "padding"), _pool_pair(dilation, "max_pool2d", "dilation"),
            ceil_mode)
    if return_indices:
        return _ops.max_pool2d_with_indices(input, *args)
    return _ops.max_pool2d(input, *args)


def avg_pool2d(input: torch.Tensor, kernel_size: _IntOrPair, stride: Optional[_IntOrPair] = None,
               padding: _IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: Optional[int] = None) -> torch.Tensor:
    """The avg_pool2d of torch.nn.functional, same signature: the mean of each window of input (N, C, H, W) or
    (C, H, W)."""
    kernel_size = _pool_pair(kernel_size, "avg_pool2d", "kernel_size")
    return _ops.avg_pool2d(input, kernel_size, _pool_pair(stride, "avg_pool2d", "stride", kernel_size),
                           _pool_pair(padding, "avg_pool2d", "padding"), ceil_mode, count_include_pad,
                           divisor_override)


def _adaptive_output_size(input: torch.Tensor, output_size, op: str) -> list:
    """output_size as [height, width]; a None entry keeps the input's size along that axis."""
    sizes = [output_size, output_size] if output_size is None or isinstance(output_size, int) else list(output_size)
    if len(sizes) != 2:
        raise RuntimeError(f"{op}: output_size must be a single int or a tuple of two ints (or None), "
                           f"but got output_size={output_size}")
    if any(s is None for s in sizes) and input.dim() not in (3, 4):
        raise RuntimeError(f"{op}(): Expected 3D or 4D tensor, but got {list(input.shape)}")
    return [input.shape[axis - 2] if s is None else int(s) for axis, s in enumerate(sizes)]


def adaptive_max_pool2d(input: torch.Tensor, output_size, return_indices: bool = False):
    """The adaptive_max_pool2d of torch.nn.functional, same signature: the max over adaptive windows, so that
    the output is output_size (None keeps an axis' size); with return_indices also torch's flat indices."""
    size = _adaptive_output_size(input, output_size, "adaptive_max_pool2d")
    if return_indices:
        return _ops.adaptive_max_pool2d_with_indices(input, size)
    return _ops.adaptive_max_pool2d(input, size)


def adaptive_avg_pool2d(input: torch.Tensor, output_size) -> torch.Tensor:
    """The adaptive_avg_pool2d of torch.nn.functional, same signature: the mean over adaptive windows, so that
    the output is output_size (None keeps an axis' size)."""
    return _ops.adaptive_avg_pool2d(input, _adaptive_output_size(input, output_size, "adaptive_avg_pool2d"))
# --- recurrent units ------------------------------------------------------------------------------------------------


def rnn_cell(input: torch.Tensor, hx: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
             bias_ih: Optional[torch.Tensor] = None, bias_hh: Optional[torch.Tensor] = None,
             nonlinearity: str = "tanh") -> torch.Tensor:
    """One step of the basic recurrent cell, h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh) with act tanh or relu;
    input (B, I), hx (B, H), weights as torch.nn.RNNCell's."""
    return _ops.rnn_cell(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity)


def _check_two_states(op: str, hx: Sequence[torch.Tensor]) -> None:
    """An LSTM's state is (h, c), in torch's words when it is not."""
    if len(hx) != 2:
        raise RuntimeError(f"{op} expects two hidden states, but got {len(hx)}")


def lstm_cell(input: torch.Tensor, hx: Sequence[torch.Tensor], weight_ih: torch.Tensor, weight_hh: torch.Tensor,
              bias_ih: Optional[torch.Tensor] = None, bias_hh: Optional[torch.Tensor] = None):
    """One LSTM step: (h', c') from input (B, I) and hx = (h, c), both (B, H); weights as torch.nn.LSTMCell's."""
    if not isinstance(hx, (tuple, list)):
        raise TypeError(f"lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, not {type(hx).__name__}")
    _check_two_states("lstm_cell", hx)
    hy, cy, _gates, _cells = _ops.lstm_cell(input, hx[0], hx[1], weight_ih, weight_hh, bias_ih, bias_hh)
    return hy, cy


def _dropout_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """x with each element zeroed with probability p and the others scaled by 1/(1-p)."""
    if p >= 1:
        return x * 0
    keep = torch.empty_like(x).bernoulli_(1 - p)
    return x * keep / (1 - p)


def recurrent_layers(mode: str, input: torch.Tensor, batch_sizes: Optional[Sequence[int]], hx: torch.Tensor,
                     cx: Optional[torch.Tensor], weights: Sequence[Sequence[Optional[torch.Tensor]]],
                     num_layers: int, bidirectional: bool, dropout: float = 0.0, training: bool = False):
    """A stack of RNN or LSTM layers over a sequence in the packed layout: input (N, I) with the rows of
    step t after those of steps < t, batch_sizes[t] of them. A padded (T, B, I) sequence is its
    reshape to (T·B, I) with batch_sizes None (or [B] * T): None names no size, so torch.compile and
    torch.export keep a dynamic batch or length symbolic.

    mode is 'RNN_TANH', 'RNN_RELU' or 'LSTM'; hx (and cx) are (num_layers · directions, B, ·); weights
    has (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr) per layer and direction (None where absent).
    Between layers, in training, dropout zeroes inputs with probability `dropout`. Returns
    (output (N, directions · P), h_n, c_n), c_n None for the RNN.
    """
    directions = 2 if bidirectional else 1
    batch_sizes = [] if batch_sizes is None else [int(b) for b in batch_sizes]
    layer_input = input
    h_n, c_n = [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = weights[k]
            if mode == "LSTM":
                # Where no gradient can be asked of this layer, it keeps no gates and cells for a backward.
                # A jit.trace keeps them always: its graph must not depend on the grad mode it was traced in.
                save = torch.jit.is_tracing() or (torch.is_grad_enabled() and any(
                    t is not None and t.requires_grad for t in (layer_input, hx[k], cx[k], *weights[k])))
                out, h, c, _gates, _cells = _ops.lstm_layer(layer_input, hx[k], cx[k], weight_ih, weight_hh, bias_ih,
                                                            bias_hh, weight_hr, batch_sizes, direction == 1, save)
                c_n.append(c)
            else:
                nonlinearity = "relu" if mode == "RNN_RELU" else "tanh"
                out, h = _ops.rnn_layer(layer_input, hx[k], weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes,
                                        direction == 1, nonlinearity)
            outputs.append(out)
            h_n.append(h)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = _dropout_mask(layer_input, dropout)
    return layer_input, torch.stack(h_n), (torch.stack(c_n) if c_n else None)
_ACTIVATIONS = {None: "none", "none": "none", "identity": "none", "relu": "relu", "sigmoid": "sigmoid",
                "tanh": "tanh"}


def linear(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
           activation: Optional[str] = None) -> torch.Tensor:
    """The linear of torch.nn.functional, same signature: input (*, in_features) times weightᵀ
    (weight is (out_features, in_features)) plus bias (out_features), on every leading dimension.

    dlunits' own keyword activation fuses an activation into the same pass over the output:
    None (or 'identity'), 'relu', 'sigmoid' or 'tanh'; e.g. linear(x, w, b, activation='relu') is
    relu(linear(x, w, b)), and its backward needs only the output.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError("dlunits.functional.linear: expected activation to be one of None, 'identity', 'relu', "
                         f"'sigmoid', 'tanh', but got activation={activation!r}")
    return _ops.linear(input, weight, bias, _ACTIVATIONS[activation])
