"""The frozen copy (backends/kernels/frozen.py) feature visualisation runs: same values and input gradients as the module as loaded,
BatchNorm folded only where the graph allows it, rebuilt when the weights change."""
from __future__ import annotations

import torch
from torch import nn

from interpgram.backends.kernels.capture import capture_until
from interpgram.backends.kernels.frozen import channels_last, frozen_copy
from interpgram.backends.kernels.optvis import IconSettings, render_vis
from interpgram.backends.kernels.optvis import objectives as O
from interpgram.backends.models import LoadedModel, Preprocess, load_model

CPU = torch.device("cpu")


def _grads(module, model, layer, x, cl):
    x = x.clone().requires_grad_(True)
    inp = model.preprocess(x)
    a = capture_until(module, channels_last(inp) if cl else inp, [layer])[layer]
    a[:, 3].mean().backward()
    return a.detach(), x.grad


def test_builtin_cnn_folds_every_batchnorm_and_keeps_values_and_input_gradients():
    model = load_model("builtin:shapes-cnn")
    fc = frozen_copy(model, CPU, ["conv4"])
    assert fc is not model.module
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fc.modules()) == 0
    assert sum(isinstance(m, nn.Identity) for m in fc.modules()) == 5
    assert not any(p.requires_grad for p in fc.parameters())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.module.modules()) == 5  # the loaded model is untouched
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a0, g0 = _grads(model.module, model, "conv4", x, False)
    a1, g1 = _grads(fc, model, "conv4", x, True)
    assert ((a1 - a0).norm() / a0.norm()) < 1e-5
    assert ((g1 - g0).norm() / g0.norm()) < 1e-5


def test_a_signed_batchnorm_layer_reads_the_same_values_and_a_read_conv_stays_unfolded():
    model = load_model("builtin:shapes-cnn")
    x = torch.rand(2, 3, 64, 64)
    for layer in ("conv3.1", "conv3.0"):  # the BatchNorm output (signed), then the convolution's own output
        fc = frozen_copy(model, CPU, [layer])
        with torch.no_grad():
            ref = capture_until(model.module, model.preprocess(x), [layer])[layer]
            got = capture_until(fc, channels_last(model.preprocess(x)), [layer])[layer]
        assert ((got - ref).norm() / ref.norm()) < 1e-5, layer
    assert isinstance(frozen_copy(model, CPU, ["conv3.0"]).conv3[1], nn.BatchNorm2d)
    assert isinstance(frozen_copy(model, CPU, ["conv3.1"]).conv3[1], nn.Identity)


class _Branchy(nn.Module):
    """conv1's output feeds its BatchNorm AND a skip: folding would change the skip, so it must not fold."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = self.conv1(x)
        z = torch.relu(self.bn1(y)) + y
        z = torch.relu(self.bn2(self.conv2(z)))
        return self.head(z.mean((2, 3)))


def _loaded(module):
    for bn in (module.bn1, module.bn2):  # statistics that are not the identity
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return LoadedModel("branchy", module.eval(), Preprocess(size=(16, 16)), [str(i) for i in range(4)], "test")


def test_only_a_convolution_whose_output_goes_to_its_batchnorm_alone_is_folded():
    torch.manual_seed(0)
    model = _loaded(_Branchy())
    fc = frozen_copy(model, CPU, ["bn2"])
    assert isinstance(fc.bn1, nn.BatchNorm2d)  # conv1 also feeds the skip
    assert isinstance(fc.bn2, nn.Identity)
    assert fc.conv2.bias is not None
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(fc(channels_last(x)), model.module(x), atol=1e-5)


def test_a_weight_changed_in_place_makes_a_new_copy():
    torch.manual_seed(0)
    model = _loaded(_Branchy())
    first = frozen_copy(model, CPU, ["bn2"])
    assert frozen_copy(model, CPU, ["bn2"]) is first
    with torch.no_grad():
        model.module.conv2.weight.mul_(-1)  # what a sanity check's randomisation does
    second = frozen_copy(model, CPU, ["bn2"])
    assert second is not first
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(second(channels_last(x)), model.module(x), atol=1e-5)


def test_icons_through_the_frozen_copy_equal_icons_through_the_loaded_module():
    model = load_model("builtin:shapes-cnn")
    obj = O.channel("conv4", torch.arange(4))
    s = IconSettings(size=48, steps=6, autocast="off")
    plain = render_vis(model, obj, 4, s, device="cpu", frozen=False)
    fast = render_vis(model, obj, 4, s, device="cpu", frozen=True)
    # the same optimisation; rounding (~1e-7) grows through ReLU and max-pool flips, never into another result
    assert (fast.images - plain.images).abs().mean() < 2e-3
    assert torch.allclose(torch.tensor(fast.history), torch.tensor(plain.history), rtol=2e-2)
    assert torch.allclose(fast.scores, plain.scores, rtol=5e-2)
