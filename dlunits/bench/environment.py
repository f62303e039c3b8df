"""What a result was measured on: dlunits' commit, torch, CUDA, cuDNN, the CPU and GPU models,
threads; and the name of the results folder (host, device and date)."""
import datetime
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

import dlunits

REPO_ROOT = Path(dlunits.__file__).resolve().parents[1]


def git_commit() -> str:
    """dlunits' short commit, +dirty when its sources differ from it; 'unknown' outside a git checkout."""
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


def gpu_model(devices: Sequence[str]) -> Optional[str]:
    return torch.cuda.get_device_name() if "cuda" in devices else None


def capture(devices: Sequence[str], threads: int, argv: Sequence[str]) -> dict:
    """The environment of a run, stored in every result."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "command": " ".join(["dlunits-bench", *argv]),
        "dlunits_commit": git_commit(),
        "dlunits_cuda_compiled": dlunits.cuda_compiled(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu": cpu_model(),
        "gpu": gpu_model(devices),
        "threads": threads,
        "devices": list(devices),
        "tf32": False,
    }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def results_folder_name(env: dict) -> str:
    """<host>-<device>-<UTC date and time>, the device being cpu, cuda-<gpu model> or both joined by +."""
    devices = [f"cuda-{slug(env['gpu'])}" if d == "cuda" else d for d in env["devices"]]
    date = datetime.datetime.fromisoformat(env["date"]).strftime("%Y%m%d-%H%M%S")
    return f"{slug(env['host'])}-{'+'.join(devices)}-{date}"
