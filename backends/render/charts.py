"""Built-in presentations, one registered function each: ElementView → Altair chart.

Rasters follow one rule: the input image is a single ``mark_image`` whose ``url`` is a PNG data
URL, and a layer-resolution map is a ``mark_rect`` grid drawn on the same quantitative scales
(grid cells, row 0 at the top), so the two line up whatever their resolutions, and every cell
has a tooltip with its value.

Colour conventions, shared by all presentations:

* sign: positive red, negative blue (the RdBu scheme), in diverging maps and in bars alike;
* classes: the first class orange, the second blue (as in the Building Blocks article), then more;
* NMF groups: one categorical colour per group, the same in every panel of the element.
"""
from __future__ import annotations

import base64
import colorsys
import io
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
from PIL import Image

from interpgram.backends.render.registry import register
from interpgram.backends.render.types import ElementView

CLASS_COLOURS = ("#e8710a", "#1a73e8", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
GROUP_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
                 "#469990", "#800000", "#808000", "#000075")
POSITIVE, NEGATIVE = "#d6604d", "#4393c3"
PANEL = 220  # px, side of one image panel
SMALL = 120  # px, side of a per-group panel

_SIG = 5  # significant digits kept for numbers embedded in the chart JSON


# ----------------------------------------------------------------------------- validation
def _fail(view: ElementView, msg: str) -> ValueError:
    return ValueError(f"element {view.id!r} ({view.presentation}): {msg}")


def _options(view: ElementView, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The view's options over ``defaults``; a ``None`` value means the default; unknown keys fail."""
    opts = dict(view.options or {})
    unknown = sorted(set(opts) - set(defaults))
    if unknown:
        raise _fail(view, f"unknown option(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(defaults))})")
    return {k: (defaults[k] if opts.get(k) is None else opts[k]) for k in defaults}


def _unit(view: ElementView, name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not 0 <= float(v) <= 1:
        raise _fail(view, f"option {name!r} must be a number in [0, 1], got {v!r}")
    return float(v)


def _count(view: ElementView, name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
        raise _fail(view, f"option {name!r} must be a positive integer, got {v!r}")
    return int(v)


def _flag(view: ElementView, name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise _fail(view, f"{name} must be true or false, got {v!r}")
    return bool(v)


def _need(view: ElementView, *keys: str) -> None:
    if not isinstance(view.data, Mapping):
        raise _fail(view, f"data must be a dict, got {type(view.data).__name__}")
    missing = [k for k in keys if k not in view.data]
    if missing:
        raise _fail(view, f"data lacks {', '.join(map(repr, missing))} (has: {', '.join(map(str, view.data)) or 'nothing'})")


def _array(view: ElementView, name: str, value: Any, ndim: int) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise _fail(view, f"{name} is not a numeric array ({e})") from None
    if a.ndim != ndim or a.size == 0:
        raise _fail(view, f"{name} must be a non-empty {ndim}-d array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise _fail(view, f"{name} has NaN or infinite values")
    return a


def _image(view: ElementView, value: Any) -> np.ndarray:
    a = _array(view, "image", value, 3)
    if a.shape[2] != 3:
        raise _fail(view, f"image must be (H, W, 3), got shape {a.shape}")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise _fail(view, f"image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return a


def _non_negative(view: ElementView, name: str, a: np.ndarray) -> np.ndarray:
    if float(a.min()) < -1e-6 * max(1.0, float(np.abs(a).max())):
        raise _fail(view, f"{name} must be non-negative (NMF factors), min is {float(a.min()):.4g}")
    return np.maximum(a, 0.0)


def _labels(view: ElementView, name: str, value: Any, n: int) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise _fail(view, f"{name} must be a list of strings, got {type(value).__name__}")
    labels = [str(x) for x in value]
    if len(labels) != n:
        raise _fail(view, f"{len(labels)} {name} for {n} values")
    if len(set(labels)) != n:
        raise _fail(view, f"{name} must be distinct, repeated: {sorted({x for x in labels if labels.count(x) > 1})[:5]}")
    return labels


def _sig(x: float) -> float:
    return float(f"{x:.{_SIG}g}")


def _distinct_colours(n: int, base: Sequence[str]) -> list[str]:
    """``base`` while it lasts; beyond it, ``n`` hues evenly spaced round the colour wheel."""
    if n <= len(base):
        return list(base[:n])
    out = []
    for i in range(n):
        r, g, b = colorsys.hls_to_rgb(i / n, 0.45, 0.7)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


# ----------------------------------------------------------------------------- rasters
def png_data_url(img: np.ndarray, display_px: int | None = None) -> str:
    """A PNG data URL of an (H, W, 3) or (H, W) image with values in [0, 1].

    With ``display_px`` (the panel width it is shown at) a small image is enlarged by an integer
    factor with nearest-neighbour, so its pixels stay crisp in every renderer instead of being
    smoothed, and a large one is reduced to twice that width (sharp on hi-dpi screens, smaller file).
    """
    arr = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    pil = Image.fromarray((arr * 255 + 0.5).astype(np.uint8), mode="RGB")
    if display_px:
        w, h = pil.size
        target = 2 * display_px
        if w < target and target // w > 1:
            f = target // w
            pil = pil.resize((w * f, h * f), Image.Resampling.NEAREST)
        elif w > target:
            pil = pil.resize((target, max(1, round(h * target / w))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _scales(gh: int, gw: int) -> tuple[alt.Scale, alt.Scale]:
    return (alt.Scale(domain=[0, gw], nice=False, zero=False),
            alt.Scale(domain=[0, gh], nice=False, zero=False, reverse=True))


def _image_layer(url: str, gh: int, gw: int) -> alt.Chart:
    """The image stretched over the whole ``gh × gw`` grid."""
    xs, ys = _scales(gh, gw)
    return alt.Chart({"values": [{"url": url, "x": 0, "x2": gw, "y": 0, "y2": gh}]}).mark_image(aspect=False).encode(
        x=alt.X("x:Q", scale=xs, axis=None), x2="x2:Q",
        y=alt.Y("y:Q", scale=ys, axis=None), y2="y2:Q",
        url="url:N",
    )


def _cells(values: np.ndarray, alpha: np.ndarray, **extra: Any) -> list[dict[str, Any]]:
    """One row per grid cell: row, col, value, and its opacity ``alpha`` (drawn as is, see ALPHA)."""
    gh, gw = values.shape
    return [{**extra, "row": i, "col": j, "value": _sig(values[i, j]), "alpha": round(float(alpha[i, j]), 3)}
            for i in range(gh) for j in range(gw)]


# Per-cell opacity is computed here and drawn without a scale: no opacity legend can appear, and
# Vega-Lite never tries to merge it with the colour legend (it does when both domains coincide).
ALPHA = alt.Opacity("alpha:Q", scale=None)


def _ramp(v: np.ndarray, lo: float, hi: float, a0: float, a1: float) -> np.ndarray:
    """Opacity from ``a0`` at ``lo`` to ``a1`` at ``hi`` (clamped)."""
    t = np.clip((v - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(v)
    return a0 + (a1 - a0) * t


def _cell_layer(rows: list[dict[str, Any]], gh: int, gw: int) -> alt.Chart:
    xs, ys = _scales(gh, gw)
    return (alt.Chart({"values": rows})
            .transform_calculate(col_end="datum.col + 1", row_end="datum.row + 1")
            .mark_rect(strokeWidth=0)
            .encode(x=alt.X("col:Q", scale=xs, axis=None), x2="col_end:Q",
                    y=alt.Y("row:Q", scale=ys, axis=None), y2="row_end:Q"))


def link_param(view: ElementView, fields: list[str]):
    """The selection parameter ``link`` of a view that is the source of a link (else None): the
    report's script and the dashboard listen to it. Hover links select on pointer-over, others on click."""
    src = view.link_source
    if not src:
        return None
    on = "pointerover" if src.get("event") == "hover" else "click"
    return alt.selection_point(name="link", fields=fields, on=on, clear=False, nearest=False, toggle=False)


def _pick_layer(view: ElementView, gh: int, gw: int, param) -> alt.Chart:
    """Transparent cells over a map that select their position (col, row) for a link."""
    rows = [{"row": i, "col": j} for i in range(gh) for j in range(gw)]
    return _cell_layer(rows, gh, gw).mark_rect(fill="#000000", fillOpacity=0.0, strokeWidth=1.5).encode(
        stroke=alt.condition(param, alt.value("#e8710a"), alt.value("#ffffff"), empty=False),
        strokeOpacity=alt.condition(param, alt.value(1.0), alt.value(0.0), empty=False),
        tooltip=[alt.Tooltip("col:Q", title="x"), alt.Tooltip("row:Q", title="y")],
    ).add_params(param)


def _panel_px(image: np.ndarray, width: int) -> tuple[int, int]:
    h, w = image.shape[:2]
    return width, max(1, round(width * h / w))


# ----------------------------------------------------------------------------- heatmap
HEATMAP_OPTIONS = {"opacity": 0.6, "clip_negative": False}


@register("heatmap")
def heatmap(view: ElementView) -> alt.TopLevelMixin:
    """Maps over the input image, beside the plain input.

    One map: a colour scale over the image — sequential (magnitude) or diverging red/blue centred
    on zero when ``signed`` — whose transparency follows the magnitude, so the image shows through
    where the map is weak. Two or more maps (one per class): each class in its own colour, clipped
    at zero (positive evidence only), one panel per class, then an overlay in which every position
    takes the colour of the class it supports most.
    """
    opts = _options(view, HEATMAP_OPTIONS)
    opacity = _unit(view, "opacity", opts["opacity"])
    clip = _flag(view, "option 'clip_negative'", opts["clip_negative"])
    _need(view, "image", "maps")
    image = _image(view, view.data["image"])
    signed = _flag(view, "data 'signed'", view.data.get("signed", False))
    raw = view.data["maps"]
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)) or not raw:
        raise _fail(view, "data 'maps' must be a non-empty list of {'label', 'values'} dicts")
    labels, maps = [], []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping) or "label" not in m or "values" not in m:
            raise _fail(view, f"maps[{i}] must be a dict with 'label' and 'values'")
        labels.append(str(m["label"]))
        maps.append(_array(view, f"maps[{i}].values", m["values"], 2))
    if len({m.shape for m in maps}) != 1:
        raise _fail(view, f"the maps differ in shape: {[m.shape for m in maps]}")
    if len(set(labels)) != len(labels):
        raise _fail(view, f"map labels must be distinct, got {labels}")
    gh, gw = maps[0].shape
    pw, ph = _panel_px(image, PANEL)
    url = png_data_url(image, pw)

    def panel(layers: list[alt.Chart], title: str | alt.TitleParams) -> alt.LayerChart:
        return alt.layer(_image_layer(url, gh, gw), *layers).properties(width=pw, height=ph, title=title)

    where = [alt.Tooltip("row:Q", title="row"), alt.Tooltip("col:Q", title="column")]
    panels = [panel([], "input")]

    if len(maps) == 1:
        v = np.maximum(maps[0], 0) if clip else maps[0]
        legend = alt.Legend(title=None, orient="right", gradientLength=max(60, ph - 40))
        if signed and not clip:
            m = float(np.abs(v).max()) or 1.0
            rows = _cells(v, _ramp(np.abs(v), 0, m, 0, opacity))
            colour = alt.Color("value:Q", legend=legend,
                               scale=alt.Scale(scheme="redblue", reverse=True, domain=[-m, m], domainMid=0))
        else:
            lo, hi = float(v.min()), float(v.max())
            hi = hi if hi > lo else lo + 1.0
            rows = _cells(v, _ramp(v, lo, hi, 0.2 * opacity, opacity))
            colour = alt.Color("value:Q", legend=legend, scale=alt.Scale(scheme="viridis", domain=[lo, hi]))
        layer = _cell_layer(rows, gh, gw).encode(
            color=colour, opacity=ALPHA, tooltip=[*where, alt.Tooltip("value:Q", title=labels[0], format=".4g")])
        pick = link_param(view, ["col", "row"])
        panels.append(panel([layer] + ([_pick_layer(view, gh, gw, pick)] if pick is not None else []), labels[0]))
        return alt.hconcat(*panels, spacing=18)

    # several classes: positive evidence only, one colour per class
    colours = _distinct_colours(len(maps), CLASS_COLOURS)
    pos = np.stack([np.maximum(m, 0) for m in maps])
    top = float(pos.max()) or 1.0
    pick = link_param(view, ["col", "row"])
    for k, label in enumerate(labels):
        layer = _cell_layer(_cells(pos[k], _ramp(pos[k], 0, top, 0, opacity)), gh, gw).encode(
            color=alt.value(colours[k]), opacity=ALPHA,
            tooltip=[*where, alt.Tooltip("value:Q", title=label, format=".4g")])
        extra = [_pick_layer(view, gh, gw, pick)] if pick is not None and k == 0 else []
        panels.append(panel([layer] + extra, alt.TitleParams(label, color=colours[k])))
    winner, strength = pos.argmax(0), pos.max(0)
    rows = _cells(strength, _ramp(strength, 0, top, 0, opacity))
    nothing = "(no positive evidence)"  # positions no class supports: drawn fully transparent
    while nothing in labels:
        nothing += "*"
    for r in rows:
        i, j = r["row"], r["col"]
        r["class"] = labels[int(winner[i, j])] if strength[i, j] > 0 else nothing
        r["values"] = " · ".join(f"{lab} {_sig(pos[k, i, j]):.4g}" for k, lab in enumerate(labels))
    combined = _cell_layer(rows, gh, gw).encode(
        color=alt.Color("class:N", scale=alt.Scale(domain=labels + [nothing], range=colours + ["#ffffff"]),
                        legend=alt.Legend(title=None, orient="bottom", values=labels)),
        opacity=ALPHA,
        tooltip=[*where, alt.Tooltip("class:N", title="supports most"), alt.Tooltip("values:N", title="evidence")])
    panels.append(panel([combined], "which class each position supports"))
    return alt.hconcat(*panels, spacing=18)


# ----------------------------------------------------------------------------- bars
BARS_OPTIONS = {"top": 8, "icons": False, "icon": None}
BAR_ICON_PX = 40


def top_channels(values: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``top`` largest positive values (largest first) and of the ``top`` most
    negative ones (most negative first); zeros are in neither; ties keep channel order."""
    values = np.asarray(values)
    desc = np.argsort(-values, kind="stable")
    asc = np.argsort(values, kind="stable")
    return desc[values[desc] > 0][:top], asc[values[asc] < 0][:top]


@register("bars")
def bars(view: ElementView) -> alt.TopLevelMixin:
    """The ``top`` strongest positive and the ``top`` strongest negative channels as horizontal
    bars sorted by value, red for positive and blue for negative, tooltip with label and value."""
    top = _count(view, "top", _options(view, BARS_OPTIONS)["top"])
    _need(view, "labels", "values", "target")
    values = _array(view, "values", view.data["values"], 1)
    labels = _labels(view, "labels", view.data["labels"], values.shape[0])
    target = str(view.data["target"])
    pos, neg = top_channels(values, top)
    rows = ([{"channel": labels[i], "atom": int(i), "value": _sig(values[i]), "sign": "positive"} for i in pos]
            + [{"channel": labels[i], "atom": int(i), "value": _sig(values[i]), "sign": "negative"} for i in neg])
    icons = view.data.get("icons")
    if icons is not None:
        if not isinstance(icons, Mapping):
            raise _fail(view, "data 'icons' must map a channel label to its (s, s, 3) icon")
        missing = [r["channel"] for r in rows if r["channel"] not in icons]
        if missing:
            raise _fail(view, f"no icon for {', '.join(missing[:5])}")
        for r in rows:
            r["url"] = png_data_url(np.asarray(icons[r["channel"]], dtype=np.float32))
    m = max((abs(r["value"]) for r in rows), default=0.0) or 1.0
    n_pos, n_neg = int((values > 0).sum()), int((values < 0).sum())
    bar = alt.Chart({"values": rows}).mark_bar(height={"band": 0.8}).encode(
        y=alt.Y("channel:N", sort=alt.EncodingSortField("value", order="descending"), title=None),
        x=alt.X("value:Q", title=str(view.data.get("axis", f"attribution to {target}")), scale=alt.Scale(domain=[-m, m])),
        color=alt.Color("sign:N", scale=alt.Scale(domain=["positive", "negative"], range=[POSITIVE, NEGATIVE]),
                        legend=alt.Legend(title=None, orient="bottom")),
        tooltip=[alt.Tooltip("channel:N"), alt.Tooltip("value:Q", format=".4g")],
    )
    pick = link_param(view, ["atom"])
    if pick is not None:  # a link source: the selected bar is outlined
        bar = bar.encode(stroke=alt.condition(pick, alt.value("#e8710a"), alt.value(None), empty=False),
                         strokeWidth=alt.condition(pick, alt.value(2), alt.value(0), empty=False)).add_params(pick)
    zero = alt.Chart({"values": [{"zero": 0}]}).mark_rule(color="#777777").encode(x="zero:Q")
    title = alt.TitleParams(
        str(view.data.get("heading", f"strongest channels for {target}")),
        subtitle=f"top {len(pos)} of {n_pos} positive, top {len(neg)} of {n_neg} negative ({values.shape[0]} channels)")
    if icons is None:
        return alt.layer(bar, zero).properties(width=360, height=alt.Step(17), title=title)
    step = alt.Step(BAR_ICON_PX + 4)
    pics = alt.Chart({"values": rows}).mark_image(width=BAR_ICON_PX, height=BAR_ICON_PX).encode(
        y=alt.Y("channel:N", sort=alt.EncodingSortField("value", order="descending"), axis=None),
        x=alt.value(BAR_ICON_PX / 2), url="url:N",
        tooltip=[alt.Tooltip("channel:N"), alt.Tooltip("value:Q", format=".4g")],
    ).properties(width=BAR_ICON_PX, height=step)
    return alt.hconcat(pics, alt.layer(bar, zero).properties(width=360, height=step), spacing=2).properties(title=title)


# ----------------------------------------------------------------------------- groups
GROUPS_OPTIONS = {"top_channels": 5, "icons": True, "icon": None}


@register("groups")
def groups(view: ElementView) -> alt.TopLevelMixin:
    """NMF neuron groups.

    A group's share of the activation at a position is ``spatial[g, p] · ‖channels[g]‖`` (NMF
    leaves the scale between the two factors free; this product does not depend on it), so all
    maps share one scale:

    * a combined map where every position takes the colour of its strongest group and its
      transparency follows that group's share (Building Blocks' "neuron groups" view);
    * each group's attribution to each listed class, as grouped bars (when classes are given);
    * per group, a column: its share over the image in the group's colour, then the strongest
      channels of its direction (weights of the unit-length direction).
    """
    top_n = _count(view, "top_channels", _options(view, GROUPS_OPTIONS)["top_channels"])
    _need(view, "image", "spatial", "channels", "channel_labels")
    image = _image(view, view.data["image"])
    spatial = _non_negative(view, "spatial", _array(view, "spatial", view.data["spatial"], 3))
    channels = _non_negative(view, "channels", _array(view, "channels", view.data["channels"], 2))
    k, gh, gw = spatial.shape
    if channels.shape[0] != k:
        raise _fail(view, f"channels has {channels.shape[0]} groups, spatial has {k}")
    labels = _labels(view, "channel_labels", view.data["channel_labels"], channels.shape[1])
    attribution = view.data.get("attribution") or {}
    if not isinstance(attribution, Mapping):
        raise _fail(view, f"data 'attribution' must be a dict class → (k,) array, got {type(attribution).__name__}")
    attr = {}
    for cls, v in attribution.items():
        a = _array(view, f"attribution[{cls!r}]", v, 1)
        if a.shape[0] != k:
            raise _fail(view, f"attribution[{cls!r}] has {a.shape[0]} values for {k} groups")
        attr[str(cls)] = a

    names = [f"group {i + 1}" for i in range(k)]
    colours = _distinct_colours(k, GROUP_COLOURS)
    group_colour = alt.Scale(domain=names, range=colours)
    norms = np.linalg.norm(channels, axis=1)
    share = spatial * norms[:, None, None]
    direction = channels / np.maximum(norms, 1e-30)[:, None]
    peak = float(share.max()) or 1.0
    where = [alt.Tooltip("row:Q"), alt.Tooltip("col:Q", title="column")]

    cw, ch = _panel_px(image, PANEL)
    winner, strength = share.argmax(0), share.max(0)
    rows = _cells(strength, _ramp(strength, 0, peak, 0, 0.85))
    focus = view.data.get("focus")
    for r in rows:
        r["gid"] = int(winner[r["row"], r["col"]])
        r["group"] = names[r["gid"]]
    if focus is not None:  # a link selected one group: the map shows that group's share alone
        focus = int(focus)
        if not 0 <= focus < k:
            raise _fail(view, f"focus group {focus} is outside 0..{k - 1}")
        rows = _cells(share[focus], _ramp(share[focus], 0, peak, 0, 0.85), group=names[focus], gid=focus)
    cells = _cell_layer(rows, gh, gw).encode(
        color=alt.Color("group:N", scale=group_colour, legend=alt.Legend(title=None, orient="left")),
        opacity=ALPHA,
        tooltip=[*where, alt.Tooltip("group:N", title="strongest"), alt.Tooltip("value:Q", title="share", format=".4g")])
    pick = link_param(view, ["gid"])
    if pick is not None:
        cells = cells.add_params(pick)
    combined = alt.layer(_image_layer(png_data_url(image, cw), gh, gw), cells).properties(
        width=cw, height=ch, title=(f"{names[focus]} (selected)" if focus is not None
                                    else f"{k} neuron groups: the strongest at each position"))
    first_row: list[alt.TopLevelMixin] = [combined]
    if attr:
        arows = [{"group": names[g], "class": cls, "value": _sig(a[g])} for cls, a in attr.items() for g in range(k)]
        bars_ = alt.Chart({"values": arows}).mark_bar().encode(
            x=alt.X("class:N", sort=list(attr), title=None, axis=alt.Axis(labelAngle=0, labelFontSize=11)),
            xOffset=alt.XOffset("group:N", sort=names),
            y=alt.Y("value:Q", title="attribution"),
            color=alt.Color("group:N", scale=group_colour, legend=None),
            tooltip=[alt.Tooltip("group:N"), alt.Tooltip("class:N"), alt.Tooltip("value:Q", format=".4g")],
        )
        zero = alt.Chart({"values": [{"zero": 0}]}).mark_rule(color="#777777").encode(y="zero:Q")
        first_row.append(alt.layer(bars_, zero).properties(
            width=alt.Step(max(6, min(18, 240 // k))), height=ch - 40, title="each group's attribution to each class"))

    icons = view.data.get("icons")
    if icons is not None and len(icons) != k:
        raise _fail(view, f"{len(icons)} icons for {k} groups")
    w_max = max(float(np.sort(direction[g])[-top_n:].max()) for g in range(k)) or 1.0
    sw, sh = _panel_px(image, SMALL)
    small_url = png_data_url(image, sw)
    columns = []
    for g in range(k):
        own = alt.layer(
            _image_layer(small_url, gh, gw),
            _cell_layer(_cells(share[g], _ramp(share[g], 0, peak, 0, 0.85), group=names[g]), gh, gw).encode(
                color=alt.Color("group:N", scale=group_colour, legend=None), opacity=ALPHA,
                tooltip=[*where, alt.Tooltip("group:N"), alt.Tooltip("value:Q", title="share", format=".4g")]),
        ).properties(width=sw, height=sh, title=alt.TitleParams(names[g], color=colours[g]))
        order = np.argsort(-direction[g], kind="stable")[:top_n]
        crows = [{"group": names[g], "channel": labels[c], "weight": _sig(direction[g, c])} for c in order]
        strongest = alt.Chart({"values": crows}).mark_bar().encode(
            y=alt.Y("channel:N", sort=alt.EncodingSortField("weight", order="descending"), title=None),
            x=alt.X("weight:Q", title="weight in direction", scale=alt.Scale(domain=[0, w_max], nice=False),
                    axis=alt.Axis(tickCount=2, format=".2~f")),
            color=alt.Color("group:N", scale=group_colour, legend=None),
            tooltip=[alt.Tooltip("group:N"), alt.Tooltip("channel:N"), alt.Tooltip("weight:Q", format=".3f")],
        ).properties(width=sw - 50, height=alt.Step(14))
        parts = [own, strongest]
        if icons is not None:
            url = png_data_url(np.asarray(icons[g], dtype=np.float32))
            pic = alt.Chart({"values": [{"url": url, "group": names[g], "x": 0, "x2": 1, "y": 0, "y2": 1}]}).mark_image(
                aspect=False).encode(x=alt.X("x:Q", axis=None, scale=alt.Scale(domain=[0, 1])), x2="x2:Q",
                                     y=alt.Y("y:Q", axis=None, scale=alt.Scale(domain=[0, 1])), y2="y2:Q", url="url:N",
                                     tooltip=[alt.Tooltip("group:N", title="feature visualisation of")]
                                     ).properties(width=sw, height=sw, title=alt.TitleParams(names[g], color=colours[g]))
            own = own.properties(title="")
            parts = [pic, own, strongest]
        columns.append(alt.vconcat(*parts, spacing=6))
    # one colour scale for every panel; only the combined map shows its legend
    return (alt.vconcat(alt.hconcat(*first_row, spacing=40).resolve_legend(color="independent"), alt.hconcat(*columns, spacing=14), spacing=28)
            .resolve_legend(color="independent"))
