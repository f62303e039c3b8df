"""Drop-in torch.nn layers computed by dlunits' kernels, and convert() to swap them into a model.

Each layer subclasses its torch.nn twin: same constructor, parameters,
state_dict keys and repr, and isinstance(layer, torch.nn.Conv2d) still holds;
only the computation is dlunits'.
"""
import copy

import torch
from torch.nn.utils.rnn import PackedSequence

from . import functional

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveMaxPool2d", "AdaptiveAvgPool2d", "RNNCell", "LSTMCell",
           "RNN", "LSTM", "Linear", "convert"]


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


class RNNCell(torch.nn.RNNCell):
    """torch.nn.RNNCell, computed by dlunits.functional.rnn_cell (one fused pass per step)."""

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        if hx is None:
            hx = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
        elif not batched:
            hx = hx.unsqueeze(0)
        h = functional.rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                                self.nonlinearity)
        return h if batched else h.squeeze(0)


class LSTMCell(torch.nn.LSTMCell):
    """torch.nn.LSTMCell, computed by dlunits.functional.lstm_cell (one fused pass per step)."""

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead")
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            hx = (zeros, zeros)
        elif not batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        h, c = functional.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class _RecurrentMixin:
    """The forward of RNN and LSTM: torch.nn's argument handling and checks (inherited), then
    dlunits.functional.recurrent_layers over the sequence in the packed layout."""

    def flatten_parameters(self) -> None:
        """Kept for torch.nn compatibility: dlunits reads each parameter where it is, so there is
        nothing to flatten (torch's version packs them for cuDNN)."""

    def _layer_weights(self):
        weights = []
        for layer in range(self.num_layers):
            for suffix in ([""] if not self.bidirectional else ["", "_reverse"]):
                def get(name):
                    return getattr(self, f"{name}_l{layer}{suffix}", None)
                weights.append((get("weight_ih"), get("weight_hh"), get("bias_ih") if self.bias else None,
                                get("bias_hh") if self.bias else None,
                                get("weight_hr") if getattr(self, "proj_size", 0) > 0 else None))
        return weights

    @staticmethod
    def _check_hx_type(hx, lstm):
        """What hx must be (torch.nn's layers fail on a malformed one with an IndexError or an
        AttributeError, or, given an LSTM a bare tensor, misread it)."""
        if not lstm:
            if not torch.is_tensor(hx):
                raise TypeError(f"RNN: expected hx to be a Tensor (h_0), but got {type(hx).__name__}")
            return
        if not isinstance(hx, (tuple, list)) or not all(torch.is_tensor(h) for h in hx):
            raise TypeError(f"LSTM: expected hx to be a tuple (h_0, c_0) of Tensors, but got {type(hx).__name__}")
        functional._check_two_states("lstm", hx)

    def _run(self, input, hx):
        lstm = self.mode == "LSTM"
        name = "LSTM" if lstm else "RNN"
        if hx is not None:
            self._check_hx_type(hx, lstm)
        directions = 2 if self.bidirectional else 1
        state_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        packed = isinstance(input, PackedSequence)
        if packed:
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch = int(batch_sizes[0])
        else:
            batch_sizes = sorted_indices = unsorted_indices = None
            if input.dim() not in (2, 3):
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D "
                                 + ("instead" if lstm else "tensor instead"))
            batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not batched:
                input = input.unsqueeze(batch_dim)
            max_batch = input.size(0) if self.batch_first else input.size(1)
        if hx is None:
            zeros = dict(dtype=input.dtype, device=input.device)
            h0 = torch.zeros(self.num_layers * directions, max_batch, state_size, **zeros)
            hx = (h0, torch.zeros(self.num_layers * directions, max_batch, self.hidden_size, **zeros)) if lstm else h0
        elif packed:
            hx = self.permute_hidden(hx, sorted_indices)
        else:
            states = hx if lstm else (hx,)
            want = 3 if batched else 2
            if any(h.dim() != want for h in states):
                kind = "batched 3-D" if batched else "unbatched 2-D"
                if lstm:
                    dims = ", ".join(f"{h.dim()}-D" for h in states)
                    raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got ({dims}) tensors")
                raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got {hx.dim()}-D tensor")
            if not batched:
                hx = tuple(h.unsqueeze(1) for h in hx) if lstm else hx.unsqueeze(1)
        self.check_forward_args(input, hx, batch_sizes)

        if packed:
            rows, steps = input, batch_sizes.tolist()
        else:
            sequence = input.transpose(0, 1) if self.batch_first else input
            steps = None  # every step the whole batch
            rows = sequence.reshape(-1, sequence.size(2))
        h0, c0 = hx if lstm else (hx, None)
        output, h_n, c_n = functional.recurrent_layers(self.mode, rows, steps, h0, c0, self._layer_weights(),
                                                       self.num_layers, self.bidirectional, self.dropout,
                                                       self.training)
        hidden = (h_n, c_n) if lstm else h_n
        if packed:
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), \
                self.permute_hidden(hidden, unsorted_indices)
        output = output.view(sequence.size(0), sequence.size(1), output.size(-1))
        if self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            output = output.squeeze(batch_dim)
            hidden = (h_n.squeeze(1), c_n.squeeze(1)) if lstm else h_n.squeeze(1)
        return output, hidden


class RNN(_RecurrentMixin, torch.nn.RNN):
    """torch.nn.RNN (tanh or relu, layers, bidirectional, dropout, packed sequences), computed by
    dlunits' rnn_layer op: one matrix product for the input projection of every step, then the
    recurrence with one fused pass per step."""

    def forward(self, input, hx=None):
        return self._run(input, hx)


class LSTM(_RecurrentMixin, torch.nn.LSTM):
    """torch.nn.LSTM (layers, bidirectional, dropout, proj_size, packed sequences), computed by
    dlunits' lstm_layer op: one matrix product for the input projection of every step, then the
    recurrence with one fused pass per step."""

    def forward(self, input, hx=None):
        return self._run(input, hx)


# torch.nn layer -> its dlunits twin. Later units add themselves here.
TWINS = {
    torch.nn.Conv2d: Conv2d,
    torch.nn.MaxPool2d: MaxPool2d,
    torch.nn.AvgPool2d: AvgPool2d,
    torch.nn.AdaptiveMaxPool2d: AdaptiveMaxPool2d,
    torch.nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
    torch.nn.RNNCell: RNNCell,
    torch.nn.LSTMCell: LSTMCell,
    torch.nn.RNN: RNN,
    torch.nn.LSTM: LSTM,
}


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
    subclasses with their own forward are left alone) replaced by that twin, weights kept. A layer
    that appears in several places (shared, tied) becomes one twin, shared the same way.

    With inplace=False the model is deep-copied first and the original is untouched.
    """
    if not inplace:
        model = copy.deepcopy(model)
    return _convert(model, {})


def _convert(module: torch.nn.Module, done: dict) -> torch.nn.Module:
    """convert's walk; done maps id(module) to what it became, for modules met twice."""
    if id(module) not in done:
        if type(module) in TWINS:
            done[id(module)] = _twin(module)
        else:
            done[id(module)] = module
            for name, child in module.named_children():
                converted = _convert(child, done)
                if converted is not child:
                    setattr(module, name, converted)
    return done[id(module)]
