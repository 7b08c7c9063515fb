"""builtin:shapes: determinism, ground truth, and the planted shortcut's placement."""
from __future__ import annotations

import pytest
import torch

from interpgram.backends.data import shapes as S

STAR = S.CLASSES.index(S.SHORTCUT_CLASS)


@pytest.fixture(scope="module")
def train():
    return S.generate(range(1500), split="train")


def test_each_image_is_a_pure_function_of_seed_split_index():
    one = S.generate([7], split="test")
    many = S.generate(range(32), split="test")
    assert torch.equal(one.images[0], many.images[7]) and one.labels[0] == many.labels[7]
    assert torch.equal(one.masks[0], many.masks[7])
    assert not torch.equal(S.generate([7], split="train").images[0], one.images[0])
    assert not torch.equal(S.generate([7], split="test", seed=1).images[0], one.images[0])


def test_shapes_types_and_ranges(train):
    assert train.images.shape == (1500, 3, 64, 64) and train.images.dtype == torch.float32
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert train.labels.dtype == torch.int64 and train.masks.dtype == torch.bool
    assert set(train.labels.tolist()) == set(range(len(S.CLASSES))) and len(S.CLASSES) >= 8


def test_masks_are_inside_their_boxes(train):
    for i in range(0, 1500, 7):
        m = train.masks[i]
        assert m.any()
        x0, y0, x1, y1 = train.boxes[i].tolist()
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert int(xs.min()) == x0 and int(xs.max()) == x1 - 1 and int(ys.min()) == y0 and int(ys.max()) == y1 - 1


def test_patch_only_on_the_shortcut_class_at_the_stated_prevalence(train):
    patched = train.patched
    assert not patched[train.labels != STAR].any()
    rate = patched[train.labels == STAR].float().mean().item()
    n = int((train.labels == STAR).sum())
    assert abs(rate - S.SHORTCUT_PREVALENCE) < 4 * (0.9 * 0.1 / n) ** 0.5, (rate, n)


def test_patch_keeps_away_from_the_object(train):
    for i in torch.nonzero(train.patched).flatten().tolist():
        x0, y0, x1, y1 = train.patch_boxes[i].tolist()
        assert 8 <= x1 - x0 <= 10
        assert not train.masks[i, y0:y1, x0:x1].any()


def test_clean_images_differ_only_where_the_patch_was():
    a = S.generate(range(200), split="test")
    b = S.generate(range(200), split="test", shortcut_prevalence=0.0)
    for i in torch.nonzero(a.patched).flatten().tolist():
        x0, y0, x1, y1 = a.patch_boxes[i].tolist()
        diff = (a.images[i] != b.images[i]).any(0)
        assert diff.any() and not diff[:y0].any() and not diff[y1:].any()
    same = ~a.patched
    assert torch.equal(a.images[same], b.images[same])


def test_paste_patch_stitch_and_noise():
    clean = S.generate(range(16), split="test", shortcut_prevalence=0.0)
    g = torch.Generator().manual_seed(0)
    stitched, boxes = S.paste_patch(clean.images, masks=clean.masks, kind="stitch", generator=g)
    noised, nboxes = S.paste_patch(clean.images, masks=clean.masks, kind="noise", generator=torch.Generator().manual_seed(0))
    assert torch.equal(boxes, nboxes)  # same places, different content
    for i in range(16):
        x0, y0, x1, y1 = boxes[i].tolist()
        p = stitched[i, :, y0:y1, x0:x1]
        red = (p[0] > 0.6) & (p[1] < 0.3) & (p[2] < 0.3)
        white = (p > 0.85).all(0)
        assert red.any() and white.float().mean() > 0.3  # a white patch with a red seam
        assert not torch.equal(p, noised[i, :, y0:y1, x0:x1])
    assert torch.equal(clean.images, S.generate(range(16), split="test", shortcut_prevalence=0.0).images)  # not modified
    with pytest.raises(ValueError, match="unknown patch kind"):
        S.paste_patch(clean.images, kind="glitter")


def test_dataset_wrapper():
    ds = S.ShapesDataset(split="test", length=10)
    img, label = ds[3]
    assert img.shape == (3, 64, 64) and torch.equal(img, S.generate([3], split="test").images[0])
    assert len(ds) == 10
