"""The picture of a run: loss per step (dlunits and torch.nn on one axis, so that matching curves lie
on each other), and train / test accuracy per epoch."""
from typing import Dict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"dlunits": {"color": "tab:blue", "linestyle": "-"}, "torch": {"color": "tab:orange", "linestyle": "--"}}


def plot_curves(results: Dict[str, Dict], path: str, title: str = "") -> None:
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
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
    first = next(iter(results.values()))
    fig.suptitle(f"{title}: {first['model']} on {first['data']}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
