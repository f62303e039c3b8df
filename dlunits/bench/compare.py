"""dlunits-bench compare A.json B.json [--threshold 0.05]: regressions and gains from run A to run B.

Rows are matched by (unit, case, device, dtype, pass). Where both runs timed a row, ratio = B's dlunits
time / A's: above 1 + threshold it is a regression, below 1 / (1 + threshold) a gain. torch's ratio is
shown beside it, so that a change of machine or load (both ratios move) can be told from a change of
kernel (dlunits' alone moves). A row correct in A and FAILED in B is a regression too. The geometric
mean of the ratios is printed last; the exit status is 1 when there is any regression.
"""
import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .report import SCHEMA, geometric_mean

KEY = ("unit", "case", "device", "dtype", "pass")
REGRESSIONS = ("regression", "FAILED in B")


class ResultError(ValueError):
    """A file that is not a dlunits-bench result."""


def load_result(path: str) -> dict:
    """A run's results.json (the file, or the results folder that holds it)."""
    file = Path(path) / "results.json" if Path(path).is_dir() else Path(path)
    try:
        with open(file) as f:
            document = json.load(f)
    except json.JSONDecodeError as error:
        raise ResultError(f"{file}: not JSON ({error})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ResultError(f"{file}: not a dlunits-bench result (expected schema {SCHEMA!r})")
    return document


def row_key(row: dict) -> Tuple:
    return tuple(row[k] for k in KEY)


def verdict(a: Optional[dict], b: Optional[dict], ratio: Optional[float], threshold: float) -> str:
    if a is None:
        return "only in B"
    if b is None:
        return "only in A"
    if a["status"] == "ok" and b["status"] != "ok":
        return "FAILED in B"
    if a["status"] != "ok" and b["status"] == "ok":
        return "fixed in B"
    if ratio is None:
        return "FAILED in both"
    if ratio > 1 + threshold:
        return "regression"
    return "gain" if ratio < 1 / (1 + threshold) else ""


def compare_rows(a_rows: Sequence[dict], b_rows: Sequence[dict], threshold: float) -> List[dict]:
    """One entry per row of A or B: the key, both dlunits times, the ratios B/A, and the verdict."""
    a_by_key = {row_key(r): r for r in a_rows}
    b_by_key = {row_key(r): r for r in b_rows}
    entries = []
    for key in dict.fromkeys([*a_by_key, *b_by_key]):
        a, b = a_by_key.get(key), b_by_key.get(key)
        both_timed = a is not None and b is not None and a["status"] == b["status"] == "ok"
        ratio = b["dlunits_ms"] / a["dlunits_ms"] if both_timed else None
        torch_ratio = b["torch_ms"] / a["torch_ms"] if both_timed else None
        entries.append({**dict(zip(KEY, key)), "a_ms": a and a["dlunits_ms"], "b_ms": b and b["dlunits_ms"],
                        "ratio": ratio, "torch_ratio": torch_ratio, "verdict": verdict(a, b, ratio, threshold)})
    return entries


def format_number(value: Optional[float], pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def format_comparison(a: dict, b: dict, entries: Sequence[dict], threshold: float) -> str:
    """The comparison table, then the count of regressions and gains and the geometric-mean ratio."""
    def describe(name, document):
        env = document["environment"]
        return (f"{name}: {env['date']} {env['host']} dlunits {env['dlunits_commit']} torch {env['torch']} "
                f"({env['gpu'] or env['cpu']}, {env['threads']} threads)")
    widths = {k: max([len(k)] + [len(str(e[k])) for e in entries]) for k in KEY}
    header = "  ".join(f"{k:<{widths[k]}}" for k in KEY) + f"  {'A ms':>10}  {'B ms':>10}  {'B/A':>6}  {'torch B/A':>9}"
    lines = [describe("A", a), describe("B", b), "", header]
    for e in entries:
        lines.append("  ".join(f"{e[k]:<{widths[k]}}" for k in KEY)
                     + f"  {format_number(e['a_ms'], '{:.3f}'):>10}  {format_number(e['b_ms'], '{:.3f}'):>10}"
                     + f"  {format_number(e['ratio'], '{:.2f}x'):>6}  {format_number(e['torch_ratio'], '{:.2f}x'):>9}"
                     + (f"  {e['verdict']}" if e["verdict"] else ""))
    ratios = [e["ratio"] for e in entries if e["ratio"] is not None]
    torch_ratios = [e["torch_ratio"] for e in entries if e["torch_ratio"] is not None]
    regressions = sum(e["verdict"] in REGRESSIONS for e in entries)
    gains = sum(e["verdict"] == "gain" for e in entries)
    lines += ["", f"{regressions} regression(s), {gains} gain(s) beyond ±{threshold:.0%}"]
    if ratios:
        lines.append(f"geometric-mean dlunits time ratio B/A: {geometric_mean(ratios):.3f}x over {len(ratios)} rows "
                     f"(torch: {geometric_mean(torch_ratios):.3f}x)")
    return "\n".join(lines)


def compare(a_path: str, b_path: str, threshold: float) -> int:
    """Prints the comparison of run A with run B; 1 when B has regressions, else 0."""
    a, b = load_result(a_path), load_result(b_path)
    entries = compare_rows(a["rows"], b["rows"], threshold)
    print(format_comparison(a, b, entries, threshold))
    return 1 if any(e["verdict"] in REGRESSIONS for e in entries) else 0
