"""Robustness transforms, applied to the image batch at every optimisation step.

The article's standard set (lucid ``transform.standard_transforms``) is the default::

    pad(12, constant 0.5) · jitter(8) · scale([1 + (i − 5)/50 for i in 0..10])
    · rotate(range(−10, 11) + 5 × [0] degrees) · jitter(4)

``jitter(d)`` is lucid's random crop (the image shrinks by ``d``); ``scale`` resizes by a factor and
``rotate`` turns by a whole number of degrees, both in one bilinear resample. Random choices come
from a :class:`torch.Generator`, drawn once per step for the whole batch (as lucid does), so a run
is reproducible from its seed and an icon does not depend on the other icons in its batch.

In a spec, ``transforms`` is ``standard``, ``none`` or a list of one-key steps::

    transforms: [{pad: 4}, {jitter: 2}, {scale: [0.95, 1.0, 1.05]}, {rotate: [-5, 0, 5]}, {jitter: 1}]

``crop_or_pad: N`` centre-crops (or pads with 0.5) the transformed image to N×N, as lucid's
feature-visualisation recipe does with the model's input size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch
import torch.nn.functional as F

from interpgram.grammar.options import check_transforms  # one set of rules for specs and code

STANDARD: tuple[tuple[str, Any], ...] = (
    ("pad", 12),
    ("jitter", 8),
    ("scale", tuple(1 + (i - 5) / 50 for i in range(11))),
    ("rotate", tuple(range(-10, 11)) + (0,) * 5),
    ("jitter", 4),
)


def normalize_steps(spec: Union[str, Sequence[Any], None]) -> tuple[tuple[str, Any], ...]:
    """``standard`` / ``none`` / a list of one-key steps → a tuple of (kind, value) pairs.

    Raises ValueError with a message that names the bad step and the valid kinds.
    """
    if spec is None or spec == "none":
        return ()
    if spec == "standard":
        return STANDARD
    if isinstance(spec, str):
        raise ValueError(f"transforms {spec!r}: use standard, none, or a list of steps such as [{{pad: 4}}, {{jitter: 2}}]")

    steps = []
    for step in spec:
        if isinstance(step, tuple) and len(step) == 1 and isinstance(step[0], tuple):
            step = step[0]  # a frozen one-key mapping: ((kind, value),)
        if isinstance(step, (tuple, list)) and len(step) == 2 and isinstance(step[0], str):
            step = {step[0]: list(step[1]) if isinstance(step[1], tuple) else step[1]}
        steps.append(step)
    check_transforms(steps)
    out = []
    for step in steps:
        (kind, value), = step.items()
        if kind in ("scale", "rotate"):
            value = tuple(float(v) for v in (value if isinstance(value, list) else [value]))
        out.append((kind, value))
    return tuple(out)


@dataclass(frozen=True)
class Draw:
    """The random choices of one step: a value per transform step (a crop offset, a factor, an angle)."""

    values: tuple


def draw(steps: Sequence[tuple[str, Any]], g: torch.Generator) -> Draw:
    vals = []
    for kind, value in steps:
        if kind in ("pad", "crop_or_pad"):
            vals.append(None)
        elif kind == "jitter":
            vals.append(tuple(int(v) for v in torch.randint(0, value + 1, (2,), generator=g)) if value else (0, 0))
        else:
            vals.append(value[int(torch.randint(0, len(value), (1,), generator=g))])
    return Draw(tuple(vals))


def apply(x: torch.Tensor, steps: Sequence[tuple[str, Any]], d: Draw) -> torch.Tensor:
    """Apply ``steps`` with the choices ``d`` to images ``x`` (n, 3, h, w), differentiably.

    Consecutive pads, jitters and crops are one window on the image: they become a single
    ``F.pad`` (negative amounts crop), so a step materialises one tensor for them instead of one per
    step, and its backward pass one slice instead of a zero-fill and a copy per step. The result is
    the same, element for element, as applying them one by one
    (tests/backends/kernels/optvis/test_fast_paths.py checks both)."""
    i, window = 0, _Window()
    while i < len(steps):
        kind, value = steps[i]
        if kind in ("pad", "jitter", "crop_or_pad"):
            if window.cropped() and window.pads(kind, value, *window.size(x)):
                x, window = window.flush(x), _Window()  # a pad after a crop: the cropped pixels stay cropped
            window.add(kind, value, d.values[i], *window.size(x))
            if min(window.size(x)) < 1:
                h, w = x.shape[-2:]
                raise ValueError(f"transforms: {kind} {value} leaves nothing of a {h}×{w} image; use smaller "
                                 "jitters or crops, or a larger icon size")
            i += 1
            continue
        x, window = window.flush(x), _Window()
        x, i = _resample_run(x, steps, d, i)
    return window.flush(x)


def _resample_run(x: torch.Tensor, steps: Sequence[tuple[str, Any]], d: Draw, i: int) -> tuple[torch.Tensor, int]:
    """The scale and rotate steps from ``i`` on, next to each other, as one resample; (image, next step)."""
    factor, angle = 1.0, 0.0
    while i < len(steps) and steps[i][0] in ("scale", "rotate"):
        if steps[i][0] == "scale":
            factor *= d.values[i]
        else:
            angle += d.values[i]
        i += 1
    return _scale_rotate(x, factor, angle), i


class _Window:
    """Pads (positive) and crops (negative) per side, ``(left, right, top, bottom)``, of the tensor
    that consecutive pad / jitter / crop_or_pad steps start from; pads fill with 0.5."""

    def __init__(self):
        self.lrtb = [0, 0, 0, 0]

    def size(self, x: torch.Tensor) -> tuple[int, int]:
        l, r, t, b = self.lrtb
        return x.shape[-2] + t + b, x.shape[-1] + l + r

    def cropped(self) -> bool:
        return any(v < 0 for v in self.lrtb)

    @staticmethod
    def pads(kind: str, value: Any, h: int, w: int) -> bool:
        return bool(value) if kind == "pad" else kind == "crop_or_pad" and (value > h or value > w)

    def add(self, kind: str, value: Any, drawn: Any, h: int, w: int) -> None:
        if kind == "pad":
            self.lrtb = [v + value for v in self.lrtb]
        elif kind == "jitter":
            if value:
                dy, dx = drawn
                self.lrtb[0] -= dx
                self.lrtb[1] -= value - dx
                self.lrtb[2] -= dy
                self.lrtb[3] -= value - dy
        else:  # crop_or_pad: pad up to ``value`` (centred), then a centred crop
            ph, pw = max(0, value - h), max(0, value - w)
            self.lrtb[0] += pw // 2
            self.lrtb[1] += pw - pw // 2
            self.lrtb[2] += ph // 2
            self.lrtb[3] += ph - ph // 2
            h, w = h + ph, w + pw
            top, left = (h - value) // 2, (w - value) // 2
            self.lrtb[0] -= left
            self.lrtb[1] -= w - value - left
            self.lrtb[2] -= top
            self.lrtb[3] -= h - value - top

    def flush(self, x: torch.Tensor) -> torch.Tensor:
        if not any(self.lrtb):
            return x
        return F.pad(x, tuple(self.lrtb), mode="constant", value=0.5)


def _scale_rotate(x: torch.Tensor, factor: float, degrees: float) -> torch.Tensor:
    if factor == 1.0 and degrees == 0.0:
        return x
    n, c, h, w = x.shape
    oh, ow = max(1, round(h * factor)), max(1, round(w * factor))
    if degrees == 0.0:
        return F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, oh, ow], align_corners=False)
    # outside the rotated image: the pad colour, as lucid's rotate fills with the edge of the pad
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def output_size(h: int, w: int, steps: Sequence[tuple[str, Any]]) -> tuple[int, int]:
    """The size the model sees when no scale is drawn (for planning memory)."""
    for kind, value in steps:
        if kind == "pad":
            h, w = h + 2 * value, w + 2 * value
        elif kind == "jitter":
            h, w = h - value, w - value
        elif kind == "crop_or_pad":
            h, w = value, value
    return h, w
