"""dlunits.functional.conv2d against torch.nn.functional.conv2d, case by case, on the CPU and CUDA.

    python -m benchmarks.conv_bench --config configs/bench_conv.yaml \
        [--device cpu|cuda|all] [--filter NAME] [--json OUT.json]

For each case of the config (its schema is documented at the top of
configs/bench_conv.yaml) and each device, the inputs x, weight, bias and an
upstream gradient g are drawn once from a fixed seed. Two passes are measured:

    forward            y = conv2d(x, weight, bias)
    forward+backward   the gradients of sum(y * g) w.r.t. x, weight and bias

Each pass is first checked against torch.nn.functional.conv2d run in float64 on
float64 copies of the same inputs: the error of a tensor is max|out - ref| (abs)
and max|out - ref| / max|ref| (rel), taken over y (forward) or over the three
gradients (forward+backward). A pass whose rel error exceeds the config's rtol,
or whose dlunits call raises, is reported as FAILED and is not timed.

Times are the median (and IQR) of torch.utils.benchmark's blocked_autorange, which
synchronises CUDA. speed-up = torch time / dlunits time. GFLOP/s counts
2·N·OC·OH·OW·(C/groups)·KH·KW for the forward and 3× that for forward+backward;
GB/s counts the minimal traffic: x, weight, bias and y once each for the forward,
twice that for forward+backward (the gradients have the same sizes). Both are
dlunits' achieved rates; "% roof" places them (and "torch %" torch's) under the
roofline that the script measures at start on each device: a large matrix
product for the compute ceiling and a large copy for bandwidth. TF32 is off so
that float32 is compared with float32.

The process exits with status 1 when any pass FAILED.
"""
import argparse
import dataclasses
import json
import math
import platform
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
import yaml
from torch.utils import benchmark

import dlunits

REPO_ROOT = Path(__file__).resolve().parents[1]
# Each pass with its FLOPs and minimal bytes as multiples of the forward's.
PASS_COST = {"forward": (1, 1), "forward+backward": (3, 2)}
PASSES = tuple(PASS_COST)
SEED = 0
MIN_BLOCKS_FOR_IQR = 4

Conv = Callable[..., torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Case:
    """One conv2d layer of the suite; N maps a device type to its batch size."""

    name: str
    N: Dict[str, int]
    C: int
    H: int
    W: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int

    def output_size(self) -> tuple:
        """(OH, OW) of the convolution."""
        def out(size):
            return (size + 2 * self.padding - self.kernel) // self.stride + 1
        return out(self.H), out(self.W)

    def forward_flops(self, n: int) -> int:
        """Multiply-adds ×2 of the forward on a batch of n."""
        oh, ow = self.output_size()
        return 2 * n * self.out_channels * oh * ow * (self.C // self.groups) * self.kernel ** 2

    def forward_bytes(self, n: int, itemsize: int) -> int:
        """x, weight, bias and y read or written once each."""
        oh, ow = self.output_size()
        numel = (n * self.C * self.H * self.W + self.out_channels * (self.C // self.groups) * self.kernel ** 2
                 + self.out_channels + n * self.out_channels * oh * ow)
        return numel * itemsize


# --- configuration and environment --------------------------------------------------------------


def load_config(path: str) -> dict:
    """The YAML config with its cases as Case objects and its dtype as a torch.dtype."""
    with open(path) as f:
        config = yaml.safe_load(f)
    config["cases"] = [Case(**case) for case in config["cases"]]
    config["dtype"] = getattr(torch, config["dtype"])
    return config


def cuda_usable() -> bool:
    return torch.cuda.is_available() and dlunits.cuda_compiled()


def select_devices(choice: str) -> List[str]:
    """The devices to run: cpu always, cuda when it is usable (required for --device cuda)."""
    if choice == "cuda" and not cuda_usable():
        sys.exit(f"--device cuda: CUDA is not usable (torch.cuda.is_available()={torch.cuda.is_available()}, "
                 f"dlunits.cuda_compiled()={dlunits.cuda_compiled()})")
    if choice == "all":
        return ["cpu", "cuda"] if cuda_usable() else ["cpu"]
    return [choice]


def git_commit() -> str:
    """dlunits' short commit, marked +dirty when its sources differ from it; 'unknown' outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--", "csrc", "dlunits", "setup.py").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(devices: Sequence[str], config: dict, config_path: str) -> dict:
    return {
        "config": config_path,
        "dtype": str(config["dtype"]).replace("torch.", ""),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32": False,
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if "cuda" in devices else None,
        "dlunits_commit": git_commit(),
        "dlunits_cuda_compiled": dlunits.cuda_compiled(),
        "devices": list(devices),
    }


# --- the machine's roofline, measured at start ---------------------------------------------------


def measure_roofline(device: str, dtype: torch.dtype, min_run_time: float) -> dict:
    """What this device reaches at all, measured now: a large matrix product (GFLOP/s, through torch's
    BLAS or cuBLAS) and a large copy (GB/s, read + write). A kernel's roofline bound is then
    min(peak GFLOP/s, GB/s × its FLOPs per byte)."""
    size = 4096 if device == "cuda" else 1536
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    gemm_s, _ = measure(lambda: torch.mm(a, b), min_run_time)
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)  # 256 MiB: well past any cache
    dst = torch.empty_like(src)
    copy_s, _ = measure(lambda: dst.copy_(src), min_run_time)
    return {"gemm_gflops": 2 * size**3 / gemm_s / 1e9, "copy_gbps": 2 * src.nbytes / copy_s / 1e9}


def roofline_percent(gflops: float, flops: int, nbytes: int, roofline: dict) -> float:
    """Achieved GFLOP/s as a percentage of the roofline bound at this pass's arithmetic intensity."""
    bound = min(roofline["gemm_gflops"], roofline["copy_gbps"] * flops / nbytes)
    return 100 * gflops / bound


# --- inputs, passes and checks ------------------------------------------------------------------


def make_inputs(case: Case, n: int, dtype: torch.dtype, device: str) -> List[torch.Tensor]:
    """x, weight, bias and the upstream gradient g, from a fixed seed per case."""
    gen = torch.Generator().manual_seed(SEED)
    oh, ow = case.output_size()
    fan_in = (case.C // case.groups) * case.kernel ** 2
    shapes = [(n, case.C, case.H, case.W), (case.out_channels, case.C // case.groups, case.kernel, case.kernel),
              (case.out_channels,), (n, case.out_channels, oh, ow)]
    x, weight, bias, g = (torch.randn(shape, generator=gen, dtype=dtype) for shape in shapes)
    return [t.to(device) for t in (x, weight / math.sqrt(fan_in), bias, g)]


def pass_fn(conv: Conv, inputs: Sequence[torch.Tensor], case: Case, pass_name: str) -> Callable[[], tuple]:
    """A call of one pass of conv on inputs; it returns y, or the gradients of x, weight and bias."""
    x, weight, bias, g = inputs
    kwargs = dict(stride=case.stride, padding=case.padding, groups=case.groups)
    if pass_name == "forward":
        return lambda: (conv(x, weight, bias, **kwargs),)
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
    return lambda: torch.autograd.grad(conv(*leaves, **kwargs), leaves, g)


def max_errors(outputs: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> tuple:
    """(max abs error, max rel error) over the tensors; rel is relative to each reference's max |value|."""
    abs_errors, rel_errors = [], []
    for out, ref in zip(outputs, references):
        err = (out.double() - ref).abs().max().item()
        abs_errors.append(err)
        rel_errors.append(err / max(ref.abs().max().item(), sys.float_info.min))
    return max(abs_errors), max(rel_errors)


def measure(fn: Callable[[], tuple], min_run_time: float) -> tuple:
    """(median, IQR) of fn in seconds; the IQR is None when too few blocks ran for quartiles."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    result = timer.blocked_autorange(min_run_time=min_run_time)
    return result.median, result.iqr if len(result.times) >= MIN_BLOCKS_FOR_IQR else None


def milliseconds(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else seconds * 1e3


# --- one row: a case on a device in one pass ---------------------------------------------------


def run_pass(case: Case, device: str, pass_name: str, inputs: List[torch.Tensor], config: dict,
             roofline: dict) -> dict:
    """Checks dlunits against the float64 reference and, when it passes, times dlunits and torch."""
    n = inputs[0].shape[0]
    row = {"name": case.name, "device": device, "pass": pass_name, "N": n, "status": "FAILED"}
    reference = pass_fn(F.conv2d, [t.double() for t in inputs], case, pass_name)()
    row["torch_max_abs_err"], row["torch_max_rel_err"] = max_errors(
        pass_fn(F.conv2d, inputs, case, pass_name)(), reference)
    dl_fn = pass_fn(dlunits.functional.conv2d, inputs, case, pass_name)
    try:
        row["max_abs_err"], row["max_rel_err"] = max_errors(dl_fn(), reference)
    except RuntimeError as error:
        row["error"] = str(error).splitlines()[0]
        return row
    if not row["max_rel_err"] <= config["rtol"]:  # NaN fails too
        return row

    min_run_time = config["min_run_time"][device]
    dl_time, dl_iqr = measure(dl_fn, min_run_time)
    torch_time, torch_iqr = measure(pass_fn(F.conv2d, inputs, case, pass_name), min_run_time)
    flops_factor, bytes_factor = PASS_COST[pass_name]
    flops = case.forward_flops(n) * flops_factor
    nbytes = case.forward_bytes(n, inputs[0].element_size()) * bytes_factor
    row.update(status="ok", dlunits_ms=dl_time * 1e3, dlunits_iqr_ms=milliseconds(dl_iqr),
               torch_ms=torch_time * 1e3, torch_iqr_ms=milliseconds(torch_iqr), speedup=torch_time / dl_time,
               gflops=flops / dl_time / 1e9, gbps=nbytes / dl_time / 1e9, torch_gflops=flops / torch_time / 1e9)
    row["roofline_pct"] = roofline_percent(row["gflops"], flops, nbytes, roofline)
    row["torch_roofline_pct"] = roofline_percent(row["torch_gflops"], flops, nbytes, roofline)
    return row


# --- output ---------------------------------------------------------------------------------------


def format_time(median_ms: float, iqr_ms: Optional[float]) -> str:
    return f"{median_ms:.3f} " + ("±  n/a" if iqr_ms is None else f"±{iqr_ms:.3f}")


COLUMNS = [  # (title, width, row -> text)
    ("case", 18, lambda r: r["name"]),
    ("device", 6, lambda r: r["device"]),
    ("pass", 16, lambda r: r["pass"]),
    ("N", 4, lambda r: str(r["N"])),
    ("dlunits ms", 16, lambda r: format_time(r["dlunits_ms"], r["dlunits_iqr_ms"])),
    ("torch ms", 16, lambda r: format_time(r["torch_ms"], r["torch_iqr_ms"])),
    ("speed-up", 8, lambda r: f"{r['speedup']:.2f}x"),
    ("GFLOP/s", 8, lambda r: f"{r['gflops']:.1f}"),
    ("GB/s", 7, lambda r: f"{r['gbps']:.1f}"),
    ("% roof", 6, lambda r: f"{r['roofline_pct']:.1f}"),
    ("torch %", 7, lambda r: f"{r['torch_roofline_pct']:.1f}"),
    ("max abs err", 11, lambda r: f"{r['max_abs_err']:.2e}" if "max_abs_err" in r else "-"),
    ("max rel err", 11, lambda r: f"{r['max_rel_err']:.2e}" if "max_rel_err" in r else "-"),
]
TIMED_COLUMNS = ("dlunits ms", "torch ms", "speed-up", "GFLOP/s", "GB/s", "% roof", "torch %")


def format_line(cells: Sequence[str]) -> str:
    return "  ".join(f"{cell:<{width}}" if i < 3 else f"{cell:>{width}}"
                     for i, (cell, (_, width, _)) in enumerate(zip(cells, COLUMNS))).rstrip()


def format_row(row: dict) -> str:
    """The table line of a row; a FAILED row shows its errors (or the dlunits error message), no times."""
    failed = row["status"] != "ok"
    cells = []
    for title, _, cell in COLUMNS:
        if failed and title in TIMED_COLUMNS:
            cells.append("FAILED" if title == "dlunits ms" else "-")
        else:
            cells.append(cell(row))
    note = f"  ({row['error']})" if "error" in row else ""
    return format_line(cells) + note


def format_environment(env: dict) -> str:
    lines = [f"dlunits conv2d benchmark: {env['config']}, {env['dtype']}, TF32 off, "
             f"cudnn.benchmark={env['cudnn_benchmark']}",
             f"torch {env['torch']} | CUDA {env['cuda']} | cuDNN {env['cudnn']} | dlunits {env['dlunits_commit']} "
             f"(CUDA kernels {'built' if env['dlunits_cuda_compiled'] else 'not built'})",
             f"cpu: {env['cpu']}, {env['threads']} threads"]
    if env["gpu"]:
        lines.append(f"gpu: {env['gpu']}")
    for device, roof in env["roofline"].items():
        lines.append(f"roofline ({device}, measured now): {roof['gemm_gflops']:.0f} GFLOP/s matrix product, "
                     f"{roof['copy_gbps']:.1f} GB/s copy; % roof = achieved / min(GFLOP/s, GB/s × FLOPs/byte)")
    return "\n".join(lines)


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def format_summary(rows: Sequence[dict], devices: Sequence[str]) -> str:
    """Geometric-mean speed-up per device: per pass and over both."""
    lines = ["geometric-mean speed-up (torch time / dlunits time):"]
    for device in devices:
        device_rows = [r for r in rows if r["device"] == device]
        timed = [r for r in device_rows if r["status"] == "ok"]
        groups = [(p, [r for r in timed if r["pass"] == p]) for p in PASSES] + [("all", timed)]
        means = "  ".join(f"{label} {geometric_mean([r['speedup'] for r in group]):.2f}x"
                          for label, group in groups if group)
        lines.append(f"  {device:<5} {means or 'nothing timed'}  "
                     f"({len(timed)} timed, {len(device_rows) - len(timed)} FAILED)")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conv_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="suite YAML, e.g. configs/bench_conv.yaml")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="cpu, cuda, or all (cpu plus cuda when usable; the default)")
    parser.add_argument("--filter", metavar="NAME", help="run only the cases whose name contains NAME")
    parser.add_argument("--json", metavar="OUT.json", help="write the rows and the environment here")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config)
    cases = [c for c in config["cases"] if args.filter is None or args.filter in c.name]
    if not cases:
        sys.exit(f"--filter {args.filter}: no case matches")
    devices = select_devices(args.device)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = config["cudnn_benchmark"]

    env = environment(devices, config, args.config)
    env["roofline"] = {d: measure_roofline(d, config["dtype"], config["min_run_time"][d]) for d in devices}
    print(format_environment(env), end="\n\n")
    print(format_line([title for title, _, _ in COLUMNS]), flush=True)
    rows = []
    for case in cases:
        for device in devices:
            inputs = make_inputs(case, case.N[device], config["dtype"], device)
            for pass_name in PASSES:
                rows.append(run_pass(case, device, pass_name, inputs, config, env["roofline"][device]))
                print(format_row(rows[-1]), flush=True)
    print()
    print(format_summary(rows, devices))

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"environment": env, "cases": [dataclasses.asdict(c) for c in cases], "rows": rows}, f,
                      indent=2)
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
