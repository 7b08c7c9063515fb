"""The ``atlas`` presentation's chart: the registered unit around :func:`._atlas_chart.atlas_chart`."""
from __future__ import annotations

import altair as alt

from interpgram.backends.render.registry import register
from interpgram.backends.render.types import ElementView


@register("atlas")
def atlas(view: ElementView) -> alt.TopLevelMixin:
    from interpgram.backends.render.atlas_chart import atlas_chart

    d = view.data
    opts = view.options or {}
    kind = d.get("kind", "activation")
    cells = d["cells"]
    total = sum(c["count"] for c in cells)
    subtitle = (f"{len(cells)} cells of {d['grid']}×{d['grid']} with ≥{opts.get('min_count', 5)} samples; "
                f"{total} of {d.get('samples', total)} {d['layer']} vectors · scroll to zoom, drag to pan, "
                "hover a cell for its examples, click for its attribution to classes")
    x_title = y_title = None
    if kind == "transform":  # two-class atlas: x is the attribution difference (a on the right)
        a, b = d["atlas_classes"]
        x_title = f"← more {b} · attribution difference · more {a} →"
        y_title = "1-D layout of the activations"
    pt = d.get("patch_test")
    if pt is not None:
        best = max(cells, key=lambda c: c.get("flip", 0.0))
        subtitle += (f" · patch test: the best cell's icon ({pt['size']} px) turns {100 * best['flip']:.1f}% of "
                     f"{pt['n']} images into {pt['class']}, a noise patch {100 * pt['noise']:.1f}%")
    return atlas_chart(cells, d["classes"], title=view.title, grid=int(d["grid"]), sized=bool(opts.get("sized", False)),
                       patch_test=pt,
                       subtitle=subtitle, x_title=x_title, y_title=y_title)
