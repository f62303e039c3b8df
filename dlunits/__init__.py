"""dlunits: deep learning's processing units, hand-written in C++ and CUDA.

    import dlunits
    y = dlunits.functional.conv2d(x, w)          # torch's conv2d signature, our kernels
    layer = dlunits.nn.Conv2d(3, 16, 3)           # torch.nn.Conv2d, our kernels
    model = dlunits.nn.convert(torchvision_model)  # every supported layer swapped

The ops live under torch.ops.dlunits (schemas in csrc/ops.cpp); importing this
package loads them and registers their fake kernels and autograd.
"""
import torch  # noqa: F401  (the extension needs torch's symbols loaded first)

from . import _C  # noqa: F401  registers torch.ops.dlunits.*
from . import ops as _ops  # noqa: F401  fake kernels and autograd
from . import functional, nn

__version__ = "0.1.0"


def cuda_compiled() -> bool:
    """Whether this build of dlunits contains its CUDA kernels."""
    return bool(_C.cuda_compiled())


__all__ = ["functional", "nn", "cuda_compiled", "__version__"]
