"""dlunits-bench: every dlunits unit against torch.nn (oneDNN on the CPU, cuDNN on the GPU).

For each case of a suite (configs/bench/*.yaml), on each device, in each dtype and pass, it checks
dlunits against a float64 reference (a wrong case is FAILED and not timed), times dlunits and torch.nn,
and places both under the roofline it measures at start. It prints a table and a geometric-mean
speed-up per unit and device, and writes results.json, results.csv, results.md and PNG plots to a
folder named for the host, device and date.

    dlunits-bench [run] --suite FILE [--device cpu|cuda|all] [--units conv2d,...] [--dtype float32,...]
                        [--threads N] [--filter SUBSTR] [--out DIR] [--no-plots]
    dlunits-bench compare A.json B.json [--threshold 0.05]

(or python -m dlunits.bench). Modules: units (the registry of units), suite (YAML loading and checks),
measure (roofline, timing, errors), runner (checks and timings per case), environment, report (table,
JSON, CSV, Markdown), plots, compare.
"""
