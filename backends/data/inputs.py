"""Input references → images in [0, 1] at the model's size.

- ``builtin:shapes/7``: image 7 of the built-in data set's test split (with its ground truth);
  ``builtin:shapes/train/7`` for the training split; ``builtin:shapes/0-7`` for a range;
- a path to an image file (PNG, JPEG, ...), relative to the spec's folder.

Each image is brought to the model's size by its :class:`~interpgram.backends.data.images.Fit` (the
model's ``resize``: a centre crop by default), and :attr:`Inputs.notes` says, per image, what was done
to it (``china.jpg: JPEG 640×427 → centre crop 427×427 … → resized to 224×224``); the report shows it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from interpgram.backends.data.images import IMAGE_SUFFIXES, Fit, ImageError, as_fit, fit_tensor, read_fitted
from interpgram.backends.data.shapes import CLASSES, generate
from interpgram.backends.files import path_problem

BUILTIN_REF = re.compile(r"^builtin:(?P<name>[a-z\-]+)/(?:(?P<split>train|test)/)?(?P<a>\d+)(?:-(?P<b>\d+))?$")


class InputError(Exception):
    """An input reference that cannot be resolved; the message says what is accepted."""


@dataclass
class Inputs:
    refs: list[str]
    names: list[str]
    images: torch.Tensor  # (N, 3, H, W) float32 in [0, 1]
    truth: list[Optional[dict]] = field(default_factory=list)  # per image: label, mask, box (builtin only)
    notes: list[str] = field(default_factory=list)  # per image: what was done to it (decoded, cropped, resized)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        return h.hexdigest()[:32]


def expand_refs(refs: list[str]) -> list[str]:
    out = []
    for r in refs:
        m = BUILTIN_REF.match(r)
        if m and m.group("b") is not None:
            a, b = int(m.group("a")), int(m.group("b"))
            if b < a or b - a > 4096:
                raise InputError(f"{r}: a range is a-b with a <= b and at most 4096 images")
            split = f"{m.group('split')}/" if m.group("split") else ""
            out.extend(f"builtin:{m.group('name')}/{split}{i}" for i in range(a, b + 1))
        else:
            out.append(r)
    return out


def load_inputs(refs: list[str], size: tuple[int, int] | Fit, base_dir: Path | None = None) -> Inputs:
    """The images ``refs`` name, at ``size``: (H, W) (a centre crop to the aspect ratio, then resized) or a
    model's :class:`Fit` (``model.preprocess.fit``: its ``resize`` and padding colour)."""
    fit = as_fit(size)
    size = fit.size
    refs = expand_refs(refs)
    base = base_dir or Path.cwd()
    images, names, truth, notes = [], [], [], []
    for r in refs:
        if r.startswith("builtin:"):
            m = BUILTIN_REF.match(r)
            if not m or m.group("name") != "shapes":
                raise InputError(f"unknown built-in input {r!r}; use builtin:shapes/N, builtin:shapes/train/N or builtin:shapes/A-B")
            split = m.group("split") or "test"
            b = generate([int(m.group("a"))], split=split)
            img, note = fit_tensor(b.images[0], fit)
            notes.append(f"built-in {note}")
            label = int(b.labels[0])
            truth.append({"label": label, "class": CLASSES[label], "mask": b.masks[0].numpy(),
                          "box": b.boxes[0].tolist(), "patched": bool(b.patched[0])})
            names.append(f"shapes/{split}/{m.group('a')} ({CLASSES[label]})")
        else:
            p = Path(r).expanduser()
            p = p if p.is_absolute() else base / p
            problem = path_problem(p)
            if problem and problem[0] == "missing":
                raise InputError(f"input image not found: {p}")
            if problem:  # a symlink loop, a named pipe (reading it would hang), a folder, a device, ...
                raise InputError(f"input image {p} {problem[1]}")
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"{p} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
            try:
                img, note = read_fitted(p, fit)
                notes.append(note)
            except ImageError as e:
                raise InputError(str(e)) from None
            truth.append(None)
            names.append(p.name)
        images.append(img)
    if not images:  # a spec of atlases only: no input image
        return Inputs(refs, names, torch.zeros(0, 3, *size), truth, notes)
    return Inputs(refs, names, torch.stack(images).float(), truth, notes)
