"""dlunits-train --config configs/train/<name>.yaml [--units dlunits|torch|both] ...

Also `python -m dlunits.train`, and under `torchrun --nproc_per_node N` for DistributedDataParallel
(gloo on the CPU, NCCL on CUDA). Exit status 2 and a one-line message for a config that cannot be
trained (config.py's ConfigError).
"""
import argparse
import datetime
import os
import sys

import torch

from .config import ConfigError, load_config
from .loop import run


def parse_args(argv):
    p = argparse.ArgumentParser(prog="dlunits-train", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="a YAML file of configs/train/")
    p.add_argument("--units", choices=["dlunits", "torch", "both"], default="dlunits",
                   help="dlunits' layers (converted from the torch.nn model), torch.nn's, or both from one seed")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: cuda:<local rank>)")
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--max-steps", type=int, help="override training.max_steps")
    p.add_argument("--data-dir", help="override data.root")
    p.add_argument("--seed", type=int, help="override training.seed")
    p.add_argument("--dtype", choices=["float32", "float64"], help="override training.dtype")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--resume", action="store_true", help="continue from <out>/<units>/checkpoint.pt")
    p.add_argument("--no-plot", action="store_true", help="skip curves.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        config = load_config(args.config)
        if args.data_dir:
            config["data"]["root"] = args.data_dir
        if args.seed is not None:
            config["training"]["seed"] = args.seed
        if args.dtype:
            config["training"]["dtype"] = args.dtype
        if args.threads:
            torch.set_num_threads(args.threads)
        device = args.device
        if distributed:
            import torch.distributed as dist
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if device.startswith("cuda"):
                device = f"cuda:{local_rank}"
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                                    timeout=datetime.timedelta(minutes=5))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available here")
        out = args.out or os.path.join("runs", config["name"])
        results = run(config, args.units, out, device, resume=args.resume, progress=not args.no_progress,
                      plot=not args.no_plot, epochs=args.epochs, max_steps=args.max_steps)
        if distributed:
            # Every rank past its last collective before any tears its process group down: a rank that
            # destroyed its group and exited while another still had gloo work in flight aborted that
            # one ("terminate called without an active exception", seen once in CI).
            dist.barrier()
    except ConfigError as e:
        print(f"dlunits-train: error: {e}", file=sys.stderr)
        return 2
    finally:
        if distributed:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        for units, r in results.items():
            last = r["epochs"][-1] if r["epochs"] else {}
            line = (f"{config['name']} [{units}] {r['data']}: test accuracy {last.get('test_acc', float('nan')):.4f}, "
                    f"train loss {last.get('train_loss', float('nan')):.4f}, {last.get('elapsed_s', 0):.1f} s")
            print(line)
            if "generated" in r:
                print(f"  generated: {r['generated']!r}")
        print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
