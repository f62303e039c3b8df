"""The units the benchmark knows: for each, its shape parameters, how to draw its inputs, the dlunits
call, the torch.nn oracle call, and its forward FLOPs and minimal bytes.

A unit is one entry of UNITS. Adding one (max_pool2d, avg_pool2d, linear, lstm...) means writing
its few functions below and registering a Unit; the suite loader, the runner and the reports need
nothing else. Calls take the unit's input tensors by name and the case's shape dict, and return a
tensor (or a tuple of tensors): every floating-point input is differentiated in the
forward+backward pass.
"""
import dataclasses
import math
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

import dlunits

Tensors = Dict[str, torch.Tensor]
Shape = Mapping[str, int]
Call = Callable[[Tensors, Shape], torch.Tensor]

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclasses.dataclass(frozen=True)
class Param:
    """A shape parameter: an integer >= minimum, required when default is None."""

    minimum: int
    default: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Unit:
    """How to benchmark one unit. make_inputs draws float64 CPU tensors from a generator; check_shape
    returns why a complete shape is impossible (or None); backward_cost is the backward's FLOPs and
    bytes as multiples of the forward's; dtypes lists the dtypes dlunits implements per device."""

    name: str
    params: Mapping[str, Param]
    dtypes: Mapping[str, Tuple[str, ...]]
    make_inputs: Callable[[Shape, torch.Generator], Tensors]
    dlunits: Call
    torch: Call
    forward_flops: Callable[[Shape], int]
    forward_bytes: Callable[[Shape, int], int]
    backward_cost: Tuple[int, int]
    check_shape: Callable[[Shape], Optional[str]]


# --- conv2d ----------------------------------------------------------------------------------------


def conv2d_output_size(shape: Shape) -> Tuple[int, int]:
    """(OH, OW) of a conv2d shape."""
    def out(size: int) -> int:
        span = shape["dilation"] * (shape["kernel"] - 1) + 1
        return (size + 2 * shape["padding"] - span) // shape["stride"] + 1
    return out(shape["H"]), out(shape["W"])


def conv2d_check_shape(shape: Shape) -> Optional[str]:
    """Why torch would refuse this conv2d (groups not dividing the channels, empty output), or None."""
    for channels in ("C", "out_channels"):
        if shape[channels] % shape["groups"]:
            return f"groups={shape['groups']} does not divide {channels}={shape[channels]}"
    oh, ow = conv2d_output_size(shape)
    if oh < 1 or ow < 1:
        return f"the output would be {oh}x{ow}: the (dilated) kernel is larger than the padded input"
    return None


def conv2d_inputs(shape: Shape, gen: torch.Generator) -> Tensors:
    """input (N, C, H, W), weight (out_channels, C/groups, k, k) scaled by 1/sqrt(fan-in), bias."""
    cin = shape["C"] // shape["groups"]
    k = shape["kernel"]
    def draw(*size):
        return torch.randn(size, generator=gen, dtype=torch.float64)
    return {"input": draw(shape["N"], shape["C"], shape["H"], shape["W"]),
            "weight": draw(shape["out_channels"], cin, k, k) / math.sqrt(cin * k * k),
            "bias": draw(shape["out_channels"])}


def conv2d_options(shape: Shape) -> dict:
    return {name: shape[name] for name in ("stride", "padding", "dilation", "groups")}


def conv2d_dlunits(t: Tensors, shape: Shape) -> torch.Tensor:
    return dlunits.functional.conv2d(t["input"], t["weight"], t["bias"], **conv2d_options(shape))


def conv2d_torch(t: Tensors, shape: Shape) -> torch.Tensor:
    return F.conv2d(t["input"], t["weight"], t["bias"], **conv2d_options(shape))


def conv2d_flops(shape: Shape) -> int:
    """2 · N · out_channels · OH · OW · (C/groups) · k²: one multiply and one add per weight tap."""
    oh, ow = conv2d_output_size(shape)
    return (2 * shape["N"] * shape["out_channels"] * oh * ow * (shape["C"] // shape["groups"])
            * shape["kernel"] ** 2)


def conv2d_bytes(shape: Shape, itemsize: int) -> int:
    """input, weight, bias and output, each read or written once."""
    oh, ow = conv2d_output_size(shape)
    numel = (shape["N"] * shape["C"] * shape["H"] * shape["W"]
             + shape["out_channels"] * (shape["C"] // shape["groups"]) * shape["kernel"] ** 2
             + shape["out_channels"] + shape["N"] * shape["out_channels"] * oh * ow)
    return numel * itemsize


CONV2D = Unit(
    name="conv2d",
    params={"N": Param(1), "C": Param(1), "H": Param(1), "W": Param(1), "out_channels": Param(1),
            "kernel": Param(1), "stride": Param(1, 1), "padding": Param(0, 0), "dilation": Param(1, 1),
            "groups": Param(1, 1)},
    dtypes={"cpu": ("float32", "float64"), "cuda": ALL_DTYPES},
    make_inputs=conv2d_inputs,
    dlunits=conv2d_dlunits,
    torch=conv2d_torch,
    forward_flops=conv2d_flops,
    forward_bytes=conv2d_bytes,
    # The input and weight gradients cost a forward's FLOPs each; the gradients have the inputs' sizes
    # and read the upstream gradient, so the traffic doubles.
    backward_cost=(2, 1),
    check_shape=conv2d_check_shape,
)

# --- pooling ---------------------------------------------------------------------------------------
# Shapes: N, C, H, W, a square kernel with its stride, padding (and dilation for max pooling),
# ceil_mode 0/1, and channels_last 0/1 for the input's memory format. Adaptive pooling takes OH, OW.


def pool_input(shape: Shape, gen: torch.Generator) -> Tensors:
    x = torch.randn(shape["N"], shape["C"], shape["H"], shape["W"], generator=gen, dtype=torch.float64)
    return {"input": x.contiguous(memory_format=torch.channels_last) if shape["channels_last"] else x}


def pool_output_size(shape: Shape) -> Tuple[int, int]:
    """(OH, OW): torch's rule, ceil_mode included; adaptive pooling gives OH, OW as asked."""
    if "OH" in shape:
        return shape["OH"], shape["OW"]
    k, s, p, d = shape["kernel"], shape["stride"], shape["padding"], shape.get("dilation", 1)

    def out(size: int) -> int:
        span = d * (k - 1) + 1
        numerator = size + 2 * p - span + (s - 1 if shape["ceil_mode"] else 0)
        o = numerator // s + 1
        if shape["ceil_mode"] and (o - 1) * s >= size + p:
            o -= 1
        return o
    return out(shape["H"]), out(shape["W"])


def pool_check_shape(shape: Shape) -> Optional[str]:
    if "OH" in shape:
        return None
    if shape["padding"] > shape["kernel"] // 2:
        return f"padding={shape['padding']} is more than half of kernel={shape['kernel']}"
    oh, ow = pool_output_size(shape)
    return None if oh > 0 and ow > 0 else f"the output would be {oh}x{ow}"


def pool_flops(shape: Shape) -> int:
    """One compare (max) or add (avg) per tap: N · C · OH · OW · taps per window."""
    oh, ow = pool_output_size(shape)
    if "OH" in shape:  # adaptive windows: ceil(in / out) taps at most per axis
        taps = -(-shape["H"] // oh) * -(-shape["W"] // ow) if oh and ow else 0
    else:
        taps = shape["kernel"] ** 2
    return shape["N"] * shape["C"] * oh * ow * taps


def pool_bytes(shape: Shape, itemsize: int) -> int:
    """The input read once and the output written once (no indices: they are not kept)."""
    oh, ow = pool_output_size(shape)
    return shape["N"] * shape["C"] * (shape["H"] * shape["W"] + oh * ow) * itemsize


def _pool_unit(name: str, params: Mapping[str, Param], dl: Call, th: Call, backward_bytes: int) -> Unit:
    return Unit(name=name, params={"N": Param(1), "C": Param(1), "H": Param(1), "W": Param(1), **params,
                                   "channels_last": Param(0, 0)},
                dtypes={"cpu": ("float32", "float64"), "cuda": ALL_DTYPES}, make_inputs=pool_input, dlunits=dl,
                torch=th, forward_flops=pool_flops, forward_bytes=pool_bytes,
                backward_cost=(1, backward_bytes), check_shape=pool_check_shape)


def _fixed(shape: Shape) -> dict:
    return dict(kernel_size=shape["kernel"], stride=shape["stride"], padding=shape["padding"],
                ceil_mode=bool(shape["ceil_mode"]))


FIXED_POOL_PARAMS = {"kernel": Param(1), "stride": Param(1), "padding": Param(0, 0), "ceil_mode": Param(0, 0)}
ADAPTIVE_POOL_PARAMS = {"OH": Param(0), "OW": Param(0)}

# The max backward reads dy and x and writes dx: about twice the forward's bytes; avg's reads dy, writes dx.
MAX_POOL2D = _pool_unit(
    "max_pool2d", {**FIXED_POOL_PARAMS, "dilation": Param(1, 1)},
    lambda t, s: dlunits.functional.max_pool2d(t["input"], dilation=s["dilation"], **_fixed(s)),
    lambda t, s: F.max_pool2d(t["input"], dilation=s["dilation"], **_fixed(s)), backward_bytes=2)
AVG_POOL2D = _pool_unit(
    "avg_pool2d", FIXED_POOL_PARAMS,
    lambda t, s: dlunits.functional.avg_pool2d(t["input"], **_fixed(s)),
    lambda t, s: F.avg_pool2d(t["input"], **_fixed(s)), backward_bytes=1)
ADAPTIVE_AVG_POOL2D = _pool_unit(
    "adaptive_avg_pool2d", ADAPTIVE_POOL_PARAMS,
    lambda t, s: dlunits.functional.adaptive_avg_pool2d(t["input"], (s["OH"], s["OW"])),
    lambda t, s: F.adaptive_avg_pool2d(t["input"], (s["OH"], s["OW"])), backward_bytes=1)
ADAPTIVE_MAX_POOL2D = _pool_unit(
    "adaptive_max_pool2d", ADAPTIVE_POOL_PARAMS,
    lambda t, s: dlunits.functional.adaptive_max_pool2d(t["input"], (s["OH"], s["OW"])),
    lambda t, s: F.adaptive_max_pool2d(t["input"], (s["OH"], s["OW"])), backward_bytes=2)

UNITS: Dict[str, Unit] = {unit.name: unit for unit in (CONV2D, MAX_POOL2D, AVG_POOL2D, ADAPTIVE_AVG_POOL2D,
                                                      ADAPTIVE_MAX_POOL2D)}


# --- linear ----------------------------------------------------------------------------------------
# shape: N rows (the flattened leading dimensions), in_features, out_features, and activation
# 0 none / 1 relu / 2 sigmoid / 3 tanh (the fused epilogue; torch's side applies it after its linear).

LINEAR_ACTIVATIONS = (None, "relu", "sigmoid", "tanh")


def linear_check_shape(shape: Shape) -> Optional[str]:
    if shape["activation"] >= len(LINEAR_ACTIVATIONS):
        return f"activation must be 0 (none), 1 (relu), 2 (sigmoid) or 3 (tanh), but got {shape['activation']}"
    return None


def linear_inputs(shape: Shape, gen: torch.Generator) -> Tensors:
    """input (N, in_features), weight (out_features, in_features) scaled by 1/sqrt(in_features), bias."""
    def draw(*size):
        return torch.randn(size, generator=gen, dtype=torch.float64)
    return {"input": draw(shape["N"], shape["in_features"]),
            "weight": draw(shape["out_features"], shape["in_features"]) / math.sqrt(shape["in_features"]),
            "bias": draw(shape["out_features"])}


def linear_dlunits(t: Tensors, shape: Shape) -> torch.Tensor:
    return dlunits.functional.linear(t["input"], t["weight"], t["bias"],
                                     activation=LINEAR_ACTIVATIONS[shape["activation"]])


_TORCH_ACTIVATIONS = (lambda z: z, torch.relu, torch.sigmoid, torch.tanh)


def linear_torch(t: Tensors, shape: Shape) -> torch.Tensor:
    return _TORCH_ACTIVATIONS[shape["activation"]](F.linear(t["input"], t["weight"], t["bias"]))


def linear_flops(shape: Shape) -> int:
    """2 · N · in_features · out_features for the product, plus N · out_features for the bias."""
    return 2 * shape["N"] * shape["in_features"] * shape["out_features"] + shape["N"] * shape["out_features"]


def linear_bytes(shape: Shape, itemsize: int) -> int:
    """input, weight, bias and output, each read or written once."""
    numel = (shape["N"] * shape["in_features"] + shape["out_features"] * shape["in_features"]
             + shape["out_features"] + shape["N"] * shape["out_features"])
    return numel * itemsize


LINEAR = Unit(
    name="linear",
    params={"N": Param(1), "in_features": Param(1), "out_features": Param(1), "activation": Param(0, 0)},
    dtypes={"cpu": ("float32", "float64"), "cuda": ALL_DTYPES},
    make_inputs=linear_inputs,
    dlunits=linear_dlunits,
    torch=linear_torch,
    forward_flops=linear_flops,
    forward_bytes=linear_bytes,
    # Input and weight gradients: one product each, as costly as the forward's; the traffic doubles.
    backward_cost=(2, 1),
    check_shape=linear_check_shape,
)
UNITS[LINEAR.name] = LINEAR


def pass_flops(unit: Unit, shape: Shape, pass_name: str) -> int:
    """FLOPs of one pass: the forward's, plus the backward's for forward+backward."""
    factor = 1 if pass_name == "forward" else 1 + unit.backward_cost[0]
    return unit.forward_flops(shape) * factor


def pass_bytes(unit: Unit, shape: Shape, itemsize: int, pass_name: str) -> int:
    """Minimal bytes moved by one pass: the forward's, plus the backward's for forward+backward."""
    factor = 1 if pass_name == "forward" else 1 + unit.backward_cost[1]
    return unit.forward_bytes(shape, itemsize) * factor


# --- lstm_cell and lstm -----------------------------------------------------------------------------------------
# Shapes: B (batch), I (input size), H (hidden size), and for the sequence T (time steps). torch's side
# is torch.lstm_cell and torch.lstm, which torch.nn.LSTMCell and torch.nn.LSTM call (cuDNN's LSTM on CUDA).


def lstm_weights(shape: Shape, gen: torch.Generator) -> Tensors:
    """weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh (4H), uniform in ±1/sqrt(H) as torch.nn's."""
    H, I = shape["H"], shape["I"]
    bound = 1 / math.sqrt(H)
    def draw(*size):
        return (torch.rand(size, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    return {"weight_ih": draw(4 * H, I), "weight_hh": draw(4 * H, H), "bias_ih": draw(4 * H),
            "bias_hh": draw(4 * H)}


def lstm_cell_inputs(shape: Shape, gen: torch.Generator) -> Tensors:
    B, H = shape["B"], shape["H"]
    def draw(*size):
        return torch.randn(size, generator=gen, dtype=torch.float64)
    return {"input": draw(B, shape["I"]), "hx": draw(B, H), "cx": draw(B, H), **lstm_weights(shape, gen)}


def lstm_cell_dlunits(t: Tensors, shape: Shape):
    return dlunits.functional.lstm_cell(t["input"], (t["hx"], t["cx"]), t["weight_ih"], t["weight_hh"],
                                        t["bias_ih"], t["bias_hh"])


def lstm_cell_torch(t: Tensors, shape: Shape):
    return torch.lstm_cell(t["input"], (t["hx"], t["cx"]), t["weight_ih"], t["weight_hh"], t["bias_ih"],
                           t["bias_hh"])


def lstm_step_flops(shape: Shape) -> int:
    """One step: 2 · B · 4H · (I + H) for the two products, plus ~30 per (b, h) for the gates."""
    B, I, H = shape["B"], shape["I"], shape["H"]
    return 2 * B * 4 * H * (I + H) + 30 * B * H


def lstm_cell_bytes(shape: Shape, itemsize: int) -> int:
    """The weights and biases, input, hx, cx, and hy, cy once each."""
    B, I, H = shape["B"], shape["I"], shape["H"]
    return (4 * H * (I + H + 2) + B * I + 4 * B * H) * itemsize


def lstm_inputs(shape: Shape, gen: torch.Generator) -> Tensors:
    T, B, H = shape["T"], shape["B"], shape["H"]
    def draw(*size):
        return torch.randn(size, generator=gen, dtype=torch.float64)
    return {"input": draw(T, B, shape["I"]), "h0": draw(1, B, H), "c0": draw(1, B, H), **lstm_weights(shape, gen)}


def lstm_dlunits(t: Tensors, shape: Shape):
    T, B, I = t["input"].shape
    weights = [(t["weight_ih"], t["weight_hh"], t["bias_ih"], t["bias_hh"], None)]
    output, h_n, c_n = dlunits.functional.recurrent_layers("LSTM", t["input"].reshape(T * B, I), [B] * T, t["h0"],
                                                           t["c0"], weights, 1, False)
    return output.view(T, B, -1), h_n, c_n


def lstm_torch(t: Tensors, shape: Shape):
    weights = [t["weight_ih"], t["weight_hh"], t["bias_ih"], t["bias_hh"]]
    # train=True, as nn.LSTM in training: cuDNN's backward refuses an inference-mode forward.
    return torch.lstm(t["input"], (t["h0"], t["c0"]), weights, True, 1, 0.0, True, False, False)


def lstm_flops(shape: Shape) -> int:
    return shape["T"] * lstm_step_flops(shape)


def lstm_bytes(shape: Shape, itemsize: int) -> int:
    """The weights and biases, the input sequence, the output sequence and the states once each."""
    T, B, I, H = shape["T"], shape["B"], shape["I"], shape["H"]
    return (4 * H * (I + H + 2) + T * B * (I + H) + 4 * B * H) * itemsize


LSTM_CELL = Unit(
    name="lstm_cell",
    params={"B": Param(1), "I": Param(1), "H": Param(1)},
    dtypes={"cpu": ("float32", "float64"), "cuda": ALL_DTYPES},
    make_inputs=lstm_cell_inputs,
    dlunits=lstm_cell_dlunits,
    torch=lstm_cell_torch,
    forward_flops=lstm_step_flops,
    forward_bytes=lstm_cell_bytes,
    # Backward: the input, hidden and both weight gradients, two products' worth each of the forward's two.
    backward_cost=(2, 2),
    check_shape=lambda shape: None,
)

LSTM = Unit(
    name="lstm",
    params={"T": Param(1), "B": Param(1), "I": Param(1), "H": Param(1)},
    dtypes={"cpu": ("float32", "float64"), "cuda": ALL_DTYPES},
    make_inputs=lstm_inputs,
    dlunits=lstm_dlunits,
    torch=lstm_torch,
    forward_flops=lstm_flops,
    forward_bytes=lstm_bytes,
    backward_cost=(2, 2),
    check_shape=lambda shape: None,
)

UNITS.update({unit.name: unit for unit in (LSTM_CELL, LSTM)})
