"""Neuron groups of signed activations (a block that ends in BatchNorm, as EfficientNet's, MobileNet's,
ConvNeXt's): the positive and negative parts side by side, ``NMF([A+ | A−])``, checked against
scikit-learn on real BatchNorm outputs of the built-in CNN, measured against clipping at 0, and run end
to end through the public API (with the note the report carries) and the CLI's ``check``."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

import interpgram
from support import ROOT
from interpgram.backends.data.shapes import generate
from interpgram.backends.kernels.factorize import group_attribution, neuron_groups, nmf
from interpgram.backends.models.shapes_cnn import load_shapes_cnn, normalize

BN_LAYERS = ("conv3.1", "conv4.1", "conv5.1")  # each stage is Conv → BatchNorm → ReLU: .1 is the BatchNorm


@pytest.fixture(scope="module")
def real():
    """The built-in CNN's BatchNorm outputs (signed) and ReLU outputs on 6 test images, with the
    gradient of each image's top logit with respect to conv4.1."""
    model = load_shapes_cnn()
    images = normalize(generate(list(range(6)), split="test").images)
    modules = dict(model.named_modules())
    acts: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_hook(lambda m, i, o, name=name: acts.__setitem__(name, o))
             for name in (*BN_LAYERS, "conv4")]
    try:
        logits = model(images)
    finally:
        for h in hooks:
            h.remove()
    grad = torch.autograd.grad(logits.max(dim=1).values.sum(), acts["conv4.1"])[0]
    return {name: a.detach() for name, a in acts.items()}, grad.detach()


def sklearn_nmf(X: np.ndarray, k: int, max_iter: int = 400, tol: float = 1e-4) -> NMF:
    model = NMF(n_components=k, init="nndsvda", solver="cd", tol=tol, max_iter=max_iter, random_state=0)
    with warnings.catch_warnings(), threadpool_limits(limits=1):  # one thread on a shared machine
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.W_ = model.fit_transform(X)
    return model


def positions_by_channels(act: torch.Tensor) -> torch.Tensor:
    C, h, w = act.shape
    return act.permute(1, 2, 0).reshape(h * w, C)


@pytest.mark.parametrize("layer,image,k", [("conv4.1", 0, 5), ("conv5.1", 3, 4), ("conv3.1", 1, 6)])
def test_split_sign_groups_are_sklearns_nmf_of_the_two_parts(real, layer, image, k):
    act = real[0][layer][image].double()
    assert float(act.min()) < -1  # a BatchNorm output really is signed
    C, h, w = act.shape
    X = positions_by_channels(act)
    both = torch.cat([X.clamp(min=0), (-X).clamp(min=0)], dim=1).numpy()
    ref = sklearn_nmf(both, k)
    res = neuron_groups(act, k)  # the default for a signed activation
    assert res.sign == "split" and res.minimum == pytest.approx(float(act.min()))
    assert res.n_iter == ref.n_iter_
    assert res.reconstruction_error == pytest.approx(ref.reconstruction_err_, rel=1e-7)
    # scikit-learn's factors in the groups' order (the x of each spatial peak, as neuron_groups sorts)
    order = np.argsort(ref.W_.argmax(axis=0) % w, kind="stable")
    H = ref.components_[order]
    np.testing.assert_allclose(res.spatial.numpy(), ref.W_.T[order].reshape(k, h, w), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(res.channels.numpy(), H[:, :C] - H[:, C:], rtol=1e-5, atol=1e-8)
    assert (res.spatial >= 0).all() and (res.channels < 0).any() and (res.channels > 0).any()
    # asking for it explicitly gives the same groups
    explicit = neuron_groups(act, k, sign="split")
    assert torch.equal(explicit.channels, res.channels) and torch.equal(explicit.spatial, res.spatial)


def test_non_negative_activation_keeps_plain_nmf(real):
    """After a ReLU nothing changes: the plain NMF of X, scikit-learn's, no split."""
    act = real[0]["conv4"][2].double()
    assert float(act.min()) == 0.0
    res = neuron_groups(act, 5)
    assert res.sign is None and res.minimum == 0.0
    ref = sklearn_nmf(positions_by_channels(act).numpy(), 5)
    assert res.n_iter == ref.n_iter_ and res.reconstruction_error == pytest.approx(ref.reconstruction_err_, rel=1e-7)
    order = np.argsort(ref.W_.argmax(axis=0) % act.shape[2], kind="stable")
    np.testing.assert_allclose(res.channels.numpy(), ref.components_[order], rtol=1e-5, atol=1e-8)


def test_split_reconstructs_signed_activations_better_than_clipping(real):
    """‖X − W(H+ − H−)‖ against the NMF of max(X, 0) (the nearest ReLU), relative to ‖X‖, on every
    BatchNorm layer and 4 images, in float32 as the kernel runs. Measured over 8 images
    (benchmarks/signed_groups.py): ratio split / clip at most 0.76 (conv3.1), mean relative errors
    0.67 / 0.57 / 0.33 against 0.97 / 0.90 / 0.63; asserted at 0.85 per image."""
    acts = real[0]
    for layer in BN_LAYERS:
        for i in range(4):
            act = acts[layer][i]
            X = positions_by_channels(act)
            split = neuron_groups(act, 6)
            rec = torch.einsum("khw,kc->hwc", split.spatial, split.channels).reshape(X.shape)
            e_split = float((X - rec).norm() / X.norm())
            W, H, _, _ = nmf(X.clamp(min=0), 6)
            e_clip = float((X - W @ H).norm() / X.norm())
            assert e_split <= 0.85 * e_clip, (layer, i, e_split, e_clip)


def test_group_attribution_of_split_groups_sums_to_grad_times_signed_reconstruction(real):
    acts, grad = real
    for i in range(grad.shape[0]):
        act = acts["conv4.1"][i].double()
        res = neuron_groups(act, 5)
        attr = group_attribution(res, grad[i])
        rec = torch.einsum("khw,kc->chw", res.spatial, res.channels)  # A ≈ W (H+ − H−), signs kept
        assert float(attr.sum()) == pytest.approx(float((rec * grad[i].double()).sum()), rel=1e-9, abs=1e-9)
        # each group's own part, by hand
        g0 = (torch.einsum("hw,c->chw", res.spatial[0], res.channels[0]) * grad[i].double()).sum()
        assert float(attr[0]) == pytest.approx(float(g0), rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------ end to end: the public API and the CLI
SPEC = """\
interpgram: 1
model: builtin:shapes-cnn
input: [builtin:shapes/10, builtin:shapes/3]
elements:
  groups:
    content:
      attribution:
        from: {layer: conv4.1, atom: {group: nmf, k: 4}}
        to: {layer: output, select: [star, crescent]}
    presentation: {groups: {icon: {size: 32}}}
  where:
    content: {activation: {layer: conv4.1, atom: {group: nmf, k: 3}}}
    presentation: heatmap
  relu:
    content: {activation: {layer: conv4, atom: {group: nmf, k: 3}}}
    presentation: {groups: {icons: false}}
"""


def test_default_groups_on_a_batchnorm_layer_render_and_say_what_they_did(tmp_path):
    ui = interpgram.Interface(SPEC, cache=tmp_path / "cache", icon_steps=2)
    assert "[A+, A−] where signed" in ui.plan()
    res = ui.run()
    ch = res["groups"].arrays["groups.channels"].numpy()
    assert ch.shape == (2, 4, 128) and (ch < 0).any()  # signed channel directions, every image
    assert (res["groups"].arrays["groups.spatial"].numpy() >= 0).all()
    assert (res["relu"].arrays["groups.channels"].numpy() >= 0).all()  # after the ReLU: plain NMF
    meta = res.parts().meta
    notes = meta["neuron groups"]
    low = float(res.raw.values[ui.prepared().plan.base_elements[0].groups]["minimum"].min())
    assert low < -1
    # one sentence for conv4.1 (k = 4 and k = 3), none for conv4 (after its ReLU)
    assert notes.startswith(f"conv4.1 is signed (min {low:.3g}): its neuron groups (k = 4, 3) factorise its "
                            "positive and negative parts (NMF of [A+, A−])"), notes
    page = res.report(tmp_path / "report").read_text()
    assert "NMF of [A+, A−]" in page and "conv4.1 is signed" in page
    # from the cache: no NMF runs, and the report still says it
    again = interpgram.Interface(SPEC, cache=tmp_path / "cache", icon_steps=2).run()
    assert again.stats.cache["Factorize"] == (3, 0) and again.stats.forward_passes == 0
    assert again.parts().meta["neuron groups"] == notes


def test_explicit_sign_needs_no_note_and_positive_clips(tmp_path):
    spec = SPEC.split("  groups:")[0] + """\
  where:
    content: {activation: {layer: conv4.1, atom: {group: nmf, k: 3, sign: positive}}}
    presentation: heatmap
"""
    ui = interpgram.Interface(spec, cache=False)
    assert "sign: positive" in ui.plan()
    res = ui.run()
    assert "neuron groups" not in res.parts().meta
    assert (res["where"].arrays["groups.channels"].numpy() >= 0).all()


HEAD = """\
interpgram: 1
model: builtin:shapes-cnn
input: builtin:shapes/10
elements:
  g:
"""


def _check(tmp_path, name: str, element: str) -> str:
    spec = tmp_path / name
    spec.write_text(HEAD + element)
    r = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "check", str(spec)], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out, out
    return out.replace(str(spec), name)


def test_what_cannot_work_is_a_positioned_error_at_check(tmp_path):
    # groups of a layer without positions (the output's logits): was an unpacking traceback in check
    out = _check(tmp_path, "out.yaml", "    content: {activation: {layer: output, atom: {group: nmf, k: 2}}}\n"
                                       "    presentation: groups\n")
    assert "out.yaml:6:49: group atoms need a layer with positions; 'output' has shape (10,)" in out, out
    # a sign that is not one of the four: positioned, and the choices listed, split among them
    out = _check(tmp_path, "sign.yaml", "    content: {activation: {layer: conv4.1, atom: {group: nmf, sign: both}}}\n"
                                        "    presentation: groups\n")
    assert "sign.yaml:6:69: sign: 'both' is not allowed (valid: positive, negative, abs, split)" in out, out
    # k beyond what the layer allows
    out = _check(tmp_path, "k.yaml", "    content: {activation: {layer: conv5.1, atom: {group: nmf, k: 20}}}\n"
                                     "    presentation: groups\n")
    assert "k.yaml:6:" in out and "k=20 groups is more than 'conv5.1' allows" in out, out


def test_groups_chart_lists_the_strongest_channels_of_either_sign():
    """The groups presentation draws signed channel directions (it refused them as "not NMF factors"):
    each group lists its strongest channels by magnitude, on an axis that has room for negative weights."""
    from interpgram.backends.render import ElementView, chart_for

    rng = np.random.default_rng(0)
    channels = rng.standard_normal((2, 12)).astype(np.float32)
    channels[0, 7] = -5.0  # group 1's strongest channel pulls the wrong way
    view = ElementView("g", "groups", "groups", "InfoVis(Activation(Network conv4.1 Group))", {"top_channels": 3},
                       {"image": rng.random((16, 16, 3)).astype(np.float32),
                        "spatial": rng.random((2, 4, 4)).astype(np.float32), "channels": channels,
                        "channel_labels": [f"c{i}" for i in range(12)]})
    spec = chart_for(view).to_dict()
    rows: list[dict] = []

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            if x and all(isinstance(r, dict) and "weight" in r for r in x):
                rows.extend(x)
            for v in x:
                walk(v)

    walk(spec)
    unit = channels / np.linalg.norm(channels, axis=1, keepdims=True)
    for g in range(2):
        listed = [r["channel"] for r in rows if r["group"] == f"group {g + 1}"]
        assert listed == [f"c{c}" for c in np.argsort(-np.abs(unit[g]), kind="stable")[:3]]
    assert "c7" in [r["channel"] for r in rows if r["group"] == "group 1"]
    assert min(r["weight"] for r in rows) < 0
    axes: list[dict] = []
    todo = [spec]
    while todo:
        x = todo.pop()
        if isinstance(x, dict):
            if x.get("title") == "weight in direction":
                axes.append(x)
            todo.extend(x.values())
        elif isinstance(x, list):
            todo.extend(x)
    top = float(np.abs(unit).max())
    assert len(axes) == 2 and all(a["scale"]["domain"] == pytest.approx([-top, top]) for a in axes), axes


def test_activation_grid_of_a_batchnorm_layer_shares_parameters_through_split_groups(real):
    """The activation grid shares its cells' parameters through an NMF of the positions: on a signed
    layer that NMF is the split one (it was the same traceback), and the grid renders."""
    from interpgram.backends.kernels.optvis.grid import activation_grid
    from interpgram.backends.models import load_model

    act = real[0]["conv5.1"][0]  # (256, 4, 4), signed
    grid = activation_grid(load_model("builtin:shapes-cnn"), act, "conv5.1", cell_size=16, steps=2, sample=4,
                           groups=3, seed=0, device="cpu")
    assert grid.icons.shape == (4, 4, 3, 16, 16) and torch.isfinite(grid.scores).all()
    torch.testing.assert_close(grid.magnitude, act.norm(dim=0))
