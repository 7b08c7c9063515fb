"""The activation-atlas article's patch experiment, for every cell of a class atlas.

The article found a cell of its "fireboat"/"grey whale" class atlases that looked like baseball
stitches, pasted that icon onto images of other classes and measured how often the prediction
flipped. Here every cell of a class atlas gets that test, so the report shows which regions of the
atlas the model treats as evidence strong enough to decide the class on their own:

1. images: the first data-set images of ``split`` that the model does **not** predict as the class
   (``n`` of them, from at most ``20 n`` read);
2. places: one random square of ``size`` px per image, drawn once (seeded) and used for every cell;
3. patch: the cell's icon — its centre ``size`` × ``size`` px (``crop: centre``: the icon at its own
   scale, as the model saw it while it was optimised) or the whole icon scaled down (``whole``);
4. flip: the fraction of the images whose prediction becomes the class with the patch pasted;
   **control**: the same places with a uniform-noise patch of the same size.

The predictions run through the network's frozen copy (:mod:`~interpgram.backends.kernels.frozen`:
BatchNorm folded, channels-last; the logits agree with the module as loaded to ~1e-6), in batches of
64 (``python benchmarks/vs_old.py``: the class atlas's patch-test stage took 13.8 s against 44.1 s
before, 2 CPU cores).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from interpgram.backends.data.datasets import open_dataset
from interpgram.backends.execute.cache import cache_key, tensor_digest
from interpgram.backends.execute.context import Context, Values, kernel
from interpgram.backends.kernels.capture import logits_of
from interpgram.backends.kernels.frozen import channels_last, frozen_copy
from interpgram.grammar.plan import PatchTest


def _patch(icon: torch.Tensor, size: int, crop: str) -> torch.Tensor:
    s = icon.shape[-1]
    if crop == "centre" and size <= s:
        a = (s - size) // 2
        return icon[:, a:a + size, a:a + size]
    return F.interpolate(icon[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


#: images per forward pass of the patch test (a small batch stays in the CPU's cache)
BATCH = 64


def _predict(module, preprocess, x: torch.Tensor, device, batch: int = BATCH) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for a in range(0, x.shape[0], batch):
            out.append(logits_of(module(channels_last(preprocess(x[a:a + batch].to(device))))).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _paste(images: torch.Tensor, patch: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    out = images.clone()
    s = patch.shape[-1]
    for i, (x, y) in enumerate(at.tolist()):
        out[i, :, y:y + s, x:x + s] = patch if patch.dim() == 3 else patch[i]
    return out


@kernel(PatchTest, pieces="cached under its icons' digest")
def run_patch_tests(ctx: Context, ops: list[PatchTest], values: Values) -> Values:
    return {op.id: run_patch_test(ctx, op, values[op.icons]["images"]) for op in ops}


def run_patch_test(ctx: Context, op: PatchTest, icons: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"flip": (M,) per cell, "noise": (1,) control, "n": (1,) images used, "size": (1,)}``, cached
    (kind ``PatchTest``, keyed by the icons' digest)."""

    key = cache_key(model=ctx.model.digest, what="atlas patch test", icons=tensor_digest(icons), cls=op.cls,
                    size=op.size, crop=op.crop, n=op.n, dataset=op.dataset, split=op.split, seed=op.seed)
    hit = ctx.cache.get("PatchTest", key)
    if hit is not None:
        return hit
    t = time.perf_counter()
    # the frozen, BatchNorm-folded, channels-last copy: the same logits (to ~1e-6), less work
    module = frozen_copy(ctx.model, ctx.device, ())
    pre = ctx.model.preprocess
    h, w = pre.size
    size = min(op.size, h, w)
    ds = open_dataset(op.dataset, n=20 * op.n, split=op.split, size=pre.fit, base_dir=ctx.base_dir,
                      allow_code=ctx.allow_code)
    kept: list[torch.Tensor] = []
    got = 0
    for a in range(0, len(ds), 256):
        imgs = ds.load(range(a, min(a + 256, len(ds))))
        pred = _predict(module, pre, imgs, ctx.device)
        imgs = imgs[pred != op.cls]
        kept.append(imgs[:op.n - got])
        got += kept[-1].shape[0]
        if got >= op.n:
            break
    images = torch.cat(kept) if kept else torch.zeros(0, 3, h, w)
    m = images.shape[0]
    g = torch.Generator().manual_seed(op.seed)
    at = torch.stack([torch.randint(0, w - size + 1, (m,), generator=g),
                      torch.randint(0, h - size + 1, (m,), generator=g)], 1)
    noise = torch.rand(m, 3, size, size, generator=g)
    flips = []
    total = icons.shape[0]
    for j in range(total):
        pred = _predict(module, pre, _paste(images, _patch(icons[j].float(), size, op.crop), at), ctx.device)
        flips.append(float((pred == op.cls).float().mean()) if m else 0.0)
        ctx.progress("patch test: each cell's icon pasted", j + 1, total)
    pred = _predict(module, pre, _paste(images, noise, at), ctx.device)
    out = {"flip": torch.tensor(flips, dtype=torch.float32),
           "noise": torch.tensor([float((pred == op.cls).float().mean()) if m else 0.0]),
           "n": torch.tensor([m]), "size": torch.tensor([size])}
    ctx.cache.put("PatchTest", key, out)
    ctx.stats.add_time("atlas patch test", time.perf_counter() - t)
    return out
