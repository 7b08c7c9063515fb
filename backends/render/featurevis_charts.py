"""Feature-visualisation presentations: featurevis, semantic_dictionary, activation_grid.

Icons arrive as (s, s, 3) arrays in [0, 1] and are embedded as PNG data URLs (one per distinct
icon; charts refer to them by key through a lookup, so an icon shown at many positions is stored
once).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np

from interpgram.backends.render.charts import (PANEL, link_param, _pick_layer, _array, _cell_layer, _cells, _fail, _image, _image_layer, _need, _options, _panel_px,
                      _ramp, _sig, png_data_url)
from interpgram.grammar._presentations import ActivationGridOptions, FeatureVisOptions

from interpgram.backends.render.registry import register
from interpgram.backends.render.types import ElementView

ICON_PX = 72  # display size of one icon


def _icon_urls(view: ElementView, icons: Any, n: int | None = None) -> list[str]:
    if isinstance(icons, np.ndarray):
        icons = list(icons)
    if not isinstance(icons, Sequence) or (n is not None and len(icons) != n):
        raise _fail(view, f"icons must be a list of {n if n is not None else 'N'} (s, s, 3) images")
    urls = []
    for i, ic in enumerate(icons):
        a = np.asarray(ic, dtype=np.float32)
        if a.ndim != 3 or a.shape[2] != 3:
            raise _fail(view, f"icon {i} must be (s, s, 3), got shape {a.shape}")
        urls.append(png_data_url(a))  # native size: icons are smooth, the browser scales them
    return urls


# ----------------------------------------------------------------------------- featurevis
# the charts take the grammar's options (the icon settings among them are used upstream, not drawn)
FEATUREVIS_OPTIONS = dict.fromkeys(FeatureVisOptions.model_fields)


@register("featurevis")
def featurevis(view: ElementView) -> alt.TopLevelMixin:
    """A row of icons, one per atom, each captioned with its atom and value (activation or
    attribution for this input), with the objective each icon reached in the tooltip."""
    _options(view, FEATUREVIS_OPTIONS)
    _need(view, "icons", "labels")
    labels = [str(x) for x in view.data["labels"]]
    urls = _icon_urls(view, view.data["icons"], len(labels))
    values = view.data.get("values")
    scores = view.data.get("scores")
    what = str(view.data.get("value_name", "value"))
    cols = max(1, min(len(urls), int(view.data.get("columns", 8))))
    rows = []
    for i, (lab, url) in enumerate(zip(labels, urls)):
        r = {"i": i, "col": i % cols, "row": i // cols, "url": url, "label": lab}
        if view.data.get("atom_ids") is not None:
            r["atom"] = int(view.data["atom_ids"][i])
        r["caption"] = lab + (f" · {_sig(float(values[i])):.3g}" if values is not None else "")
        if values is not None:
            r["value"] = _sig(float(values[i]))
        if scores is not None:
            r["objective"] = _sig(float(scores[i]))
        rows.append(r)
    n_rows = (len(urls) + cols - 1) // cols
    xs = alt.Scale(domain=[0, cols], nice=False, zero=False)
    ys = alt.Scale(domain=[0, n_rows], nice=False, zero=False, reverse=True)
    tips = [alt.Tooltip("label:N", title="atom")]
    if values is not None:
        tips.append(alt.Tooltip("value:Q", title=what, format=".4g"))
    if scores is not None:
        tips.append(alt.Tooltip("objective:Q", title="objective reached", format=".4g"))
    base = alt.Chart({"values": rows}).transform_calculate(
        x0="datum.col + 0.04", x1="datum.col + 0.96", y0="datum.row + 0.02", y1="datum.row + 0.8", yt="datum.row + 0.9")
    img = base.mark_image(aspect=False).encode(
        x=alt.X("x0:Q", scale=xs, axis=None), x2="x1:Q", y=alt.Y("y0:Q", scale=ys, axis=None), y2="y1:Q",
        url="url:N", tooltip=tips)
    pick = link_param(view, ["atom"]) if view.data.get("atom_ids") is not None else None
    if pick is not None:
        img = img.add_params(pick)
    text = base.mark_text(fontSize=10, baseline="middle", color="#3c4043").encode(
        x=alt.X("xc:Q", scale=xs, axis=None), y=alt.Y("yt:Q", scale=ys, axis=None), text="caption:N"
    ).transform_calculate(xc="datum.col + 0.5")
    cell = ICON_PX + 14
    return alt.layer(img, text).properties(width=cols * cell, height=n_rows * (cell + 14),
                                           title=alt.TitleParams(view.data.get("heading", "feature visualisation"),
                                                                 subtitle=view.data.get("subtitle", alt.Undefined)))


# ----------------------------------------------------------------------------- semantic dictionary
SEMANTIC_OPTIONS = {"top": 4, "icon": None}


@register("semantic_dictionary")
def semantic_dictionary(view: ElementView) -> alt.TopLevelMixin:
    """The input with its layer's positions; hovering a position shows the ``top`` channels that
    fire most there, each as its icon with a bar sized by its activation (the article's semantic
    dictionary). It opens on the position of the strongest activation."""
    top = int(_options(view, SEMANTIC_OPTIONS)["top"])
    _need(view, "image", "activations", "icons", "layer")
    image = _image(view, view.data["image"])
    acts = _array(view, "activations", view.data["activations"], 3)  # (C, H, W)
    icons: Mapping = view.data["icons"]
    if not isinstance(icons, Mapping):
        raise _fail(view, "data 'icons' must map channel → (s, s, 3) image")
    layer = str(view.data["layer"])
    c, gh, gw = acts.shape
    k = min(top, c)
    order = np.argsort(-acts.reshape(c, -1), axis=0, kind="stable")[:k]  # (k, H*W)
    missing = sorted({int(ch) for ch in order.flatten()} - {int(x) for x in icons})
    if missing:
        raise _fail(view, f"no icon for channel(s) {missing[:5]}")
    urls = {int(ch): png_data_url(np.asarray(icons[ch], dtype=np.float32)) for ch in icons}
    mag = np.linalg.norm(acts, axis=0)
    start = int(mag.argmax())
    pw, ph = _panel_px(image, PANEL)
    pos_rows = _cells(mag, _ramp(mag, 0, float(mag.max()) or 1.0, 0.0, 0.0))
    for r in pos_rows:
        r["pos"] = r["row"] * gw + r["col"]
    hover = alt.selection_point(name="position", fields=["pos"], on="pointerover", nearest=False,
                                value=[{"pos": start}], clear=False)
    cells = _cell_layer(pos_rows, gh, gw).encode(
        stroke=alt.condition(hover, alt.value("#e8710a"), alt.value("#ffffff")),
        strokeOpacity=alt.condition(hover, alt.value(1.0), alt.value(0.25)),
        tooltip=[alt.Tooltip("col:Q", title="x"), alt.Tooltip("row:Q", title="y"),
                 alt.Tooltip("value:Q", title="‖activation‖", format=".4g")],
    ).mark_rect(fill="#000000", fillOpacity=0.0, strokeWidth=1.5).add_params(hover)
    pick = link_param(view, ["col", "row"])
    if pick is not None:
        cells = cells.add_params(pick)
    left = alt.layer(_image_layer(png_data_url(image, pw), gh, gw), cells).properties(
        width=pw, height=ph, title=alt.TitleParams("input: hover a position", subtitle=f"{layer}: {gw}×{gh} positions"))

    rows = []
    for p in range(gh * gw):
        y, x = divmod(p, gw)
        for rank in range(k):
            ch = int(order[rank, p])
            rows.append({"pos": p, "rank": rank, "channel": ch, "label": f"{layer}:{ch}",
                         "value": _sig(acts[ch, y, x])})
    lookup = alt.LookupData(data=alt.InlineData(values=[{"channel": ch, "url": u} for ch, u in urls.items()]),
                            key="channel", fields=["url"])
    vmax = float(acts.max()) or 1.0
    base = alt.Chart({"values": rows}).transform_filter(hover).transform_lookup(lookup="channel", from_=lookup)
    ys = alt.Scale(domain=[0, k], nice=False, zero=False, reverse=True)
    icon = base.transform_calculate(y0="datum.rank + 0.06", y1="datum.rank + 0.94").mark_image(aspect=True).encode(
        x=alt.X("x0:Q", scale=alt.Scale(domain=[0, 1]), axis=None), x2="x1:Q",
        y=alt.Y("y0:Q", scale=ys, axis=None), y2="y1:Q", url="url:N",
        tooltip=[alt.Tooltip("label:N", title="channel"), alt.Tooltip("value:Q", title="activation", format=".4g")],
    ).transform_calculate(x0="0", x1="1").properties(width=ICON_PX, height=k * (ICON_PX + 6))
    bar = base.transform_calculate(y0="datum.rank + 0.3", y1="datum.rank + 0.7").mark_rect(color="#e8710a").encode(
        x=alt.X("zero:Q", scale=alt.Scale(domain=[0, vmax]), title="activation"), x2="value:Q",
        y=alt.Y("y0:Q", scale=ys, axis=None), y2="y1:Q",
        tooltip=[alt.Tooltip("label:N", title="channel"), alt.Tooltip("value:Q", title="activation", format=".4g")],
    ).transform_calculate(zero="0")
    text = base.transform_calculate(yt="datum.rank + 0.5").mark_text(align="left", dx=4, fontSize=10).encode(
        x=alt.X("value:Q", scale=alt.Scale(domain=[0, vmax])), y=alt.Y("yt:Q", scale=ys, axis=None), text="label:N")
    right = alt.layer(bar, text).properties(width=170, height=k * (ICON_PX + 6))
    entry = alt.hconcat(icon, right, spacing=4).properties(
        title=alt.TitleParams(f"top {k} channels at the position", subtitle="icons: each channel's feature visualisation"))
    return alt.hconcat(left, entry, spacing=24)


# ----------------------------------------------------------------------------- activation grid
GRID_OPTIONS = dict.fromkeys(ActivationGridOptions.model_fields)


@register("activation_grid")
def activation_grid(view: ElementView) -> alt.TopLevelMixin:
    """The input beside a grid of icons, one per position of the layer; each icon is scaled by the
    magnitude of the activation vector it visualises (the strongest fills its cell)."""
    _options(view, GRID_OPTIONS)
    _need(view, "image", "icons", "magnitude", "layer")
    image = _image(view, view.data["image"])
    mag = _array(view, "magnitude", view.data["magnitude"], 2)
    gh, gw = mag.shape
    icons = np.asarray(view.data["icons"], dtype=np.float32)
    if icons.shape[:2] != (gh, gw) or icons.ndim != 5:
        raise _fail(view, f"icons must be (H, W, 3, s, s) matching magnitude {mag.shape}, got {icons.shape}")
    pw, ph = _panel_px(image, PANEL)
    top = float(mag.max()) or 1.0
    side_px = max(2 * PANEL, min(720, gw * 56))
    rows = []
    for y in range(gh):
        for x in range(gw):
            s = float(np.sqrt(max(mag[y, x], 0) / top))  # area ∝ magnitude
            half = 0.48 * max(s, 0.08)
            rows.append({"col": x, "row": y, "x0": x + 0.5 - half, "x1": x + 0.5 + half, "y0": y + 0.5 - half,
                         "y1": y + 0.5 + half, "value": _sig(mag[y, x]),
                         "url": png_data_url(icons[y, x].transpose(1, 2, 0), max(16, side_px // gw))})
    xs = alt.Scale(domain=[0, gw], nice=False, zero=False)
    ys = alt.Scale(domain=[0, gh], nice=False, zero=False, reverse=True)
    grid = alt.Chart({"values": rows}).mark_image(aspect=False).encode(
        x=alt.X("x0:Q", scale=xs, axis=None), x2="x1:Q", y=alt.Y("y0:Q", scale=ys, axis=None), y2="y1:Q", url="url:N",
        tooltip=[alt.Tooltip("col:Q", title="x"), alt.Tooltip("row:Q", title="y"),
                 alt.Tooltip("value:Q", title="‖activation‖", format=".4g")],
    )
    pick = link_param(view, ["col", "row"])
    if pick is not None:
        grid = alt.layer(grid, _pick_layer(view, gh, gw, pick))
    grid = grid.properties(width=side_px, height=round(side_px * gh / gw),
                 title=alt.TitleParams(f"activation grid of {view.data['layer']}",
                                       subtitle="one icon per position, area ∝ activation magnitude"))
    left = _image_layer(png_data_url(image, pw), gh, gw).properties(width=pw, height=ph, title="input")
    return alt.hconcat(left, grid, spacing=24)
