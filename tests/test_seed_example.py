"""The course's worked example (lecture): a 7×7 input and a 3×3 filter, convolved (torch's
cross-correlation) without padding and with zero padding 1.

The expected tables were checked against torch.nn.functional.conv2d (see
test_tables_agree_with_torch_and_by_hand) and by hand for a few entries, e.g.
  valid[0, 0]  = window [[2,2,2],[1,0,1],[1,1,3]]:  -1·2 + 0.5·2 + 1·2 - 1·1 + 0.5·3 = 1.5
  padded[0, 0] = window [[0,0,0],[0,2,2],[0,1,0]]:  every non-zero tap meets a 0         = 0
  padded[6, 0] = window [[0,1,3],[0,3,3],[0,0,0]]:  0.5·1 + 1·3                           = 3.5
and that test recomputes both tables from the definition with plain Python loops.
Every value is a multiple of 0.5 of modest size, exactly representable in float32 and float64, and
every partial sum is too, so the results must be exact (torch.equal), whatever the summation order.
"""
import pytest
import torch
import torch.nn.functional as F

import dlunits

INPUT = [
    [2, 2, 2, 2, 3, 3, 3],
    [1, 0, 1, 1, 1, 1, 0],
    [1, 1, 3, 3, 0, 0, 0],
    [1, 1, 3, 2, 0, 0, 3],
    [1, 1, 3, 2, 0, 0, 3],
    [1, 3, 3, 2, 0, 0, 3],
    [3, 3, 3, 2, 0, 0, 3],
]

FILTER = [
    [-1, 0.5, 1],
    [-1, 0, 0],
    [0, 0, 0.5],
]

VALID = [
    [1.5, 2.5, 1, 1.5, 0.5],
    [0.5, 1.5, -2.5, -2.5, 1],
    [3, 3.5, -4.5, -5, 1.5],
    [3, 2.5, -5, -4, 4.5],
    [3, 0.5, -5, -4, 4.5],
]

PADDED = [
    [0, -1.5, -1.5, -1.5, -1.5, -3, -3],
    [3.5, 1.5, 2.5, 1, 1.5, 0.5, -2.5],
    [1, 0.5, 1.5, -2.5, -2.5, 1, -1],
    [2, 3, 3.5, -4.5, -5, 1.5, 0],
    [3, 3, 2.5, -5, -4, 4.5, 1.5],
    [3, 3, 0.5, -5, -4, 4.5, 1.5],
    [3.5, 0.5, -2.5, -5, -4, 3, 1.5],
]

DTYPES = [torch.float32, torch.float64]
CASES = [pytest.param(0, VALID, id="no-padding"), pytest.param(1, PADDED, id="zero-padding-1")]


def tensors(dtype):
    x = torch.tensor(INPUT, dtype=dtype).reshape(1, 1, 7, 7)
    w = torch.tensor(FILTER, dtype=dtype).reshape(1, 1, 3, 3)
    return x, w


def expected(table, dtype):
    return torch.tensor(table, dtype=dtype).reshape(1, 1, len(table), len(table))


def by_hand(x, w, padding):
    """The definition, as loops: y[i, j] = Σ_{a, b} w[a, b] · xpad[i + a, j + b]."""
    x, w = x[0, 0].tolist(), w[0, 0].tolist()
    n = len(x) + 2 * padding
    xp = [[0.0] * n for _ in range(n)]
    for i, row in enumerate(x):
        for j, v in enumerate(row):
            xp[i + padding][j + padding] = v
    m = n - 2
    return [[sum(w[a][b] * xp[i + a][j + b] for a in range(3) for b in range(3)) for j in range(m)] for i in range(m)]


@pytest.mark.parametrize("padding,table", CASES)
def test_tables_agree_with_torch_and_by_hand(padding, table):
    x, w = tensors(torch.float64)
    assert by_hand(x, w, padding) == table
    assert torch.equal(F.conv2d(x, w, padding=padding), expected(table, torch.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding,table", CASES)
def test_functional(dtype, padding, table):
    x, w = tensors(dtype)
    y = dlunits.functional.conv2d(x, w, padding=padding)
    assert y.dtype == dtype
    assert torch.equal(y, expected(table, dtype)), f"dlunits gave\n{y[0, 0]}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding,table", CASES)
def test_functional_unbatched_and_explicit_padding(dtype, padding, table):
    x, w = tensors(dtype)
    y = dlunits.functional.conv2d(x[0], w, None, 1, (padding, padding), 1, 1)
    assert torch.equal(y, expected(table, dtype)[0])
    if padding == 0:
        assert torch.equal(dlunits.functional.conv2d(x, w, padding="valid"), expected(table, dtype))
    else:  # a 3×3 kernel: 'same' is padding 1
        assert torch.equal(dlunits.functional.conv2d(x, w, padding="same"), expected(table, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding,table", CASES)
def test_op(dtype, padding, table):
    x, w = tensors(dtype)
    y = torch.ops.dlunits.conv2d(x, w, None, [1, 1], [padding] * 4, [1, 1], 1)
    assert torch.equal(y, expected(table, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding,table", CASES)
def test_module(dtype, padding, table):
    x, w = tensors(dtype)
    layer = dlunits.nn.Conv2d(1, 1, 3, padding=padding, bias=False).to(dtype)
    layer.load_state_dict({"weight": w})
    with torch.no_grad():
        y = layer(x)
    assert torch.equal(y, expected(table, dtype)), f"dlunits gave\n{y[0, 0]}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding,table", CASES)
def test_module_with_bias_loaded_from_torch(dtype, padding, table):
    """A torch.nn.Conv2d's state_dict with the lecture's filter and a bias of 0.5."""
    x, w = tensors(dtype)
    ref = torch.nn.Conv2d(1, 1, 3, padding=padding).to(dtype)
    ref.load_state_dict({"weight": w, "bias": torch.tensor([0.5], dtype=dtype)})
    layer = dlunits.nn.Conv2d(1, 1, 3, padding=padding).to(dtype)
    layer.load_state_dict(ref.state_dict())
    with torch.no_grad():
        y = layer(x)
    assert torch.equal(y, expected(table, dtype) + 0.5)
    assert torch.equal(y, ref(x).detach())


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_and_channels(dtype):
    """The example repeated over a batch and over grouped channels gives the table everywhere."""
    x, w = tensors(dtype)
    xs = torch.cat([x, -x, 2 * x], dim=0).repeat(1, 2, 1, 1)  # (3, 2, 7, 7)
    ws = torch.cat([w, w], dim=0)  # (2, 1, 3, 3), groups=2
    y = dlunits.functional.conv2d(xs, ws, padding=1, groups=2)
    table = expected(PADDED, dtype)[0, 0]
    for n, scale in enumerate([1, -1, 2]):
        for c in range(2):
            assert torch.equal(y[n, c], scale * table)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_exact(dtype):
    """Backward of the example with an all-ones grad_output: the weight gradient is the sum of each
    3×3 window's input (integers), the input gradient the sum of the filter taps reaching each
    pixel; both exact, both as torch computes them."""
    x, w = tensors(dtype)
    results = []
    for conv in (dlunits.functional.conv2d, F.conv2d):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        conv(xx, ww, padding=1).sum().backward()
        results.append((xx.grad, ww.grad))
    (gx, gw), (gx_ref, gw_ref) = results
    assert torch.equal(gw, gw_ref)
    assert torch.equal(gx, gx_ref)
    # centre tap sees every pixel once: the sum of the input
    assert gw[0, 0, 1, 1].item() == sum(map(sum, INPUT))
