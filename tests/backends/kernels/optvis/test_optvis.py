"""Feature visualisation engine (backends/torch/optvis): icons really maximise their objectives,
a hand-built stripe detector gets stripes of its orientation, period and colour, renders are
reproducible and cached, the objective algebra gives hand-computed numbers, the parameterisation
and the transforms follow lucid, the forward pass stops early, and the activation grid's per-step
cost is ``sample`` images whatever the number of cells.

Everything runs on the CPU with fixed seeds and small step counts.
"""
from __future__ import annotations

import math
import platform
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from interpgram.backends.data.shapes import generate
from interpgram.backends.models import LoadedModel, Preprocess, load_model, state_digest
from interpgram.backends.execute.cache import ResultCache
from interpgram.backends.kernels.capture import run_capture
from interpgram.backends.kernels.factorize import neuron_groups
from interpgram.backends.kernels.frozen import frozen_copy
from interpgram.backends.kernels.optvis import Icon, IconSettings, IconStats, ImageParam, render_icons, render_vis
from interpgram.backends.kernels.optvis import objectives as O
from interpgram.backends.kernels.optvis import transforms as T
from interpgram.backends.kernels.optvis.grid import activation_grid
from interpgram.backends.kernels.optvis.param import COLOR_CORRELATION_NORMALIZED
from interpgram.backends.kernels.optvis.render import icon_objective

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def shapes_model():
    return load_model("builtin:shapes-cnn")


@pytest.fixture(scope="module")
def data_conv4(shapes_model):
    """conv4 activations (256, 128, 8, 8) of 256 test images of builtin:shapes."""
    images = generate(range(256), split="test").images
    acts, _ = run_capture(shapes_model.module, shapes_model.preprocess(images), ["conv4"], grad=False)
    return acts["conv4"]


def conv4_of(model, images: torch.Tensor) -> dict[str, torch.Tensor]:
    acts, _ = run_capture(model.module, model.preprocess(images), ["conv4"], grad=False)
    return {"conv4": acts["conv4"]}


# ------------------------------------------------------- 1. an icon maximises its objective
def _strongest_channel(A):
    return O.channel("conv4", int(A.mean((2, 3)).max(0).values.argmax()))


def _strongest_centre_neuron(A):
    h, w = A.shape[2:]
    return O.neuron("conv4", int(A[:, :, h // 2, w // 2].max(0).values.argmax()))


def _random_direction(A):
    return O.direction("conv4", torch.randn(A.shape[1], generator=torch.Generator().manual_seed(1)))


def _random_direction_neuron(A):
    return O.direction_neuron("conv4", torch.randn(A.shape[1], generator=torch.Generator().manual_seed(2)))


def _nmf_group(A):
    groups = neuron_groups(A[0], 3, seed=0)  # one image's conv4 activation, 3 neuron groups
    return O.group("conv4", groups.channels[0])


def _whitened(A):
    c, h, w = A.shape[1:]
    S = O.whitening(A.permute(0, 2, 3, 1).reshape(-1, c))  # every position of every sample image
    return O.direction_cossim_S("conv4", A[1, :, h // 2, w // 2], S)  # cossim_pow 2 by default


def _spatial_vector_cossim(A):
    norms = A[2].norm(dim=0)  # image 2's strongest position
    y, x = divmod(int(norms.argmax()), norms.shape[1])
    return O.direction("conv4", A[2, :, y, x], cossim_pow=1.0)


STEPS = 96
MAXIMISE = [
    pytest.param(_strongest_channel, IconSettings(steps=STEPS), id="channel"),
    pytest.param(_strongest_centre_neuron, IconSettings(steps=STEPS), id="neuron"),
    pytest.param(_random_direction, IconSettings(steps=STEPS), id="direction"),
    pytest.param(_random_direction_neuron, IconSettings(steps=STEPS), id="direction_neuron"),
    pytest.param(_nmf_group, IconSettings(steps=STEPS), id="nmf_group"),
    pytest.param(_spatial_vector_cossim, IconSettings(steps=STEPS), id="spatial_vector_cossim"),
    # The whitened atlas objective reads one position and is very selective: under the standard
    # transforms (shifts of up to 12 px and activation maps of 8–10 cells) it stays below the data
    # image whose own vector it is, even after 512 steps. Without transforms it beats it 4×.
    pytest.param(_whitened, IconSettings(steps=STEPS, transforms="none"), id="whitened_cossim_S"),
    # float32 steps on every machine (autocast off): where bfloat16 is native, auto runs the steps in
    # bfloat16, and there this icon happened to beat the data image
    pytest.param(_whitened, IconSettings(steps=STEPS, autocast="off"), id="whitened_cossim_S-standard_transforms",
                 marks=pytest.mark.xfail(strict=True, reason=(
                     "limitation, not a crash: with the standard transforms the whitened one-position "
                     "objective reaches ~0.04 at 96 steps (0.10 at 512 steps, lr 0.1) while the data "
                     "image it was taken from scores 0.138"))),
]


@pytest.mark.parametrize("make_objective,settings", MAXIMISE)
def test_icon_beats_every_data_image(shapes_model, data_conv4, make_objective, settings):
    objective = make_objective(data_conv4)
    data_scores = objective({"conv4": data_conv4})
    assert data_scores.shape == (256,)

    r = render_vis(shapes_model, objective, 1, settings, seed=0, device=CPU)

    assert r.images.shape == (1, 3, 64, 64)
    assert 0.0 <= float(r.images.min()) and float(r.images.max()) <= 1.0
    # the reported score is the objective of the returned (untransformed) image
    icon_score = objective(conv4_of(shapes_model, r.images))
    torch.testing.assert_close(r.scores, icon_score, rtol=1e-4, atol=1e-6)
    best = float(data_scores.max())
    assert float(icon_score[0]) > best, f"{objective}: icon {float(icon_score[0]):.4g} ≤ best data image {best:.4g}"


# ------------------------------------------------------------- 2. ground truth: a stripe detector
RED, GREEN, BLUE = 0, 1, 2


def stripe_detector(orientation: str, colour: int, period: int, size: int = 32, k: int = 16) -> LoadedModel:
    """One conv filter: +1 / −1 square wave of ``period`` px across x (vertical stripes) or y
    (horizontal stripes) on one colour channel only, then a ReLU. Circular padding, so that an image
    edge is worth nothing and only the stripes raise the mean response."""
    x = torch.arange(k)
    wave = torch.where(x % period < period // 2, 1.0, -1.0)
    weight = torch.zeros(1, 3, k, k)
    weight[0, colour] = wave.view(1, k).expand(k, k) if orientation == "vertical" else wave.view(k, 1).expand(k, k)
    conv = nn.Conv2d(3, 1, k, padding=k // 2, padding_mode="circular", bias=False)
    conv.weight.data.copy_(weight / k)
    module = nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU())).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(f"stripes-{orientation}-{colour}-{period}", module, Preprocess(size=(size, size)), ["stripes"],
                       state_digest(module))


def spectrum_axes(channel: torch.Tensor) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Power along the horizontal-frequency axis (fy = 0) and along the vertical-frequency axis
    (fx = 0), leaving out |k| < 2: the lowest bin is one brightness ramp across the whole image, not
    a stripe. Also returns the two axis profiles with those bins zeroed."""
    n = channel.shape[0]
    power = torch.fft.fft2(channel - channel.mean()).abs() ** 2
    k = (torch.fft.fftfreq(n) * n).abs()
    along_x = torch.where(k >= 2, power[0, :], 0.0)  # cos(2π kx x / n): vertical stripes
    along_y = torch.where(k >= 2, power[:, 0], 0.0)  # cos(2π ky y / n): horizontal stripes
    return float(along_x.sum()), float(along_y.sum()), along_x, along_y


def dominant_period(profile: torch.Tensor) -> float:
    n = profile.shape[0]
    return n / int(profile[: n // 2 + 1].argmax())


GROUND_TRUTH = [
    pytest.param("vertical", RED, 8, id="vertical-red-period8"),
    pytest.param("horizontal", RED, 8, id="horizontal-red-period8"),
    pytest.param("vertical", GREEN, 4, id="vertical-green-period4"),
    pytest.param("horizontal", BLUE, 4, id="horizontal-blue-period4"),
]


@pytest.mark.parametrize("orientation,colour,period", GROUND_TRUTH)
def test_stripe_detector_icon_has_its_orientation_period_and_colour(orientation, colour, period):
    model = stripe_detector(orientation, colour, period)
    # no transforms and no colour decorrelation: the cleanest ground truth (both are tested below)
    settings = IconSettings(steps=64, transforms="none", decorrelate=False)
    img = render_vis(model, O.channel("relu", 0), 1, settings, seed=0, device=CPU).images[0]
    assert img.shape == (3, 32, 32)

    along_x, along_y, profile_x, profile_y = spectrum_axes(img[colour])
    if orientation == "vertical":
        assert along_x > 5 * along_y, (along_x, along_y)
        assert dominant_period(profile_x) == period
    else:
        assert along_y > 5 * along_x, (along_x, along_y)
        assert dominant_period(profile_y) == period

    stds = img.flatten(1).std(1)
    others = [c for c in range(3) if c != colour]
    assert float(stds[colour]) > 0.25
    for c in others:
        assert float(stds[colour]) > 20 * float(stds[c]), stds


@pytest.mark.parametrize("orientation,colour", [("vertical", RED), ("horizontal", BLUE)])
def test_stripe_detector_with_default_transforms_and_decorrelated_colour(orientation, colour):
    """With the standard transforms and ImageNet-decorrelated colour the period blurs and the other
    channels move with the target one (the decorrelation matrix mixes them), but the orientation is
    still clear and the target channel varies most."""
    model = stripe_detector(orientation, colour, 8)
    img = render_vis(model, O.channel("relu", 0), 1, IconSettings(steps=64), seed=0, device=CPU).images[0]
    along_x, along_y, _, _ = spectrum_axes(img[colour])
    if orientation == "vertical":
        assert along_x > 3 * along_y, (along_x, along_y)
    else:
        assert along_y > 3 * along_x, (along_x, along_y)
    stds = img.flatten(1).std(1)
    assert int(stds.argmax()) == colour, stds


# ---------------------------------------------------------------------------- 3. reproducibility
def test_same_seed_same_icon_other_seed_other_icon(shapes_model):
    objective = O.channel("conv3", 7)
    settings = IconSettings(steps=16)
    a = render_vis(shapes_model, objective, 2, settings, seed=3, device=CPU)
    b = render_vis(shapes_model, objective, 2, settings, seed=3, device=CPU)
    c = render_vis(shapes_model, objective, 2, settings, seed=4, device=CPU)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.scores, b.scores)
    assert float((a.images - c.images).abs().max()) > 0.1
    # the two images of one batch start from their own seeds
    assert float((a.images[0] - a.images[1]).abs().max()) > 0.1


def test_more_attempts_keep_the_best_image_per_element(shapes_model):
    objective = O.channel("conv3", [3, 40, 77])
    one = render_vis(shapes_model, objective, 3, IconSettings(steps=8), seed=2, device=CPU)
    two = render_vis(shapes_model, objective, 3, IconSettings(steps=8, attempts=2, race=1.0), seed=2, device=CPU)
    assert len(one.history) == 8 and len(two.history) == 8
    # attempt 0 is the single-attempt run (its own start and transform stream, its own forward pass whenever
    # attempt 1 drew another size); the second attempt replaces an image only where it scores higher
    assert torch.all(two.scores >= one.scores * (1 - 1e-5))
    assert bool((two.scores > one.scores * 1.01).any())


def test_each_attempt_draws_its_own_transforms(shapes_model):
    """Attempts are independent starts, as the article's are: attempt a follows transform stream a (the
    attempts had shared one stream, and on the class-atlas icons the best of two then reached 0.69 of
    the old renderer's objective: benchmarks/vs_old.py)."""
    sizes = []
    h = shapes_model.module.conv1.register_forward_pre_hook(lambda m, a: sizes.append(tuple(a[0].shape)))
    try:
        render_vis(shapes_model, O.channel("conv3", [3, 40]), 2, IconSettings(steps=6, attempts=2), seed=0,
                   device=CPU, frozen=False)
    finally:
        h.remove()
    per_step = sizes[:-1]  # the last call is the final clean scoring of all 4 rows
    assert sizes[-1][0] == 4 and sum(s[0] for s in per_step) == 6 * 4
    # the steps where both attempts drew the same size share one pass of 4 rows; the others run 2 + 2,
    # which a shared stream (one draw for all rows) would never do
    assert any(s[0] == 2 for s in per_step)


def test_the_attempts_race_carries_the_leaders_optimiser_state_over():
    """After the race the kept rows optimise exactly as they would have in the full batch (their
    parameters and Adam moments are carried over, not restarted)."""
    from interpgram.backends.kernels.optvis.param import ImageParam
    from interpgram.backends.kernels.optvis.render import _keep_leaders

    w = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def steps(param, opt, rows, k):
        for _ in range(k):
            opt.zero_grad()
            (param() * w[rows]).sum().backward()
            opt.step()

    full, raced = (ImageParam("fourier", [1, 2, 3, 4], 8, 8) for _ in range(2))
    opts = [torch.optim.Adam(p.parameters(), lr=0.05) for p in (full, raced)]
    for p, o in zip((full, raced), opts):
        steps(p, o, slice(None), 3)
    scores = torch.tensor([0.0, 5.0, 1.0, 2.0])  # attempt-major, n = 2: image 0 keeps row 2, image 1 row 1
    opt = _keep_leaders(raced, opts[1], scores, 2)
    assert raced.n == 2
    keep = torch.tensor([2, 1])
    steps(full, opts[0], slice(None), 4)
    steps(raced, opt, keep, 4)
    assert torch.allclose(raced(), full()[keep], atol=1e-6)
    # a restarted optimiser (no moments carried) would not give the same images
    restarted = ImageParam("fourier", [1, 2, 3, 4], 8, 8)
    o = torch.optim.Adam(restarted.parameters(), lr=0.05)
    steps(restarted, o, slice(None), 3)
    restarted.narrow(keep)
    steps(restarted, torch.optim.Adam(restarted.parameters(), lr=0.05), keep, 4)
    assert not torch.allclose(restarted(), full()[keep], atol=1e-4)


def test_a_race_keeps_each_images_leader_and_halves_the_second_half(shapes_model):
    objective = O.channel("conv3", [3, 40, 77])
    calls = []
    settings = IconSettings(steps=8, attempts=2, race=0.5)
    h = shapes_model.module.conv1.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        r = render_vis(shapes_model, objective, 3, settings, seed=2, device=CPU, frozen=False)
    finally:
        h.remove()
    # 4 steps of all 6 rows (one pass, or one per attempt where their transforms differ in size), the
    # race's clean scoring (6), 4 steps of the 3 leaders (one pass per attempt that leads some image), the
    # final scoring (3)
    before, rest = [], list(calls)
    while sum(before) < 4 * 6:
        before.append(rest.pop(0))
    assert sum(before) == 24 and rest[0] == 6 and rest[-1] == 3
    assert sum(rest[1:-1]) == 4 * 3 and all(c <= 3 for c in rest[1:-1])
    assert r.images.shape == (3, 3, 64, 64) and r.scores.shape == (3,)
    with pytest.raises(ValueError, match="race"):
        IconSettings(attempts=2, race=1.5)


def _icons(kind: str) -> list[Icon]:
    if kind == "channel":
        return [Icon("conv3", "channel", index=i) for i in (7, 20, 33)]
    vectors = [torch.randn(128, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    return [Icon.from_vector("conv4", kind, v) for v in vectors]


BATCH_INVARIANCE = [
    pytest.param("channel", id="channel"),
    # Not "direction" nor "direction_neuron": on CPU a batch of 1 and a batch of 3 convolve with ~1e-6
    # differences and, for a direction, a ReLU/max-pool flip grows that into another optimum (documented in
    # render.py; direction_neuron kept its batch-1 bits through the unfolded network, not through the frozen one).
]


@pytest.mark.parametrize("kind", BATCH_INVARIANCE)
def test_icon_rendered_alone_equals_icon_rendered_in_a_batch(shapes_model, kind):
    icons = _icons(kind)
    settings = IconSettings(steps=48)
    alone = render_icons(shapes_model, [icons[0]], settings, seed=1, device=CPU)
    batch = render_icons(shapes_model, [icons[1], icons[0], icons[2]], settings, seed=1, device=CPU)
    torch.testing.assert_close(batch[1].images, alone[0].images, rtol=0, atol=1e-5)
    torch.testing.assert_close(batch[1].scores, alone[0].scores, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- 4. caching
def test_render_icons_cache_hits_render_nothing(shapes_model, tmp_path):
    icons = [Icon("conv3", "channel", index=3), Icon("conv3", "channel", index=9), Icon("conv3", "neuron", index=3),
             Icon("conv3", "channel", index=3)]  # a duplicate: rendered once
    settings = IconSettings(steps=8)

    first_stats = IconStats()
    first = render_icons(shapes_model, icons, settings, seed=0, cache=ResultCache(tmp_path), device=CPU,
                         stats=first_stats)
    assert (first_stats.rendered, first_stats.cached, first_stats.batches) == (3, 0, 2)
    assert torch.equal(first[0].images, first[3].images)

    again_stats = IconStats()
    again = render_icons(shapes_model, icons, settings, seed=0, cache=ResultCache(tmp_path), device=CPU,
                         stats=again_stats)
    assert (again_stats.rendered, again_stats.cached, again_stats.batches) == (0, 3, 0)
    for a, b in zip(first, again):
        assert a.images.shape == (1, 3, 64, 64)
        assert torch.equal(a.images, b.images)
        assert torch.equal(a.scores, b.scores)

    # what was cached is exactly what the same render gives without a cache
    uncached = render_icons(shapes_model, icons, settings, seed=0, device=CPU)
    for a, b in zip(first, uncached):
        assert torch.equal(a.images, b.images)

    # another seed or other settings are other icons
    for seed, other in ((1, settings), (0, IconSettings(steps=9))):
        stats = IconStats()
        render_icons(shapes_model, icons[:1], other, seed=seed, cache=ResultCache(tmp_path), device=CPU, stats=stats)
        assert (stats.rendered, stats.cached) == (1, 0)


# ----------------------------------------------------------- 5. objective algebra, batch targeting
def synthetic_acts() -> dict[str, torch.Tensor]:
    """Three elements, two channels, 2×2 positions; (x=1, y=1) is the centre (W//2, H//2)."""
    t = torch.tensor([
        [[[1., 2.], [3., 4.]], [[0., 0.], [0., 2.]]],
        [[[0., 0.], [0., 0.]], [[1., 1.], [1., 1.]]],
        [[[2., 2.], [2., 2.]], [[4., 0.], [0., 0.]]],
    ])
    return {"L": t}


def scores(objective, acts=None) -> list[float]:
    return [round(float(s), 6) for s in objective(acts or synthetic_acts())]


def test_objective_basics_by_hand():
    assert scores(O.channel("L", 0)) == [2.5, 0.0, 2.0]
    assert scores(O.channel("L", 1)) == [0.5, 1.0, 1.0]
    assert scores(O.channel("L", [0, 1, 0])) == [2.5, 1.0, 2.0]  # a channel per element
    assert scores(O.neuron("L", 1)) == [2.0, 1.0, 0.0]  # the centre (1, 1)
    assert scores(O.neuron("L", 0, x=0, y=1)) == [3.0, 0.0, 2.0]
    assert scores(O.direction("L", [1.0, 1.0])) == [3.0, 1.0, 3.0]
    assert scores(O.direction_neuron("L", [1.0, 1.0])) == [6.0, 1.0, 2.0]
    assert scores(O.direction("L", torch.tensor([[1., 0.], [0., 1.], [1., 1.]]))) == [2.5, 1.0, 3.0]


def test_objective_algebra_by_hand():
    c0, c1, n1 = O.channel("L", 0), O.channel("L", 1), O.neuron("L", 1)
    assert scores(c0 + n1) == [4.5, 1.0, 2.0]
    assert scores(c0 - 2 * n1) == [-1.5, -2.0, 2.0]
    assert scores(c0 * n1) == [5.0, 0.0, 0.0]
    assert scores(-c1) == [-0.5, -1.0, -1.0]
    assert scores(3 - c0) == [0.5, 3.0, 1.0]
    assert scores(c0 + 1) == [3.5, 1.0, 3.0]
    assert scores(c0 * 0.5 + c1) == [1.75, 1.0, 2.0]
    assert scores(O.Objective.sum([c0, c1, n1])) == [5.0, 2.0, 3.0]
    assert scores(sum([c0, c1])) == [3.0, 1.0, 3.0]  # the builtin sum starts from 0
    assert c0 + 0 is c0
    assert (c0 + O.channel("M", 0) + c1).layers == ("L", "M")


def test_batch_targets_one_element():
    assert scores(O.channel("L", 0, batch=0)) == [2.5, 0.0, 0.0]
    assert scores(O.channel("L", 1, batch=2)) == [0.0, 0.0, 1.0]
    assert scores(O.neuron("L", 1, batch=1)) == [0.0, 1.0, 0.0]
    assert scores(O.direction("L", [1.0, 1.0], batch=2)) == [0.0, 0.0, 3.0]
    assert scores(O.channel("L", 0, batch=0) + O.channel("L", 1, batch=2)) == [2.5, 0.0, 1.0]
    assert scores(O.channel("L", 1, batch=-2)) == [0.0, 1.0, 0.0]
    with pytest.raises(IndexError, match="batch element 3, but the batch has 3"):
        O.channel("L", 0, batch=3)(synthetic_acts())


def test_batch_minus_one_targets_the_last_element():
    assert scores(O.channel("L", 1, batch=-1)) == [0.0, 0.0, 1.0]


def test_batch_with_per_element_parameters_uses_that_elements_row():
    assert scores(O.channel("L", [0, 1, 0], batch=1)) == [0.0, 1.0, 0.0]


def _direction_formula(t: torch.Tensor, v: torch.Tensor, p: float) -> list[float]:
    """The definition, one position at a time: mean over positions of (h·v)·max(0.1, cos(h, v))^p."""
    out = []
    for b in range(t.shape[0]):
        terms = []
        for y in range(t.shape[2]):
            for x in range(t.shape[3]):
                h = t[b, :, y, x].double()
                dot = float(h @ v.double())
                cos = dot / (float(h.norm()) * float(v.norm()) + 1e-6)
                terms.append(dot * max(0.1, cos) ** p)
        out.append(sum(terms) / len(terms))
    return out


def test_direction_with_cossim_pow_by_hand_and_by_formula():
    # element 0: positions (1,0) (2,0) (3,0) (4,2) → 1, 2, 3, 4·(4/√20)² = 3.2; element 2: 2·(2/√20)², 2, 2, 2
    assert scores(O.direction("L", [1.0, 0.0], cossim_pow=2)) == pytest.approx([2.3, 0.0, 1.6], abs=1e-5)
    # negative cosines are clamped at 0.1: −(1 + 2 + 3 + 4)/4 · 0.1
    assert scores(O.direction("L", [-1.0, 0.0], cossim_pow=1))[0] == pytest.approx(-0.25, abs=1e-5)

    g = torch.Generator().manual_seed(0)
    t = torch.randn(4, 5, 3, 3, generator=g)
    v = torch.randn(5, generator=g)
    for p in (0.0, 1.0, 2.0, 3.0):
        got = O.direction("X", v, cossim_pow=p)({"X": t})
        assert got.tolist() == pytest.approx(_direction_formula(t, v, p), rel=1e-4, abs=1e-5)
        # direction_neuron is the same formula at one position
        one = O.direction_neuron("X", v, x=2, y=0, cossim_pow=p)({"X": t})
        assert one.tolist() == pytest.approx(_direction_formula(t[:, :, :1, 2:3], v, p), rel=1e-4, abs=1e-5)


def test_direction_cossim_S_by_hand():
    # at the centre: h = (4, 2), (0, 1), (2, 0); dot = mean_c(h·v)
    assert scores(O.direction_cossim_S("L", [1.0, 1.0], cossim_pow=0)) == [3.0, 0.5, 1.0]
    # cos = dot / (1e-4 + ‖h‖): 3/√20, 0.5/1, 1/2 → score dot·cos²
    assert scores(O.direction_cossim_S("L", [1.0, 1.0])) == pytest.approx([1.35, 0.125, 0.25], rel=1e-3)
    # with S the direction is v·S: (1, 1)·diag(2, 0) = (2, 0)
    S = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    assert scores(O.direction_cossim_S("L", [1.0, 1.0], S=S, cossim_pow=0)) == [4.0, 0.0, 2.0]
    assert scores(O.direction_cossim_S("L", [1.0, 1.0], batch=1, cossim_pow=0)) == [0.0, 0.5, 0.0]


def test_whitening_is_the_inverse_second_moment():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.0, -2.0]])  # AᵀA/N = diag(0.5, 2)
    torch.testing.assert_close(O.whitening(a), torch.diag(torch.tensor([2.0, 0.5])), rtol=1e-5, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g) @ torch.randn(6, 6, generator=g)
    m = a.T @ a / a.shape[0]
    torch.testing.assert_close(O.whitening(a) @ m, torch.eye(6), rtol=0, atol=1e-3)


def test_group_is_the_direction_of_its_channel_factor():
    acts = synthetic_acts()
    factor = torch.tensor([0.3, 1.7])
    assert scores(O.group("L", factor)) == scores(O.direction("L", factor))
    assert scores(O.group("L", factor, cossim_pow=1)) == scores(O.direction("L", factor, cossim_pow=1))
    assert "group" in O.group("L", factor).name
    assert scores(O.group("L", factor, batch=0), acts) == [scores(O.direction("L", factor), acts)[0], 0.0, 0.0]
    # k rows for k elements
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert scores(O.group("L", rows), acts) == [2.5, 1.0, 3.0]


def test_diversity_by_hand():
    t = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    # identical elements: every pair has cosine 1 → −(n(n−1)/n)/n = −(n−1)/n, shared by every element
    for n in (2, 4):
        assert O.diversity("L")({"L": t.expand(n, 3, 4, 4)}).tolist() == pytest.approx([-(n - 1) / n] * n, abs=1e-6)
    # channels never active together: orthogonal Gram matrices → 0
    only0 = torch.zeros(2, 2, 2, 2)
    only0[0, 0] = 1.0
    only0[1, 1] = 3.0
    assert O.diversity("L")({"L": only0}).tolist() == pytest.approx([0.0, 0.0], abs=1e-7)
    # G0 = [[1, 0], [0, 0]], G1 = [[1, 1], [1, 1]]: cos = 1/2, pairs (0,1) and (1,0) → −(1/2 + 1/2)/2/2
    two = torch.zeros(2, 2, 1, 2)
    two[0, 0, 0, 0] = 1.0
    two[1, :, 0, 0] = 1.0
    assert O.diversity("L")({"L": two}).tolist() == pytest.approx([-0.25, -0.25], abs=1e-6)
    # post-ReLU activations: Gram matrices have non-negative entries → diversity ≤ 0
    relu = torch.randn(5, 4, 3, 3, generator=torch.Generator().manual_seed(1)).clamp(min=0)
    d = O.diversity("L")({"L": relu})
    assert d.shape == (5,) and float(d.max()) <= 0.0 and torch.all(d == d[0])


def test_objective_wrong_sizes_raise_value_error():
    acts = synthetic_acts()
    with pytest.raises(ValueError, match="2 per-element values for a batch of 3"):
        O.channel("L", [0, 1])(acts)
    with pytest.raises(ValueError, match="a direction of 3 values for a layer of 2 channels"):
        O.direction("L", [1.0, 2.0, 3.0])(acts)
    with pytest.raises(ValueError, match="2 directions for a batch of 3"):
        O.direction_neuron("L", torch.ones(2, 2))(acts)
    with pytest.raises(ValueError, match="a direction of 3 values for a layer of 2 channels"):
        O.direction_cossim_S("L", [1.0, 2.0, 3.0])(acts)
    with pytest.raises(ValueError, match="at least one objective"):
        O.Objective.sum([])
    with pytest.raises(ValueError, match="one layer, kind and cossim_pow"):
        icon_objective([Icon("L", "channel", index=0), Icon("L", "neuron", index=0)])
    with pytest.raises(ValueError, match="unknown icon kind 'blob'"):
        icon_objective([Icon("L", "blob", vector=(1.0, 0.0))])


def test_render_vis_wrong_number_of_seeds(shapes_model):
    with pytest.raises(ValueError, match="1 seeds for 2 images"):
        render_vis(shapes_model, O.channel("conv3", 0), 2, IconSettings(steps=1), seeds=[5], device=CPU)


# ------------------------------------------------------------------- 6. parameterisation, transforms
@pytest.mark.parametrize("kind", ["fourier", "pixels"])
@pytest.mark.parametrize("h,w", [(32, 32), (20, 36), (17, 23)])
def test_image_param_shape_range_and_gradient(kind, h, w):
    param = ImageParam(kind, [1, 2], h, w)
    img = param()
    assert img.shape == (2, 3, h, w)
    assert float(img.detach().min()) > 0.0 and float(img.detach().max()) < 1.0
    (img * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
    (p,) = list(param.parameters())
    assert p.grad is not None and torch.isfinite(p.grad).all() and float(p.grad.abs().max()) > 0


@pytest.mark.parametrize("kind", ["fourier", "pixels"])
def test_image_param_depends_only_on_its_own_seed(kind):
    both = ImageParam(kind, [5, 7], 16, 24)()
    alone = ImageParam(kind, [7], 16, 24)()
    assert torch.equal(both[1], alone[0])
    assert not torch.allclose(both[0], both[1])


def test_fourier_scaling_is_lucids():
    """lucid fft_image: spectrum · sqrt(h·w) / max(f, 1/max(h, w)), irfft2 (1/(h·w)), then / 4."""
    n = 16
    p = ImageParam("fourier", [0], n, n)
    with torch.no_grad():
        p.spectrum.zero_()
        p.spectrum[0, 0, 0, 0, 0] = 2.0  # DC of the first channel: 2 · n · n / n² / 4
        p.spectrum[0, 1, 0, 3, 0] = 1.5  # kx = 3 of the second: 2 · 1.5 · (n/3) · n / n² / 4 · cos(2π·3x/n)
    raw = p.raw()[0]
    torch.testing.assert_close(raw[0], torch.full((n, n), 0.5))
    x = torch.arange(n, dtype=torch.float32)
    wave = 1.5 / (2 * 3) * torch.cos(2 * math.pi * 3 * x / n)
    torch.testing.assert_close(raw[1], wave.expand(n, n), rtol=1e-4, atol=1e-6)
    # a non-square image: DC scale max(h, w) · sqrt(h·w) / (h·w) / 4
    q = ImageParam("fourier", [0], 8, 32)
    with torch.no_grad():
        q.spectrum.zero_()
        q.spectrum[0, 2, 0, 0, 0] = 1.0
    torch.testing.assert_close(q.raw()[0, 2], torch.full((8, 32), 32 / math.sqrt(8 * 32) / 4))


def test_colour_decorrelation_is_lucids_normalised_matrix():
    lucid = np.array([[0.26, 0.09, 0.02],
                      [0.27, 0.00, -0.05],
                      [0.27, -0.09, 0.03]], dtype="float32")
    expected = lucid / np.max(np.linalg.norm(lucid, axis=0))
    np.testing.assert_allclose(COLOR_CORRELATION_NORMALIZED.numpy(), expected, rtol=1e-6)
    # lucid multiplies every pixel's colour by the matrix transposed: out_d = Σ_c M[d, c] · in_c
    p = ImageParam("pixels", [0], 2, 2)
    t = torch.zeros(1, 3, 2, 2)
    t[0, 0] = 1.0
    torch.testing.assert_close(p.to_rgb(t)[0, :, 0, 0], torch.sigmoid(torch.from_numpy(expected[:, 0])))
    plain = ImageParam("pixels", [0], 2, 2, decorrelate=False)
    torch.testing.assert_close(plain.to_rgb(t), torch.sigmoid(t))


def test_unknown_parameterisation():
    with pytest.raises(ValueError, match="unknown parameterisation 'fft'.*fourier, pixels"):
        ImageParam("fft", [0], 8, 8)


def test_standard_transforms_are_lucids():
    steps = T.normalize_steps("standard")
    assert [k for k, _ in steps] == ["pad", "jitter", "scale", "rotate", "jitter"]
    assert steps[0] == ("pad", 12)
    assert steps[1] == ("jitter", 8)
    assert list(steps[2][1]) == pytest.approx([0.90, 0.92, 0.94, 0.96, 0.98, 1.00, 1.02, 1.04, 1.06, 1.08, 1.10])
    assert list(steps[3][1]) == list(range(-10, 11)) + [0, 0, 0, 0, 0]
    assert steps[4] == ("jitter", 4)
    assert T.normalize_steps(None) == T.normalize_steps("none") == ()


def test_normalize_steps_lists():
    spec = [{"pad": 4}, {"jitter": 2}, {"scale": [0.95, 1.05]}, {"rotate": 5}, ("jitter", 1)]
    steps = T.normalize_steps(spec)
    assert steps == (("pad", 4), ("jitter", 2), ("scale", (0.95, 1.05)), ("rotate", (5.0,)), ("jitter", 1))
    assert T.normalize_steps(steps) == steps  # normalised steps are a valid spec (settings keys use this)


@pytest.mark.parametrize("spec,message", [
    ([{"jiter": 2}], r"step 0: unknown kind 'jiter'.*did you mean 'jitter'"),
    ([{"pad": 2}, {"rotat": [1, 2]}], r"step 1: unknown kind 'rotat'.*did you mean 'rotate'"),
    ([{"scael": 1.1}], r"unknown kind 'scael'.*did you mean 'scale'"),
    ("standart", r"use standard, none, or a list"),
    ([{"pad": -1}], r"pad takes a whole number of pixels"),
    ([{"jitter": 1.5}], r"jitter takes a whole number of pixels"),
    ([{"scale": [1.0, 0.0]}], r"scale factors must be > 0"),
    ([{"rotate": []}], r"rotate takes a number or a list"),
    ([{"pad": 1, "jitter": 1}], r"step 0 must be a one-key mapping"),
])
def test_bad_transform_steps(spec, message):
    with pytest.raises(ValueError, match=message):
        T.normalize_steps(spec)


def test_apply_pad_and_jitter_sizes_and_values():
    x = torch.rand(2, 3, 40, 30, generator=torch.Generator().manual_seed(0))
    padded = T.apply(x, (("pad", 5),), T.Draw((None,)))
    assert padded.shape == (2, 3, 50, 40)
    assert torch.equal(padded[..., 5:45, 5:35], x)
    assert torch.all(padded[..., :5, :] == 0.5) and torch.all(padded[..., :, -5:] == 0.5)

    steps = (("pad", 5), ("jitter", 3))
    d = T.draw(steps, torch.Generator().manual_seed(1))
    dy, dx = d.values[1]
    assert 0 <= dy <= 3 and 0 <= dx <= 3
    out = T.apply(x, steps, d)
    assert out.shape == (2, 3, 47, 37) and T.output_size(40, 30, steps) == (47, 37)
    assert torch.equal(out, padded[..., dy:dy + 47, dx:dx + 37])


def test_crop_or_pad_centres_the_image_at_the_given_size():
    x = torch.rand(1, 3, 10, 7, generator=torch.Generator().manual_seed(0))
    steps = T.normalize_steps([{"crop_or_pad": 8}])
    out = T.apply(x, steps, T.draw(steps, torch.Generator().manual_seed(0)))
    assert out.shape == (1, 3, 8, 8) and T.output_size(10, 7, steps) == (8, 8)
    assert torch.equal(out[..., :, 7], torch.full((1, 3, 8), 0.5))  # 7 → 8 columns: the odd one is padded on the right
    assert torch.equal(out[..., :, :7], x[..., 1:9, :])  # rows 1..8 of 10: a centred crop
    with pytest.raises(ValueError, match="crop_or_pad takes a whole number of pixels ≥ 1"):
        T.normalize_steps([{"crop_or_pad": 0}])


def test_apply_standard_sizes_and_identity_resample():
    x = torch.rand(1, 3, 40, 30, generator=torch.Generator().manual_seed(0))
    steps = T.normalize_steps("standard")
    assert T.output_size(40, 30, steps) == (52, 42)  # + 2·12 − 8 − 4
    # scale 1, rotate 0: no resampling at all
    ident = T.apply(x, steps, T.Draw((None, (8, 0), 1.0, 0, (0, 4))))
    assert ident.shape == (1, 3, 52, 42)
    top, left = 12 - 8 - 0, 12 - 0 - 4  # pad − the two jitters' offsets
    assert torch.equal(ident[..., top:top + 40, left:left + 30], x)
    # scale 1.1 after pad/jitter (56×46) gives round(61.6)×round(50.6), then the last jitter 4
    big = T.apply(x, steps, T.Draw((None, (0, 0), 1.1, 0, (0, 0))))
    assert big.shape == (1, 3, 58, 47)
    # a rotation of a constant image keeps it constant (the border is the pad colour)
    grey = T.apply(torch.full((1, 3, 40, 30), 0.5), steps, T.Draw((None, (3, 5), 0.94, -7, (1, 2))))
    torch.testing.assert_close(grey, torch.full_like(grey, 0.5))


def test_draw_is_reproducible_and_apply_differentiable():
    steps = T.normalize_steps("standard")
    draws = [T.draw(steps, torch.Generator().manual_seed(9)) for _ in range(2)]
    assert draws[0] == draws[1]
    g = torch.Generator().manual_seed(3)
    seen = {T.draw(steps, g).values[3] for _ in range(200)}
    assert seen <= set(range(-10, 11)) and len(seen) > 10

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = T.apply(x, steps, T.Draw((None, (2, 6), 1.06, 7, (3, 1))))
    (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().min()) >= 0 and float(x.grad.abs().max()) > 0


# ------------------------------------------------------------- 7. forward stops at the deepest layer
def test_forward_stops_at_the_deepest_layer_the_objective_reads(shapes_model):
    module = frozen_copy(shapes_model, CPU, ["conv3", "conv2"])  # the network the optimisation runs
    calls = {"conv2": 0, "conv3": 0, "conv4": 0, "fc": 0}

    def counter(name):
        def fn(_m, _i, _o):
            calls[name] += 1
        return fn

    handles = [module.get_submodule(n).register_forward_hook(counter(n)) for n in calls]
    try:
        objective = O.channel("conv3", 5) + O.channel("conv2", 1)
        render_vis(shapes_model, objective, 2, IconSettings(steps=3), seed=0, device=CPU)
    finally:
        for h in handles:
            h.remove()
    # 3 optimisation steps and one final evaluation; nothing after conv3 ever runs
    assert calls == {"conv2": 4, "conv3": 4, "conv4": 0, "fc": 0}
    # the engine's own hooks (capture, redirected ReLU) are gone too
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


# -------------------------------------------------------------------------- 8. activation grid
def test_activation_grid_shapes_magnitude_and_images_per_step(shapes_model):
    images = generate(range(1), split="test").images
    acts, _ = run_capture(shapes_model.module, shapes_model.preprocess(images), ["conv3", "conv4"], grad=False)
    first = frozen_copy(shapes_model, CPU, ["conv4"]).get_submodule("conv1")  # the network the grid runs
    for layer, cells in (("conv4", 64), ("conv3", 256)):
        act = acts[layer][0]
        batch_sizes = []
        handle = first.register_forward_pre_hook(lambda _m, inp, sizes=batch_sizes: sizes.append(inp[0].shape[0]))
        try:
            grid = activation_grid(shapes_model, act, layer, cell_size=16, steps=6, sample=5, seed=0, device=CPU)
        finally:
            handle.remove()
        h, w = act.shape[1:]
        assert h * w == cells
        # every optimisation step feeds `sample` images, however many cells there are; the final
        # evaluation renders every cell once
        assert batch_sizes[:6] == [5] * 6
        assert sum(batch_sizes[6:]) == cells
        assert grid.icons.shape == (h, w, 3, 16, 16)
        assert float(grid.icons.min()) >= 0.0 and float(grid.icons.max()) <= 1.0
        torch.testing.assert_close(grid.magnitude, act.norm(dim=0))
        assert grid.scores.shape == (h, w) and torch.isfinite(grid.scores).all()
        assert float((grid.icons[0, 0] - grid.icons[h // 2, w // 2]).abs().max()) > 0.0


def test_render_icons_halves_the_batch_on_out_of_memory(shapes_model, monkeypatch):
    """A batch that does not fit is split (a real out-of-memory error cannot be provoked on CPU, so
    the optimisation raises torch's OutOfMemoryError for batches above 2 icons)."""
    import interpgram.backends.kernels.optvis.render as R
    real = R.render_vis
    sizes = []

    def limited(model, objective, n, *a, **kw):
        sizes.append(n)
        if n > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, objective, n, *a, **kw)

    monkeypatch.setattr(R, "render_vis", limited)
    stats = R.IconStats()
    icons = [Icon("conv3", "channel", index=c) for c in range(5)]
    out = R.render_icons(shapes_model, icons, IconSettings(steps=3, size=24), device=CPU, stats=stats)
    assert sizes[:2] == [5, 2] and max(sizes[2:]) <= 2
    assert stats.halvings >= 1 and stats.rendered == 5 and len(out) == 5
    alone = real(shapes_model, O.channel("conv3", torch.tensor([4])), 1, IconSettings(steps=3, size=24),
                 seeds=[R._seed_int(0, icons[4].identity())], device=CPU)
    torch.testing.assert_close(out[4].images, alone.images)  # the last icon ran alone (batch of 1)


def test_auto_runs_the_steps_in_bfloat16_where_it_is_native(shapes_model):
    """autocast auto: bfloat16 steps on cuda and on a CPU whose /proc/cpuinfo flags say AMX or
    AVX512-BF16 (1.93× faster on a Xeon with AMX), float32 on any other CPU (0.12× there); the final,
    reported scores are float32 either way."""
    from interpgram.backends.execute.device import _cpu_flags, native_bfloat16
    native = bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())
    assert native_bfloat16(CPU) is native
    assert native_bfloat16(torch.device("cuda")) and not native_bfloat16(torch.device("meta"))
    if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64"):
        assert "sse2" in _cpu_flags()  # the flags line was read (every x86-64 CPU has SSE2)
    seen = []
    h = shapes_model.module.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        for mode in ("auto", "off", "bfloat16"):
            seen.clear()
            r = render_vis(shapes_model, O.channel("conv3", [1, 2]), 2, IconSettings(steps=2, autocast=mode),
                           device=CPU, frozen=False)
            steps, final = seen[:-1], seen[-1]
            want = torch.bfloat16 if mode == "bfloat16" or (mode == "auto" and native) else torch.float32
            assert steps and all(d == want for d in steps), (mode, steps)
            assert final == torch.float32 and r.scores.dtype == torch.float32
    finally:
        h.remove()


def test_bfloat16_autocast_keeps_icon_quality(shapes_model, data_conv4):
    """The claim behind autocast on cuda, checked on CPU (same bfloat16 autocast): icons optimised
    through a bfloat16 model reach the float32-scored objective of float32 icons (within 5%), and
    still beat every data image."""
    from interpgram.backends.kernels.capture import run_capture
    chans = torch.arange(8)
    objective = O.channel("conv4", chans)
    scores = {}
    for mode in ("off", "bfloat16"):
        r = render_vis(shapes_model, objective, 8, IconSettings(steps=64, autocast=mode), device=CPU)
        with torch.no_grad():
            acts, _ = run_capture(shapes_model.module, shapes_model.preprocess(r.images), ["conv4"], grad=False)
        scores[mode] = acts["conv4"][torch.arange(8), chans].mean((1, 2))
    assert float(scores["bfloat16"].mean()) > 0.95 * float(scores["off"].mean())
    best_data = data_conv4[:, :8].mean((2, 3)).max(0).values
    assert bool((scores["bfloat16"] > best_data).all())
    with pytest.raises(ValueError, match="autocast 'fp8'"):
        IconSettings(autocast="fp8")
