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
