"""The project's InceptionV1 against an independent definition of lucid's ``inception5h`` graph.

The reference below is written from the published graph description, not from
``interpgram.backends.models.inceptionv1`` (nothing of that module is imported here but its
loader, ``load_inceptionv1``, which is what is under test):

* lucid's ``InceptionV1`` / TensorFlow's ``inception5h`` graph: ``conv2d0`` (7x7, stride 2),
  ``maxpool0`` (3x3/2), ``localresponsenorm0``, ``conv2d1`` (1x1), ``conv2d2`` (3x3),
  ``localresponsenorm1``, ``maxpool1`` (3x3/2), ``mixed3a``, ``mixed3b``, ``maxpool4`` (3x3/2),
  ``mixed4a`` .. ``mixed4e``, ``maxpool10`` (3x3/2), ``mixed5a``, ``mixed5b``, ``avgpool0``
  (7x7 VALID average), ``softmax2_pre_activation`` (matmul + bias, 1024 -> 1008). Every conv is
  followed by a ReLU and uses TensorFlow ``SAME`` padding; so do the max pools.
* each ``mixedXY`` is the channel concatenation, in this order, of four branches:
  ``1x1``; ``3x3_bottleneck`` (1x1) -> ``3x3``; ``5x5_bottleneck`` (1x1) -> ``5x5``;
  ``pool`` (3x3/1 max pool) -> ``pool_reduce`` (1x1).  Branch widths are the graph's.
* ``localresponsenorm0/1`` are TensorFlow ``LRN`` ops with the attributes stored in the graph
  (``depth_radius=5, bias=2.0, alpha=9.999999747378752e-05, beta=0.5``; printed from
  ``InceptionV1.pb`` in lucent PR #51), computed as ``tf.nn.local_response_normalization``
  documents it: ``x / (bias + alpha * sum(x[c - r : c + r + 1] ** 2)) ** beta``.
* weights use the key names of the published PyTorch port (``inception5h.pth``, which lucent
  downloads): ``<node>_pre_relu_conv.weight/.bias`` in torch's (out, in, kh, kw) layout and
  ``softmax2_pre_activation_matmul.weight/.bias`` as an ``nn.Linear`` (1008, 1024).

The test makes one seeded random state_dict under those names, saves it with ``torch.save``,
loads it with the project's real loader and checks that every named layer and the logits agree;
a second test shows that an LRN window one channel short on the right (c-5..c+4, as a public
port computes it) is far outside that tolerance, so the comparison can tell the two apart.

Print the measured differences with::

    .venv/bin/python tests/backends/models/test_inception5h_reference.py
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from interpgram.backends.models.inceptionv1 import load_inceptionv1

# ------------------------------------------------------------------ the published graph

#: conv stem: node -> (in channels, out channels, kernel, stride)
STEM: dict[str, tuple[int, int, int, int]] = {
    "conv2d0": (3, 64, 7, 2),
    "conv2d1": (64, 64, 1, 1),
    "conv2d2": (64, 192, 3, 1),
}

#: mixed block -> widths of (1x1, 3x3_bottleneck, 3x3, 5x5_bottleneck, 5x5, pool_reduce)
MIXED_WIDTHS: dict[str, tuple[int, int, int, int, int, int]] = {
    "mixed3a": (64, 96, 128, 16, 32, 32),
    "mixed3b": (128, 128, 192, 32, 96, 64),
    "mixed4a": (192, 96, 204, 16, 48, 64),
    "mixed4b": (160, 112, 224, 24, 64, 64),
    "mixed4c": (128, 128, 256, 24, 64, 64),
    "mixed4d": (112, 144, 288, 32, 64, 64),
    "mixed4e": (256, 160, 320, 32, 128, 128),
    "mixed5a": (256, 160, 320, 48, 128, 128),
    "mixed5b": (384, 192, 384, 48, 128, 128),
}
MIXED = tuple(MIXED_WIDTHS)
#: the stride-2 max pool that comes *before* a block
POOL_BEFORE = {"mixed3a": "maxpool1", "mixed4a": "maxpool4", "mixed5a": "maxpool10"}

LRN_DEPTH_RADIUS = 5
LRN_BIAS = 2.0
LRN_ALPHA = 9.999999747378752e-05
LRN_BETA = 0.5
TF_WINDOW = (LRN_DEPTH_RADIUS, LRN_DEPTH_RADIUS)  # channels c-5 .. c+5
SHORT_WINDOW = (LRN_DEPTH_RADIUS, LRN_DEPTH_RADIUS - 1)  # c-5 .. c+4: one channel short on the right

NUM_LOGITS = 1008
FEATURES = 1024  # mixed5b's width, the classifier's input


def mixed_in_channels() -> dict[str, int]:
    """Each block's input width: conv2d2's 192 into mixed3a, then the previous block's output."""
    widths, incoming = {}, STEM["conv2d2"][1]
    for name, (c1, _b3, c3, _b5, c5, cp) in MIXED_WIDTHS.items():
        widths[name] = incoming
        incoming = c1 + c3 + c5 + cp
    assert incoming == FEATURES
    return widths


def conv_shapes() -> dict[str, tuple[int, int, int]]:
    """Published conv node -> (out, in, kernel)."""
    shapes = {node: (cout, cin, k) for node, (cin, cout, k, _s) in STEM.items()}
    for name, cin in mixed_in_channels().items():
        c1, b3, c3, b5, c5, cp = MIXED_WIDTHS[name]
        shapes[f"{name}_1x1"] = (c1, cin, 1)
        shapes[f"{name}_3x3_bottleneck"] = (b3, cin, 1)
        shapes[f"{name}_3x3"] = (c3, b3, 3)
        shapes[f"{name}_5x5_bottleneck"] = (b5, cin, 1)
        shapes[f"{name}_5x5"] = (c5, b5, 5)
        shapes[f"{name}_pool_reduce"] = (cp, cin, 1)
    return shapes


def random_published_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights under the published port's key names.

    He-scaled (std sqrt(2 / fan_in)) so activations neither vanish nor explode through the
    58 convolutions, and the LRN's squared sums are large enough to matter (at lucid's input
    range conv2d0's outputs are in the hundreds; alpha * sum x^2 is of the order of the bias).
    """
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for node, (cout, cin, k) in conv_shapes().items():
        sd[f"{node}_pre_relu_conv.weight"] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2.0 / (cin * k * k))
        sd[f"{node}_pre_relu_conv.bias"] = torch.randn(cout, generator=g) * 0.1
    sd["softmax2_pre_activation_matmul.weight"] = torch.randn(NUM_LOGITS, FEATURES, generator=g) / math.sqrt(FEATURES)
    sd["softmax2_pre_activation_matmul.bias"] = torch.randn(NUM_LOGITS, generator=g) * 0.1
    return sd


# ------------------------------------------------------------------ TensorFlow's ops in torch


def tf_same(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME: output ceil(size / stride); the odd pixel of padding goes after."""
    out = math.ceil(size / stride)
    need = max(0, (out - 1) * stride + kernel - size)
    return need // 2, need - need // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int, fill: float) -> torch.Tensor:
    top, bottom = tf_same(x.shape[2], kernel, stride)
    left, right = tf_same(x.shape[3], kernel, stride)
    return F.pad(x, (left, right, top, bottom), value=fill)


def conv_relu(sd: dict[str, torch.Tensor], node: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    w = sd[f"{node}_pre_relu_conv.weight"].to(x.dtype)
    b = sd[f"{node}_pre_relu_conv.bias"].to(x.dtype)
    return torch.relu(F.conv2d(pad_same(x, w.shape[-1], stride, 0.0), w, b, stride=stride))


def max_pool_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    # TF's SAME max pool ignores the padding: pad with -inf so it never wins.
    return F.max_pool2d(pad_same(x, kernel, stride, -math.inf), kernel, stride)


def tf_lrn(x: torch.Tensor, window: tuple[int, int] = TF_WINDOW) -> torch.Tensor:
    """LRN over channels with the sum over ``c - window[0] .. c + window[1]`` (clipped at the ends).

    The squared sum is a 1-D convolution with a box of ones along the channel axis.
    """
    before, after = window
    n, c, h, w = x.shape
    squares = (x * x).permute(0, 2, 3, 1).reshape(n * h * w, 1, c)
    box = torch.ones(1, 1, before + after + 1, dtype=x.dtype)
    sums = F.conv1d(F.pad(squares, (before, after)), box).reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x * (LRN_BIAS + LRN_ALPHA * sums) ** -LRN_BETA


def mixed(sd: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> torch.Tensor:
    one = conv_relu(sd, f"{name}_1x1", x)
    three = conv_relu(sd, f"{name}_3x3", conv_relu(sd, f"{name}_3x3_bottleneck", x))
    five = conv_relu(sd, f"{name}_5x5", conv_relu(sd, f"{name}_5x5_bottleneck", x))
    pooled = conv_relu(sd, f"{name}_pool_reduce", max_pool_same(x, 3, 1))
    return torch.cat([one, three, five, pooled], dim=1)


def inception5h(
    sd: dict[str, torch.Tensor], x: torch.Tensor, lrn_window: tuple[int, int] = TF_WINDOW
) -> dict[str, torch.Tensor]:
    """Every named node of the graph for an NCHW batch in lucid's range (-117, 138).

    ``softmax2_pre_activation`` (the logits) exists only where ``avgpool0``'s 7x7 VALID pool
    leaves one position, i.e. at the trained size 224.
    """
    out: dict[str, torch.Tensor] = {}
    t = out["conv2d0"] = conv_relu(sd, "conv2d0", x, stride=2)
    t = out["maxpool0"] = max_pool_same(t, 3, 2)
    t = out["localresponsenorm0"] = tf_lrn(t, lrn_window)
    t = out["conv2d1"] = conv_relu(sd, "conv2d1", t)
    t = out["conv2d2"] = conv_relu(sd, "conv2d2", t)
    t = out["localresponsenorm1"] = tf_lrn(t, lrn_window)
    for name in MIXED:
        if name in POOL_BEFORE:
            t = out[POOL_BEFORE[name]] = max_pool_same(t, 3, 2)
        t = out[name] = mixed(sd, name, t)
    pooled = out["avgpool0"] = F.avg_pool2d(t, 7, stride=1)
    if pooled.shape[-2:] == (1, 1):
        w = sd["softmax2_pre_activation_matmul.weight"].to(x.dtype)
        b = sd["softmax2_pre_activation_matmul.bias"].to(x.dtype)
        out["softmax2_pre_activation"] = pooled.reshape(-1, FEATURES) @ w.T + b
    return out


# --------------------------------------------------------------------------- comparison

#: Module paths of the project's graph whose outputs are the same-named lucid nodes.
COMPARED = ("conv2d0", "localresponsenorm0", "conv2d1", "conv2d2", "localresponsenorm1", *MIXED)
#: Float tolerance: max |project - reference| over max |reference|, per layer. The project runs
#: in float32 against a float64 reference; measured differences are ~1e-7 (see the module doc).
TOLERANCE = 1e-5


def lucid_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Smooth random images (noise blurred 4x) in [0, 1], mapped to lucid's range: x * 255 - 117."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    coarse = torch.rand(n, c, h // 4 + 2, w // 4 + 2, generator=g)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    fine = torch.rand(n, c, h, w, generator=g)
    return (0.8 * smooth + 0.2 * fine) * 255.0 - 117.0


def project_nodes(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, output, name=name: captured.__setitem__(name, output.detach())
        )
        for name in COMPARED
    ]
    try:
        with torch.no_grad():
            captured["softmax2_pre_activation"] = model(x)
    finally:
        for h in handles:
            h.remove()
    return captured


def differences(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(max abs difference, that over max |b|, Frobenius norm of the difference over ||b||)."""
    a, b = a.double(), b.double()
    d = (a - b).abs()
    return d.max().item(), (d.max() / b.abs().max()).item(), (torch.linalg.norm(a - b) / torch.linalg.norm(b)).item()


@pytest.fixture(scope="module")
def published() -> dict[str, torch.Tensor]:
    return random_published_state_dict(seed=13)


@pytest.fixture(scope="module")
def loaded(published, tmp_path_factory) -> torch.nn.Module:
    """The project's InceptionV1 through its real loader, from a published-format file on disk."""
    path = tmp_path_factory.mktemp("weights") / "inception5h.pth"
    torch.save(published, path)
    return load_inceptionv1(path, allow_download=False)


@pytest.fixture(scope="module")
def batch_224() -> torch.Tensor:
    return lucid_input((2, 3, 224, 224), seed=5)


@pytest.fixture(scope="module")
def reference_224(published, batch_224) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return inception5h(published, batch_224.double())


@pytest.fixture(scope="module")
def project_224(loaded, batch_224) -> dict[str, torch.Tensor]:
    return project_nodes(loaded, batch_224)


# -------------------------------------------------------------------------------- tests


def test_reference_lrn_is_tensorflows_formula():
    """The oracle's LRN against a direct loop over TF's documented formula, both windows."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 13, 3, 4, generator=g, dtype=torch.float64) * 60
    for before, after in (TF_WINDOW, SHORT_WINDOW):
        expected = torch.empty_like(x)
        for c in range(x.shape[1]):
            sqr_sum = (x[:, max(0, c - before) : c + after + 1] ** 2).sum(dim=1)
            expected[:, c] = x[:, c] / (LRN_BIAS + LRN_ALPHA * sqr_sum) ** LRN_BETA
        torch.testing.assert_close(tf_lrn(x, (before, after)), expected, rtol=1e-12, atol=1e-12)


def test_reference_shapes_are_lucids():
    with torch.no_grad():
        nodes = inception5h(random_published_state_dict(seed=1), torch.zeros(1, 3, 224, 224))
    sizes = {name: tuple(t.shape[1:]) for name, t in nodes.items()}
    assert sizes["conv2d0"] == (64, 112, 112) and sizes["maxpool0"] == (64, 56, 56)
    assert sizes["conv2d2"] == (192, 56, 56) and sizes["maxpool1"] == (192, 28, 28)
    assert [sizes[m][0] for m in MIXED] == [256, 480, 508, 512, 512, 528, 832, 832, 1024]
    assert [sizes[m][1] for m in MIXED] == [28, 28, 14, 14, 14, 14, 14, 7, 7]
    assert sizes["avgpool0"] == (1024, 1, 1) and sizes["softmax2_pre_activation"] == (NUM_LOGITS,)
    assert tf_same(224, 7, 2) == (2, 3) and tf_same(112, 3, 2) == (0, 1) and tf_same(28, 3, 1) == (1, 1)


def test_loaded_model_holds_exactly_the_published_tensors(published, loaded):
    """The loader took every published tensor (strict) and nothing else: same count, same values."""
    params = dict(loaded.named_parameters())
    assert len(params) == len(published) == 2 * len(conv_shapes()) + 2
    assert sum(p.numel() for p in params.values()) == sum(t.numel() for t in published.values())
    ours = sorted(tuple(p.flatten()[:3].tolist()) + (p.numel(),) for p in params.values())
    theirs = sorted(tuple(t.flatten()[:3].tolist()) + (t.numel(),) for t in published.values())
    assert ours == theirs


def test_every_layer_and_the_logits_equal_the_reference_at_224(reference_224, project_224):
    assert set(COMPARED) | {"softmax2_pre_activation"} <= set(project_224)
    for name in (*COMPARED, "softmax2_pre_activation"):
        ours, ref = project_224[name], reference_224[name]
        assert ours.shape == ref.shape, name
        assert ref.abs().max() > 0, f"{name} is all zeros: the random weights would test nothing"
        _abs, rel, _norm = differences(ours, ref)
        assert rel < TOLERANCE, f"{name}: max |diff| / max |ref| = {rel:.3g}"
    assert torch.equal(project_224["softmax2_pre_activation"].argmax(1), reference_224["softmax2_pre_activation"].argmax(1))


def test_same_padding_agrees_at_odd_non_square_sizes(published, loaded):
    """TF SAME pads asymmetrically where a total is odd; 201x235 exercises both cases in the stem."""
    x = lucid_input((1, 3, 201, 235), seed=6)
    ours = project_nodes(loaded, x)
    with torch.no_grad():
        ref = inception5h(published, x.double())
    assert ref["mixed4d"].shape[-2:] == (13, 15)
    for name in COMPARED:
        assert ours[name].shape == ref[name].shape, name
        assert differences(ours[name], ref[name])[1] < TOLERANCE, name


def test_the_ports_short_lrn_window_is_told_apart(published, batch_224, reference_224, project_224):
    """With the LRN summing c-5..c+4 instead of c-5..c+5 every later layer moves far beyond the
    tolerance above, so the equality test would catch a graph with that window."""
    with torch.no_grad():
        short = inception5h(published, batch_224.double(), lrn_window=SHORT_WINDOW)
    for name in ("localresponsenorm0", "localresponsenorm1", *MIXED, "softmax2_pre_activation"):
        _abs, rel, norm = differences(short[name], reference_224[name])
        assert rel > 100 * TOLERANCE and norm > 1e-3, f"{name}: the short window changes it by only {rel:.3g}"
        # ... and the project's graph is on the TF side of that difference
        assert differences(project_224[name], short[name])[1] > 100 * TOLERANCE, name


if __name__ == "__main__":  # print the figures quoted in reports
    import tempfile
    from pathlib import Path

    sd = random_published_state_dict(seed=13)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(sd, Path(tmp) / "inception5h.pth")
        model = load_inceptionv1(Path(tmp) / "inception5h.pth", allow_download=False)
    x = lucid_input((2, 3, 224, 224), seed=5)
    ours = project_nodes(model, x)
    with torch.no_grad():
        ref64 = inception5h(sd, x.double())
        ref32 = inception5h(sd, x)
        short = inception5h(sd, x.double(), lrn_window=SHORT_WINDOW)
    print(f"{'layer':26s} {'vs f64 ref: max abs':>20s} {'max rel':>9s} {'vs f32 ref: max abs':>20s}"
          f" {'short window: max rel':>22s} {'norm rel':>9s}")
    for name in (*COMPARED, "softmax2_pre_activation"):
        a64, r64, _ = differences(ours[name], ref64[name])
        a32, _, _ = differences(ours[name], ref32[name])
        _, rs, ns = differences(short[name], ref64[name])
        print(f"{name:26s} {a64:20.3g} {r64:9.3g} {a32:20.3g} {rs:22.3g} {ns:9.3g}")
