"""Shared fixtures and helpers for dlunits' tests.

torch (torch.nn, torch.nn.functional) is the oracle everywhere: every test runs
the same computation through dlunits and through torch on the same random
(seeded, never all-zero) data and compares the forward result and every
gradient.

Tolerances, relative to the largest magnitude of the reference result:
  float64   1e-10  (both sides are exact to ~1e-15 on these small shapes)
  float32   1e-5
  float16 / bfloat16 (CUDA only)  1e-2, against torch's float32 result computed
            from the same (rounded) half-precision inputs. With half_slack=k
            (compare_with_torch), a half-precision result that misses this tolerance still
            passes when its largest error is at most k times that of torch's own result in
            the same half dtype: where torch itself cannot get within 1e-2 (a gradient
            through 1 - y² or y(1 - y) of a saturated tanh/sigmoid output rounded to
            bfloat16), the criterion is "no less accurate than torch", not an accuracy no
            half-precision implementation has.

Threads: the suite runs torch (and dlunits' at::parallel_for) with one thread by
default. On a loaded 2-core machine OpenMP's spin-waiting makes every tiny
2-thread op cost milliseconds (gradcheck then takes tens of seconds), and one
thread also makes the results reproducible. dlunits' multi-threaded code paths
(per-sample chunks, per-channel im2col/col2im, per-chunk weight-gradient
accumulators) are exercised on purpose by test_conv2d.py::test_threads, which
sets 2 and 3 threads itself.
"""
import contextlib

import pytest
import torch
from hypothesis import settings


import dlunits

# hypothesis draws the same examples on every run (derandomize): CI stays reproducible, and a
# configuration found failing is fixed, then kept as an explicit case.
settings.register_profile("dlunits", derandomize=True)
settings.load_profile("dlunits")

# --------------------------------------------------------------------------------------
# Devices and dtypes
# --------------------------------------------------------------------------------------

CUDA_AVAILABLE = torch.cuda.is_available() and dlunits.cuda_compiled()
requires_cuda = pytest.mark.skipif(
    not CUDA_AVAILABLE,
    reason="needs a CUDA device and a dlunits build with its CUDA kernels "
    f"(torch.cuda.is_available()={torch.cuda.is_available()}, dlunits.cuda_compiled()={dlunits.cuda_compiled()})",
)
_CUDA_MARKS = [requires_cuda, pytest.mark.cuda]

# Parametrise a test with `@pytest.mark.parametrize("device", DEVICES)`.
DEVICES = ["cpu", pytest.param("cuda", marks=_CUDA_MARKS)]

HALF_DTYPES = (torch.float16, torch.bfloat16)

# (device, dtype) pairs that dlunits supports: float32/float64 on both, float16/bfloat16 on CUDA.
DEVICE_DTYPES = [
    pytest.param("cpu", torch.float32, id="cpu-float32"),
    pytest.param("cpu", torch.float64, id="cpu-float64"),
    pytest.param("cuda", torch.float32, id="cuda-float32", marks=_CUDA_MARKS),
    pytest.param("cuda", torch.float64, id="cuda-float64", marks=_CUDA_MARKS),
    pytest.param("cuda", torch.float16, id="cuda-float16", marks=_CUDA_MARKS),
    pytest.param("cuda", torch.bfloat16, id="cuda-bfloat16", marks=_CUDA_MARKS),
]

# float32 and float64 only (CPU and CUDA).
DEVICE_FLOAT_DTYPES = [p for p in DEVICE_DTYPES if p.values[1] in (torch.float32, torch.float64)]

REL_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def reference_dtype(dtype):
    """The dtype torch computes the reference in: half precisions are compared with float32."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


@pytest.fixture(scope="session", autouse=True)
def _torch_settings():
    """One thread (see the module docstring) and no TF32 in torch's CUDA reference convolutions."""
    threads = torch.get_num_threads()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.set_num_threads(1)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.set_num_threads(threads)
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


@contextlib.contextmanager
def num_threads(n):
    """Run the body with n intra-op threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------------------
# Random data
# --------------------------------------------------------------------------------------


def make_generator(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, gen, dtype=torch.float64, device="cpu", requires_grad=False):
    """Standard normal data from `gen` (drawn in float64 on the CPU, then cast and moved, so a
    given seed gives the same values on every device)."""
    t = torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    return t.requires_grad_(requires_grad)


@pytest.fixture
def gen():
    """A fresh generator with a fixed seed."""
    return make_generator(1234)


# --------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------


def assert_close_rel(actual, expected, rel, msg="", *, peer=None, slack=None):
    """assert_close with rtol=rel and atol=rel·max(1, max|expected|), after checking shape, dtype
    and device match (tensors compared in expected's dtype).

    peer, slack: another implementation's result for the same inputs (torch's own, in the same
    half precision as actual) and a factor k. A result that misses the tolerance still passes when
    its largest error, max|actual - expected|, is at most k times the peer's. NaN errors never pass."""
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.device == expected.device, f"{msg}: device {actual.device} != {expected.device}"
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    try:
        torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=rel, atol=rel * scale,
                                   msg=lambda m: f"{msg}: {m}")
    except AssertionError as e:
        if peer is None:
            raise
        assert peer.shape == expected.shape, f"{msg}: peer shape {tuple(peer.shape)} != {tuple(expected.shape)}"
        error = (actual.to(expected.dtype) - expected).abs().max().item()
        peer_error = (peer.to(expected.dtype) - expected).abs().max().item()
        if not error <= slack * peer_error:  # False for NaN
            raise AssertionError(f"{e}\n{msg}: its largest error, {error:.4g}, is more than {slack} times that of "
                                 f"torch's own {peer.dtype} result ({peer_error:.4g})") from None


def flat_outputs(result):
    """A module's result as a flat list of tensors: output (or PackedSequence data) and states."""
    out = []
    for r in result if isinstance(result, tuple) else (result,):
        if isinstance(r, torch.nn.utils.rnn.PackedSequence):
            out.append(r.data)
        elif isinstance(r, tuple):
            out.extend(r)
        else:
            out.append(r)
    return out


def compare_with_torch(dl_fn, torch_fn, tensors, *, dtype=torch.float64, device="cpu", seed=0,
                       grad_output_transform=None, check_memory_format=True, rel=None, half_slack=None):
    """Runs dl_fn(*tensors) and torch_fn(*tensors) and compares the outputs and the gradients
    with respect to every tensor argument (None entries are passed through).

    tensors are float64 CPU tensors (the master copy); they are cast to dtype and moved to device
    for dlunits and to reference_dtype(dtype) on device for torch (from the same rounded values,
    so for half precision only the computation differs). The backward pass is seeded with a random
    grad_output (optionally passed through grad_output_transform, e.g. to make it
    non-contiguous). Returns (dl_output, torch_output, dl_grads, torch_grads).

    half_slack (float16/bfloat16 only; None, the default, changes nothing): a factor k. torch_fn
    also runs in dtype itself on the same inputs and grad_output, and a dlunits result (output or
    gradient) that misses the tolerance still passes when its largest error from the float32
    reference is at most k times that of torch's half-precision result (see assert_close_rel).
    """
    rel = REL_TOL[dtype] if rel is None else rel
    ref_dtype = reference_dtype(dtype)
    use_peer = half_slack is not None and dtype in HALF_DTYPES

    def prepare(target_dtype):
        out = []
        for t in tensors:
            if t is None:
                out.append(None)
                continue
            rounded = t.detach().to(device=device, dtype=dtype)
            # keep the master's memory format / strides (channels_last, transposes...)
            copy = torch.empty_strided(t.shape, t.stride(), dtype=target_dtype, device=device)
            copy.copy_(rounded)
            out.append(copy.requires_grad_(True))
        return out

    dl_inputs, th_inputs = prepare(dtype), prepare(ref_dtype)
    y = dl_fn(*dl_inputs)
    y_ref = torch_fn(*th_inputs)
    peer_inputs = prepare(dtype) if use_peer else None
    y_peer = torch_fn(*peer_inputs) if use_peer else None
    slack = half_slack if use_peer else None
    assert y.dtype == dtype, f"dlunits output dtype {y.dtype}, expected {dtype}"
    assert_close_rel(y, y_ref, rel, "forward", peer=y_peer, slack=slack)
    if check_memory_format:
        for fmt in (torch.contiguous_format, torch.channels_last):
            if y_ref.dim() == 4:
                assert y.is_contiguous(memory_format=fmt) == y_ref.is_contiguous(memory_format=fmt), (
                    f"output is_contiguous({fmt}) differs: dlunits strides {y.stride()}, torch {y_ref.stride()}")

    gen = make_generator(seed + 1)
    grad_output = randn(*y_ref.shape, gen=gen, device=device, dtype=dtype)
    if grad_output_transform is not None:
        grad_output = grad_output_transform(grad_output)
    dl_wrt = [t for t in dl_inputs if t is not None]
    th_wrt = [t for t in th_inputs if t is not None]
    dl_grads = torch.autograd.grad(y, dl_wrt, grad_output, allow_unused=False)
    th_grads = torch.autograd.grad(y_ref, th_wrt, grad_output.to(ref_dtype), allow_unused=False)
    if use_peer:
        peer_grads = torch.autograd.grad(y_peer, [t for t in peer_inputs if t is not None], grad_output,
                                         allow_unused=False)
    else:
        peer_grads = [None] * len(th_grads)
    for i, (g, g_ref, g_peer) in enumerate(zip(dl_grads, th_grads, peer_grads)):
        assert g.dtype == dtype
        assert_close_rel(g, g_ref, rel, f"gradient of argument {i}", peer=g_peer, slack=slack)
    return y, y_ref, dl_grads, th_grads
