"""Whole models: dlunits.nn.convert on a small CNN, torch.compile of dlunits layers, and a few
training steps, all against the torch original (float64, tight tolerances)."""
import copy

import pytest
import torch
import torch._dynamo.testing
import torch.nn as nn

import dlunits
from conftest import make_generator, randn

TOL = dict(rtol=1e-10, atol=1e-10)


class UserConv(nn.Conv2d):
    """A user's subclass of nn.Conv2d with its own forward: convert must leave it alone."""

    def forward(self, x):
        return super().forward(x) * 2.0


class SmallCNN(nn.Module):
    def __init__(self, conv=nn.Conv2d):
        super().__init__()
        self.conv1 = conv(3, 8, 3, padding=1)
        self.conv2 = conv(8, 8, 3, padding=1, groups=4)
        self.conv3 = conv(8, 12, (3, 2), padding=(1, 1), padding_mode="reflect")
        self.pool = nn.MaxPool2d(2)
        self.block = nn.Sequential(conv(12, 12, 1, bias=False), nn.ReLU(), UserConv(12, 12, 3, padding=1))
        self.branches = nn.ModuleList([conv(12, 6, 3, padding="same", padding_mode="circular"),
                                       conv(12, 6, 3, stride=2, padding=1, dilation=1)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        x = self.pool(x)
        x = self.block(x)
        a = self.branches[0](x)
        b = nn.functional.interpolate(self.branches[1](x), size=a.shape[-2:])
        return self.head(torch.cat([a, b], dim=1))


def torch_convs(model):
    return [m for m in model.modules() if type(m) is nn.Conv2d]


def make_model(seed=0):
    torch.manual_seed(seed)
    return SmallCNN().double()


def forward_backward(model, x, target):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = model(x)
    loss = ((out - target) ** 2).sum()
    loss.backward()
    # (a compiled model names its parameters "_orig_mod.<name>")
    return out.detach(), x.grad, {name.removeprefix("_orig_mod."): p.grad for name, p in model.named_parameters()}


def assert_same_results(results, expected):
    out, gx, grads = results
    out_ref, gx_ref, grads_ref = expected
    torch.testing.assert_close(out, out_ref, **TOL)
    torch.testing.assert_close(gx, gx_ref, **TOL)
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        assert grads_ref[name] is not None and grads_ref[name].abs().max() > 0, name
        torch.testing.assert_close(grads[name], grads_ref[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


def data(seed=1, batch=3):
    gen = make_generator(seed)
    return randn(batch, 3, 12, 10, gen=gen), randn(batch, 5, gen=gen)


# --------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------


def test_convert_same_outputs_and_gradients():
    model = make_model()
    converted = dlunits.nn.convert(model)
    x, target = data()
    assert_same_results(forward_backward(converted, x, target), forward_backward(model, x, target))


def test_convert_swaps_exactly_the_torch_conv2d_layers():
    model = make_model()
    n_torch_convs = len(torch_convs(model))
    assert n_torch_convs == 6
    converted = dlunits.nn.convert(model)
    assert converted is not model
    swapped = [m for m in converted.modules() if type(m) is dlunits.nn.Conv2d]
    assert len(swapped) == n_torch_convs
    assert torch_convs(converted) == []
    for m in swapped:
        assert isinstance(m, nn.Conv2d)
    # the user's subclass and the other layers are left alone
    assert type(converted.block[2]) is UserConv
    assert type(converted.block[1]) is nn.ReLU
    assert type(converted.head[2]) is dlunits.nn.Linear  # the dense unit has its twin too
    assert type(converted.branches) is nn.ModuleList
    # options carried over
    assert converted.conv2.groups == 4
    assert converted.conv3.padding_mode == "reflect"
    assert converted.branches[0].padding == "same"
    assert converted.block[0].bias is None


def test_convert_leaves_original_untouched():
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    types_before = [type(m) for m in model.modules()]
    converted = dlunits.nn.convert(model)
    assert [type(m) for m in model.modules()] == types_before
    assert len(torch_convs(model)) == 6
    # separate parameters: changing the converted model does not change the original
    with torch.no_grad():
        for p in converted.parameters():
            p.mul_(-3.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for p, q in zip(model.parameters(), converted.parameters()):
        assert p is not q


def test_convert_inplace():
    model = make_model()
    reference = copy.deepcopy(model)
    params = dict(model.named_parameters())
    converted = dlunits.nn.convert(model, inplace=True)
    assert converted is model
    assert torch_convs(model) == []
    assert len([m for m in model.modules() if type(m) is dlunits.nn.Conv2d]) == 6
    # the same Parameter objects (an optimizer built before convert still works)
    for name, p in model.named_parameters():
        assert p is params[name], name
    x, target = data()
    assert_same_results(forward_backward(model, x, target), forward_backward(reference, x, target))


def test_convert_state_dict_keys_and_values():
    model = make_model()
    converted = dlunits.nn.convert(model)
    assert list(converted.state_dict().keys()) == list(model.state_dict().keys())
    for k, v in model.state_dict().items():
        assert torch.equal(converted.state_dict()[k], v), k
    # and the torch model loads the converted model's weights, and vice versa
    fresh = make_model(seed=5)
    fresh.load_state_dict(converted.state_dict())
    converted.load_state_dict(make_model(seed=6).state_dict())


def test_convert_single_layer_and_idempotence():
    layer = nn.Conv2d(3, 4, 3, padding=1).double()
    converted = dlunits.nn.convert(layer)
    assert type(converted) is dlunits.nn.Conv2d
    assert type(layer) is nn.Conv2d
    again = dlunits.nn.convert(converted)
    assert type(again) is dlunits.nn.Conv2d
    x = randn(2, 3, 5, 5, gen=make_generator(3))
    torch.testing.assert_close(again(x), layer(x), **TOL)


def test_convert_keeps_shared_layers_shared():
    """A layer used in two places (tied) becomes one twin, in both places, as it is one module in torch."""
    shared = nn.LSTM(4, 5)
    model = nn.ModuleDict({"encoder": shared, "decoder": nn.Sequential(shared, nn.Identity()), "head": nn.Linear(5, 2)})
    names = [n for n, _ in model.named_modules()]  # torch lists a shared module once
    for inplace in (False, True):
        converted = dlunits.nn.convert(copy.deepcopy(model), inplace=inplace)
        assert type(converted["encoder"]) is dlunits.nn.LSTM
        assert converted["encoder"] is converted["decoder"][0]
        assert [n for n, _ in converted.named_modules()] == names
        converted["encoder"].eval()
        assert not converted["decoder"][0].training


def test_convert_keeps_hooks_and_mode():
    model = make_model().eval()
    calls = []
    model.conv1.register_forward_hook(lambda mod, inp, out: calls.append(type(mod)))
    converted = dlunits.nn.convert(model)
    assert not converted.training and not converted.conv1.training
    converted(data()[0])
    assert calls == [dlunits.nn.Conv2d]


def test_convert_keeps_device_and_dtype():
    model = SmallCNN().to(torch.float64)
    converted = dlunits.nn.convert(model)
    for p in converted.parameters():
        assert p.dtype == torch.float64 and p.device.type == "cpu"


# --------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------


class DlunitsNet(nn.Module):
    """Made of dlunits layers (every padding mode, max and adaptive average pooling) and torch's other layers."""

    def __init__(self):
        super().__init__()
        self.c1 = dlunits.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = dlunits.nn.Conv2d(8, 8, 3, padding=1, groups=2, padding_mode="reflect")
        self.c3 = dlunits.nn.Conv2d(8, 8, (2, 3), padding="same", padding_mode="replicate")
        self.c4 = dlunits.nn.Conv2d(8, 4, 3, stride=2, padding=1, padding_mode="circular", bias=False)
        self.pool = dlunits.nn.MaxPool2d(2)
        self.head_pool = dlunits.nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        x = self.pool(self.c4(x))
        return self.fc(self.head_pool(x).flatten(1))


def _compiled_vs_eager(backend, dynamic=None, batches=(2,)):
    torch.manual_seed(0)
    model = DlunitsNet().double()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=dynamic)
    for batch in batches:
        gen = make_generator(batch)
        x, target = randn(batch, 3, 10, 9, gen=gen), randn(batch, 3, gen=gen)
        assert_same_results(forward_backward(compiled, x, target), forward_backward(model, x, target))


def test_compile_aot_eager_fullgraph():
    _compiled_vs_eager("aot_eager")


def test_compile_no_graph_breaks():
    torch.manual_seed(0)
    model = DlunitsNet().double()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(randn(2, 3, 10, 9, gen=make_generator(0)))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compile_aot_eager_dynamic_shapes():
    """dynamic=True (the spatial sizes specialise inside dlunits' checks, no graph break), several batch sizes."""
    _compiled_vs_eager("aot_eager", dynamic=True, batches=(2, 3, 5))


def pooling_pair():
    """(a torch.nn model with every 2-D unit of dlunits but the recurrent ones, its dlunits.nn.convert), float64."""
    torch.manual_seed(0)
    reference = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(4, 5, 3, stride=2), nn.AvgPool2d(2, padding=1, count_include_pad=False),
        nn.AdaptiveMaxPool2d((2, 3)), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2)).double()
    return reference, dlunits.nn.convert(reference)


def test_compile_dynamic_batch_one_graph():
    """A changing batch compiles one graph with a symbolic batch after the first, as for torch.nn: the
    conv, pad and pool fake kernels check a stand-in with the example's batch and keep the batch
    symbolic (dlunits/ops.py), forward and backward ops. Gradients match the torch.nn model."""
    reference, model = pooling_pair()
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: model(x).square().sum(), backend=counter, fullgraph=True)
    for batch in (2, 3, 5, 8):
        x = randn(batch, 3, 17, 15, gen=make_generator(batch)).requires_grad_()
        got = torch.autograd.grad(compiled(x), [x, *model.parameters()])
        expected = torch.autograd.grad(reference(x).square().sum(), [x, *reference.parameters()])
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, **TOL)
    assert counter.frame_count == 2, f"expected one static and one dynamic graph, got {counter.frame_count} graphs"


def test_export_dynamic_batch():
    """torch.export with a dynamic batch: one program runs every batch with the torch.nn model's output."""
    reference, model = pooling_pair()
    program = torch.export.export(model, (randn(3, 3, 17, 15, gen=make_generator(1)),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=2)},))
    for batch in (2, 9):
        x = randn(batch, 3, 17, 15, gen=make_generator(batch))
        torch.testing.assert_close(program.module()(x), reference(x), **TOL)


def test_compile_functional_ops_fullgraph():
    """dlunits.functional under torch.compile, with its argument normalisation traced."""

    def fn(x, w, b):
        y = dlunits.functional.conv2d(x, w, b, stride=(2, 1), padding="valid", dilation=(1, 2), groups=2)
        return dlunits.functional.pad(y, (1, 0, 2, 1), "reflect").sum()

    gen = make_generator(9)
    args = [randn(2, 4, 9, 8, gen=gen), randn(6, 2, 3, 2, gen=gen), randn(6, gen=gen)]
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    eager_args = [a.clone().requires_grad_() for a in args]
    compiled_args = [a.clone().requires_grad_() for a in args]
    fn(*eager_args).backward()
    out = compiled(*compiled_args)
    out.backward()
    torch.testing.assert_close(out, fn(*args), **TOL)
    for a, b in zip(compiled_args, eager_args):
        torch.testing.assert_close(a.grad, b.grad, **TOL)


def test_compile_inductor():
    """The default backend (inductor) on the CPU: C++ code generation for the torch ops around
    dlunits' (which stay opaque custom ops)."""
    _compiled_vs_eager("inductor")


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "sgd-momentum-weight-decay"])
def test_training_steps_match_torch(optimizer):
    reference = make_model()
    model = dlunits.nn.convert(reference)
    make_opt = {
        "sgd": lambda params: torch.optim.SGD(params, lr=0.05),
        "sgd-momentum-weight-decay": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9,
                                                                    weight_decay=1e-3),
    }[optimizer]
    opt, opt_ref = make_opt(model.parameters()), make_opt(reference.parameters())
    x, target = data(seed=7, batch=4)
    losses = []
    for step in range(5):
        for m, o in ((model, opt), (reference, opt_ref)):
            o.zero_grad()
            loss = ((m(x) - target) ** 2).mean()
            loss.backward()
            o.step()
            losses.append(loss.item())
        torch.testing.assert_close(losses[-2], losses[-1], **TOL)
        for (name, p), p_ref in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p, p_ref, **TOL, msg=lambda m, n=name, s=step: f"step {s}, {n}: {m}")
    assert losses[-1] < losses[0]  # it did train
