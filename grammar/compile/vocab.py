"""The compiler's vocabulary: lowered content, link selections, the errors that stop an element,
and the fixed op ids."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from interpgram.grammar.plan import Series

CAPTURE_ID = "fwd"
DEFAULT_ICON_MAX_PX = 128  # icons default to the model's input side, at most this
# lucid's standard transforms as spec steps (backends.kernels.optvis.transforms.STANDARD, the meaning of
# `transforms: standard`); a model that takes only its own input size gets them ending with a crop_or_pad to it
STANDARD_TRANSFORMS = ({"pad": 12}, {"jitter": 8}, {"scale": [1 + (i - 5) / 50 for i in range(11)]},
                       {"rotate": list(range(-10, 11)) + [0] * 5}, {"jitter": 4})
COLLECT_ID = "collect"


class Invalid(Exception):
    """Raised inside the compiler after a diagnostic was recorded for the current element."""


@dataclass
class Content:
    series: list[Series]
    atom: str
    layer: str
    kind: str  # activation | attribution | transform
    sentence: str
    groups: Optional[str] = None
    canon: Any = None  # the CanonicalAtom of the content's (first) substrate


@dataclass(frozen=True)
class Selection:
    """A link's selection applied while lowering its target element: ``kind`` (position, channel,
    class, group) with ``value`` drives ``target`` (from, to, class, group, position, channel)."""

    kind: str
    value: Any
    target: str
    source_layer: str = ""
    source_shape: tuple[int, ...] = ()


def top_rank(c: Any, classes: list[str]) -> Optional[int]:
    """``top1``, ``top2``, ... (unless a class has that name) → 0, 1, ...; else None."""
    if isinstance(c, str) and c not in classes:
        m = re.fullmatch(r"top([1-9][0-9]*)", c)
        if m:
            return int(m.group(1)) - 1
    return None


def map_position(xy: tuple[int, int], src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[int, int]:
    """A position of a (C, H, W) layer → the position covering the same place in another layer."""
    (h1, w1), (h2, w2) = src[-2:], dst[-2:]
    x = min(w2 - 1, int((xy[0] + 0.5) * w2 / w1))
    y = min(h2 - 1, int((xy[1] + 0.5) * h2 / h1))
    return x, y


def freeze(v: Any) -> Any:
    """Lists and dicts of options → nested tuples (hashable, stable)."""
    if isinstance(v, dict):
        return tuple((k, freeze(x)) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return tuple(freeze(x) for x in v)
    return v
