"""Presentations: one registered function each, ElementView → Altair chart.

Images are embedded as PNG data URLs (``mark_image``); layer-resolution maps are ``mark_rect``
grids over the image in pixel coordinates, so every cell has a tooltip with its value.
"""
from __future__ import annotations

import base64
import io
from typing import Callable

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image

from ._types import ElementView

Presentation = Callable[[ElementView], alt.TopLevelMixin]
REGISTRY: dict[str, Presentation] = {}

# two-class views follow the article: one class orange, the other blue
CLASS_COLOURS = ("#e8710a", "#1a73e8")
GROUP_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#469990", "#9a6324", "#800000", "#808000", "#000075", "#a9a9a9", "#fabed4", "#ffd8b1")
PANEL = 220  # px, side of one image panel


def register(name: str) -> Callable[[Presentation], Presentation]:
    def deco(fn: Presentation) -> Presentation:
        if name in REGISTRY:
            raise ValueError(f"presentation {name!r} is registered twice")
        REGISTRY[name] = fn
        return fn
    return deco


def chart_for(view: ElementView) -> alt.TopLevelMixin:
    if view.presentation not in REGISTRY:
        raise KeyError(f"no chart for presentation {view.presentation!r} (registered: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[view.presentation](view)


# ----------------------------------------------------------------------------- helpers
def png_data_url(img: np.ndarray) -> str:
    arr = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    buf = io.BytesIO()
    Image.fromarray((arr * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _image_layer(image: np.ndarray, *, faded: bool = False) -> alt.Chart:
    h, w = image.shape[:2]
    df = pd.DataFrame([{"url": png_data_url(image), "x": 0, "y": 0, "x2": w, "y2": h}])
    return alt.Chart(df).mark_image(aspect=False, opacity=0.55 if faded else 1.0).encode(
        x=alt.X("x:Q", scale=alt.Scale(domain=[0, w], nice=False, zero=False), axis=None),
        y=alt.Y("y:Q", scale=alt.Scale(domain=[h, 0], nice=False, zero=False), axis=None),
        x2="x2:Q", y2="y2:Q", url="url:N",
    )


def _cells(values: np.ndarray, image_hw: tuple[int, int], **extra) -> pd.DataFrame:
    """One row per map cell, in image pixel coordinates."""
    gh, gw = values.shape
    h, w = image_hw
    ys, xs = np.mgrid[0:gh, 0:gw]
    df = pd.DataFrame({
        "col": xs.ravel(), "row": ys.ravel(),
        "x": xs.ravel() * w / gw, "x2": (xs.ravel() + 1) * w / gw,
        "y": ys.ravel() * h / gh, "y2": (ys.ravel() + 1) * h / gh,
        "value": values.ravel().astype(float),
    })
    for k, v in extra.items():
        df[k] = v.ravel() if isinstance(v, np.ndarray) else v
    return df


def _panel(layers: list[alt.Chart], title: str) -> alt.LayerChart:
    return alt.layer(*layers).properties(width=PANEL, height=PANEL, title=title)


def _map_layer(df: pd.DataFrame, image_hw, *, colour, opacity: float, signed: bool, domain=None) -> alt.Chart:
    h, w = image_hw
    if isinstance(colour, str):  # one hue: transparent → colour
        scale = alt.Scale(range=["#ffffff00", colour], domain=domain or [0, max(float(df["value"].max()), 1e-12)])
    elif signed:
        m = max(float(df["value"].abs().max()), 1e-12)
        scale = alt.Scale(scheme="redblue", domain=[m, -m])
    else:
        scale = alt.Scale(scheme="viridis")
    return alt.Chart(df).mark_rect(opacity=opacity, stroke=None).encode(
        x=alt.X("x:Q", scale=alt.Scale(domain=[0, w], nice=False, zero=False), axis=None),
        x2="x2:Q",
        y=alt.Y("y:Q", scale=alt.Scale(domain=[h, 0], nice=False, zero=False), axis=None),
        y2="y2:Q",
        color=alt.Color("value:Q", scale=scale, legend=alt.Legend(title=None, orient="bottom", gradientLength=PANEL - 40)),
        tooltip=[alt.Tooltip("col:Q", title="x"), alt.Tooltip("row:Q", title="y"), alt.Tooltip("value:Q", format=".4g")],
    )


# ----------------------------------------------------------------------------- heatmap
@register("heatmap")
def heatmap(view: ElementView) -> alt.TopLevelMixin:
    """Spatial content over the input. One map: a sequential scale (activation magnitude) or a
    diverging one (signed attribution). Two maps (two classes): each in its colour, positive
    evidence only, plus a combined panel where each cell takes the colour of the stronger class."""
    image = np.asarray(view.data["image"])
    hw = image.shape[:2]
    maps = view.data["maps"]
    opacity = float(view.options.get("opacity", 0.6))
    signed = bool(view.data.get("signed", False))
    clip = bool(view.options.get("clip_negative", False))
    panels = [_panel([_image_layer(image)], "input")]
    if len(maps) == 1:
        v = np.asarray(maps[0]["values"], dtype=np.float32)
        if clip:
            v = np.maximum(v, 0)
        df = _cells(v, hw)
        panels.append(_panel([_image_layer(image, faded=True),
                              _map_layer(df, hw, colour=None, opacity=opacity, signed=signed and not clip)],
                             maps[0]["label"]))
        return alt.hconcat(*panels).resolve_scale(color="independent")
    vals = [np.asarray(m["values"], dtype=np.float32) for m in maps]
    if clip or len(maps) == 2:
        vals = [np.maximum(v, 0) for v in vals]
    top = max(max(float(v.max()) for v in vals), 1e-12)
    for m, v, colour in zip(maps, vals, CLASS_COLOURS * 8):
        df = _cells(v, hw)
        panels.append(_panel([_image_layer(image, faded=True),
                              _map_layer(df, hw, colour=colour, opacity=opacity, signed=False, domain=[0, top])],
                             m["label"]))
    if len(maps) == 2:
        stack = np.stack(vals)
        winner = stack.argmax(0)
        strength = stack.max(0) / top
        labels = np.array([m["label"] for m in maps])[winner]
        df = _cells(stack.max(0), hw, strength=strength, cls=labels)
        h, w = hw
        combined = alt.Chart(df).mark_rect(stroke=None).encode(
            x=alt.X("x:Q", scale=alt.Scale(domain=[0, w], nice=False, zero=False), axis=None), x2="x2:Q",
            y=alt.Y("y:Q", scale=alt.Scale(domain=[h, 0], nice=False, zero=False), axis=None), y2="y2:Q",
            color=alt.Color("cls:N", scale=alt.Scale(domain=[m["label"] for m in maps], range=list(CLASS_COLOURS)),
                            legend=alt.Legend(title=None, orient="bottom")),
            opacity=alt.Opacity("strength:Q", scale=alt.Scale(domain=[0, 1], range=[0, opacity]), legend=None),
            tooltip=[alt.Tooltip("col:Q", title="x"), alt.Tooltip("row:Q", title="y"), alt.Tooltip("cls:N", title="stronger"),
                     alt.Tooltip("value:Q", format=".4g")],
        )
        panels.append(_panel([_image_layer(image, faded=True), combined], "which class each position supports"))
    return alt.hconcat(*panels).resolve_scale(color="independent", opacity="independent")


# ----------------------------------------------------------------------------- bars
def _top_bars(labels: list[str], values: np.ndarray, top: int) -> pd.DataFrame:
    order = np.argsort(values)
    pos = [i for i in order[::-1][:top] if values[i] > 0]
    neg = [i for i in order[:top] if values[i] < 0]
    rows = [{"channel": labels[i], "value": float(values[i]), "sign": "positive" if values[i] > 0 else "negative"}
            for i in pos + neg[::-1]]
    return pd.DataFrame(rows, columns=["channel", "value", "sign"])


@register("bars")
def bars(view: ElementView) -> alt.TopLevelMixin:
    """The ``top`` strongest positive and negative channels, sorted, coloured by sign."""
    top = int(view.options.get("top", 8))
    values = np.asarray(view.data["values"], dtype=np.float32)
    df = _top_bars(list(view.data["labels"]), values, top)
    return alt.Chart(df).mark_bar().encode(
        y=alt.Y("channel:N", sort=alt.EncodingSortField("value", order="descending"), title=None),
        x=alt.X("value:Q", title=f"contribution to {view.data.get('target', '')}"),
        color=alt.Color("sign:N", scale=alt.Scale(domain=["positive", "negative"], range=["#1a9850", "#d73027"]),
                        legend=None),
        tooltip=[alt.Tooltip("channel:N"), alt.Tooltip("value:Q", format=".4g")],
    ).properties(width=360, height=max(60, 18 * len(df)), title=f"top {top} each way of {len(values)} channels")


# ----------------------------------------------------------------------------- groups
@register("groups")
def groups(view: ElementView) -> alt.TopLevelMixin:
    """NMF neuron groups: the combined map (each position in the colour of its strongest group),
    each group's own map, its strongest channels, and each group's attribution to the classes."""
    image = np.asarray(view.data["image"])
    hw = image.shape[:2]
    spatial = np.asarray(view.data["spatial"], dtype=np.float32)
    channels = np.asarray(view.data["channels"], dtype=np.float32)
    labels = list(view.data["channel_labels"])
    k = spatial.shape[0]
    names = [f"group {i + 1}" for i in range(k)]
    colours = list(GROUP_COLOURS[:k]) if k <= len(GROUP_COLOURS) else None
    top_n = int(view.options.get("top_channels", 5))
    norm = spatial / np.maximum(spatial.reshape(k, -1).max(1), 1e-12)[:, None, None]
    winner = norm.argmax(0)
    strength = norm.max(0)
    df = _cells(strength, hw, group=np.array(names)[winner])
    h, w = hw
    colour_scale = alt.Scale(domain=names, range=colours) if colours else alt.Scale(domain=names)
    combined = alt.Chart(df).mark_rect(stroke=None).encode(
        x=alt.X("x:Q", scale=alt.Scale(domain=[0, w], nice=False, zero=False), axis=None), x2="x2:Q",
        y=alt.Y("y:Q", scale=alt.Scale(domain=[h, 0], nice=False, zero=False), axis=None), y2="y2:Q",
        color=alt.Color("group:N", scale=colour_scale, legend=alt.Legend(title=None, orient="bottom", columns=4)),
        opacity=alt.Opacity("value:Q", scale=alt.Scale(domain=[0, 1], range=[0.05, 0.85]), legend=None),
        tooltip=[alt.Tooltip("group:N"), alt.Tooltip("col:Q", title="x"), alt.Tooltip("row:Q", title="y")],
    )
    top_row = [_panel([_image_layer(image)], "input"),
               _panel([_image_layer(image, faded=True), combined], f"{k} neuron groups")]
    small = []
    for i in range(k):
        dfi = _cells(spatial[i], hw)
        layer = _map_layer(dfi, hw, colour=colours[i] if colours else "#333333", opacity=0.85, signed=False)
        small.append(alt.layer(_image_layer(image, faded=True), layer.encode(color=alt.Color(
            "value:Q", scale=alt.Scale(range=["#ffffff00", colours[i] if colours else "#333"]), legend=None)))
            .properties(width=PANEL // 2, height=PANEL // 2, title=names[i]))
    rows = []
    for i in range(k):
        idx = np.argsort(channels[i])[::-1][:top_n]
        for r, c in enumerate(idx):
            rows.append({"group": names[i], "channel": labels[c], "weight": float(channels[i, c]), "rank": r})
    ch = alt.Chart(pd.DataFrame(rows)).mark_bar().encode(
        y=alt.Y("channel:N", sort=alt.EncodingSortField("weight", order="descending"), title=None),
        x=alt.X("weight:Q", title="channel weight"),
        color=alt.Color("group:N", scale=colour_scale, legend=None),
        tooltip=["group:N", "channel:N", alt.Tooltip("weight:Q", format=".4g")],
    ).properties(width=PANEL // 2 + 20, height=16 * top_n).facet(
        facet=alt.Facet("group:N", sort=names, title="strongest channels per group"), columns=min(k, 4)
    ).resolve_scale(y="independent")
    parts = [alt.hconcat(*top_row), alt.hconcat(*small), ch]
    attr = view.data.get("attribution") or {}
    if attr:
        arows = [{"group": names[i], "class": cls, "attribution": float(np.asarray(v)[i])}
                 for cls, v in attr.items() for i in range(k)]
        ac = alt.Chart(pd.DataFrame(arows)).mark_bar().encode(
            x=alt.X("group:N", sort=names, title=None, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("class:N"),
            y=alt.Y("attribution:Q", title="attribution to class"),
            color=alt.Color("class:N", scale=alt.Scale(domain=list(attr), range=(list(CLASS_COLOURS) + ["#7f7f7f", "#9467bd", "#8c564b"] * 4)[:len(attr)]),
                            legend=alt.Legend(title=None, orient="top")),
            tooltip=["group:N", "class:N", alt.Tooltip("attribution:Q", format=".4g")],
        ).properties(width=max(260, 60 * k), height=160, title="each group's attribution")
        parts.append(ac)
    return alt.vconcat(*parts).resolve_scale(color="independent", opacity="independent")
