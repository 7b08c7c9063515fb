"""Inputs given in Python: tensors, numpy arrays, PIL images, paths and refs → :class:`Inputs`.

Every image ends as (3, H, W) float32 in [0, 1] at the model's size, brought there by the model's
``resize`` (default: centre crop + antialiased resize), as images read from files; each image's note
(:attr:`Inputs.notes`) says what was done to it. A tensor is an RGB image *before* the model's normalisation:
values in [0, 1] (float) or 0…255 (uint8); the model's mean/std are applied by the pipeline.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from interpgram.backends.data.images import Fit, as_fit, fit_tensor, pil_to_rgb
from interpgram.backends.data.inputs import InputError, Inputs, expand_refs, load_inputs


class APIError(ValueError):
    """A mistake in a Python API call (a model or an input of the wrong kind); says what to pass."""


def _chw(x: torch.Tensor, where: str) -> torch.Tensor:
    """One image tensor as (3, H, W) float in [0, 1]."""
    if x.dim() == 2:  # (H, W) greyscale
        x = x[None]
    if x.dim() != 3:
        raise APIError(f"{where}: an image tensor is (3, H, W) or a batch (N, 3, H, W); got shape {tuple(x.shape)}")
    if x.shape[0] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(2, 0, 1)  # (H, W, C) as numpy and PIL lay images out
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    if x.shape[0] != 3:
        raise APIError(f"{where}: an image has 1 or 3 channels; got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.dtype.is_floating_point:
        raise APIError(f"{where}: image tensors are float in [0, 1] or uint8 0..255; got {x.dtype}")
    x = x.detach().float().cpu()
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise APIError(f"{where}: image values must be in [0, 1] (an RGB image before the model's normalisation; "
                       f"the model's mean and std are applied for you); got values from {lo:.3g} to {hi:.3g}")
    return x.clamp(0, 1)


def _is_pil(x: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def to_inputs(items: Any, size: tuple[int, int] | Fit, base_dir: Path | None = None) -> Inputs:
    """``items`` (one input or a list of them) as :class:`Inputs` at ``size`` = (H, W), or by a model's
    :class:`Fit` (``model.preprocess.fit``)."""
    fit = as_fit(size)
    if (torch.is_tensor(items) or isinstance(items, np.ndarray)) and items.ndim == 4:
        items = list(items)  # one batch (N, 3, H, W): image i is "tensor i"
    elif isinstance(items, (str, Path)) or torch.is_tensor(items) or isinstance(items, np.ndarray) or _is_pil(items):
        items = [items]
    if not isinstance(items, (list, tuple)):
        raise APIError(f"inputs: expected a tensor, an image, a path, a ref or a list of them; got {type(items).__name__}")
    refs, names, images, truth, notes = [], [], [], [], []

    def add(ref: str, name: str, img: torch.Tensor, t=None, note: str | None = None) -> None:
        refs.append(ref)
        names.append(name)
        if note is None:
            img, note = fit_tensor(img, fit)
        images.append(img)
        truth.append(t)
        notes.append(note)

    for i, x in enumerate(items):
        where = f"inputs[{i}]"
        if isinstance(x, (str, Path)):
            try:
                one = load_inputs(expand_refs([str(x)]), fit, base_dir)
            except InputError as e:
                raise APIError(f"{where}: {e}") from None
            for r, n, img, t, note in zip(one.refs, one.names, one.images, one.truth, one.notes):
                add(r, n, img, t, note)
        elif torch.is_tensor(x) or isinstance(x, np.ndarray):
            t = torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
            batch = t if t.dim() == 4 else t[None]
            for j, img in enumerate(batch):
                tag = f"{i}" if t.dim() != 4 else f"{i}.{j}"
                add(f"tensor:{tag}", f"tensor {tag}", _chw(img, where if t.dim() != 4 else f"{where}[{j}]"))
        elif _is_pil(x):
            pil_notes: list[str] = []
            arr = pil_to_rgb(x, pil_notes)
            name = Path(getattr(x, "filename", "") or "").name or f"image {i}"
            img = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
            img, note = fit_tensor(img, fit)
            add(f"image:{i}", name, img, note="; ".join(pil_notes + [f"PIL {x.mode} {note}"]))
        else:
            raise APIError(f"{where}: expected a tensor, a numpy array, a PIL image, a path or a ref such as "
                           f"'builtin:shapes/7'; got {type(x).__name__}")
    if not images:
        raise APIError("inputs: the list is empty (pass at least one image, or leave inputs out to use the spec's)")
    taken: dict[str, int] = {}
    for k, n in enumerate(names):  # two files of the same name: keep the labels distinct
        if n in taken:
            names[k] = f"{n} #{k}"
        taken[n] = k
    return Inputs(refs, names, torch.stack(images).float(), truth, notes)
