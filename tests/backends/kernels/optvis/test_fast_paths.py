"""The render loop's faster paths compute what the plain ones do: lucid's redirected ReLU gradient
against lucid's own formula, the merged pad/jitter/crop window against the transforms applied one by
one, and channel icons computed from only the channels they read against the whole layer."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from interpgram.backends.kernels.frozen import frozen_copy
from interpgram.backends.kernels.optvis import IconSettings, render_vis
from interpgram.backends.kernels.optvis import objectives as O
from interpgram.backends.kernels.optvis import transforms as T
from interpgram.backends.kernels.optvis.render import _RedirectedReLU, plan_slice
from interpgram.backends.models import LoadedModel, Preprocess, load_model, state_digest

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def shapes_model():
    return load_model("builtin:shapes-cnn")


def _lucid_redirected_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """lucid/misc/redirected_relu_grad.py, written with torch.where as lucid writes it with tf.where."""
    relu_grad = torch.where(x < 0, torch.zeros_like(grad), grad)
    neg_pushing_lower = (x < 0) & (grad > 0)
    redirected = torch.where(neg_pushing_lower, torch.zeros_like(grad), grad)
    mag = relu_grad.reshape(grad.shape[0], -1).norm(dim=1)
    return torch.where((mag > 0).view(-1, *([1] * (grad.dim() - 1))), relu_grad, redirected)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_the_redirected_relu_gradient_is_lucids(memory_format):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 5, 5, generator=g)
    x[1] = -x[1].abs() - 0.1  # image 1: every input negative, so its true ReLU gradient is all zero
    x[2, :, :2] = -x[2, :, :2].abs()
    grad = torch.randn(4, 6, 5, 5, generator=g)
    x = x.contiguous(memory_format=memory_format).requires_grad_()
    grad = grad.contiguous(memory_format=memory_format)
    out = _RedirectedReLU.apply(x)
    assert torch.equal(out, x.detach().clamp(min=0))
    assert out.is_contiguous(memory_format=memory_format)
    (got,) = torch.autograd.grad(out, x, grad)
    want = _lucid_redirected_grad(x.detach(), grad)
    assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=memory_format)  # the next layers need no format conversion
    assert (got[1] != 0).any() and torch.equal(got[0], torch.where(x[0] < 0, 0.0, grad[0]))


def _stepwise(x: torch.Tensor, steps, d: T.Draw) -> torch.Tensor:
    """The transforms one step at a time, each materialised: the reference for T.apply's merged window."""
    import torch.nn.functional as F
    i = 0
    while i < len(steps):
        kind, value = steps[i]
        if kind in ("scale", "rotate"):
            x, i = T._resample_run(x, steps, d, i)
            continue
        if kind == "pad" and value:
            x = F.pad(x, (value, value, value, value), mode="constant", value=0.5)
        elif kind == "jitter" and value:
            dy, dx = d.values[i]
            h, w = x.shape[-2:]
            x = x[..., dy:dy + h - value, dx:dx + w - value]
        elif kind == "crop_or_pad":  # pad up to the size (centred, 0.5), then a centred crop
            h, w = x.shape[-2:]
            if h < value or w < value:
                ph, pw = max(0, value - h), max(0, value - w)
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="constant", value=0.5)
                h, w = x.shape[-2:]
            top, left = (h - value) // 2, (w - value) // 2
            x = x[..., top:top + value, left:left + value]
        i += 1
    return x


def test_the_merged_transform_window_equals_the_steps_one_by_one():
    rnd = random.Random(0)
    kinds = [("pad", [0, 3, 12]), ("jitter", [0, 2, 8]), ("crop_or_pad", [20, 40, 70]),
             ("scale", [(0.9, 1.0, 1.1)]), ("rotate", [(-10.0, 0.0, 5.0)])]
    compared = 0
    for trial in range(300):
        steps = tuple((k, rnd.choice(v)) for k, v in (rnd.choice(kinds) for _ in range(rnd.randint(1, 6))))
        d = T.draw(steps, torch.Generator().manual_seed(trial))
        x = torch.rand(2, 3, 30, 26, generator=torch.Generator().manual_seed(trial), requires_grad=True)
        want = _stepwise(x, steps, d)
        got = T.apply(x, steps, d)
        assert got.shape == want.shape, steps
        assert torch.equal(got, want), steps
        w = torch.rand(got.shape, generator=torch.Generator().manual_seed(1))
        (g1,), (g2,) = torch.autograd.grad((got * w).sum(), x), torch.autograd.grad((want * w).sum(), x)
        assert torch.equal(g1, g2), steps
        compared += 1
    assert compared == 300
    with pytest.raises(ValueError, match="jitter 8 leaves nothing of a 6×6 image"):
        T.apply(torch.rand(1, 3, 6, 6), (("jitter", 8),), T.Draw(((0, 0),)))


@pytest.mark.parametrize("layer,make", [
    ("conv3", lambda l, c: O.channel(l, c)),
    ("conv4", lambda l, c: O.neuron(l, c)),
    ("fc", lambda l, c: O.channel(l, c)),
])
def test_icons_from_only_the_channels_they_read_are_the_whole_layers(shapes_model, layer, make):
    width = shapes_model.layers()[layer][0]
    chans = torch.tensor([0, 3, 3, width - 1])  # a channel twice: one column for both
    objective = make(layer, chans)
    sl = plan_slice(frozen_copy(shapes_model, CPU, [layer]), objective, 4)
    assert sl is not None and sl.columns.tolist() == [0, 3, width - 1]
    s = IconSettings(steps=10, attempts=2)
    a = render_vis(shapes_model, objective, 4, s, seed=1, device=CPU)
    b = render_vis(shapes_model, objective, 4, s, seed=1, device=CPU, slice_channels=False)
    assert torch.allclose(a.images, b.images, atol=1e-5)
    assert torch.allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    assert torch.allclose(torch.tensor(a.history), torch.tensor(b.history), rtol=1e-4, atol=1e-6)


def test_a_slice_is_planned_only_where_the_layer_allows_it(shapes_model):
    module = frozen_copy(shapes_model, CPU, ["conv4"])
    assert plan_slice(module, O.channel("conv4", torch.arange(8)), 8) is not None
    assert plan_slice(module, O.channel("conv4", 5), 8).columns.tolist() == [5]  # one channel for every image
    assert plan_slice(module, O.direction("conv4", torch.rand(8, 128)), 8) is None  # reads every channel
    assert plan_slice(module, O.channel("conv4", torch.arange(8), batch=2), 8) is None
    assert plan_slice(module, O.channel("conv4", torch.arange(8)) + O.channel("conv3", torch.arange(8)), 8) is None
    assert plan_slice(module, O.channel("conv4", torch.arange(100)), 100) is None  # most channels: the whole layer
    assert plan_slice(module, O.channel("pool4", torch.arange(8)), 8) is None  # a pool is not a convolution


class _Odd(nn.Module):
    """conv → unfolded BatchNorm → ReLU, a grouped conv, and a conv followed by a non-channel-wise pool."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.p = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.MaxPool2d(2))
        with torch.no_grad():
            for bn in (self.a[1],):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        return self.p(self.g(self.a(x))).mean((2, 3))


def test_an_unfolded_batchnorm_is_sliced_with_its_channels_statistics():
    torch.manual_seed(0)
    net = _Odd().eval()
    model = LoadedModel("test:odd", net, Preprocess(size=(24, 24)), ["x"], state_digest(net))
    objective = O.channel("a", torch.tensor([1, 5, 9]))
    plain = model.on(CPU, torch.float32)
    sl = plan_slice(plain, objective, 3)
    assert sl is not None and isinstance(sl.tail[0], tuple)  # the unfolded BatchNorm, as its channels' rows
    assert torch.equal(sl.tail[0][0], net.a[1].running_mean[[1, 5, 9]])
    s = IconSettings(steps=6, transforms="none")
    a = render_vis(model, objective, 3, s, seed=0, device=CPU, frozen=False)
    b = render_vis(model, objective, 3, s, seed=0, device=CPU, frozen=False, slice_channels=False)
    assert torch.allclose(a.images, b.images, atol=1e-5) and torch.allclose(a.scores, b.scores, rtol=1e-5)
    assert plan_slice(plain, O.channel("g", torch.tensor([1])), 1) is None  # grouped convolution
    assert plan_slice(plain, O.channel("p", torch.tensor([1])), 1) is None  # a pool after the conv
