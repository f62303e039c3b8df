"""Running a suite: each job's inputs drawn once from a fixed seed; each pass first checked against
torch.nn run in float64 on float64 copies of the same (rounded) inputs, then, when correct, dlunits and
torch.nn timed on it. A pass that is wrong, or raises, is a FAILED row and is not timed.

The passes: forward computes y = f(inputs); forward+backward computes y and the gradients of
sum(y * g) with respect to every floating-point input, g an upstream gradient drawn once per job.
Errors are taken over every tensor a pass computes.
"""
import contextlib
from typing import Callable, Iterator, List, Sequence, Tuple

import torch

from . import measure
from .suite import Job, Suite
from .units import UNITS, Call, Shape, Tensors, pass_bytes, pass_flops

SEED = 0

# Every row has exactly these keys (None where they do not apply, e.g. the times of a FAILED row).
ROW_KEYS = (
    "unit", "case", "device", "dtype", "pass", "shape", "status", "error",
    "max_abs_err", "max_rel_err", "tolerance", "torch_max_abs_err", "torch_max_rel_err",
    "dlunits_ms", "dlunits_iqr_ms", "dlunits_runs", "torch_ms", "torch_iqr_ms", "torch_runs", "speedup",
    "flops", "bytes", "gflops", "gbps", "torch_gflops", "roofline_pct", "torch_roofline_pct", "input_copies",
)

Operands = Tuple[Tensors, Tuple[torch.Tensor, ...]]  # the unit's inputs by name, the upstream gradients


@contextlib.contextmanager
def torch_settings(threads: int, cudnn_benchmark: bool) -> Iterator[None]:
    """threads intra-op threads, TF32 off (float32 is compared with float32), cudnn.benchmark as the suite
    says; the previous settings restored after."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (torch.get_num_threads(), cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark)
    torch.set_num_threads(threads)
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark = saved[1:]


def as_tuple(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


def make_operands(job: Job) -> Operands:
    """The unit's inputs in the job's dtype on its device, and an upstream gradient per output, drawn
    in float64 on the CPU from SEED (so every device and dtype sees the same values, rounded)."""
    unit = UNITS[job.case.unit]
    gen = torch.Generator().manual_seed(SEED)
    dtype = getattr(torch, job.dtype)
    inputs = {name: t.to(device=job.device, dtype=dtype) for name, t in unit.make_inputs(job.shape, gen).items()}
    outputs = as_tuple(unit.torch(to_float64(inputs), job.shape))
    grads = tuple(torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device=job.device, dtype=dtype)
                  for y in outputs)
    return inputs, grads


def to_float64(inputs: Tensors) -> Tensors:
    return {name: t.double() if t.is_floating_point() else t for name, t in inputs.items()}


def copy_operands(operands: Operands) -> Operands:
    inputs, grads = operands
    return {name: t.clone() for name, t in inputs.items()}, tuple(g.clone() for g in grads)


def pass_call(call: Call, shape: Shape, operands: Operands, pass_name: str) -> Callable[[], tuple]:
    """A call of one pass: it returns the outputs, followed in forward+backward by the inputs' gradients."""
    inputs, grads = operands
    if pass_name == "forward":
        return lambda: as_tuple(call(inputs, shape))
    leaves = {name: t.detach().requires_grad_() if t.is_floating_point() else t for name, t in inputs.items()}
    wrt = [t for t in leaves.values() if t.requires_grad]

    def forward_backward() -> tuple:
        outputs = as_tuple(call(leaves, shape))
        return outputs + torch.autograd.grad(outputs, wrt, grads)
    return forward_backward


def operand_bytes(operands: Operands) -> int:
    inputs, grads = operands
    return sum(t.nbytes for t in (*inputs.values(), *grads))


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class Runner:
    """Runs jobs of a suite on the rooflines measured for them, one row per pass."""

    def __init__(self, suite: Suite, rooflines: Sequence[dict], threads: int):
        self.suite = suite
        self.rooflines = {(r["device"], r["dtype"]): r for r in rooflines}
        self.threads = threads

    def new_row(self, job: Job, pass_name: str, copies: int) -> dict:
        """A FAILED row of ROW_KEYS with the job's labels; run_pass fills in the rest."""
        row = dict.fromkeys(ROW_KEYS)
        row.update({"unit": job.case.unit, "case": job.case.name, "device": job.device, "dtype": job.dtype,
                    "pass": pass_name, "shape": dict(job.shape), "status": "FAILED",
                    "tolerance": self.suite.tolerance[job.dtype], "input_copies": copies})
        return row

    def run_job(self, job: Job) -> Iterator[dict]:
        """The rows of a job, one per pass, each yielded when it is measured. Any failure of a case
        (including an exception) is reported in its rows, and the suite goes on."""
        try:
            operands = make_operands(job)
        except Exception as error:  # noqa: BLE001
            for pass_name in job.case.passes:
                yield {**self.new_row(job, pass_name, 0), "error": f"torch: {first_line(error)}"}
            return
        copies = [operands] + [copy_operands(operands)
                               for _ in range(measure.rotation_copies(job.device, operand_bytes(operands)) - 1)]
        for pass_name in job.case.passes:
            yield self.run_pass(job, pass_name, copies)

    def run_pass(self, job: Job, pass_name: str, copies: List[Operands]) -> dict:
        """Checks dlunits against the float64 reference and, when it passes, times dlunits and torch."""
        unit, shape = UNITS[job.case.unit], job.shape
        row = self.new_row(job, pass_name, len(copies))
        inputs, grads = copies[0]
        try:
            reference = pass_call(unit.torch, shape, (to_float64(inputs), tuple(g.double() for g in grads)),
                                  pass_name)()
            torch_errors = measure.max_errors(pass_call(unit.torch, shape, copies[0], pass_name)(), reference)
        except Exception as error:  # noqa: BLE001
            row["error"] = f"torch: {first_line(error)}"
            return row
        row["torch_max_abs_err"], row["torch_max_rel_err"] = torch_errors
        try:
            row["max_abs_err"], row["max_rel_err"] = measure.max_errors(
                pass_call(unit.dlunits, shape, copies[0], pass_name)(), reference)
        except Exception as error:  # noqa: BLE001
            row["error"] = f"dlunits: {first_line(error)}"
            return row
        if not row["max_rel_err"] <= row["tolerance"]:  # NaN fails too
            row["error"] = f"max rel error {row['max_rel_err']:.2e} > tolerance {row['tolerance']:.0e}"
            return row
        self.time_pass(row, job, pass_name, copies)
        return row

    def time_pass(self, row: dict, job: Job, pass_name: str, copies: List[Operands]):
        """Adds the times, speed-up, rates and roofline percentages of a correct pass to its row."""
        unit, shape, device = UNITS[job.case.unit], job.shape, job.device
        timings = {}
        for side, call in (("dlunits", unit.dlunits), ("torch", unit.torch)):
            fn = measure.rotating([pass_call(call, shape, operands, pass_name) for operands in copies])
            timings[side] = measure.time_call(fn, self.suite.min_run_time[device], self.suite.max_run_time[device],
                                              self.threads)
            row[f"{side}_ms"] = timings[side].median * 1e3
            row[f"{side}_iqr_ms"] = None if timings[side].iqr is None else timings[side].iqr * 1e3
            row[f"{side}_runs"] = timings[side].runs
        flops = pass_flops(unit, shape, pass_name)
        nbytes = pass_bytes(unit, shape, getattr(torch, job.dtype).itemsize, pass_name)
        roofline = self.rooflines[(device, job.dtype)]
        dl_seconds, torch_seconds = timings["dlunits"].median, timings["torch"].median
        row.update(status="ok", speedup=torch_seconds / dl_seconds, flops=flops, bytes=nbytes,
                   gflops=flops / dl_seconds / 1e9, gbps=nbytes / dl_seconds / 1e9,
                   torch_gflops=flops / torch_seconds / 1e9)
        row["roofline_pct"] = measure.roofline_percent(row["gflops"], flops, nbytes, roofline)
        row["torch_roofline_pct"] = measure.roofline_percent(row["torch_gflops"], flops, nbytes, roofline)


def roofline_pairs(jobs: Sequence[Job]) -> List[Tuple[str, str]]:
    """The (device, dtype) pairs the jobs need a roofline for, in order of first use."""
    return list(dict.fromkeys((job.device, job.dtype) for job in jobs))


def count_rows(jobs: Sequence[Job]) -> int:
    return sum(len(job.case.passes) for job in jobs)


def run(jobs: Sequence[Job], suite: Suite, rooflines: Sequence[dict], threads: int,
        on_row: Callable[[dict], None]) -> List[dict]:
    """Every row of the jobs, in suite order; on_row is told of each as it is measured."""
    runner = Runner(suite, rooflines, threads)
    rows: List[dict] = []
    for job in jobs:
        for row in runner.run_job(job):
            rows.append(row)
            on_row(row)
    return rows

