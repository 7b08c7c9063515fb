"""Capture and attribution on the shapes real pretrained networks have.

- in-place operations after a captured layer (BatchNorm → ReLU(inplace=True), a residual ``out += identity``);
- modules called more than once (torchvision's BasicBlock reuses ``self.relu``), addressed as ``NAME@N``;
- ``method: integrated`` with several images and on one call of a reused module;
- forward passes that return a dict, a tuple or a ModelOutput-like object instead of a tensor;
- a model its user put back in train mode (dropout, BatchNorm) still runs in eval mode.

Every number is checked against captum (LayerGradientXActivation; IntegratedGradients, riemann_left,
on a forward function that puts the layer's value in by a plain hook written here) or against the
network computed by hand with the in-place operations taken out.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradientXActivation
from torch import nn

import interpgram
from interpgram.backends.kernels import attribution as A
from interpgram.backends.kernels.capture import LayerCallError, capture_until, hooks, logits_of, run_capture
from interpgram.backends.models.base import ModelSourceError, from_module, probe_layers
from interpgram.grammar.compile import compile_spec
from interpgram.grammar.spec.errors import SpecError

torch.set_printoptions(precision=6)


def _randomise_bn(m: nn.Module, seed: int) -> None:
    """Running statistics and affine parameters away from the identity (negative outputs appear)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (b for b in m.modules() if isinstance(b, nn.BatchNorm2d)):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.5)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.5)


class ConvBNReLU(nn.Module):
    """VGG-BN's unit: Conv → BatchNorm → ReLU(inplace=True)."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=inplace)
        self.head = nn.Sequential(nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(6, 5))

    def forward(self, x):
        return self.head(self.relu(self.bn(self.conv(x))))


class Block(nn.Module):
    """torchvision's BasicBlock: one ``self.relu`` (in place) called twice, and ``out += identity``."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TwinBlock(nn.Module):
    """The same block written without in-place operations and with one ReLU module per call (no
    parameters in a ReLU, so the Block's state_dict loads into it): the reference for every number."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + x)


class TinyResNet(nn.Module):
    def __init__(self, block=Block):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=block is Block)
        self.layer1 = nn.Sequential(block(8), block(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


RESNET_CLASSES = ["a", "b", "c", "d"]


def _resnets(dtype=torch.float32):
    torch.manual_seed(0)
    net = TinyResNet().eval()
    _randomise_bn(net, 1)
    twin = TinyResNet(TwinBlock).eval()
    twin.load_state_dict(net.state_dict())
    for m in (net, twin):
        m.to(dtype)
        for p in m.parameters():
            p.requires_grad_(False)
    return net, twin


def _conv_bn(dtype=torch.float32):
    torch.manual_seed(0)
    net = ConvBNReLU().eval()
    _randomise_bn(net, 2)
    twin = copy.deepcopy(net)
    twin.relu.inplace = False
    return net.to(dtype), twin.to(dtype)


def _x(n=3, size=12, seed=5, dtype=torch.float32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _layer_value_forward(model: nn.Module, module: nn.Module):
    """f(z, x): the model on x with ``module``'s output replaced by z (a hook written here)."""
    def f(z, x):
        h = module.register_forward_hook(lambda m, i, o: z)
        try:
            return model(x)
        finally:
            h.remove()
    return f


def _captum_integrated(model, module, base, x, cls, steps):
    """captum's left Riemann sum of IG at a layer, from 0 to its activation: f(z) puts z in the layer."""
    return IntegratedGradients(_layer_value_forward(model, module)).attribute(
        base, baselines=torch.zeros_like(base), target=cls, additional_forward_args=(x,), n_steps=steps,
        method="riemann_left")


# ------------------------------------------------------------------ 1. in-place operations after a layer
def test_bn_before_inplace_relu_is_captured_as_it_came_out():
    net, twin = _conv_bn()
    x = _x()
    want = net.bn(net.conv(x))  # by hand, before the ReLU
    assert (want < 0).any()  # the difference to the ReLU's output is visible
    acts, logits = run_capture(net, x, ["bn", "relu"], grad=False)
    torch.testing.assert_close(acts["bn"], want)
    torch.testing.assert_close(acts["relu"], want.clamp_min(0))
    torch.testing.assert_close(logits, twin(x))
    # feature visualisation and dataset examples read layers through capture_until
    torch.testing.assert_close(capture_until(net, x, ["bn"])["bn"], want)


def test_bn_before_inplace_relu_attribution_matches_captum():
    net, twin = _conv_bn()
    x, cls = _x(), 2
    acts, logits = run_capture(net, x, ["bn"], grad=True)
    (g,) = A.gradients(A.target_values("logit", logits, acts, cls=cls), [acts["bn"]], retain=False)
    ref = LayerGradientXActivation(twin, twin.bn).attribute(x, target=cls)
    torch.testing.assert_close(acts["bn"].detach() * g, ref, rtol=1e-4, atol=1e-6)
    assert ref.abs().sum() > 0
    # the path-integrated variant on the same layer, three images at once
    net64, twin64 = _conv_bn(torch.float64)
    x64 = x.double()
    base = run_capture(net64, x64, ["bn"], grad=False)[0]["bn"]
    pg = A.path_gradient(net64, x64, "bn", base, kind="logit", cls=cls, steps=12, chunk=5)
    ref = _captum_integrated(twin64, twin64.bn, base, x64, cls, 12)
    torch.testing.assert_close(base * pg, ref, rtol=1e-7, atol=1e-10)


def test_residual_in_place_add_is_not_in_the_captured_bn():
    net, twin = _resnets()
    x = _x()
    b = twin.layer1[0]
    stem = twin.relu(twin.bn1(twin.conv1(x)))
    want_bn2 = b.bn2(b.conv2(b.relu1(b.bn1(b.conv1(stem)))))  # without the "+= identity" nor the ReLU
    acts, logits = run_capture(net, x, ["bn1", "layer1.0.bn2", "layer1.0"], grad=False)
    torch.testing.assert_close(acts["bn1"], twin.bn1(twin.conv1(x)))
    torch.testing.assert_close(acts["layer1.0.bn2"], want_bn2)
    torch.testing.assert_close(acts["layer1.0"], b(stem))
    torch.testing.assert_close(logits, twin(x))


def test_residual_bn_attribution_matches_captum():
    net, twin = _resnets()
    x, cls = _x(), 1
    for ours, theirs in (("layer1.0.bn2", twin.layer1[0].bn2), ("bn1", twin.bn1), ("layer1.1.bn1", twin.layer1[1].bn1)):
        acts, logits = run_capture(net, x, [ours], grad=True)
        (g,) = A.gradients(A.target_values("logit", logits, acts, cls=cls), [acts[ours]], retain=False)
        ref = LayerGradientXActivation(twin, theirs).attribute(x, target=cls)
        torch.testing.assert_close(acts[ours].detach() * g, ref, rtol=1e-4, atol=1e-6)
        assert ref.abs().sum() > 0


def test_output_changed_in_place_through_an_alias_is_an_error_not_a_silent_value():
    class Alias(nn.Module):
        def __init__(self):
            super().__init__()
            self.flat = nn.Flatten()  # returns a view of its input
            self.fc = nn.Linear(12, 2)

        def forward(self, x):
            h = self.flat(x)
            x.mul_(2)  # changes what ``flat`` returned, behind the hook's back
            return self.fc(h)

    with pytest.raises(LayerCallError, match="changed in place"):
        run_capture(Alias().eval(), torch.randn(2, 3, 2, 2), ["flat"], grad=False)


# ------------------------------------------------------------------ 2. modules called more than once
def test_probe_lists_each_call_of_a_reused_module():
    net, _ = _resnets()
    layers = probe_layers(net, (3, 12, 12))
    assert "layer1.0.relu" not in layers and "layer1.0.relu@1" in layers and "layer1.0.relu@2" in layers
    assert "layer1.0.relu@3" not in layers
    assert layers["layer1.0.relu@1"] == layers["layer1.0.relu@2"] == (8, 12, 12)
    assert "relu" in layers and "relu@1" not in layers  # the stem's ReLU runs once
    order = list(layers)  # execution order: each call where it happens
    assert order.index("layer1.0.bn1") < order.index("layer1.0.relu@1") < order.index("layer1.0.conv2") \
        < order.index("layer1.0.relu@2") < order.index("layer1.1.conv1")


def test_each_call_is_captured_and_attributed_on_its_own():
    net, twin = _resnets()
    x, cls = _x(), 3
    b, t = net.layer1[0], twin.layer1[0]
    stem = twin.relu(twin.bn1(twin.conv1(x)))
    acts, logits = run_capture(net, x, ["layer1.0.relu@1", "layer1.0.relu@2"], grad=True)
    torch.testing.assert_close(acts["layer1.0.relu@1"].detach(), t.relu1(t.bn1(t.conv1(stem))))
    torch.testing.assert_close(acts["layer1.0.relu@2"].detach(), t(stem))
    vals = A.target_values("logit", logits, acts, cls=cls)
    g1, g2 = A.gradients(vals, [acts["layer1.0.relu@1"], acts["layer1.0.relu@2"]], retain=False)
    for ours, g, theirs in (("layer1.0.relu@1", g1, t.relu1), ("layer1.0.relu@2", g2, t.relu2)):
        ref = LayerGradientXActivation(twin, theirs).attribute(x, target=cls)
        torch.testing.assert_close(acts[ours].detach() * g, ref, rtol=1e-4, atol=1e-6)
        assert ref.abs().sum() > 0
    # capture_until stops at the call asked for, not at the module's first call
    got = capture_until(b, stem, ["relu@2"])["relu@2"]
    torch.testing.assert_close(got, t(stem))


def test_bare_name_of_a_reused_module_is_refused_at_run_time():
    net, _ = _resnets()
    with pytest.raises(LayerCallError, match=r"layer1.0.relu@1, layer1.0.relu@2"):
        run_capture(net, _x(), ["layer1.0.relu"], grad=False)
    with pytest.raises(LayerCallError, match=r"'layer1.0.relu@3' \(the module ran 2 times\) did not run"):
        run_capture(net, _x(), ["layer1.0.relu@3"], grad=False)
    assert all(not m._forward_hooks for m in net.modules())


def test_integrated_on_one_call_of_a_reused_module_batch_of_three():
    net, twin = _resnets(torch.float64)
    x, cls, steps = _x(dtype=torch.float64), 0, 10
    for ours, theirs in (("layer1.0.relu@1", twin.layer1[0].relu1), ("layer1.0.relu@2", twin.layer1[0].relu2)):
        base = run_capture(net, x, [ours], grad=False)[0][ours]
        pg = A.path_gradient(net, x, ours, base, kind="logit", cls=cls, steps=steps, chunk=4)
        ref = _captum_integrated(twin, theirs, base, x, cls, steps)
        torch.testing.assert_close(base * pg, ref, rtol=1e-7, atol=1e-10)
        assert ref.abs().max() > 0


def test_integrated_batch_matches_one_image_at_a_time_and_a_direct_loop():
    """Several images: each image's path integral is its own (norm target at the strongest position
    too), equal to a plain loop over images and path points written here."""
    net, twin = _resnets(torch.float64)
    x, steps = _x(n=3, dtype=torch.float64), 6
    layer, target = "layer1.0.bn1", "layer1.1.relu@2"
    acts = run_capture(net, x, [layer, target], grad=False)[0]
    base = acts[layer]
    pos = A.strongest_position(acts[target])
    batch = A.path_gradient(net, x, layer, base, kind="norm", target_layer=target, predicted=pos, steps=steps)
    store: dict = {}
    for i in range(3):
        want = torch.zeros_like(base[i])
        for s in range(steps):
            z = (base[i:i + 1] * s / steps).requires_grad_(True)
            h1 = twin.layer1[0].bn1.register_forward_hook(lambda m, inp, o, z=z: z)
            h2 = twin.layer1[1].relu2.register_forward_hook(lambda m, inp, o: store.__setitem__("t", o))
            try:
                twin(x[i:i + 1])
            finally:
                h1.remove()
                h2.remove()
            px, py = pos[i].tolist()
            (g,) = torch.autograd.grad(store["t"][0, :, py, px].norm(), z)
            want += g[0] / steps
        torch.testing.assert_close(batch[i], want, rtol=1e-8, atol=1e-12)
    assert batch.abs().max() > 0


def test_receptive_fields_of_each_call_of_a_reused_module():
    """Dataset examples find receptive fields by NaN propagation through capture_until: each call of
    the block's ReLU has its own (stem 3×3, conv1 3×3 → 5 px; + conv2 3×3 → 7 px)."""
    from interpgram.backends.kernels.examples import receptive_fields
    net, _ = _resnets()
    model = from_module(net, size=12, classes=RESNET_CLASSES)
    first, second = (receptive_fields(model, f"layer1.0.relu@{k}") for k in (1, 2))
    assert first[6, 6].tolist() == [4, 4, 9, 9] and second[6, 6].tolist() == [3, 3, 10, 10]


# ------------------------------------------------------------------ 2 + 3 through a spec and the API
def _spec(elements: dict) -> dict:
    return {"interpgram": 1, "elements": elements}


def _api(net, elements, cache, inputs):
    model = interpgram.Model(net, size=12, classes=RESNET_CLASSES, name="tiny-resnet")
    return interpgram.Interface(_spec(elements), model=model, inputs=inputs, cache=cache)


def test_bare_reused_name_is_a_positioned_error_at_check_listing_the_calls(tmp_path):
    net, _ = _resnets()
    spec = tmp_path / "s.yaml"
    spec.write_text("interpgram: 1\nmodel: builtin:shapes-cnn\ninput: builtin:shapes/0\nelements:\n"
                    "  a:\n    content: {activation: {layer: layer1.0.relu, atom: spatial}}\n    presentation: heatmap\n"
                    "  b:\n    content: {activation: {layer: layer1.0.relu@3, atom: spatial}}\n    presentation: heatmap\n"
                    "  c:\n    content: {activation: {layer: relu@1, atom: spatial}}\n    presentation: heatmap\n")
    from interpgram.backends.pipeline import model_info
    from interpgram.grammar.spec.load import load_spec
    info = model_info(from_module(net, size=12, classes=RESNET_CLASSES))
    with pytest.raises(SpecError) as e:
        compile_spec(load_spec(spec), info)
    text = str(e.value)
    assert (f"{spec}:6:35: layer1.0.relu is called 2 times in the forward pass: use layer1.0.relu@1 (shape (8, 12, 12)) "
            "or layer1.0.relu@2 (shape (8, 12, 12))") in text
    assert f"{spec}:9:35: 'layer1.0.relu@3': layer1.0.relu is called 2 times" in text
    assert f"{spec}:12:35: 'relu@1': relu is called once in the forward pass: use relu" in text


def test_reused_module_calls_through_the_api(tmp_path):
    """grad × act, integrated (three images) and a channel icon on ``layer1.0.relu@2``, numbers by hand."""
    net, twin = _resnets()
    imgs = [torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    layer = "layer1.0.relu@2"
    elements = {
        "gxa": {"content": {"attribution": {"from": {"layer": layer, "atom": "spatial"},
                                            "to": {"layer": "output", "select": ["b"]}}}, "presentation": "heatmap"},
        "ig": {"content": {"attribution": {"from": {"layer": layer, "atom": "channel"},
                                           "to": {"layer": "output", "select": ["b"]}, "method": "integrated",
                                           "steps": 8}}, "presentation": "bars"},
        "act": {"content": {"activation": {"layer": layer, "atom": "channel"}}, "presentation": "bars"},
        "icon": {"content": {"activation": {"layer": layer, "atom": {"channel": 3}}},
                 "presentation": {"featurevis": {"steps": 3, "size": 12}}},
    }
    ui = _api(net, elements, tmp_path / "cache", imgs)
    ui.check()
    res = ui.run()
    x = torch.stack(imgs).double()
    twin64 = copy.deepcopy(twin).double()
    t = twin64.layer1[0].relu2
    store: dict = {}
    h = t.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        xg = x.clone().requires_grad_(True)
        logits = twin64(xg)
    finally:
        h.remove()
    a = store["a"]
    (g,) = torch.autograd.grad(logits[:, 1].sum(), a)
    np.testing.assert_allclose(res["gxa"].values.numpy()[:, 0], (a * g).sum(1).detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res["act"].values.numpy()[:, 0], a.mean(dim=(2, 3)).detach().numpy(), rtol=1e-4,
                               atol=1e-5)
    ig = _captum_integrated(twin64, t, a.detach(), x, 1, 8).sum(dim=(2, 3))
    np.testing.assert_allclose(res["ig"].values.numpy()[:, 0], ig.numpy(), rtol=1e-4, atol=1e-5)
    # the icon's objective is channel 3's mean at the block's second ReLU call
    icon = res.raw.values[next(op for op in res.raw.values if op.startswith("fv"))]["images"][0]
    assert icon.shape[-2:] == (12, 12)
    with torch.no_grad():
        h = t.register_forward_hook(lambda m, i, o: store.__setitem__("icon", o))
        try:
            twin64(icon.double())
        finally:
            h.remove()
    score = res.raw.values[next(op for op in res.raw.values if op.startswith("fv"))]["scores"][0]
    torch.testing.assert_close(score.double(), store["icon"][:, 3].mean(dim=(1, 2)), rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------ 4. outputs that are not a tensor
@dataclass
class Output:  # the shape of a Hugging Face ModelOutput: a dataclass with .logits
    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class DictLikeOutput(OrderedDict):
    """ModelOutput is also an OrderedDict whose keys are its fields."""

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None


class Wrapped(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.body = ConvBNReLU().eval()

    def forward(self, x):
        y = self.body(x)
        if self.kind == "dict":
            return {"aux": y * 0, "logits": y}
        if self.kind == "tuple":
            return (y, y.mean())
        if self.kind == "list-after-none":
            return [None, y]
        if self.kind == "dataclass":
            return Output(y, y)
        if self.kind == "modeloutput":
            return DictLikeOutput(loss=None, logits=y)
        if self.kind == "dict-without-logits":
            return {"scores": y, "aux": y}
        if self.kind == "string":
            return "nothing"
        raise AssertionError(self.kind)


@pytest.mark.parametrize("kind", ["dict", "tuple", "list-after-none", "dataclass", "modeloutput"])
def test_logits_are_found_in_every_output_shape(kind):
    net = Wrapped(kind)
    x = _x(n=2)
    want = net.body(x)
    assert torch.equal(logits_of(net(x)), want)
    acts, logits = run_capture(net, x, ["body.bn"], grad=True)
    torch.testing.assert_close(logits, want)
    (g,) = A.gradients(A.target_values("logit", logits, acts), [acts["body.bn"]], retain=False)
    assert g.abs().sum() > 0
    torch.testing.assert_close(capture_until(net, x, ["output"])["output"], want)
    assert "body.bn" in probe_layers(net, (3, 12, 12))
    m = from_module(net, size=12)
    assert m.classes == [f"class{i}" for i in range(5)]
    base = run_capture(net, x, ["body.bn"], grad=False)[0]["body.bn"]
    A.path_gradient(net, x, "body.bn", base, kind="logit", cls=1, steps=3)


@pytest.mark.parametrize("kind,msg", [
    ("dict-without-logits", r"returned a dict with keys \['scores', 'aux'\] and no 'logits' tensor"),
    ("string", r"returned builtins.str; interpgram needs the logits"),
])
def test_output_without_logits_is_a_clear_error(kind, msg):
    net = Wrapped(kind)
    with pytest.raises(TypeError, match=msg):
        run_capture(net, _x(n=1), ["body.bn"], grad=False)
    with pytest.raises(TypeError, match=msg):
        capture_until(net, _x(n=1), ["output"])
    with pytest.raises(ModelSourceError, match=msg):
        from_module(net, size=12)
    with pytest.raises(ModelSourceError, match=msg):
        probe_layers(net, (3, 12, 12))


# ------------------------------------------------------------------ 5. always run in eval mode
class DropNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.9)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.drop(self.bn(self.conv(x))).mean(dim=(2, 3)))


def test_a_model_put_back_in_train_mode_still_runs_in_eval(tmp_path):
    net = DropNet()
    _randomise_bn(net, 3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    imgs = [torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    elements = {
        "attr": {"content": {"attribution": {"from": {"layer": "drop", "atom": "spatial"},
                                             "to": {"layer": "output", "select": ["class1"]}}}, "presentation": "heatmap"},
        "logits": {"content": {"activation": {"layer": "output", "atom": "channel"}}, "presentation": "bars"},
    }
    model = interpgram.Model(net, size=10)
    ui = interpgram.Interface(_spec(elements), model=model, inputs=imgs, cache=False)
    net.train()  # after interpgram put it in eval: the user's notebook trained it a step, say
    ui.check()
    first = ui.run()
    net.train()
    second = interpgram.Interface(_spec(elements), model=model, inputs=imgs, cache=False).run()
    x = torch.stack(imgs)
    with torch.no_grad():
        want = copy.deepcopy(net).eval()(x)
    for res in (first, second):
        np.testing.assert_allclose(res["logits"].values.numpy()[:, 0], want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(first["attr"].values.numpy(), second["attr"].values.numpy())
    for k, v in net.state_dict().items():  # BatchNorm's running statistics were not updated by any pass
        assert torch.equal(v, state[k]), k


def test_probe_of_a_module_in_train_mode_leaves_batchnorm_statistics_alone():
    net = DropNet()
    _randomise_bn(net, 4)
    net.train()
    before = net.bn.running_mean.clone()
    probe_layers(net, (3, 10, 10))
    assert torch.equal(net.bn.running_mean, before)


def test_hooks_are_removed_when_a_layer_does_not_exist_or_fails():
    net, _ = _resnets()
    with pytest.raises(KeyError):
        with hooks(net, ["layer1.0.relu@1", "nope"]):
            pass
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(LayerCallError):
        with hooks(net, ["layer1.0.relu"]):
            net(_x())
    assert all(not m._forward_hooks for m in net.modules())


# ------------------------------------------------------------------ the command line, on a python: model
NET_PY = '''
import torch
from torch import nn


class Net(nn.Module):
    """One activation module called twice at the top level (EfficientNet's _swish), a dict output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self._swish = nn.SiLU()
        self.head = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        h = self._swish(self.head(self._swish(self.stem(x))))
        return {"logits": self.fc(h.mean(dim=(2, 3)))}


def make():
    return Net(), {"size": 16}
'''


def test_layers_lists_each_call_and_check_refuses_the_bare_name(tmp_path, monkeypatch, capsys):
    from interpgram.backends.cli import main
    (tmp_path / "reused_net.py").write_text(NET_PY)
    monkeypatch.chdir(tmp_path)
    assert main(["layers", "python:reused_net:make", "--allow-code"]) == 0
    out = capsys.readouterr().out
    assert "3 classes" in out  # counted from the dict's logits
    lines = [l.split() for l in out.splitlines()]
    assert ["_swish@1", "(4,", "16,", "16)"] in lines and ["_swish@2", "(6,", "8,", "8)"] in lines
    assert "NAME@N: the N-th call of a module" in out and not any(l[:1] == ["_swish"] for l in lines)
    spec = tmp_path / "spec.yaml"
    spec.write_text("interpgram: 1\nmodel: python:reused_net:make\ninput: builtin:shapes/0\nelements:\n"
                    "  a:\n    content: {activation: {layer: _swish, atom: spatial}}\n    presentation: heatmap\n"
                    "  b:\n    content: {activation: {layer: _swish@2, atom: {channel: 5}}}\n"
                    "    presentation: {featurevis: {steps: 2}}\n")
    assert main(["check", str(spec), "--allow-code"]) == 1
    err = capsys.readouterr().err
    assert (f"{spec}:6:35: _swish is called 2 times in the forward pass: use _swish@1 (shape (4, 16, 16)) or "
            "_swish@2 (shape (6, 8, 8))") in err
    assert "1 problem found" in err and "Traceback" not in err


def test_a_model_without_logits_is_a_positioned_error_at_check(tmp_path, monkeypatch, capsys):
    """The class names are given, so nothing counts classes: the probe at load time finds the output
    unreadable, and check and layers say so without a traceback."""
    from interpgram.backends.cli import main
    (tmp_path / "scores_net.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.conv = nn.Conv2d(3, 4, 3)\n\n    def forward(self, x):\n"
        "        return {'scores': self.conv(x).mean(dim=(2, 3))}\n\n\n"
        "def make():\n    return Net(), {'size': 16, 'classes': ['a', 'b', 'c', 'd']}\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("interpgram: 1\nmodel: python:scores_net:make\ninput: builtin:shapes/0\nelements:\n"
                    "  a:\n    content: {activation: {layer: conv, atom: spatial}}\n    presentation: heatmap\n")
    assert main(["check", str(spec), "--allow-code"]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:2:8: the model's forward returned a dict with keys ['scores'] and no 'logits' tensor" in err
    monkeypatch.chdir(tmp_path)
    assert main(["layers", "python:scores_net:make", "--allow-code"]) == 1
    assert "no 'logits' tensor" in capsys.readouterr().err
