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

UNITS: Dict[str, Unit] = {unit.name: unit for unit in (CONV2D,)}


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
