"""Results → ElementViews: each element's presentation unit (``Presentation.views``) turns its
results for one input image into the data its chart draws; this module only walks the plan."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from interpgram.backends.render.types import ElementView
from interpgram.grammar import Plan
from interpgram.grammar.plan import Present
from interpgram.grammar.presentation import PRESENTATIONS


@dataclass
class ViewContext:
    """One element (``p``) for one input image (``i``), with what every builder needs."""

    plan: Plan
    p: Present
    results: Any
    i: int
    vid: str
    title: str
    image: Optional[np.ndarray]  # (H, W, 3) in [0, 1]; None for presentations of a data set (atlases)
    opts: dict
    vals: list[torch.Tensor]  # the element's series, batch first

    def view(self, data: dict, *, vid: str | None = None, title: str | None = None, opts: dict | None = None):
        return ElementView(vid or self.vid, self.p.presentation, title or self.title, self.p.grammar,
                           self.opts if opts is None else opts, data)

    def icons_of(self, op_id: str) -> tuple[list, list[np.ndarray]]:
        """(atoms, icons as (s, s, 3) arrays) of a FeatureVis op for this image."""
        fv = self.results.values[op_id]
        return list(fv["atoms"][self.i]), [hwc(img) for img in fv["images"][self.i]]


def hwc(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).contiguous().numpy().astype(np.float32)


def build_views(plan: Plan, inputs, results) -> dict[str, list]:
    """Results → the ElementViews of every element, per input image, keyed by element id."""
    views: dict[str, list] = {}
    n = inputs.images.shape[0]
    for p in plan.elements:
        unit = PRESENTATIONS[p.presentation]
        vals = [results.values[s.op]["value"] for s in p.series]
        if not unit.per_input:  # one view for the spec (an atlas shows a data set)
            vid = p.element + (f"-{safe_id(p.side)}" if p.side else "")
            ctx = ViewContext(plan, p, results, 0, vid, p.title, None, p.option_dict, vals)
            views.setdefault(p.element, []).extend(unit.views(ctx))
            continue
        for i in range(n):
            vid = p.element if n == 1 else f"{p.element}-{i}"
            base_id = p.id.split("@", 1)[0]  # a link variant's id is the element's + "@link:key"
            if base_id.count(":") == 2:
                vid += f"-{base_id.rsplit(':', 1)[1]}"
            if p.side:  # one side of a comparison (vary)
                vid += f"-{safe_id(p.side)}"
            ctx = ViewContext(plan, p, results, i, vid, p.title + (f" · {inputs.names[i]}" if n > 1 else ""),
                              hwc(inputs.images[i]), p.option_dict, vals)
            built = unit.views(ctx)
            for v in built:
                v.image = i
                if p.link >= 0:  # a link's variant: named after the view it stands in for
                    v.base, v.link, v.key = v.id, p.link, p.variant
                    v.id = f"{v.id}~{p.link}~{safe_id(p.variant)}"
            views.setdefault(p.element, []).extend(built)
    return views


def safe_id(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_," else "_" for ch in key)
