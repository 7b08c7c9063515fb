"""The activation grid: one icon per position of a layer, for one image.

The article's technique (lucid ``misc/adversarial_activation_grids.ipynb``, the "less naive"
render, as in the Building Blocks article's activation grid): factorise the image's positions × channels activations with NMF
into ``k`` groups; divide each group's spatial factor by its maximum; give every cell its own
Fourier image and every group one shared Fourier image, and draw cell ``i`` as
``to_valid_rgb(0.7 · own_i + 0.5 · Σ_j g_ij · shared_j)``, so that similar positions share
parameters. Each step optimises a random sample of cells (64, with replacement) for
``direction(layer, a_i)`` of their own activation vector, under the robustness transforms, so the
cost of a step does not grow with the number of cells. Each icon is finally cropped by ``crop`` px.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from interpgram.backends.execute.device import pick_device
from interpgram.backends.kernels.factorize import neuron_groups
from interpgram.backends.kernels.frozen import frozen_copy
from interpgram.backends.kernels.optvis import objectives as O
from interpgram.backends.kernels.optvis.param import ImageParam
from interpgram.backends.kernels.optvis.render import _capture, _seed_int
from interpgram.backends.kernels.optvis.transforms import apply, draw, normalize_steps


@dataclass
class GridResult:
    icons: torch.Tensor  # (H, W, 3, s, s) in [0, 1], CPU
    magnitude: torch.Tensor  # (H, W): ‖a‖ at each position
    scores: torch.Tensor  # (H, W): each final icon's objective (untransformed)
    seconds: float


def activation_grid(model, act: torch.Tensor, layer: str, *, cell_size: int = 32, steps: int = 256,
                    lr: float = 0.05, groups: int = 6, sample: int = 64, transforms="standard",
                    decorrelate: bool = True, cossim_pow: float = 0.0, crop: int = 2, seed: int = 0,
                    device="auto", autocast: str = "auto", progress: Optional[Callable[[str, int, int], None]] = None) -> GridResult:
    """Render the activation grid of one image's activation ``act`` (C, H, W) at ``layer``."""
    t0 = time.perf_counter()
    progress = progress or (lambda stage, i, n: None)
    dev = pick_device(device) if isinstance(device, str) else device
    module = frozen_copy(model, dev, [layer])
    c, h, w = act.shape
    n = h * w
    vectors = act.detach().float().reshape(c, n).T.contiguous().to(dev)  # (n, C), row-major positions
    k = max(1, min(groups, n, c))
    nmf = neuron_groups(act.detach().float().to(dev), k, seed=seed)
    g = nmf.spatial.reshape(k, n).T.float()  # (n, k)
    g = g / g.max(0, keepdim=True).values.clamp(min=1e-8)
    size = cell_size + 2 * crop
    own = ImageParam("fourier", [_seed_int(seed, "cell", i) for i in range(n)], size, size,
                     decorrelate=decorrelate).to(dev)
    shared = ImageParam("fourier", [_seed_int(seed, "group", j) for j in range(k)], size, size,
                        decorrelate=decorrelate).to(dev)
    steps_t = normalize_steps(transforms)

    def images(idx: torch.Tensor) -> torch.Tensor:
        raw = 0.7 * own.raw(idx) + 0.5 * torch.einsum("bk,kchw->bchw", g[idx], shared.raw())
        return own.to_rgb(raw)

    opt = torch.optim.Adam(list(own.parameters()) + list(shared.parameters()), lr=lr)
    gen = torch.Generator().manual_seed(_seed_int(seed, "grid"))
    for step in range(steps):
        idx = torch.randint(0, n, (sample,), generator=gen).to(dev)
        opt.zero_grad(set_to_none=True)
        x = apply(images(idx), steps_t, draw(steps_t, gen))
        acts = _capture(module, model.preprocess(x), [layer], redirect=False, autocast=autocast)
        score = O.direction(layer, vectors[idx], cossim_pow=cossim_pow)(acts)
        (-score.sum()).backward()
        opt.step()
        progress("activation grid", step + 1, steps)
    with torch.no_grad():
        out, scores = [], []
        for start in range(0, n, 256):
            idx = torch.arange(start, min(n, start + 256), device=dev)
            img = images(idx)
            s = O.direction(layer, vectors[idx], cossim_pow=cossim_pow)(
                _capture(module, model.preprocess(img), [layer], redirect=False, autocast=autocast))
            if crop:
                img = img[..., crop:-crop, crop:-crop]
            out.append(img.float().cpu())
            scores.append(s.float().cpu())
    icons = torch.cat(out).reshape(h, w, 3, cell_size, cell_size)
    return GridResult(icons, vectors.norm(dim=1).reshape(h, w).cpu(), torch.cat(scores).reshape(h, w),
                      time.perf_counter() - t0)
