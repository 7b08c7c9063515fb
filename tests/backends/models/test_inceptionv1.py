"""Tests for lucid's InceptionV1 in PyTorch (backends/models/inceptionv1.py).

All weights are random and made here (the published file cannot be downloaded in CI);
the loader is exercised with files written by torch.save / safetensors and with a real
HTTP download from a local server.
"""

from __future__ import annotations

import functools
import http.server
import socket
import subprocess
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from interpgram.backends.models import inceptionv1 as iv1
from interpgram.backends.models.inceptionv1 import (
    INPUT_RANGE,
    INPUT_SIZE,
    INTERNAL_TO_PUBLISHED,
    LABELS_ENV_VAR,
    LAYER_DEPTHS,
    LUCID_NODE_TO_MODULE,
    MIXED_LAYERS,
    PUBLISHED_TO_INTERNAL,
    WEIGHTS_ENV_VAR,
    WEIGHTS_GIT_BLOB,
    Conv2dSame,
    InceptionV1,
    LocalResponseNorm,
    MaxPool2dSame,
    WeightsFormatError,
    WeightsMismatch,
    WeightsUnavailable,
    default_weights_path,
    git_blob_id,
    load_inceptionv1,
    load_labels,
    to_model_input,
)

SPATIAL_224 = {
    "conv2d0": 112, "conv2d1": 56, "conv2d2": 56,
    "mixed3a": 28, "mixed3b": 28,
    "mixed4a": 14, "mixed4b": 14, "mixed4c": 14, "mixed4d": 14, "mixed4e": 14,
    "mixed5a": 7, "mixed5b": 7,
}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model() -> InceptionV1:
    torch.manual_seed(0)
    return InceptionV1().eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return to_model_input(torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE, generator=g))


@pytest.fixture(scope="module")
def logits(model, image) -> torch.Tensor:
    with torch.no_grad():
        return model(image)


@pytest.fixture(scope="module")
def published_sd(model) -> dict[str, torch.Tensor]:
    """The model's random weights under the published port's (lucent's) key names."""
    return {INTERNAL_TO_PUBLISHED[k]: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.delenv(LABELS_ENV_VAR, raising=False)


# ------------------------------------------------------------------------------ shapes


def test_every_layer_shape_at_224_and_1008_logits(model, image):
    captured: dict[str, torch.Tensor] = {}
    names = list(LAYER_DEPTHS) + ["mixed4d.relu_3x3", "mixed4d.conv_3x3"]
    handles = [
        model.get_submodule(n).register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, out))
        for n in names
    ]
    try:
        with torch.no_grad():
            out = model(image)
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (1, 1008)
    assert captured["softmax2_pre_activation"].shape == (1, 1008)
    for name, size in SPATIAL_224.items():
        assert captured[name].shape == (1, LAYER_DEPTHS[name], size, size), name
        assert captured[name].min() >= 0, f"{name} must be the post-ReLU activation"
    assert tuple(LAYER_DEPTHS[n] for n in MIXED_LAYERS) == (256, 480, 508, 512, 512, 528, 832, 832, 1024)
    # branch nodes: lucid's mixed4d_3x3 (post-ReLU) and its pre-ReLU conv output
    assert captured["mixed4d.relu_3x3"].shape == (1, 288, 14, 14)
    assert captured["mixed4d.conv_3x3"].min() < 0
    torch.testing.assert_close(captured["mixed4d.relu_3x3"], captured["mixed4d.conv_3x3"].clamp(min=0))
    # the 3x3 branch sits at channels [112, 400) of mixed4d's concatenation
    torch.testing.assert_close(captured["mixed4d"][:, 112:400], captured["mixed4d.relu_3x3"])


def test_other_input_sizes(model):
    """forget_xy_shape: odd, non-square sizes run, with TF SAME output sizes (ceil(n/2))."""
    captured = {}
    h = model.mixed4d.register_forward_hook(lambda _m, _i, out: captured.__setitem__("mixed4d", out))
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 225, 231))
    finally:
        h.remove()
    # 225 -> 113 -> 57 -> 29 -> 15 ; 231 -> 116 -> 58 -> 29 -> 15
    assert captured["mixed4d"].shape == (1, 528, 15, 15)
    assert out.shape == (1, 1008)


def test_forward_rejects_non_rgb_batch(model):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*-117"):
        model(torch.zeros(3, 224, 224))


def test_lucid_node_names_resolve(model):
    for path in LUCID_NODE_TO_MODULE.values():
        model.get_submodule(path)  # raises if the path does not exist
    assert LUCID_NODE_TO_MODULE["mixed4d_3x3_pre_relu"] == "mixed4d.conv_3x3"
    assert LUCID_NODE_TO_MODULE["conv2d2"] == "conv2d2"
    assert INPUT_RANGE == (-117.0, 138.0) and INPUT_SIZE == 224
    x01 = torch.tensor([0.0, 1.0])
    assert to_model_input(x01).tolist() == [-117.0, 138.0]


# ------------------------------------------------- whole graph vs. an independent reference


def _reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Lucid's graph at 224, written functionally from the *published* key names with the
    pads hard-coded for a 224 input and torch's own LRN (alpha scaled by the window size)."""
    ninf = float("-inf")

    def conv(name, t, pad=0, stride=1):
        w, b = sd[f"{name}_pre_relu_conv.weight"], sd[f"{name}_pre_relu_conv.bias"]
        if pad:
            t = F.pad(t, pad if isinstance(pad, tuple) else (pad,) * 4)
        return F.relu(F.conv2d(t, w, b, stride=stride))

    def lrn(t):  # TF depth_radius=5, alpha=1e-4, bias=2, beta=0.5
        return F.local_response_norm(t, size=11, alpha=11e-4, beta=0.5, k=2.0)

    def pool_s2(t):
        return F.max_pool2d(F.pad(t, (0, 1, 0, 1), value=ninf), 3, 2)

    def block(name, t):
        b1 = conv(f"{name}_1x1", t)
        b3 = conv(f"{name}_3x3", conv(f"{name}_3x3_bottleneck", t), pad=1)
        b5 = conv(f"{name}_5x5", conv(f"{name}_5x5_bottleneck", t), pad=2)
        bp = conv(f"{name}_pool_reduce", F.max_pool2d(F.pad(t, (1, 1, 1, 1), value=ninf), 3, 1))
        return torch.cat([b1, b3, b5, bp], 1)

    t = conv("conv2d0", x, pad=(2, 3, 2, 3), stride=2)
    t = lrn(pool_s2(t))
    t = conv("conv2d2", conv("conv2d1", t), pad=1)
    t = pool_s2(lrn(t))
    t = block("mixed3b", block("mixed3a", t))
    t = pool_s2(t)
    for name in ("mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e"):
        t = block(name, t)
    t = block("mixed5b", block("mixed5a", pool_s2(t)))
    t = F.avg_pool2d(t, 7).flatten(1)  # lucid's 7x7 VALID avgpool0
    return F.linear(t, sd["softmax2_pre_activation_matmul.weight"], sd["softmax2_pre_activation_matmul.bias"])


def test_graph_matches_reference_built_from_published_keys(published_sd, image, logits):
    # Several published tensors share shapes (e.g. mixed3b 1x1 and 3x3_bottleneck are both
    # 128x256x1x1), so a crossed key mapping would load but fail here.
    with torch.no_grad():
        ref = _reference_forward(published_sd, image)
    scale = ref.abs().max()
    assert scale > 0
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-5 * scale.item())


# ------------------------------------------------------------------- SAME padding and LRN


def _tf_same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    out = (n + s - 1) // s
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _numpy_conv_same(x, w, b, stride):
    """Direct-loop TF SAME convolution (cross-correlation) in float64."""
    n, cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    (pt, pb), (pl, pr) = _tf_same_pads(h, kh, stride), _tf_same_pads(wd, kw, stride)
    xp = np.zeros((n, cin, h + pt + pb, wd + pl + pr))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh, ow = -(-h // stride), -(-wd // stride)
    out = np.zeros((n, cout, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    return out


def _numpy_maxpool_same(x, k, stride):
    n, c, h, wd = x.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    (pt, _), (pl, _) = _tf_same_pads(h, k, stride), _tf_same_pads(wd, k, stride)
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride - pt, j * stride - pl  # window in unpadded coordinates, clipped
            window = x[:, :, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, wd)]
            out[:, :, i, j] = window.max(axis=(2, 3))
    return out


@pytest.mark.parametrize("kernel,stride,size", [(7, 2, (11, 14)), (7, 2, (12, 9)), (3, 1, (9, 8)), (5, 1, (7, 10)), (3, 2, (10, 13))])
def test_same_conv_matches_direct_tf_formula(kernel, stride, size):
    torch.manual_seed(2)
    conv = Conv2dSame(2, 3, kernel, stride=stride).double()
    x = torch.randn(1, 2, *size, dtype=torch.float64)
    ref = _numpy_conv_same(x.numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy(), stride)
    with torch.no_grad():
        out = conv(x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-10)


def test_same_conv_pads_bottom_right_at_224():
    # TF pads 224 -> 112 with (2, 3) for a 7x7/2 conv; a symmetric (3, 3) pad shifts everything.
    assert iv1.tf_same_padding(224, 7, 2) == (2, 3)
    assert iv1.tf_same_padding(112, 3, 2) == (0, 1)
    assert iv1.tf_same_padding(225, 7, 2) == (3, 3)
    torch.manual_seed(3)
    conv = Conv2dSame(1, 1, 7, stride=2).double()
    x = torch.randn(1, 1, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        ours = conv(x)
        symmetric = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=3)
        tf_like = F.conv2d(F.pad(x, (2, 3, 2, 3)), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(ours, tf_like)
    assert not torch.allclose(ours, symmetric)


@pytest.mark.parametrize("kernel,stride,size", [(3, 2, (11, 14)), (3, 2, (112, 112)), (3, 1, (7, 9))])
def test_same_maxpool_matches_direct_tf_formula(kernel, stride, size):
    x = torch.randn(1, 2, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) - 5.0
    out = MaxPool2dSame(kernel, stride)(x)
    np.testing.assert_array_equal(out.numpy(), _numpy_maxpool_same(x.numpy(), kernel, stride))


def _numpy_tf_lrn(x, depth_radius, bias, alpha, beta):
    """tf.nn.local_response_normalization, straight from its documented formula."""
    out = np.empty_like(x)
    channels = x.shape[1]
    for d in range(channels):
        lo, hi = max(0, d - depth_radius), min(channels, d + depth_radius + 1)
        sqr_sum = (x[:, lo:hi] ** 2).sum(axis=1)
        out[:, d] = x[:, d] / (bias + alpha * sqr_sum) ** beta
    return out


def test_lrn_matches_tf_formula_with_lucid_parameters(model):
    for name in ("localresponsenorm0", "localresponsenorm1"):
        lrn = model.get_submodule(name)
        assert (lrn.depth_radius, lrn.bias, lrn.alpha, lrn.beta) == (5, 2.0, 1e-4, 0.5), name
    g = torch.Generator().manual_seed(5)
    # activations of a few hundred, as after conv2d0 at lucid's input range, so the
    # normaliser is far from the bias-only regime
    x = torch.randn(2, 23, 5, 6, dtype=torch.float64, generator=g) * 300.0
    ref = _numpy_tf_lrn(x.numpy(), depth_radius=5, bias=2.0, alpha=1e-4, beta=0.5)
    out = model.localresponsenorm0(x)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=0)
    # sensitivity: torch's LRN with the TF numbers plugged in unchanged (alpha divided by
    # the window size) and the old MMdnn/lucent parameters are both measurably different
    for wrong in (F.local_response_norm(x, size=11, alpha=1e-4, beta=0.5, k=2.0),
                  F.local_response_norm(x, size=9, alpha=1e-4, beta=0.5, k=1.0)):
        assert np.abs(wrong.numpy() - ref).max() > 1e-2 * np.abs(ref).max()
    # and a float32 module gives the same numbers to float32 precision
    lrn32 = LocalResponseNorm(depth_radius=5, bias=2.0, alpha=1e-4, beta=0.5)
    np.testing.assert_allclose(lrn32(x.float()).numpy(), ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------- true gradients


def test_relus_are_fresh_plain_and_give_true_gradients(model):
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 3 + 6 * len(MIXED_LAYERS)
    assert len({id(m) for m in relus}) == len(relus), "ReLU modules must not be shared"
    assert not any(m.inplace for m in relus)
    assert all(type(m) is nn.ReLU for m in relus)

    # d(sum of mixed3a's 1x1 branch)/d(pre-ReLU) is exactly the (pre > 0) mask: no
    # redirected/leaky gradient for negative pre-activations.
    block = model.mixed3a
    x = torch.randn(1, 192, 6, 6, generator=torch.Generator().manual_seed(6))
    pre = block.conv_1x1(x).detach().requires_grad_(True)
    block.relu_1x1(pre).sum().backward()
    assert (pre < 0).any() and (pre > 0).any()
    torch.testing.assert_close(pre.grad, (pre > 0).to(pre.dtype))


# ------------------------------------------------------------------------------ weights


def test_published_key_names():
    assert len(PUBLISHED_TO_INTERNAL) == 116
    assert PUBLISHED_TO_INTERNAL["conv2d0_pre_relu_conv.weight"] == "conv2d0.conv.weight"
    assert PUBLISHED_TO_INTERNAL["mixed4d_pool_reduce_pre_relu_conv.bias"] == "mixed4d.conv_pool_reduce.bias"
    assert PUBLISHED_TO_INTERNAL["softmax2_pre_activation_matmul.weight"] == "softmax2_pre_activation.weight"
    assert set(PUBLISHED_TO_INTERNAL.values()) == set(InceptionV1().state_dict())


def test_pth_round_trip_with_published_keys(tmp_path, published_sd, image, logits):
    path = tmp_path / "inception5h.pth"
    torch.save(published_sd, path)
    loaded = load_inceptionv1(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(image), logits)


def test_safetensors_round_trip(tmp_path, published_sd, image, logits):
    path = tmp_path / "inception5h.safetensors"
    save_file({k: v.contiguous() for k, v in published_sd.items()}, str(path))
    loaded = load_inceptionv1(str(path))
    with torch.no_grad():
        assert torch.equal(loaded(image), logits)


def test_own_state_dict_names_also_load(tmp_path, model, image, logits):
    path = tmp_path / "mine.pt"
    torch.save(model.state_dict(), path)
    with torch.no_grad():
        assert torch.equal(load_inceptionv1(path)(image), logits)


def test_missing_unexpected_and_misshapen_keys_are_listed(tmp_path, published_sd):
    sd = dict(published_sd)
    del sd["mixed4d_3x3_pre_relu_conv.weight"]
    sd["mixed4d_7x7_pre_relu_conv.weight"] = torch.zeros(1)
    sd["softmax2_pre_activation_matmul.bias"] = torch.zeros(1000)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsMismatch) as err:
        load_inceptionv1(path)
    msg = str(err.value)
    assert "1 missing keys" in msg and "mixed4d_3x3_pre_relu_conv.weight" in msg
    assert "1 unexpected keys" in msg and "mixed4d_7x7_pre_relu_conv.weight" in msg
    assert "softmax2_pre_activation_matmul.bias: file (1000,) vs model (1008,)" in msg
    assert str(path) in msg


def test_mismatch_lists_only_the_first_few_keys(published_sd):
    sd = {k: v for k, v in published_sd.items() if not k.startswith("mixed5")}
    with pytest.raises(WeightsMismatch, match="24 missing keys") as err:
        load_inceptionv1(sd)
    assert str(err.value).count("mixed5") == 5


_SIDE_EFFECTS: list[str] = []


def _record(message: str) -> str:
    _SIDE_EFFECTS.append(message)
    return message


class _Payload:
    """A custom object whose unpickling calls _record: weights_only=True must refuse it."""

    def __reduce__(self):
        return (_record, ("unpickled!",))


def test_refuses_pickles_that_are_not_pure_state_dicts(tmp_path, published_sd):
    evil = dict(published_sd)
    evil["conv2d0_pre_relu_conv.weight"] = _Payload()
    path = tmp_path / "evil.pth"
    torch.save(evil, path)
    with pytest.raises(WeightsFormatError) as err:
        load_inceptionv1(path)
    assert "weights_only=True" in str(err.value) and str(path) in str(err.value)
    assert _SIDE_EFFECTS == [], "the pickled callable must never run"

    module_path = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), module_path)
    with pytest.raises(WeightsFormatError, match="not a plain tensor state_dict"):
        load_inceptionv1(module_path)

    not_tensors = tmp_path / "numbers.pth"
    torch.save({"conv2d0_pre_relu_conv.weight": 1.0}, not_tensors)
    with pytest.raises(WeightsFormatError, match="not str -> tensor"):
        load_inceptionv1(not_tensors)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsFormatError, match="safetensors"):
        load_inceptionv1(garbage)


def test_env_var_is_used(tmp_path, monkeypatch, published_sd, image, logits):
    path = tmp_path / "elsewhere" / "weights.pth"
    path.parent.mkdir()
    torch.save(published_sd, path)
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(path))
    loaded = load_inceptionv1(cache_dir=tmp_path / "empty-cache", allow_download=False)
    with torch.no_grad():
        assert torch.equal(loaded(image), logits)

    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsUnavailable, match=f"{WEIGHTS_ENV_VAR} is set to .*nope.pth"):
        load_inceptionv1(cache_dir=tmp_path / "empty-cache", allow_download=False)


def test_cache_dir_file_is_used(tmp_path, no_env, published_sd, image, logits):
    target = default_weights_path(tmp_path)
    assert target == tmp_path / "inceptionv1" / "inception5h.pth"
    target.parent.mkdir(parents=True)
    torch.save(published_sd, target)
    with torch.no_grad():
        assert torch.equal(load_inceptionv1(cache_dir=tmp_path, allow_download=False)(image), logits)


def test_no_file_and_no_download_names_env_var_and_location(tmp_path, no_env):
    with pytest.raises(WeightsUnavailable) as err:
        load_inceptionv1(cache_dir=tmp_path, allow_download=False)
    msg = str(err.value)
    assert WEIGHTS_ENV_VAR in msg
    assert str(tmp_path / "inceptionv1" / "inception5h.pth") in msg
    assert "allow_download=False" in msg
    with pytest.raises(WeightsUnavailable, match=WEIGHTS_ENV_VAR):
        load_inceptionv1(tmp_path / "missing.pth")


# --------------------------------------------------------- download over real (local) HTTP


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_is_verified_and_atomic(tmp_path, no_env, http_root, published_sd, image, logits):
    root, base = http_root
    torch.save(published_sd, root / "inception5h.pth")
    cache = tmp_path / "cache"
    # these tests' own weights, so their own git blob id stands in for the published file's
    blob = git_blob_id(root / "inception5h.pth")
    loaded = load_inceptionv1(cache_dir=cache, url=f"{base}/inception5h.pth", timeout=120,  # generous: a busy machine
                              blob=blob)  # serves slowly
    with torch.no_grad():
        assert torch.equal(loaded(image), logits)
    folder = cache / "inceptionv1"
    assert sorted(p.name for p in folder.iterdir()) == ["inception5h.pth"]
    # second call uses the cached file, even with the server's copy gone
    (root / "inception5h.pth").unlink()
    with torch.no_grad():
        assert torch.equal(load_inceptionv1(cache_dir=cache, url=f"{base}/inception5h.pth")(image), logits)


def test_a_download_that_is_not_the_published_file_is_refused(tmp_path, no_env, http_root, published_sd):
    root, base = http_root
    torch.save(published_sd, root / "inception5h.pth")  # a valid state_dict, but not the published bytes
    cache = tmp_path / "cache"
    with pytest.raises(WeightsUnavailable, match=f"not the published inception5h.pth.*{WEIGHTS_GIT_BLOB}"):
        load_inceptionv1(cache_dir=cache, url=f"{base}/inception5h.pth", timeout=120)
    assert list((cache / "inceptionv1").iterdir()) == []


def test_the_git_blob_id_is_gits_own(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(bytes(range(256)) * 1000)
    out = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True)
    assert git_blob_id(f) == out.stdout.strip()


def test_bad_download_leaves_no_file(tmp_path, no_env, http_root, published_sd):
    root, base = http_root
    (root / "page.html").write_text("<html>rate limited</html>")
    truncated = tmp_path / "full.pth"
    torch.save(published_sd, truncated)
    (root / "truncated.pth").write_bytes(truncated.read_bytes()[:4096])
    cache = tmp_path / "cache"
    for name in ("page.html", "truncated.pth", "does-not-exist.pth"):
        with pytest.raises(WeightsUnavailable) as err:
            load_inceptionv1(cache_dir=cache, url=f"{base}/{name}", timeout=120)
        assert WEIGHTS_ENV_VAR in str(err.value) and name in str(err.value)
        assert list((cache / "inceptionv1").iterdir()) == [], name


def test_unreachable_server_raises_weights_unavailable(tmp_path, no_env):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WeightsUnavailable) as err:
        load_inceptionv1(cache_dir=tmp_path, url=f"http://127.0.0.1:{port}/inception5h.pth", timeout=5)
    msg = str(err.value)
    assert "downloading" in msg and WEIGHTS_ENV_VAR in msg
    assert str(default_weights_path(tmp_path)) in msg
    assert not default_weights_path(tmp_path).exists()


# ------------------------------------------------------------------------------- labels


def test_the_bundled_labels_are_inception5hs_own(tmp_path, no_env):
    """Without a file of the user's, the names are the label strings of inception5h.zip, bundled: 1,001
    names with 'dummy' at 0, one per logit, and the graph's 7 padding logits named unused."""
    import hashlib

    assert hashlib.sha256(iv1.BUNDLED_LABELS.read_bytes()).hexdigest() == \
        "9af927ef00a4455de454879514ecc4859b023c33235b1423ef65e0925e31e73e"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = load_labels(cache_dir=tmp_path)
    assert len(labels) == 1008 and len(set(labels[1:1001])) == 998  # "crane" and "maillot" are there twice
    assert labels[:4] == ["dummy", "kit fox", "English setter", "Siberian husky"]
    assert labels[1000] == "dumbbell" and labels[1001:] == [f"unused {i}" for i in range(1001, 1008)]
    # names the Distill articles use, at their logits
    for name in ("Labrador retriever", "tiger cat", "snorkel", "scuba diver", "fireboat", "grey whale"):
        assert name in labels


def test_labels_file_is_read(tmp_path, no_env, monkeypatch):
    names = ["dummy"] + [f"name {i}" for i in range(1, 1008)]
    file = tmp_path / "labels.txt"
    file.write_text("\n".join(names) + "\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_labels(file) == names
        monkeypatch.setenv(LABELS_ENV_VAR, str(file))
        assert load_labels(cache_dir=tmp_path / "nothing") == names
        monkeypatch.delenv(LABELS_ENV_VAR)
        cached = tmp_path / "c" / "inceptionv1" / "labels.txt"
        cached.parent.mkdir(parents=True)
        cached.write_text(file.read_text(encoding="utf-8"), encoding="utf-8")
        assert load_labels(cache_dir=tmp_path / "c") == names

    five5h = tmp_path / "imagenet_comp_graph_label_strings.txt"  # inception5h's own 1,001-line form
    five5h.write_text("\n".join(names[:1001]) + "\n", encoding="utf-8")
    assert load_labels(five5h) == names[:1001] + [f"unused {i}" for i in range(1001, 1008)]
    short = tmp_path / "short.txt"
    short.write_text("\n".join(names[:1000]), encoding="utf-8")
    with pytest.raises(ValueError, match="1000 lines; expected exactly 1008"):
        load_labels(short)
    with pytest.raises(FileNotFoundError):
        load_labels(tmp_path / "absent.txt")


def test_module_level_labels_is_lazy(tmp_path, no_env, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # default cache dir -> empty: the bundled list
    iv1.__dict__.pop("LABELS", None)
    try:
        labels = iv1.LABELS
        assert isinstance(labels, tuple) and labels == tuple(load_labels(cache_dir=tmp_path))
        assert iv1.LABELS is labels  # cached: no second read
    finally:
        iv1.__dict__.pop("LABELS", None)


# ------------------------------------------------------------- the real published file


@pytest.mark.skipif(
    not __import__("os").environ.get(WEIGHTS_ENV_VAR),
    reason=f"set {WEIGHTS_ENV_VAR} to the published inception5h.pth to check it loads unchanged",
)
def test_published_file_loads_unchanged(image):
    real = load_inceptionv1(allow_download=False)
    with torch.no_grad():
        out = real(image)
    assert out.shape == (1, 1008) and torch.isfinite(out).all()
    # lucid's trained net is confident on *something*; random weights give ~uniform logits
    assert out.softmax(-1).max() > 5.0 / 1008
