"""Drop-in torch.nn layers computed by dlunits' kernels, and convert() to swap them into a model.

Each layer subclasses its torch.nn twin: same constructor, parameters,
state_dict keys and repr, and isinstance(layer, torch.nn.Conv2d) still holds;
only the computation is dlunits'.
"""
import copy

import torch

from . import functional

__all__ = ["Conv2d", "Linear", "convert"]


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d, computed by dlunits.functional.conv2d (and dlunits.functional.pad for a
    padding_mode other than 'zeros')."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            padded = functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return functional.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return functional.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


# torch.nn layer -> its dlunits twin. Later units add themselves here.
TWINS = {torch.nn.Conv2d: Conv2d}


class Linear(torch.nn.Linear):
    """torch.nn.Linear, computed by dlunits.functional.linear.

    One keyword of dlunits' own, activation (None, 'relu', 'sigmoid' or 'tanh'), fuses that
    activation into the layer's pass over its output; with the default None the layer is exactly
    torch.nn.Linear (same parameters, state_dict keys and repr).
    """

    activation = None  # a class default, so that convert() of a torch.nn.Linear finds it

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 activation=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        if activation not in functional._ACTIVATIONS:
            raise ValueError("dlunits.nn.Linear: expected activation to be one of None, 'relu', 'sigmoid', "
                             f"'tanh', but got activation={activation!r}")
        self.activation = activation

    def forward(self, input):
        return functional.linear(input, self.weight, self.bias, activation=self.activation)

    def extra_repr(self):
        text = super().extra_repr()
        return text if self.activation is None else f"{text}, activation={self.activation!r}"


TWINS[torch.nn.Linear] = Linear


def _twin(module: torch.nn.Module) -> torch.nn.Module:
    """The dlunits twin of module, sharing its parameters, buffers, hooks and mode."""
    twin = TWINS[type(module)].__new__(TWINS[type(module)])
    twin.__dict__.update(module.__dict__)
    return twin


def convert(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """model with every torch.nn layer that dlunits has a twin of (exact type match, so user
    subclasses with their own forward are left alone) replaced by that twin, weights kept.

    With inplace=False the model is deep-copied first and the original is untouched.
    """
    if not inplace:
        model = copy.deepcopy(model)
    if type(model) in TWINS:
        return _twin(model)
    for name, child in model.named_children():
        converted = convert(child, inplace=True)
        if converted is not child:
            setattr(model, name, converted)
    return model
