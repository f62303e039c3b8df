"""The run's PNG plots, drawn with matplotlib's Agg backend (no display needed):

    speedup.png   speed-up (torch time / dlunits time) per case, one panel per unit and device,
                  one bar per pass, log scale with 1x marked; FAILED cases marked as such
    roofline.png  one panel per device and dtype: the roofline measured at start (GEMM GFLOP/s, copy
                  GB/s) and each timed pass placed on it by its FLOPs per byte, dlunits filled, torch hollow
"""
import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, NullFormatter

from .suite import PASSES

PASS_COLORS = {"forward": "tab:blue", "forward+backward": "tab:orange"}
PASS_MARKERS = {"forward": "o", "forward+backward": "s"}
BAR_HEIGHT = 0.8


def save(figure: Figure, path: Path):
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=120, bbox_inches="tight")


def groups(rows: Sequence[dict], *keys: str) -> Dict[Tuple, List[dict]]:
    """Rows grouped by the values of keys, in order of first appearance."""
    grouped: Dict[Tuple, List[dict]] = {}
    for row in rows:
        grouped.setdefault(tuple(row[k] for k in keys), []).append(row)
    return grouped


def draw_speedup_panel(axes, rows: Sequence[dict], title: str):
    """Horizontal bars, one group per (case, dtype), one bar per pass, on a log axis centred on 1x."""
    labels = list(dict.fromkeys((r["case"], r["dtype"]) for r in rows))
    passes = [p for p in PASSES if any(r["pass"] == p for r in rows)]
    height = BAR_HEIGHT / len(passes)
    for row in rows:
        y = labels.index((row["case"], row["dtype"])) + (passes.index(row["pass"]) - (len(passes) - 1) / 2) * height
        if row["status"] == "ok":
            axes.barh(y, row["speedup"], height=height, left=0, color=PASS_COLORS[row["pass"]])
            axes.text(row["speedup"], y, f" {row['speedup']:.2f}x", va="center", fontsize=7)
        else:
            axes.text(1, y, " FAILED", va="center", fontsize=7, color="tab:red", fontweight="bold")
    speedups = [r["speedup"] for r in rows if r["status"] == "ok"]
    reach = max([abs(math.log2(s)) for s in speedups] + [1.0]) + 0.5
    axes.set_xscale("log", base=2)
    axes.set_xlim(2 ** -reach, 2 ** reach)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.axvline(1, color="black", linewidth=0.8)
    axes.set_yticks(range(len(labels)), [f"{case} {dtype}" for case, dtype in labels], fontsize=8)
    axes.set_ylim(len(labels) - 0.5, -0.5)
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("speed-up over torch (torch time / dlunits time), log scale; right of 1x: dlunits faster",
                    fontsize=8)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(handles=[Patch(color=PASS_COLORS[p], label=p) for p in passes], fontsize=7, loc="upper left",
                bbox_to_anchor=(1.01, 1.0))


def plot_speedup(rows: Sequence[dict], path: Path):
    panels = groups(rows, "unit", "device")
    heights = [len({(r["case"], r["dtype"]) for r in panel}) + 2 for panel in panels.values()]
    figure = Figure(figsize=(9, 0.35 * sum(heights) + 0.6), layout="constrained")
    grid = figure.add_gridspec(len(panels), 1, height_ratios=heights)
    for i, ((unit, device), panel) in enumerate(panels.items()):
        draw_speedup_panel(figure.add_subplot(grid[i]), panel, f"{unit} on {device}")
    save(figure, path)


def draw_roofline_panel(axes, rows: Sequence[dict], roofline: dict):
    """The roof min(GEMM GFLOP/s, GB/s × intensity) and each timed pass, dlunits filled and torch hollow,
    numbered by case with the key beside the panel."""
    intensity = [r["flops"] / r["bytes"] for r in rows]
    ridge = roofline["gemm_gflops"] / roofline["copy_gbps"]
    x = np.geomspace(min(intensity + [ridge]) / 4, max(intensity + [ridge]) * 4, 200)
    axes.plot(x, np.minimum(roofline["gemm_gflops"], roofline["copy_gbps"] * x), color="black", linewidth=1.2)
    numbers = {case: i + 1 for i, case in enumerate(dict.fromkeys(r["case"] for r in rows))}
    for row, ai in zip(rows, intensity):
        color, marker = PASS_COLORS[row["pass"]], PASS_MARKERS[row["pass"]]
        axes.plot([ai, ai], [row["gflops"], row["torch_gflops"]], color="grey", linewidth=0.5)
        axes.scatter(ai, row["torch_gflops"], marker=marker, facecolors="none", edgecolors=color, s=30)
        axes.scatter(ai, row["gflops"], marker=marker, color=color, s=30)
        axes.annotate(str(numbers[row["case"]]), (ai, row["gflops"]), xytext=(4, 3), textcoords="offset points",
                      fontsize=7)
    handles = [Line2D([], [], color="black", linewidth=1.2, label=f"roofline: {roofline['gemm_gflops']:.0f} "
                      f"GFLOP/s, {roofline['copy_gbps']:.0f} GB/s")]
    for pass_name in dict.fromkeys(r["pass"] for r in rows):
        color, marker = PASS_COLORS[pass_name], PASS_MARKERS[pass_name]
        handles += [Line2D([], [], linestyle="none", marker=marker, color=color, label=f"dlunits {pass_name}"),
                    Line2D([], [], linestyle="none", marker=marker, color=color, markerfacecolor="none",
                           label=f"torch {pass_name}")]
    handles += [Line2D([], [], linestyle="none", label=f"{n}  {case}") for case, n in numbers.items()]
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("arithmetic intensity (FLOPs per minimal byte)", fontsize=8)
    axes.set_ylabel("GFLOP/s", fontsize=8)
    axes.set_title(f"{roofline['device']} {roofline['dtype']}", fontsize=10)
    axes.grid(which="both", alpha=0.3)
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_roofline(rows: Sequence[dict], rooflines: Sequence[dict], path: Path):
    timed = groups([r for r in rows if r["status"] == "ok"], "device", "dtype")
    panels = [(timed[(r["device"], r["dtype"])], r) for r in rooflines if (r["device"], r["dtype"]) in timed]
    figure = Figure(figsize=(9, 5 * max(len(panels), 1)), layout="constrained")
    if not panels:
        figure.text(0.5, 0.5, "no timed case: nothing to place on the roofline", ha="center")
    for i, (panel_rows, roofline) in enumerate(panels):
        draw_roofline_panel(figure.add_subplot(len(panels), 1, i + 1), panel_rows, roofline)
    save(figure, path)


def write_plots(folder: Path, rows: Sequence[dict], rooflines: Sequence[dict]) -> List[Path]:
    """speedup.png and roofline.png in folder; their paths."""
    paths = [folder / "speedup.png", folder / "roofline.png"]
    plot_speedup(rows, paths[0])
    plot_roofline(rows, rooflines, paths[1])
    return paths
