"""The benchmark CLI (dlunits.bench) end to end on a tiny suite: the results files and their stable
schema, the plots, compare, a wrong kernel reported as FAILED, and bad suite files named by line.

The roofline's matrix product and copy are shrunk (TINY_ROOFLINE) and the suite's run times are
tiny, so that each run takes about a second; the numbers are meaningless, the plumbing is not.
"""
import contextlib
import copy
import dataclasses
import io
import json
import re
import textwrap

import pytest

from conftest import requires_cuda
from dlunits.bench import __main__ as cli
from dlunits.bench import measure, units
from dlunits.bench.suite import SuiteError, parse_suite, select_jobs

TINY_SUITE = """\
min_run_time: 0.001
max_run_time: 0.01
cases:
  - unit: conv2d
    name: tiny_3x3
    devices: [cpu]
    shape: {N: 2, C: 3, H: 8, W: 8, out_channels: 4, kernel: 3, padding: 1}
  - unit: conv2d
    name: tiny_depthwise
    devices: [cpu]
    dtypes: [float64]
    passes: [forward]
    shape: {N: 1, C: 4, H: 6, W: 6, out_channels: 4, kernel: 3, stride: 2, groups: 4}
"""
TINY_CUDA_SUITE = """\
min_run_time: 0.001
max_run_time: 0.01
cases:
  - unit: conv2d
    name: tiny_half
    devices: [cuda]
    dtypes: [float32, float16, bfloat16]
    shape: {N: 2, C: 8, H: 8, W: 8, out_channels: 8, kernel: 3, padding: 1}
"""
TINY_ROOFLINE = {"GEMM_SIZE": {"cpu": 128, "cuda": 512}, "COPY_BYTES": 2**20}

# The documented, stable schema of results.json (dlunits/bench/report.py): renaming a key breaks this.
RESULT_KEYS = {"schema", "environment", "suite", "roofline", "rows", "summary"}
ENVIRONMENT_KEYS = {"date", "host", "command", "dlunits_commit", "dlunits_cuda_compiled", "python", "torch", "cuda",
                    "cudnn", "cpu", "gpu", "threads", "devices", "tf32"}
ROW_KEYS = {"unit", "case", "device", "dtype", "pass", "shape", "status", "error", "max_abs_err", "max_rel_err",
            "tolerance", "torch_max_abs_err", "torch_max_rel_err", "dlunits_ms", "dlunits_iqr_ms", "dlunits_runs",
            "torch_ms", "torch_iqr_ms", "torch_runs", "speedup", "flops", "bytes", "gflops", "gbps", "torch_gflops",
            "roofline_pct", "torch_roofline_pct", "input_copies"}
ROOFLINE_KEYS = {"device", "dtype", "gemm_gflops", "copy_gbps"}
SUMMARY_KEYS = {"unit", "device", "pass", "geomean_speedup", "timed", "failed"}
TIMED_KEYS = ("dlunits_ms", "torch_ms", "speedup", "gflops", "gbps", "roofline_pct", "torch_roofline_pct")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_roofline():
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TINY_ROOFLINE.items():
            patch.setattr(measure, name, value)
        yield


def run_bench(tmp_path, suite_text, *args):
    """main(run ...) on a suite written to tmp_path; (exit status, the results folder or None)."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text)
    out = tmp_path / "results"
    status = cli.main(["--suite", str(suite), "--out", str(out), *args])
    folders = sorted(out.iterdir()) if out.exists() else []
    assert len(folders) <= 1
    return status, (folders[0] if folders else None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_roofline):
    """The tiny suite run once on the CPU: (exit status, results folder, what it printed)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status, folder = run_bench(tmp_path_factory.mktemp("bench"), TINY_SUITE, "--device", "cpu")
    return status, folder, stdout.getvalue()


@pytest.fixture
def results(tiny_run):
    return json.loads((tiny_run[1] / "results.json").read_text())


def test_run_writes_the_results_folder(tiny_run):
    status, folder, printed = tiny_run
    assert status == 0
    assert re.fullmatch(r"[a-z0-9-]+-cpu-\d{8}-\d{6}", folder.name)
    for name in ("results.json", "results.csv", "results.md", "speedup.png", "roofline.png"):
        assert (folder / name).stat().st_size > 0, name
    # The table, then the geometric-mean speed-up per unit and device, printed last.
    assert "tiny_3x3" in printed and "forward+backward" in printed
    last = printed.rstrip().splitlines()
    assert last[-2].startswith("geometric-mean speed-up")
    assert re.match(r"\s+conv2d\s+cpu\s+forward \d+\.\d\dx\s+forward\+backward \d+\.\d\dx\s+all \d+\.\d\dx"
                    r"\s+\(3 timed, 0 FAILED\)", last[-1])


def test_json_schema_is_stable(results):
    assert set(results) == RESULT_KEYS
    assert results["schema"] == "dlunits-bench/1"
    assert set(results["environment"]) == ENVIRONMENT_KEYS
    assert results["environment"]["devices"] == ["cpu"]
    assert [set(r) for r in results["roofline"]] == [ROOFLINE_KEYS] * 2  # cpu float32 and float64
    assert all(set(s) == SUMMARY_KEYS for s in results["summary"])
    rows = results["rows"]
    assert [(r["case"], r["dtype"], r["pass"]) for r in rows] == [
        ("tiny_3x3", "float32", "forward"), ("tiny_3x3", "float32", "forward+backward"),
        ("tiny_depthwise", "float64", "forward")]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["status"] == "ok" and row["error"] is None
        assert row["max_rel_err"] <= row["tolerance"]
        assert all(row[key] > 0 for key in TIMED_KEYS)
        assert row["input_copies"] == 1
    assert rows[2]["shape"] == {"N": 1, "C": 4, "H": 6, "W": 6, "out_channels": 4, "kernel": 3, "stride": 2,
                                "padding": 0, "dilation": 1, "groups": 4}


def test_flops_and_bytes_are_counted(results):
    forward, both = results["rows"][:2]
    # tiny_3x3: 2·N·OC·OH·OW·C·k² and (x, weight, bias, y)·4 bytes; forward+backward 3× and 2× that.
    assert forward["flops"] == 2 * 2 * 4 * 8 * 8 * 3 * 9
    assert forward["bytes"] == (2 * 3 * 8 * 8 + 4 * 3 * 9 + 4 + 2 * 4 * 8 * 8) * 4
    assert (both["flops"], both["bytes"]) == (3 * forward["flops"], 2 * forward["bytes"])


def test_csv_and_markdown(tiny_run, results):
    folder = tiny_run[1]
    lines = (folder / "results.csv").read_text().splitlines()
    assert set(lines[0].split(",")) == ROW_KEYS and len(lines) == 1 + len(results["rows"])
    assert "N=2 C=3 H=8 W=8" in lines[1]
    markdown = (folder / "results.md").read_text()
    for text in ("# dlunits-bench", "## Roofline", "## Results", "## Geometric-mean speed-up", "tiny_depthwise"):
        assert text in markdown


def test_plots_are_png_images(tiny_run):
    matplotlib_image = pytest.importorskip("matplotlib.image")
    for name in ("speedup.png", "roofline.png"):
        path = tiny_run[1] / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, _ = matplotlib_image.imread(path).shape
        assert height > 200 and width > 400


def test_compare_with_itself_finds_no_regression(tiny_run, capsys):
    path = str(tiny_run[1] / "results.json")
    assert cli.main(["compare", path, path]) == 0
    out = capsys.readouterr().out
    assert "0 regression(s), 0 gain(s) beyond ±5%" in out
    assert "geometric-mean dlunits time ratio B/A: 1.000x over 3 rows" in out


def test_compare_reports_a_slower_kernel(tiny_run, results, tmp_path, capsys):
    slower = copy.deepcopy(results)
    slower["rows"][1]["dlunits_ms"] *= 2
    path = tmp_path / "slower.json"
    path.write_text(json.dumps(slower))
    assert cli.main(["compare", str(tiny_run[1]), str(path), "--threshold", "0.1"]) == 1
    lines = capsys.readouterr().out.splitlines()
    flagged = [line for line in lines if line.endswith("regression")]
    assert len(flagged) == 1 and "tiny_3x3" in flagged[0] and "forward+backward" in flagged[0]
    assert "2.00x" in flagged[0]
    assert "1 regression(s), 0 gain(s) beyond ±10%" in lines


def test_wrong_kernel_is_failed_and_not_timed(tmp_path, tiny_roofline, monkeypatch, capsys):
    conv2d = units.UNITS["conv2d"]
    wrong = dataclasses.replace(conv2d, dlunits=lambda t, shape: conv2d.dlunits(t, shape) + 1e-2)
    monkeypatch.setitem(units.UNITS, "conv2d", wrong)
    status, folder = run_bench(tmp_path, TINY_SUITE, "--device", "cpu", "--no-plots", "--filter", "3x3")
    assert status == 1
    rows = json.loads((folder / "results.json").read_text())["rows"]
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "FAILED"
        assert row["max_abs_err"] == pytest.approx(1e-2, rel=1e-3)
        assert "> tolerance" in row["error"]
        assert all(row[key] is None for key in TIMED_KEYS)
    assert not (folder / "speedup.png").exists()
    out = capsys.readouterr().out
    assert re.search(r"tiny_3x3 .* forward +FAILED", out)
    assert "(0 timed, 2 FAILED)" in out


def test_raising_kernel_is_failed(tmp_path, tiny_roofline, monkeypatch):
    def broken(t, shape):
        raise RuntimeError("no kernel for this\nsecond line")
    monkeypatch.setitem(units.UNITS, "conv2d", dataclasses.replace(units.UNITS["conv2d"], dlunits=broken))
    status, folder = run_bench(tmp_path, TINY_SUITE, "--device", "cpu", "--no-plots", "--filter", "depthwise")
    assert status == 1
    [row] = json.loads((folder / "results.json").read_text())["rows"]
    assert (row["status"], row["error"], row["max_rel_err"]) == ("FAILED", "dlunits: no kernel for this", None)


@requires_cuda
@pytest.mark.cuda
def test_cuda_run_rotates_inputs(tmp_path, tiny_roofline):
    status, folder = run_bench(tmp_path, TINY_CUDA_SUITE, "--device", "cuda", "--no-plots")
    assert status == 0
    rows = json.loads((folder / "results.json").read_text())["rows"]
    assert [r["dtype"] for r in rows] == ["float32"] * 2 + ["float16"] * 2 + ["bfloat16"] * 2
    assert all(r["status"] == "ok" and r["input_copies"] > 1 for r in rows)


# --- bad suite files -----------------------------------------------------------------------------------

CASE = """\
min_run_time: 0.01
cases:
  - unit: conv2d
    name: first
    shape: {N: 2, C: 3, H: 8, W: 8, out_channels: 4, kernel: 3}
  - unit: {unit}
    name: second
    dtypes: {dtypes}
    shape:
      N: 2
      C: 3
      H: {H}
      W: 8
      out_channels: 4
      kernel: 3
"""


def bad_suite(unit="conv2d", dtypes="[float32]", H="8"):
    return CASE.replace("{unit}", unit).replace("{dtypes}", dtypes).replace("{H}", H)


@pytest.mark.parametrize("text, line, message", [
    (bad_suite(unit="conv3d"), 6, f"unknown unit 'conv3d' (known: {', '.join(units.UNITS)})"),
    (bad_suite(H="-3"), 12, "shape parameter 'H' must be an integer >= 1, got -3"),
    (bad_suite(H="big"), 12, "shape parameter 'H' must be an integer >= 1, got 'big'"),
    (bad_suite(H="{cpu: 8}"), 12, "shape parameter 'H' has no value for cuda"),
    (bad_suite(dtypes="[float32, float8]"), 8, "unknown dtype 'float8' (known: float16, bfloat16, float32, float64)"),
    (bad_suite(dtypes="{cpu: [float16], cuda: [float16]}"), 8, "conv2d has no float16 kernel on cpu"),
    (bad_suite(H="1"), 9, "case 'second' on cpu: the output would be -1x6"),
    (bad_suite().replace("kernel: 3\n", "kernal: 3\n"), 15, "conv2d has no shape parameter 'kernal'"),
    (bad_suite().replace("name: second", "name: first"), 6, "case name 'first' is used already (line 3)"),
    (bad_suite().replace("      W: 8", "     W: 8"), 13, ""),  # YAML syntax: the line of the problem
])
def test_bad_suite_names_the_file_and_line(tmp_path, capsys, text, line, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError) as error:
        parse_suite(str(path), text)
    assert str(error.value).startswith(f"{path} line {line}: {message}")
    assert cli.main(["--suite", str(path), "--device", "cpu", "--out", str(tmp_path / "out")]) == 2
    assert f"dlunits-bench: error: {path} line {line}: {message}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_select_jobs_filters():
    suite = parse_suite("s.yaml", textwrap.dedent("""\
        cases:
          - {unit: conv2d, name: a_3x3, dtypes: {cpu: [float32, float64], cuda: [float16]},
             shape: {N: {cpu: 1, cuda: 8}, C: 2, H: 5, W: 5, out_channels: 2, kernel: 3}}
          - {unit: conv2d, name: b_1x1, shape: {N: 1, C: 2, H: 5, W: 5, out_channels: 2, kernel: 1}}
        """))
    def jobs(*args, **kwargs):
        return [(j.case.name, j.device, j.dtype) for j in select_jobs(suite, *args, **kwargs)]
    assert jobs(["cpu"]) == [("a_3x3", "cpu", "float32"), ("a_3x3", "cpu", "float64"), ("b_1x1", "cpu", "float32")]
    assert jobs(["cpu", "cuda"], dtypes=["float16"]) == [("a_3x3", "cuda", "float16")]
    assert jobs(["cpu"], name_filter="1x1") == [("b_1x1", "cpu", "float32")]
    assert jobs(["cpu"], units=["conv2d"], dtypes=["float64"]) == [("a_3x3", "cpu", "float64")]
    assert select_jobs(suite, ["cuda"])[0].shape["N"] == 8


def test_nothing_to_run_and_bad_options(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(TINY_SUITE)
    assert cli.main(["run", "--suite", str(path), "--device", "cpu", "--filter", "nope"]) == 2
    assert "nothing to run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--suite", str(path), "--dtype", "float8"])
    assert "unknown float8 (known: float16, bfloat16, float32, float64)" in capsys.readouterr().err
