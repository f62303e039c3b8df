"""The picture of a run: loss per step (dlunits and torch.nn on one axis, so that matching curves lie
on each other), and train / test accuracy per epoch."""
from typing import Dict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"dlunits": {"color": "tab:blue", "linestyle": "-"}, "torch": {"color": "tab:orange", "linestyle": "--"}}


def plot_curves(results: Dict[str, Dict], path: str, title: str = "") -> None:
    """loss per step, accuracy per epoch and, for two runs, |loss difference| per step: in float64 it
    stays at rounding level; in float32 rounding differences grow through training (chaos of SGD)."""
    both = len(results) == 2
    fig, axes = plt.subplots(1, 3 if both else 2, figsize=(15 if both else 11, 4), layout="constrained")
    loss_ax, acc_ax = axes[0], axes[1]
    for units, r in results.items():
        style = STYLE.get(units, {})
        steps = [s["step"] for s in r["steps"]]
        losses = [s["loss"] for s in r["steps"]]
        loss_ax.plot(steps, losses, label=f"{units}", linewidth=1, **style)
        epochs = [e["epoch"] for e in r["epochs"]]
        acc_ax.plot(epochs, [e["train_acc"] for e in r["epochs"]], marker="o", label=f"{units} train", **style)
        acc_ax.plot(epochs, [e["test_acc"] for e in r["epochs"]], marker="s", label=f"{units} test",
                    color=style.get("color"), linestyle=":")
    loss_ax.set(xlabel="step", ylabel="training loss (cross-entropy)", yscale="log", title="loss per step")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy per epoch")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    if both:
        a, b = (r["steps"] for r in results.values())
        diff = [max(abs(x["loss"] - y["loss"]), 1e-17) for x, y in zip(a, b)]
        axes[2].plot([x["step"] for x in a], diff, color="tab:green", linewidth=0.8)
        axes[2].set(xlabel="step", ylabel="|loss dlunits - loss torch|", yscale="log",
                    title="difference per step (1e-17 = identical)")
        axes[2].grid(alpha=0.3)
    first = next(iter(results.values()))
    heading = f"{title}: {first['model']} on {first['data']}, {first['dtype']}"
    if len(results) == 2:
        a, b = ([s["loss"] for s in r["steps"]] for r in results.values())
        heading += f"; largest step-loss difference {max((abs(x - y) for x, y in zip(a, b)), default=0.0):.1e}"
    fig.suptitle(heading, fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
