"""Drop-in torch.nn layers computed by dlunits' kernels, and convert() to swap them into a model.

Each layer subclasses its torch.nn twin: same constructor, parameters,
state_dict keys and repr, and isinstance(layer, torch.nn.Conv2d) still holds;
only the computation is dlunits'.
"""
import copy

import torch

from . import functional

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveMaxPool2d", "AdaptiveAvgPool2d", "convert"]


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d, computed by dlunits.functional.conv2d (and dlunits.functional.pad for a
    padding_mode other than 'zeros')."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            padded = functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return functional.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return functional.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class MaxPool2d(torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d, computed by dlunits.functional.max_pool2d."""

    def forward(self, input):
        return functional.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                                     ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """torch.nn.AvgPool2d, computed by dlunits.functional.avg_pool2d."""

    def forward(self, input):
        return functional.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                     self.count_include_pad, self.divisor_override)


class AdaptiveMaxPool2d(torch.nn.AdaptiveMaxPool2d):
    """torch.nn.AdaptiveMaxPool2d, computed by dlunits.functional.adaptive_max_pool2d."""

    def forward(self, input):
        return functional.adaptive_max_pool2d(input, self.output_size, self.return_indices)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """torch.nn.AdaptiveAvgPool2d, computed by dlunits.functional.adaptive_avg_pool2d."""

    def forward(self, input):
        return functional.adaptive_avg_pool2d(input, self.output_size)


# torch.nn layer -> its dlunits twin. Later units add themselves here.
TWINS = {
    torch.nn.Conv2d: Conv2d,
    torch.nn.MaxPool2d: MaxPool2d,
    torch.nn.AvgPool2d: AvgPool2d,
    torch.nn.AdaptiveMaxPool2d: AdaptiveMaxPool2d,
    torch.nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
}


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
