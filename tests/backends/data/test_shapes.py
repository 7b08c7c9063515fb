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


def test_every_image_has_an_object_and_the_class_shapes_are_what_they_say(train):
    assert train.masks.flatten(1).any(1).all()
    # the pixel at the centre of the box: filled for solid shapes, a hole for ring and frame
    cx = (train.boxes[:, 0] + train.boxes[:, 2]) // 2
    cy = (train.boxes[:, 1] + train.boxes[:, 3]) // 2
    centre = train.masks[torch.arange(len(train)), cy, cx]
    for name in ("circle", "square", "star", "cross", "ellipse"):
        sel = train.labels == S.CLASSES.index(name)
        assert centre[sel].all(), name
    for name in ("ring", "frame"):
        sel = train.labels == S.CLASSES.index(name)
        assert not centre[sel].any(), name


def test_the_test_split_carries_the_shortcut_unless_told_otherwise():
    default = S.generate(range(600), split="test")
    star = default.labels == STAR
    assert default.patched[star].float().mean() > 0.75 and not default.patched[~star].any()
    assert not S.generate(range(600), split="test", shortcut_prevalence=0.0).patched.any()
    assert torch.equal(S.generate(range(600), split="test", shortcut_prevalence=1.0).patched, star)


def test_the_patch_keeps_a_gap_around_the_object(train):
    dilated = torch.nn.functional.max_pool2d(train.masks.float().unsqueeze(1), 5, stride=1, padding=2).squeeze(1) > 0
    rows = torch.nonzero(train.patched).flatten().tolist()
    assert len(rows) > 100
    for i in rows:
        x0, y0, x1, y1 = train.patch_boxes[i].tolist()
        assert not dilated[i, y0:y1, x0:x1].any()
    assert (train.patch_boxes[~train.patched] == 0).all()


def test_paste_patch_at_explicit_boxes():
    clean = S.generate(range(4), split="test", shortcut_prevalence=0.0)
    at = torch.tensor([[0, 0, 9, 9], [10, 20, 19, 29], [55, 55, 64, 64], [30, 1, 39, 10]])
    out, boxes = S.paste_patch(clean.images, at)
    assert torch.equal(boxes, at)
    for i, (x0, y0, x1, y1) in enumerate(at.tolist()):
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        changed = (out[i] != clean.images[i]).any(0)
        assert changed[inside].float().mean() > 0.5 and not changed[~inside].any()
    one, one_boxes = S.paste_patch(clean.images, [5, 5, 15, 15], kind="noise")  # one box for all images
    assert (one_boxes == torch.tensor([5, 5, 15, 15])).all()
    assert not torch.equal(one[0, :, 5:15, 5:15], one[1, :, 5:15, 5:15])  # fresh noise per image
    with pytest.raises(ValueError, match="squares"):
        S.paste_patch(clean.images, [0, 0, 9, 8])
    with pytest.raises(ValueError, match="inside"):
        S.paste_patch(clean.images, [60, 60, 69, 69])
    with pytest.raises(ValueError, match="one box per image"):
        S.paste_patch(clean.images, at[:3])
    with pytest.raises(ValueError, match="not both"):
        S.paste_patch(clean.images, at, masks=clean.masks)
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)"):
        S.paste_patch(clean.images[0])


def test_paste_patch_is_reproducible_and_the_default_size_is_the_trained_one():
    clean = S.generate(range(8), split="test", shortcut_prevalence=0.0)
    a, boxes = S.paste_patch(clean.images, masks=clean.masks, generator=torch.Generator().manual_seed(5))
    b, _ = S.paste_patch(clean.images, masks=clean.masks, generator=torch.Generator().manual_seed(5))
    c, other = S.paste_patch(clean.images, masks=clean.masks, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(boxes, other)
    assert ((boxes[:, 2] - boxes[:, 0]) == 9).all() and ((boxes[:, 3] - boxes[:, 1]) == 9).all()


def test_other_sizes_scale_everything():
    small = S.generate(range(300), split="train", size=32)
    assert small.images.shape == (300, 3, 32, 32) and small.masks.shape == (300, 32, 32)
    assert small.masks.flatten(1).any(1).all()
    sides = (small.patch_boxes[small.patched, 2] - small.patch_boxes[small.patched, 0]).unique().tolist()
    assert small.patched.any() and set(sides) <= {4, 5}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown split 'val'"):
        S.generate([0], split="val")
    with pytest.raises(ValueError, match="non-negative"):
        S.generate([-1])
    with pytest.raises(ValueError, match="shortcut_prevalence"):
        S.generate([0], shortcut_prevalence=1.5)
    with pytest.raises(TypeError, match="integers"):
        S.generate([0.5])
    assert len(S.generate([])) == 0


def test_dataset_batches_and_dicts_match_generate():
    ds = S.ShapesDataset(split="train", length=40, seed=3, offset=100, return_dict=True)
    ref = S.generate(range(100, 140), split="train", seed=3)
    item = ds[5]
    assert torch.equal(item["image"], ref.images[5]) and item["label"] == int(ref.labels[5])
    assert torch.equal(item["mask"], ref.masks[5]) and item["index"] == 105
    loader = torch.utils.data.DataLoader(S.ShapesDataset(split="train", length=40, seed=3, offset=100), batch_size=16)
    images, labels = next(iter(loader))
    assert torch.equal(images, ref.images[:16]) and torch.equal(labels, ref.labels[:16])
    assert torch.equal(ds[-1]["image"], ref.images[39])
    with pytest.raises(IndexError):
        ds[40]
