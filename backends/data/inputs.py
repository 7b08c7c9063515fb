"""Input references → images in [0, 1] at the model's size.

- ``builtin:shapes/7``: image 7 of the built-in data set's test split (with its ground truth);
  ``builtin:shapes/train/7`` for the training split; ``builtin:shapes/0-7`` for a range;
- a path to an image file (PNG, JPEG, ...), relative to the spec's folder.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

_BUILTIN = re.compile(r"^builtin:(?P<name>[a-z\-]+)/(?:(?P<split>train|test)/)?(?P<a>\d+)(?:-(?P<b>\d+))?$")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class InputError(Exception):
    """An input reference that cannot be resolved; the message says what is accepted."""


@dataclass
class Inputs:
    refs: list[str]
    names: list[str]
    images: torch.Tensor  # (N, 3, H, W) float32 in [0, 1]
    truth: list[Optional[dict]] = field(default_factory=list)  # per image: label, mask, box (builtin only)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        return h.hexdigest()[:32]


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop to the target aspect ratio, then resize (antialiased) to ``size`` = (H, W)."""
    _, h, w = img.shape
    th, tw = size
    if (h, w) == (th, tw):
        return img
    scale = max(th / h, tw / w)
    ch, cw = round(th / scale), round(tw / scale)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    img = img[:, y0:y0 + ch, x0:x0 + cw]
    return torch.nn.functional.interpolate(img[None], size=size, mode="bilinear", antialias=True,
                                           align_corners=False)[0].clamp(0, 1)


def expand_refs(refs: list[str]) -> list[str]:
    out = []
    for r in refs:
        m = _BUILTIN.match(r)
        if m and m.group("b") is not None:
            a, b = int(m.group("a")), int(m.group("b"))
            if b < a or b - a > 4096:
                raise InputError(f"{r}: a range is a-b with a <= b and at most 4096 images")
            split = f"{m.group('split')}/" if m.group("split") else ""
            out.extend(f"builtin:{m.group('name')}/{split}{i}" for i in range(a, b + 1))
        else:
            out.append(r)
    return out


def load_inputs(refs: list[str], size: tuple[int, int], base_dir: Path | None = None) -> Inputs:
    refs = expand_refs(refs)
    base = base_dir or Path.cwd()
    images, names, truth = [], [], []
    for r in refs:
        if r.startswith("builtin:"):
            m = _BUILTIN.match(r)
            if not m or m.group("name") != "shapes":
                raise InputError(f"unknown built-in input {r!r}; use builtin:shapes/N, builtin:shapes/train/N or builtin:shapes/A-B")
            from interpgram.backends.data.shapes import CLASSES, generate
            split = m.group("split") or "test"
            b = generate([int(m.group("a"))], split=split)
            img = _resize(b.images[0], size)
            label = int(b.labels[0])
            truth.append({"label": label, "class": CLASSES[label], "mask": b.masks[0].numpy(),
                          "box": b.boxes[0].tolist(), "patched": bool(b.patched[0])})
            names.append(f"shapes/{split}/{m.group('a')} ({CLASSES[label]})")
        else:
            p = Path(r).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.exists():
                raise InputError(f"input image not found: {p}")
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"{p} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
            from PIL import Image, UnidentifiedImageError
            try:
                with Image.open(p) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as e:
                raise InputError(f"{p} cannot be read as an image: {e}") from None
            img = _resize(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), size)
            truth.append(None)
            names.append(p.name)
        images.append(img)
    if not images:  # a spec of atlases only: no input image
        return Inputs(refs, names, torch.zeros(0, 3, *size), truth)
    return Inputs(refs, names, torch.stack(images).float(), truth)
