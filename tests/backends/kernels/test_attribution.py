"""Attribution against captum, the trusted implementation.

One declarative table of (model, layer, input size) cases; each is checked for gradient × activation
(neuron, spatial, channel, whole atoms), the logit difference of two classes, layer → layer with the
norm of a target position, and the path-integrated variant against captum's IntegratedGradients on
the network's tail (riemann_left, the article's sum).
"""
from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradientXActivation
from torch import nn

from interpgram.backends.kernels import attribution as A
from interpgram.backends.kernels.capture import resolve_module, run_capture


class SkipNet(nn.Module):
    """A small residual network: attribution must not assume a plain chain of layers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
        self.act = nn.ReLU()
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x):
        h = self.stem(x)
        h = self.act(h + self.block(h))
        return self.head(self.down(h))


def _builtin():
    from interpgram.backends.models import load_model
    m = load_model("builtin:shapes-cnn")
    return m.module, m.preprocess.size, ["conv2", "conv3", "conv4"]


def _inception():
    from interpgram.backends.models.inceptionv1 import InceptionV1
    torch.manual_seed(0)
    return InceptionV1().eval(), (224, 224), ["mixed3b", "mixed4d"]


def _skipnet():
    torch.manual_seed(0)
    return SkipNet().eval(), (32, 32), ["stem", "act", "down"]


MODELS = {"builtin": _builtin, "inceptionv1-random": _inception, "skipnet": _skipnet}
_CACHE: dict = {}


def model_case(name):
    if name not in _CACHE:
        _CACHE[name] = MODELS[name]()
    return _CACHE[name]


def inputs(size, n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *size, generator=g) * 2 - 1


def ours(model, x, layer, cls):
    acts, logits = run_capture(model, x, [layer], grad=True)
    vals = A.target_values("logit", logits, acts, cls=cls)
    (g,) = A.gradients(vals, [acts[layer]], retain=False)
    return acts[layer].detach(), g


CASES = [(m, l) for m in MODELS for l in (["conv3", "conv4"] if m == "builtin" else
                                           ["mixed4d"] if m == "inceptionv1-random" else ["stem", "act"])]


@pytest.mark.parametrize("name,layer", CASES)
def test_grad_x_activation_matches_captum(name, layer):
    model, size, _ = model_case(name)
    x = inputs(size)
    cls = 3
    ref = LayerGradientXActivation(model, resolve_module(model, layer)).attribute(x, target=cls)
    act, g = ours(model, x, layer, cls)
    tol = dict(rtol=1e-4, atol=1e-6 * max(1.0, ref.abs().max().item()))
    torch.testing.assert_close(A.reduce(act, g, "neuron"), ref, **tol)
    torch.testing.assert_close(A.reduce(act, g, "spatial"), ref.sum(1), **tol)
    torch.testing.assert_close(A.reduce(act, g, "channel"), ref.sum((2, 3)), **tol)
    torch.testing.assert_close(A.reduce(act, g, "whole"), ref.flatten(1).sum(1), **tol)
    assert ref.abs().sum() > 0  # the comparison is not between zeros


@pytest.mark.parametrize("name", list(MODELS))
def test_logit_difference_matches_captum(name):
    model, size, layers = model_case(name)
    x = inputs(size)
    layer = layers[-1]
    a, b = 1, 2

    def diff(inp):  # one forward pass, so captum's layer hook sees the graph of both logits
        out = model(inp)
        return out[:, a] - out[:, b]

    ref = LayerGradientXActivation(diff, resolve_module(model, layer)).attribute(x)
    act, ga = ours(model, x, layer, a)
    _, gb = ours(model, x, layer, b)
    # compare(a, b) in a spec subtracts the two per-class results: exact for a linear attribution
    got = A.reduce(act, ga, "spatial") - A.reduce(act, gb, "spatial")
    torch.testing.assert_close(got, ref.sum(1), rtol=1e-4, atol=1e-6 * ref.abs().max().item())


@pytest.mark.parametrize("name", list(MODELS))
def test_layer_to_layer_norm_matches_captum(name):
    model, size, layers = model_case(name)
    x = inputs(size)
    src, dst = layers[0], layers[-1]
    acts, _ = run_capture(model, x, [dst], grad=False)
    h, w = acts[dst].shape[-2:]
    at = (w // 2, h // 3)

    def score(inp):  # written independently of our capture: a plain forward hook
        store = {}
        h = resolve_module(model, dst).register_forward_hook(lambda m, i, o: store.setdefault("a", o))
        try:
            model(inp)
        finally:
            h.remove()
        return store["a"][:, :, at[1], at[0]].norm(dim=1)

    ref = LayerGradientXActivation(score, resolve_module(model, src)).attribute(x)
    acts, logits = run_capture(model, x, [src, dst], grad=True)
    vals = A.target_values("norm", logits, acts, layer=dst, at=at)
    (g,) = A.gradients(vals, [acts[src]], retain=False)
    got = A.reduce(acts[src].detach(), g, "spatial")
    torch.testing.assert_close(got, ref.sum(1), rtol=1e-4, atol=1e-6 * ref.abs().max().item())


def _tail(model: nn.Module, layer: str) -> nn.Module:
    """The part of a top-level sequential network after ``layer`` (both built-in models are)."""
    names = [n for n, _ in model.named_children()]
    rest = [getattr(model, n) for n in names[names.index(layer) + 1:]]

    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = nn.ModuleList(rest)

        def forward(self, h):
            for p in self.parts:
                if isinstance(p, nn.Linear) and h.dim() > 2:
                    h = h.flatten(1)
                h = p(h)
            return h

    return Tail().eval()


@pytest.mark.parametrize("name,layer", [("builtin", "conv3"), ("inceptionv1-random", "mixed4d")])
def test_path_integrated_matches_captum(name, layer):
    import copy
    model, size, _ = model_case(name)
    model = copy.deepcopy(model).double()  # float64: a strict comparison, not float32 noise
    x = inputs(size, n=1).double()
    cls, steps = 4, 20
    acts, logits = run_capture(model, x, [layer], grad=False)
    base = acts[layer]
    tail = _tail(model, layer)
    torch.testing.assert_close(tail(base), logits)  # the tail is the same network
    ref = IntegratedGradients(tail).attribute(base, baselines=torch.zeros_like(base), target=cls,
                                               n_steps=steps, method="riemann_left")
    g = A.path_gradient(model, x, layer, base, kind="logit", cls=cls, steps=steps, chunk=7)
    got = A.reduce(base, g, "neuron")
    torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-9 * ref.abs().max().item())
    assert ref.abs().max() > 0


def test_hooks_removed_even_when_forward_fails():
    model, size, _ = model_case("skipnet")
    bad = torch.zeros(1, 4, *size)  # wrong channel count: the forward pass raises
    with pytest.raises(RuntimeError):
        run_capture(model, bad, ["stem", "act"], grad=True)
    assert all(not m._forward_hooks for m in model.modules())
