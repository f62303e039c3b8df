"""The training loop: seeded, resumable, on one process or many (torchrun: DistributedDataParallel).

Determinism: the model is initialised from torch.manual_seed(seed) and each epoch's order of the
examples is a permutation drawn from a generator seeded with (seed, epoch), so a run resumed from a
checkpoint at the end of an epoch continues exactly as the uninterrupted run, and the dlunits and
torch.nn runs of one config see the same batches in the same order from the same initial weights.

Under torchrun every rank draws the same permutation and takes its share (rank::world_size) of each
global batch of training.batch_size examples; DDP averages the gradients, so all ranks keep
identical parameters. Rank 0 alone prints, writes metrics and checkpoints; the per-step loss it
records is the mean over all ranks.
"""
import hashlib
import json
import math
import os
import time
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from . import data as datasets
from . import models
from .config import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))


def parameter_digest(model: nn.Module) -> str:
    """sha256 of every parameter's bytes, in order: equal digests mean bit-identical parameters."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Task:
    """What a config trains: the data, the model and how a batch becomes a loss and a count of hits."""

    def __init__(self, config: dict, device: torch.device):
        self.config, self.device = config, device
        self.dtype = DTYPES[config["training"]["dtype"]]
        self.is_chars = config["model"] in ("char_rnn", "char_lstm")
        if self.is_chars:
            self.chars = datasets.load_chars(config["data"])
            self.train_x, self.train_y = self.chars.inputs, self.chars.targets
            self.test_x, self.test_y = self.chars.inputs, self.chars.targets  # the text itself: memorised or not
            self.source = f"text {config['data']['text']!r} ({len(self.chars.text)} characters, " \
                          f"{len(self.chars.vocab)} distinct)"
        else:
            digits = datasets.load_digits(config["data"])
            self.train_x, self.train_y = digits.train_x.to(self.dtype), digits.train_y
            self.test_x, self.test_y = digits.test_x.to(self.dtype), digits.test_y
            self.source = digits.source
        self.loss_fn = nn.CrossEntropyLoss()

    def build_model(self, units: str) -> nn.Module:
        torch.manual_seed(self.config["training"]["seed"])
        builder = models.BUILDERS[self.config["model"]]
        args = self.config["model_args"]
        model = builder(args, len(self.chars.vocab)) if self.is_chars else builder(args)
        model = model.to(device=self.device, dtype=self.dtype)
        return models.with_units(model, units, self.config["training"]["fuse_activations"])

    def loss_and_hits(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        x, y = x.to(self.device), y.to(self.device)
        scores = model(x)
        if self.is_chars:
            scores, y = scores.reshape(-1, scores.shape[-1]), y.reshape(-1)
        if scores.shape[0] != y.shape[0]:
            raise ConfigError(f"the model gives {scores.shape[0]} predictions for {y.shape[0]} targets")
        loss = self.loss_fn(scores, y)
        return loss, int((scores.argmax(-1) == y).sum()), y.numel()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000):
        total_loss, hits, count = 0.0, 0, 0
        for i in range(0, len(y), batch):
            loss, h, n = self.loss_and_hits(model, x[i:i + batch], y[i:i + batch])
            total_loss += float(loss) * n
            hits, count = hits + h, count + n
        return total_loss / count, hits / count


def _optimizer(model: nn.Module, t: dict) -> torch.optim.Optimizer:
    if t["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    return torch.optim.SGD(model.parameters(), lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])


def train(config: dict, units: str = "dlunits", out_dir: Optional[str] = None, device: str = "cpu",
          resume: bool = False, progress: bool = True, epochs: Optional[int] = None,
          max_steps: Optional[int] = None) -> Dict:
    """Trains config's model on dlunits' units or torch.nn's; returns the metrics (also written to
    out_dir as metrics.json, steps.csv and epochs.csv, with checkpoint.pt after every epoch).

    With resume, training continues from out_dir/checkpoint.pt (same config and units)."""
    t = config["training"]
    epochs = t["epochs"] if epochs is None else epochs
    max_steps = t["max_steps"] if max_steps is None else max_steps
    dev = torch.device(device)
    task = Task(config, dev)
    model = task.build_model(units)
    optimizer = _optimizer(model, t)
    rank, world = _rank(), _world()
    if t["batch_size"] % world:
        raise ConfigError(f"training.batch_size={t['batch_size']} does not split over {world} ranks")
    local_batch = t["batch_size"] // world

    history = {"config": config["name"], "model": config["model"], "units": units, "data": task.source,
               "device": str(dev), "dtype": t["dtype"], "world_size": world, "steps": [], "epochs": [],
               "train_examples": len(task.train_y), "test_examples": len(task.test_y)}
    start_epoch, step = 0, 0
    checkpoint_path = os.path.join(out_dir, "checkpoint.pt") if out_dir else None
    if resume:
        if not checkpoint_path or not os.path.isfile(checkpoint_path):
            raise ConfigError(f"--resume: no checkpoint at {checkpoint_path}")
        state = torch.load(checkpoint_path, map_location=dev, weights_only=False)
        if state["units"] != units or state["config"] != config["name"]:
            raise ConfigError(f"--resume: {checkpoint_path} is of config {state['config']!r} with units "
                              f"{state['units']!r}, not {config['name']!r} with {units!r}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]

    try:  # one small batch first: a model that does not fit the data fails here, with a clear message
        with torch.no_grad():
            task.loss_and_hits(model, task.train_x[:2], task.train_y[:2])
    except RuntimeError as e:
        raise ConfigError(f"model {config['model']!r} with model_args {config['model_args']} does not fit its data "
                          f"(inputs of size {list(task.train_x.shape[1:])}): {str(e).splitlines()[0]}") from None

    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    from tqdm import tqdm
    n = len(task.train_y)
    steps_per_epoch = math.ceil(n / t["batch_size"])
    elapsed = history["epochs"][-1]["elapsed_s"] if history["epochs"] else 0.0
    done = False
    for epoch in range(start_epoch, epochs):
        if done:
            break
        began = time.perf_counter()
        for group in optimizer.param_groups:  # a function of the epoch alone: resuming needs no scheduler state
            group["lr"] = t["lr"] * t["lr_decay"] ** epoch
        order = _epoch_order(n, t["seed"], epoch)
        model.train()
        seen_loss, seen_hits, seen = 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"{units} epoch {epoch + 1}/{epochs}", leave=False,
                   disable=not progress or rank != 0, dynamic_ncols=True)
        for b in bar:
            batch = order[b * t["batch_size"]:(b + 1) * t["batch_size"]]
            mine = batch[rank::world]
            optimizer.zero_grad(set_to_none=True)
            loss, hits, count = task.loss_and_hits(train_model, task.train_x[mine], task.train_y[mine])
            loss.backward()
            optimizer.step()
            # The global batch's mean loss and hits (ranks may hold unequal shares of the last batch).
            stats = torch.tensor([float(loss.detach()) * count, hits, count], dtype=torch.float64,
                                 device=dev if world > 1 else "cpu")  # NCCL reduces CUDA tensors only
            if world > 1:
                dist.all_reduce(stats)
            step_loss = float(stats[0] / stats[2])
            seen_loss, seen_hits, seen = seen_loss + float(stats[0]), seen_hits + int(stats[1]), seen + int(stats[2])
            step += 1
            history["steps"].append({"step": step, "epoch": epoch + 1, "loss": step_loss})
            bar.set_postfix(loss=f"{seen_loss / seen:.4f}", acc=f"{seen_hits / seen:.3f}")
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"the loss is {step_loss} at step {step}: lower training.lr")
            if max_steps is not None and step >= max_steps:
                done = True
                break
        bar.close()
        model.eval()
        test_loss, test_acc = task.evaluate(model, task.test_x, task.test_y)
        elapsed += time.perf_counter() - began
        record = {"epoch": epoch + 1, "steps": step, "train_loss": seen_loss / seen, "train_acc": seen_hits / seen,
                  "test_loss": test_loss, "test_acc": test_acc, "elapsed_s": elapsed}
        history["epochs"].append(record)
        if rank == 0 and progress:
            print(f"[{units}] epoch {epoch + 1}/{epochs}  step {step}  train loss {record['train_loss']:.4f} "
                  f"acc {record['train_acc']:.4f}  test loss {test_loss:.4f} acc {test_acc:.4f}  {elapsed:.1f} s",
                  flush=True)
        if rank == 0 and checkpoint_path:
            os.makedirs(out_dir, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                        "step": step, "history": history, "units": units, "config": config["name"]},
                       checkpoint_path + ".tmp")
            os.replace(checkpoint_path + ".tmp", checkpoint_path)

    history["parameter_digest"] = parameter_digest(model)
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, history["parameter_digest"])
        history["rank_parameter_digests"] = digests
    if task.is_chars:
        g = config["generate"]
        model.eval()
        text = model.generate(task.chars.encode(g["prompt"]).to(dev), g["length"], g["temperature"],
                              torch.Generator().manual_seed(t["seed"]))
        history["generated"] = task.chars.decode(text)
    history["model_repr"] = repr(model)
    # Which implementation ran each kind of layer: dlunits.nn.* where dlunits has a twin.
    history["layers"] = sorted({f"{type(m).__module__}.{type(m).__name__}" for m in model.modules()
                                if not list(m.children())})
    if rank == 0 and out_dir:
        write_metrics(history, out_dir)
    return history


def write_metrics(history: Dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(history, f, indent=1)
    with open(os.path.join(out_dir, "steps.csv"), "w") as f:
        f.write("step,epoch,loss\n")
        for s in history["steps"]:
            f.write(f"{s['step']},{s['epoch']},{s['loss']!r}\n")
    with open(os.path.join(out_dir, "epochs.csv"), "w") as f:
        keys = ["epoch", "steps", "train_loss", "train_acc", "test_loss", "test_acc", "elapsed_s"]
        f.write(",".join(keys) + "\n")
        for e in history["epochs"]:
            f.write(",".join(repr(e[k]) for k in keys) + "\n")


def run(config: dict, units: str = "dlunits", out_dir: Optional[str] = None, device: str = "cpu",
        resume: bool = False, progress: bool = True, plot: bool = True, epochs: Optional[int] = None,
        max_steps: Optional[int] = None) -> Dict[str, Dict]:
    """train() for units 'dlunits', 'torch' or 'both' (each in out_dir/<units>/), then the comparison
    (out_dir/comparison.json) and the plot (out_dir/curves.png). Returns {units: metrics}."""
    chosen = ["dlunits", "torch"] if units == "both" else [units]
    results = {}
    for u in chosen:
        results[u] = train(config, u, os.path.join(out_dir, u) if out_dir else None, device, resume, progress,
                           epochs, max_steps)
    if _rank() == 0 and out_dir:
        summary = {u: {"final": r["epochs"][-1] if r["epochs"] else None, "data": r["data"],
                       "generated": r.get("generated")} for u, r in results.items()}
        if len(results) == 2:
            a, b = ([s["loss"] for s in results[u]["steps"]] for u in ("dlunits", "torch"))
            summary["max_step_loss_difference"] = max((abs(x - y) for x, y in zip(a, b)), default=0.0)
        with open(os.path.join(out_dir, "comparison.json"), "w") as f:
            json.dump(summary, f, indent=1)
        if plot:
            from .plots import plot_curves
            plot_curves(results, os.path.join(out_dir, "curves.png"), title=config["name"])
    return results
