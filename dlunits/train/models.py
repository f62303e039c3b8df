"""The seed's models, written with torch.nn layers.

With --units dlunits, dlunits.nn.convert swaps every layer that dlunits has a twin of (Linear,
Conv2d, and the pooling and recurrent layers where this build has them); fuse_activations then
folds each Linear followed by ReLU / Sigmoid / Tanh into one dlunits Linear with that activation
fused into its epilogue (the activation module becomes an Identity: same state_dict).
"""
import torch
from torch import nn

import dlunits

from .config import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def _activation(name: str, model: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"model_args.activation of {model} must be one of {', '.join(ACTIVATIONS)}, but got {name!r}")
    return ACTIVATIONS[name]()


def _check_args(model: str, args: dict, allowed: dict) -> dict:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown model_args {unknown} for {model}; expected some of {sorted(allowed)}")
    return {**allowed, **args}


def perceptron(args: dict) -> nn.Module:
    """The seed's shallow network: Y = softmax(X·W + b), 784 pixels to 10 classes (the softmax is in
    the cross-entropy loss)."""
    _check_args("perceptron", args, {})
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def mlp(args: dict) -> nn.Module:
    """The seed's "deep" MLP with two hidden layers."""
    a = _check_args("mlp", args, {"hidden": [256, 128], "activation": "relu"})
    hidden = list(a["hidden"])
    if len(hidden) < 1 or not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ConfigError(f"model_args.hidden of mlp must be a list of positive integers, but got {a['hidden']!r}")
    layers, width = [nn.Flatten()], 784
    for h in hidden:
        layers += [nn.Linear(width, h), _activation(a["activation"], "mlp")]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


def lenet(args: dict) -> nn.Module:
    """LeNet-5 on 28×28 digits: conv 5×5 (padded to 32×32's geometry), pool, conv 5×5, pool, three
    dense layers."""
    a = _check_args("lenet", args, {"activation": "relu", "channels": [6, 16]})
    if not (isinstance(a["channels"], list) and len(a["channels"]) == 2
            and all(isinstance(c, int) and c > 0 for c in a["channels"])):
        raise ConfigError(f"model_args.channels of lenet must be 2 positive integers, but got {a['channels']!r}")
    c1, c2 = a["channels"]
    return nn.Sequential(
        nn.Conv2d(1, c1, 5, padding=2), _activation(a["activation"], "lenet"), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), _activation(a["activation"], "lenet"), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 5 * 5, 120), _activation(a["activation"], "lenet"),
        nn.Linear(120, 84), _activation(a["activation"], "lenet"),
        nn.Linear(84, 10))


class CharModel(nn.Module):
    """Next-character prediction as in the seed: one-hot characters into a recurrent layer
    (h_t = tanh(W_h·h_{t-1} + W_x·x_t + b_h), or an LSTM), and a dense layer to the scores of the
    next character (y = W_y·h_t + b_y)."""

    def __init__(self, vocab_size: int, cell: str, hidden: int = 64, layers: int = 1):
        super().__init__()
        self.vocab_size = vocab_size
        recurrent = {"rnn": nn.RNN, "lstm": nn.LSTM}[cell]
        self.rnn = recurrent(vocab_size, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def one_hot(self, indices: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.vocab_size, dtype=self.head.weight.dtype, device=indices.device)
        return eye[indices]

    def forward(self, indices: torch.Tensor, state=None):
        """Scores (B, T, vocab) for character indices (B, T); with return of the final state when
        a state is given (generation)."""
        out, new_state = self.rnn(self.one_hot(indices), state)
        scores = self.head(out)
        return scores if state is None else (scores, new_state)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, length: int, temperature: float = 0.0,
                 generator: torch.Generator = None) -> torch.Tensor:
        """prompt (P,) followed by `length` characters, each the most likely next one (temperature 0)
        or sampled from softmax(scores / temperature)."""
        out = list(prompt.tolist())
        x = prompt.view(1, -1)
        scores, state = self.rnn(self.one_hot(x))
        scores = self.head(scores)
        for _ in range(length):
            last = scores[0, -1].double()
            if temperature > 0:
                p = torch.softmax(last / temperature, dim=0)
                nxt = int(torch.multinomial(p, 1, generator=generator))
            else:
                nxt = int(last.argmax())
            out.append(nxt)
            h, state = self.rnn(self.one_hot(torch.tensor([[nxt]], device=prompt.device)), state)
            scores = self.head(h)
        return torch.tensor(out)


def char_model(cell: str):
    def build(args: dict, vocab_size: int) -> nn.Module:
        a = _check_args(f"char_{cell}", args, {"hidden": 64, "layers": 1})
        return CharModel(vocab_size, cell, int(a["hidden"]), int(a["layers"]))
    return build


BUILDERS = {"perceptron": perceptron, "mlp": mlp, "lenet": lenet, "char_rnn": char_model("rnn"),
            "char_lstm": char_model("lstm")}


def fuse_activations(model: nn.Module) -> nn.Module:
    """In every nn.Sequential, a dlunits Linear followed by ReLU / Sigmoid / Tanh becomes one
    Linear with that activation in its epilogue, the activation an Identity (in place)."""
    names = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, layer), (name, act) in zip(children, children[1:]):
            if type(layer) is dlunits.nn.Linear and layer.activation is None and type(act) in names:
                layer.activation = names[type(act)]
                setattr(module, name, nn.Identity())
    return model


def with_units(model: nn.Module, units: str, fuse: bool = True) -> nn.Module:
    """model on dlunits' units (converted, in place) or torch.nn's (unchanged)."""
    if units == "torch":
        return model
    model = dlunits.nn.convert(model, inplace=True)
    return fuse_activations(model) if fuse else model
