"""The ``examples`` presentation (dataset examples): one row per atom, its label, then its top
data-set examples left to right, each captioned with its score and data-set name.

Examples arrive as (s, s, 3) arrays in [0, 1] (receptive-field patches letterboxed into a square, or
whole images) and are embedded as PNG data URLs. Everything is drawn on pixel scales (1 unit = 1 px),
so the label column, the images and their captions line up exactly.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np

from interpgram.grammar._presentations import ExamplesOptions

from interpgram.backends.render.charts import _fail, _need, _options, _sig, png_data_url
from interpgram.backends.render.registry import register
from interpgram.backends.render.types import ElementView

EXAMPLE_PX = 72  # display side of one example
GAP = 8  # px between examples
LABEL_PX = 118  # the atom label column
CAPTION_PX = 30  # two caption lines under each example
INK, MUTED, BOX = "#3c4043", "#5f6368", "#e8710a"

EXAMPLES_OPTIONS = dict.fromkeys(ExamplesOptions.model_fields)


def _short(name: str, limit: int = 18) -> str:
    """The caption under an example: the last part of its name (``10 (star)``, ``cat.png``), shortened."""
    name = name.rsplit("/", 1)[-1]
    return name if len(name) <= limit else name[:limit - 1] + "…"


@register("examples")
def examples(view: ElementView) -> alt.TopLevelMixin:
    """Rows of dataset examples, one per atom; tooltips give the data-set index, the
    receptive-field box (input pixels, x0, y0 – x1, y1, end-exclusive) and the full image name."""
    _options(view, EXAMPLES_OPTIONS)
    _need(view, "atoms")
    atoms = view.data["atoms"]
    if not isinstance(atoms, Sequence):
        raise _fail(view, "data 'atoms' must be a list of {label, images, scores, indices, names, boxes}")
    score_name = str(view.data.get("score_name", "score"))
    value_name = str(view.data.get("value_name", "value"))
    patch = bool(view.data.get("patch", True))
    in_h, in_w = (view.data.get("input_size") or (0, 0))
    top = max([len(a.get("images", [])) for a in atoms] + [1])
    row_h = EXAMPLE_PX + CAPTION_PX + GAP
    width = LABEL_PX + top * (EXAMPLE_PX + GAP)
    height = max(1, len(atoms)) * row_h

    images, boxes, labels = [], [], []
    for r, a in enumerate(atoms):
        if not isinstance(a, Mapping):
            raise _fail(view, f"atom {r} must be a mapping")
        n = len(a.get("images", []))
        for key in ("scores", "indices", "names", "boxes"):
            if len(a.get(key, [])) != n:
                raise _fail(view, f"atom {r}: {len(a.get(key, []))} {key} for {n} images")
        y0 = r * row_h
        value = a.get("value")
        labels.append({"x": 0, "y": y0 + EXAMPLE_PX / 2 - 7, "text": str(a.get("label", r)), "weight": "bold"})
        if value is not None:
            labels.append({"x": 0, "y": y0 + EXAMPLE_PX / 2 + 8, "text": f"{value_name} {_sig(float(value)):.3g}",
                           "weight": "normal"})
        for j in range(n):
            img = np.asarray(a["images"][j], dtype=np.float32)
            if img.ndim != 3 or img.shape[2] != 3:
                raise _fail(view, f"atom {r}, example {j}: image must be (s, s, 3), got shape {img.shape}")
            side = img.shape[0]
            x0 = LABEL_PX + j * (EXAMPLE_PX + GAP)
            bx = [int(t) for t in a["boxes"][j]]
            name = str(a["names"][j])
            row = {"x0": x0, "x1": x0 + EXAMPLE_PX, "y0": y0, "y1": y0 + EXAMPLE_PX, "url": png_data_url(img),
                   "atom": str(a.get("label", r)), "rank": j + 1, "score": _sig(float(a["scores"][j])),
                   "index": int(a["indices"][j]), "name": name, "short": _short(name),
                   "box": f"{bx[0]}, {bx[1]} – {bx[2]}, {bx[3]}",
                   "caption": f"{_sig(float(a['scores'][j])):.3g}", "yc1": y0 + EXAMPLE_PX + 10,
                   "yc2": y0 + EXAMPLE_PX + 22, "xc": x0 + EXAMPLE_PX / 2}
            images.append(row)
            if not patch and in_h and in_w:  # the receptive field drawn on the whole image (letterboxed like it)
                s = side / max(in_h, in_w)
                px, py = (side - round(in_w * s)) // 2, (side - round(in_h * s)) // 2
                k = EXAMPLE_PX / side
                boxes.append({"bx0": x0 + (px + bx[0] * s) * k, "bx1": x0 + (px + bx[2] * s) * k,
                              "by0": y0 + (py + bx[1] * s) * k, "by1": y0 + (py + bx[3] * s) * k})

    xs = alt.Scale(domain=[0, width], nice=False, zero=False)
    ys = alt.Scale(domain=[0, height], nice=False, zero=False, reverse=True)
    tips = [alt.Tooltip("atom:N", title="atom"), alt.Tooltip("rank:Q", title="rank"),
            alt.Tooltip("score:Q", title=score_name, format=".4g"), alt.Tooltip("index:Q", title="data-set index"),
            alt.Tooltip("name:N", title="image"), alt.Tooltip("box:N", title="receptive field (px)")]
    base = alt.Chart({"values": images})
    layers = [
        base.mark_image(aspect=False).encode(x=alt.X("x0:Q", scale=xs, axis=None), x2="x1:Q",
                                             y=alt.Y("y0:Q", scale=ys, axis=None), y2="y1:Q", url="url:N",
                                             tooltip=tips),
        base.mark_text(fontSize=10, baseline="middle", color=INK).encode(
            x=alt.X("xc:Q", scale=xs, axis=None), y=alt.Y("yc1:Q", scale=ys, axis=None), text="caption:N",
            tooltip=tips),
        base.mark_text(fontSize=9, baseline="middle", color=MUTED, limit=EXAMPLE_PX + GAP - 2).encode(
            x=alt.X("xc:Q", scale=xs, axis=None), y=alt.Y("yc2:Q", scale=ys, axis=None), text="short:N",
            tooltip=tips),
    ]
    for weight, colour, size in (("bold", INK, 11), ("normal", MUTED, 10)):  # the atom, then its content value
        rows = [lab for lab in labels if lab["weight"] == weight]
        if rows:
            layers.append(alt.Chart({"values": rows}).mark_text(
                align="left", baseline="middle", fontSize=size, fontWeight=weight, color=colour,
                limit=LABEL_PX - 6).encode(x=alt.X("x:Q", scale=xs, axis=None), y=alt.Y("y:Q", scale=ys, axis=None),
                                           text="text:N"))
    if boxes:
        layers.append(alt.Chart({"values": boxes}).mark_rect(fill=None, stroke=BOX, strokeWidth=1.5).encode(
            x=alt.X("bx0:Q", scale=xs, axis=None), x2="bx1:Q", y=alt.Y("by0:Q", scale=ys, axis=None), y2="by1:Q"))
    if not atoms:
        layers = [alt.Chart({"values": [{"x": 0, "y": 10, "t": "no atoms to show"}]}).mark_text(
            align="left", color=MUTED).encode(x=alt.X("x:Q", scale=xs, axis=None), y=alt.Y("y:Q", scale=ys, axis=None),
                                              text="t:N")]
    title = alt.TitleParams(view.data.get("heading", "dataset examples"), subtitle=view.data.get("subtitle", alt.Undefined))
    return alt.layer(*layers).properties(width=width, height=height, title=title)
