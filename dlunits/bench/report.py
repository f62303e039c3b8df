"""Reporting a run: the terminal table (printed row by row), the geometric-mean summary, and the
results folder's results.json, results.csv and results.md (plots: see plots.py).

results.json, schema SCHEMA (stable: keys are added with a new schema version, never renamed):
    schema       "dlunits-bench/1"
    environment  environment.capture(): date, host, command, dlunits_commit, dlunits_cuda_compiled,
                 python, torch, cuda, cudnn, cpu, gpu, threads, devices, tf32
    suite        path, tolerance, min_run_time, max_run_time, cudnn_benchmark
    roofline     [{device, dtype, gemm_gflops, copy_gbps}], measured at start
    rows         [{runner.ROW_KEYS}]: one per case, device, dtype and pass; times in ms, errors of
                 dlunits (and of torch) against the float64 reference, status "ok" or "FAILED"
    summary      [{unit, device, pass, geomean_speedup, timed, failed}], pass "all" over both passes
"""
import csv
import json
import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from .runner import ROW_KEYS
from .suite import PASSES, Suite

SCHEMA = "dlunits-bench/1"
RESULT_KEYS = ("schema", "environment", "suite", "roofline", "rows", "summary")


def format_time(ms: float, iqr_ms: Optional[float]) -> str:
    return f"{ms:.3f} " + ("±  n/a" if iqr_ms is None else f"±{iqr_ms:.3f}")


def format_error(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2e}"


# (title, width, row -> text); the first five are left-aligned labels, the rest numbers.
Column = Tuple[str, int, Callable[[dict], str]]
LABEL_COLUMNS = 5
COLUMNS: List[Column] = [
    ("unit", 6, lambda r: r["unit"]),
    ("case", 18, lambda r: r["case"]),
    ("device", 6, lambda r: r["device"]),
    ("dtype", 8, lambda r: r["dtype"]),
    ("pass", 16, lambda r: r["pass"]),
    ("dlunits ms", 16, lambda r: format_time(r["dlunits_ms"], r["dlunits_iqr_ms"])),
    ("torch ms", 16, lambda r: format_time(r["torch_ms"], r["torch_iqr_ms"])),
    ("speed-up", 8, lambda r: f"{r['speedup']:.2f}x"),
    ("GFLOP/s", 8, lambda r: f"{r['gflops']:.1f}"),
    ("GB/s", 7, lambda r: f"{r['gbps']:.1f}"),
    ("% roof", 6, lambda r: f"{r['roofline_pct']:.1f}"),
    ("torch %", 7, lambda r: f"{r['torch_roofline_pct']:.1f}"),
    ("max abs err", 11, lambda r: format_error(r["max_abs_err"])),
    ("max rel err", 11, lambda r: format_error(r["max_rel_err"])),
]
TIMED_COLUMNS = ("dlunits ms", "torch ms", "speed-up", "GFLOP/s", "GB/s", "% roof", "torch %")


def row_cells(row: dict) -> List[str]:
    """The table cells of a row; a FAILED row shows FAILED and its errors, no times."""
    if row["status"] == "ok":
        return [cell(row) for _, _, cell in COLUMNS]
    return [("FAILED" if title == "dlunits ms" else "-") if title in TIMED_COLUMNS else cell(row)
            for title, _, cell in COLUMNS]


class Table:
    """The terminal table; the label columns are as wide as the longest label of the run."""

    def __init__(self, labels: Sequence[dict]):
        self.widths = [max([width, len(title)] + [len(cell(r)) for r in labels]) if i < LABEL_COLUMNS else width
                       for i, (title, width, cell) in enumerate(COLUMNS)]

    def line(self, cells: Sequence[str]) -> str:
        return "  ".join(f"{c:<{w}}" if i < LABEL_COLUMNS else f"{c:>{w}}"
                         for i, (c, w) in enumerate(zip(cells, self.widths))).rstrip()

    def header(self) -> str:
        return self.line([title for title, _, _ in COLUMNS])

    def row(self, row: dict) -> str:
        note = f"  ({row['error']})" if row["error"] else ""
        return self.line(row_cells(row)) + note


def format_environment(env: dict, suite: Suite, rooflines: Sequence[dict]) -> str:
    """The lines printed before the table: what ran, on what, and the roofline measured at start."""
    kernels = "built" if env["dlunits_cuda_compiled"] else "not built"
    lines = [f"dlunits-bench: {suite.path}, TF32 off, cudnn.benchmark={suite.cudnn_benchmark}",
             f"dlunits {env['dlunits_commit']} (CUDA kernels {kernels})"
             f" | torch {env['torch']} | CUDA {env['cuda']} | cuDNN {env['cudnn']} | python {env['python']}",
             f"cpu: {env['cpu']}, {env['threads']} threads | host {env['host']}"]
    if env["gpu"]:
        lines.append(f"gpu: {env['gpu']}")
    for roof in rooflines:
        lines.append(f"roofline {roof['device']} {roof['dtype']} (measured now): {roof['gemm_gflops']:.1f} GFLOP/s "
                     f"matrix product, {roof['copy_gbps']:.1f} GB/s copy")
    lines.append("% roof = achieved GFLOP/s / min(GEMM GFLOP/s, copy GB/s × FLOPs/byte); speed-up = torch / dlunits")
    return "\n".join(lines)


# --- the geometric-mean summary ------------------------------------------------------------------------


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summarize(rows: Sequence[dict]) -> List[dict]:
    """Geometric-mean speed-up per unit and device: per pass, and over both ('all')."""
    summary = []
    for unit, device in dict.fromkeys((r["unit"], r["device"]) for r in rows):
        group = [r for r in rows if r["unit"] == unit and r["device"] == device]
        for pass_name in (*PASSES, "all"):
            selected = [r for r in group if pass_name in ("all", r["pass"])]
            if not selected:
                continue
            timed = [r["speedup"] for r in selected if r["status"] == "ok"]
            summary.append({"unit": unit, "device": device, "pass": pass_name,
                            "geomean_speedup": geometric_mean(timed) if timed else None,
                            "timed": len(timed), "failed": len(selected) - len(timed)})
    return summary


def format_speedup(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_summary(summary: Sequence[dict]) -> str:
    lines = ["geometric-mean speed-up (torch time / dlunits time), per unit and device:"]
    for unit, device in dict.fromkeys((s["unit"], s["device"]) for s in summary):
        entries = [s for s in summary if s["unit"] == unit and s["device"] == device]
        means = "  ".join(f"{s['pass']} {format_speedup(s['geomean_speedup'])}" for s in entries)
        total = entries[-1]
        lines.append(f"  {unit:<8} {device:<5} {means}  ({total['timed']} timed, {total['failed']} FAILED)")
    return "\n".join(lines)


# --- files -------------------------------------------------------------------------------------------


def result_document(env: dict, suite: Suite, rooflines: Sequence[dict], rows: Sequence[dict]) -> dict:
    """The content of results.json."""
    return {
        "schema": SCHEMA,
        "environment": env,
        "suite": {"path": suite.path, "tolerance": dict(suite.tolerance), "min_run_time": dict(suite.min_run_time),
                  "max_run_time": dict(suite.max_run_time), "cudnn_benchmark": suite.cudnn_benchmark},
        "roofline": list(rooflines),
        "rows": list(rows),
        "summary": summarize(rows),
    }


def format_shape(shape: dict) -> str:
    return " ".join(f"{name}={value}" for name, value in shape.items())


def write_json(path: Path, document: dict):
    with open(path, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")


def write_csv(path: Path, rows: Sequence[dict]):
    """One line per row, the JSON row's keys as columns, the shape as 'N=4 C=64 ...'."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_KEYS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "shape": format_shape(row["shape"])})


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(cells) + " |" for cells in lines]


def write_markdown(path: Path, document: dict):
    """The run as a Markdown page: environment, roofline, results table, summary."""
    env, rows = document["environment"], document["rows"]
    lines = [f"# dlunits-bench: {document['suite']['path']}", "",
             f"{env['date']} on {env['host']}: `{env['command']}`", "", "## Environment", ""]
    lines += markdown_table(["", "value"], [[key, ", ".join(value) if isinstance(value, list) else f"{value}"]
                                           for key, value in env.items()])
    lines += ["", "## Roofline, measured at start", ""]
    lines += markdown_table(["device", "dtype", "GEMM GFLOP/s", "copy GB/s"],
                            [[r["device"], r["dtype"], f"{r['gemm_gflops']:.1f}", f"{r['copy_gbps']:.1f}"]
                             for r in document["roofline"]])
    lines += ["", "## Results", "", "Times: median ± IQR in ms. speed-up = torch / dlunits. "
              "% roof = achieved GFLOP/s / min(GEMM GFLOP/s, copy GB/s × FLOPs/byte).", ""]
    lines += markdown_table([title for title, _, _ in COLUMNS] + ["shape", "note"],
                            [row_cells(r) + [format_shape(r["shape"]), r["error"] or ""] for r in rows])
    lines += ["", "## Geometric-mean speed-up", ""]
    lines += markdown_table(["unit", "device", "pass", "speed-up", "timed", "FAILED"],
                            [[s["unit"], s["device"], s["pass"], format_speedup(s["geomean_speedup"]),
                              str(s["timed"]), str(s["failed"])] for s in document["summary"]])
    path.write_text("\n".join(lines) + "\n")
