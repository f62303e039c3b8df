"""Builds dlunits._C: the CPU kernels always, the CUDA kernels when asked for.

The CUDA build is decided by DLUNITS_CUDA (1 = required, 0 = off, unset =
automatic) and the presence of nvcc together with a CUDA build of torch, never by
whether a GPU is present: CI compiles the CUDA kernels on a machine without one.
"""
import glob
import importlib.util
import os

from setuptools import setup
from torch.utils import cpp_extension


def _want_cuda():
    switch = os.environ.get("DLUNITS_CUDA", "").strip()
    have_toolkit = cpp_extension.CUDA_HOME is not None and os.path.exists(
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"))
    have_torch_cuda = cpp_extension.torch.version.cuda is not None
    if switch == "0":
        return False
    if switch == "1":
        if not (have_toolkit and have_torch_cuda):
            raise RuntimeError(
                "DLUNITS_CUDA=1 but the CUDA build is impossible: "
                f"nvcc found: {have_toolkit} (CUDA_HOME={cpp_extension.CUDA_HOME}), "
                f"torch built with CUDA: {have_torch_cuda} (torch {cpp_extension.torch.__version__})")
        return True
    return have_toolkit and have_torch_cuda


def _pip_cuda_include_dirs():
    """Headers of the CUDA libraries that pip's torch wheels bring along (cuSPARSE, cuBLAS, ...).

    ATen's CUDA headers include them, and a bare toolkit install may lack them.
    dlunits calls none of these libraries; it only needs their declarations to compile.
    """
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    dirs = []
    for root in spec.submodule_search_locations:
        dirs += sorted(d for d in glob.glob(os.path.join(root, "cu[0-9]*", "include")) if os.path.isdir(d))
    return dirs


def _extension():
    here = os.path.dirname(os.path.abspath(__file__))
    sources = [os.path.join("csrc", name) for name in ("ops.cpp", "recurrent_autograd.cpp", "autocast.cpp")]
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cxx = ["-O3", "-fopenmp"] if os.name != "nt" else ["/O2"]
    # The CPU kernels' loops are vectorised for the machine that compiles them, as
    # for any from-source build; DLUNITS_PORTABLE=1 builds for any x86-64 instead.
    if os.name != "nt" and os.environ.get("DLUNITS_PORTABLE", "0") != "1":
        cxx.append("-march=native")
    define_macros = []
    if _want_cuda():
        # Ampere and Hopper unless the caller says otherwise: keeps CI's compile short.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        define_macros.append(("DLUNITS_WITH_CUDA", None))
        # -isystem: searched after the toolkit's own -I headers, which keep precedence.
        pip_headers = [flag for d in _pip_cuda_include_dirs() for flag in ("-isystem", d)]
        return cpp_extension.CUDAExtension(
            "dlunits._C", sources, include_dirs=[os.path.join(here, "csrc")], define_macros=define_macros,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"] + pip_headers},
            extra_link_args=["-fopenmp"])
    return cpp_extension.CppExtension(
        "dlunits._C", sources, include_dirs=[os.path.join(here, "csrc")], define_macros=define_macros,
        extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
