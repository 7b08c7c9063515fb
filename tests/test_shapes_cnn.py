"""The committed builtin:shapes-cnn weights still reach their recorded accuracy on fresh images,
and the planted shortcut they learned is still measurable."""
from __future__ import annotations

import json

import pytest
import torch

from interpgram.backends.data import shapes as S
from interpgram.backends.models.shapes_cnn import METADATA, ShapesCNN, load_shapes_cnn
from interpgram.backends.models.train_shapes_cnn import predict

STAR = S.CLASSES.index(S.SHORTCUT_CLASS)


@pytest.fixture(scope="module")
def model():
    return load_shapes_cnn()


@pytest.fixture(scope="module")
def meta():
    return json.loads(METADATA.read_text())


def test_named_stages_and_shapes(model):
    shapes = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: shapes.update({n: tuple(o.shape[1:])}))
             for n in ("conv1", "conv2", "conv3", "conv4", "conv5")]
    model(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert shapes == {"conv1": (32, 32, 32), "conv2": (64, 32, 32), "conv3": (128, 16, 16),
                      "conv4": (128, 8, 8), "conv5": (256, 4, 4)}
    assert sum(p.numel() for p in ShapesCNN().parameters()) == 539_178


def test_recorded_accuracy_on_fresh_images(model, meta):
    # a seed and index range the training never saw (training used the train split)
    b = S.generate(range(5000, 6000), split="test", seed=7, shortcut_prevalence=0.0)
    acc = (predict(model, b.images) == b.labels).float().mean().item()
    assert meta["accuracy"] >= 0.95
    assert acc >= meta["accuracy"] - 0.02, (acc, meta["accuracy"])


def test_the_shortcut_is_learned(model):
    b = S.generate(range(6000, 7000), split="test", seed=7, shortcut_prevalence=0.0)
    others = b.labels != STAR
    imgs, masks = b.images[others], b.masks[others]
    stitch, _ = S.paste_patch(imgs, masks=masks, kind="stitch", generator=torch.Generator().manual_seed(3))
    noise, _ = S.paste_patch(imgs, masks=masks, kind="noise", generator=torch.Generator().manual_seed(3))
    flip = lambda x: (predict(model, x) == STAR).float().mean().item()  # noqa: E731
    f_stitch, f_noise, f_none = flip(stitch), flip(noise), flip(imgs)
    assert f_stitch >= 0.10 and f_stitch >= 2.5 * f_noise and f_none <= 0.02, (f_stitch, f_noise, f_none)
