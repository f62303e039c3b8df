"""The dlunits-bench command line (see the package docstring): `run` (the default) and `compare`.

Exit status: 0 when every case is correct, 1 when any case FAILED (run) or regressed (compare),
2 for a bad command line or suite file.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from tqdm import tqdm

import dlunits

from . import environment, measure, plots, report, runner
from .compare import ResultError, compare
from .suite import DEVICES, SuiteError, load_suite, select_jobs
from .units import ALL_DTYPES, UNITS

COMMANDS = ("run", "compare")
DEFAULT_OUT = "benchmarks/results/local"


class UsageError(Exception):
    """A command line that cannot run; the message says why."""


def cuda_usable() -> bool:
    return torch.cuda.is_available() and dlunits.cuda_compiled()


def select_devices(choice: str) -> List[str]:
    """cpu; cuda (which must be usable); or all: cpu, and cuda when usable."""
    if choice == "all":
        return list(DEVICES) if cuda_usable() else ["cpu"]
    if choice == "cuda" and not cuda_usable():
        raise UsageError(f"--device cuda: CUDA is not usable (torch.cuda.is_available()="
                         f"{torch.cuda.is_available()}, dlunits.cuda_compiled()={dlunits.cuda_compiled()})")
    return [choice]


def name_list(known: Sequence[str]):
    """An argparse type: a comma-separated list of names, each one of known."""
    def parse(text: str) -> List[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown) or 'empty list'} "
                                             f"(known: {', '.join(known)})")
        return names
    return parse


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlunits-bench", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a suite (the default command)")
    run.add_argument("--suite", required=True, help="suite YAML, e.g. configs/bench/quick.yaml")
    run.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                     help="cpu, cuda, or all: cpu and cuda when usable (the default)")
    run.add_argument("--units", type=name_list(list(UNITS)), help="comma-separated units to run (default: all)")
    run.add_argument("--dtype", type=name_list(ALL_DTYPES), help="comma-separated dtypes to run (default: the suite's)")
    run.add_argument("--threads", type=positive_int, help="CPU intra-op threads (default: torch's)")
    run.add_argument("--filter", metavar="SUBSTR", help="run only the cases whose name contains SUBSTR")
    run.add_argument("--out", default=DEFAULT_OUT,
                     help=f"where the results folder (host-device-date) is made (default: {DEFAULT_OUT})")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    cmp = commands.add_parser("compare", help="regressions and gains between two runs")
    cmp.add_argument("a", metavar="A.json", help="the earlier run (results.json or its folder)")
    cmp.add_argument("b", metavar="B.json", help="the later run")
    cmp.add_argument("--threshold", type=float, default=0.05,
                     help="relative change counted as a regression or gain (default: 0.05)")
    return parser


def with_command(argv: Sequence[str]) -> List[str]:
    """argv with 'run' put first when it names no command."""
    argv = list(argv)
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help")):
        return argv
    return ["run", *argv]


def new_results_folder(out: str, env: dict) -> Path:
    """out/<host>-<device>-<date>, made now (with a -2, -3... suffix if that name is taken)."""
    base = Path(out) / environment.results_folder_name(env)
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    return folder


def run_suite(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """The run command: roofline, table, results folder, summary; 1 when any case FAILED."""
    suite = load_suite(args.suite)
    devices = select_devices(args.device)
    jobs = select_jobs(suite, devices, args.units, args.dtype, args.filter)
    if not jobs:
        raise UsageError(f"nothing to run: no case of {args.suite} matches --device {args.device}, --units "
                         f"{args.units}, --dtype {args.dtype}, --filter {args.filter}")
    threads = args.threads or torch.get_num_threads()
    with runner.torch_settings(threads, suite.cudnn_benchmark):
        env = environment.capture(devices, threads, argv)
        pairs = runner.roofline_pairs(jobs)
        print(f"measuring the roofline: {', '.join(f'{d} {t}' for d, t in pairs)}...", file=sys.stderr, flush=True)
        rooflines = measure.measure_rooflines(pairs, suite.min_run_time, suite.max_run_time, threads)
        print(report.format_environment(env, suite, rooflines), end="\n\n")
        table = report.Table([{"unit": j.case.unit, "case": j.case.name, "device": j.device, "dtype": j.dtype,
                               "pass": p} for j in jobs for p in j.case.passes])
        print(table.header(), flush=True)
        # The bar shows on a terminal only (disable=None); the rows are printed as they come either way.
        with tqdm(total=runner.count_rows(jobs), desc="dlunits-bench", unit="pass", file=sys.stderr,
                  disable=None) as bar:
            def on_row(row: dict):
                bar.write(table.row(row), file=sys.stdout)
                sys.stdout.flush()
                bar.update()
            rows = runner.run(jobs, suite, rooflines, threads, on_row)

    document = report.result_document(env, suite, rooflines, rows)
    folder = new_results_folder(args.out, env)
    report.write_json(folder / "results.json", document)
    report.write_csv(folder / "results.csv", rows)
    report.write_markdown(folder / "results.md", document)
    if not args.no_plots:
        plots.write_plots(folder, rows, rooflines)
    print(f"\nresults: {folder}/\n")
    print(report.format_summary(document["summary"]))
    return 1 if any(row["status"] != "ok" for row in rows) else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(with_command(argv))
    try:
        if args.command == "compare":
            return compare(args.a, args.b, args.threshold)
        return run_suite(args, argv)
    except (SuiteError, UsageError, ResultError, OSError) as error:
        print(f"dlunits-bench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
