"""What the presentations' charts share: checks of view data, colours, PNG data URLs, raster layers.

Rasters follow one rule: the input image is a single ``mark_image`` whose ``url`` is a PNG data
URL, and a layer-resolution map is a ``mark_rect`` grid drawn on the same quantitative scales
(grid cells, row 0 at the top), so the two line up whatever their resolutions, and every cell
has a tooltip with its value.

Colour conventions, shared by all presentations:

* sign: positive red, negative blue (the RdBu scheme), in diverging maps and in bars alike;
* classes: the first class orange, the second blue (as in the Building Blocks article), then more;
* NMF groups: one categorical colour per group (:func:`group_colours`), the same in every panel and in every
  element that draws the same groups.
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

from interpgram.backends.render.types import ElementView

CLASS_COLOURS = ("#e8710a", "#1a73e8", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
GROUP_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
                 "#469990", "#800000", "#808000", "#000075")
POSITIVE, NEGATIVE = "#d6604d", "#4393c3"
PANEL = 220  # px, side of one image panel
SMALL = 120  # px, side of a per-group panel

_SIG = 5  # significant digits kept for numbers embedded in the chart JSON


# ----------------------------------------------------------------------------- validation
def view_error(view: ElementView, msg: str) -> ValueError:
    return ValueError(f"element {view.id!r} ({view.presentation}): {msg}")


def options_of(view: ElementView, model: type) -> dict[str, Any]:
    """The view's options over the defaults of the presentation's options model (the one place they
    are written); a ``None`` value means the default; unknown keys fail."""
    defaults = model().model_dump()
    opts = dict(view.options or {})
    unknown = sorted(set(opts) - set(defaults))
    if unknown:
        raise view_error(view, f"unknown option(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(defaults))})")
    return {k: (defaults[k] if opts.get(k) is None else opts[k]) for k in defaults}


def unit_option(view: ElementView, name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not 0 <= float(v) <= 1:
        raise view_error(view, f"option {name!r} must be a number in [0, 1], got {v!r}")
    return float(v)


def count_option(view: ElementView, name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
        raise view_error(view, f"option {name!r} must be a positive integer, got {v!r}")
    return int(v)


def flag_value(view: ElementView, name: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise view_error(view, f"{name} must be true or false, got {v!r}")
    return bool(v)


def need_keys(view: ElementView, *keys: str) -> None:
    if not isinstance(view.data, Mapping):
        raise view_error(view, f"data must be a dict, got {type(view.data).__name__}")
    missing = [k for k in keys if k not in view.data]
    if missing:
        raise view_error(view, f"data lacks {', '.join(map(repr, missing))} (has: {', '.join(map(str, view.data)) or 'nothing'})")


def as_array(view: ElementView, name: str, value: Any, ndim: int) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise view_error(view, f"{name} is not a numeric array ({e})") from None
    if a.ndim != ndim or a.size == 0:
        raise view_error(view, f"{name} must be a non-empty {ndim}-d array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise view_error(view, f"{name} has NaN or infinite values")
    return a


def as_image(view: ElementView, value: Any) -> np.ndarray:
    a = as_array(view, "image", value, 3)
    if a.shape[2] != 3:
        raise view_error(view, f"image must be (H, W, 3), got shape {a.shape}")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise view_error(view, f"image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return a


def non_negative(view: ElementView, name: str, a: np.ndarray) -> np.ndarray:
    if float(a.min()) < -1e-6 * max(1.0, float(np.abs(a).max())):
        raise view_error(view, f"{name} must be non-negative (NMF factors), min is {float(a.min()):.4g}")
    return np.maximum(a, 0.0)


def as_labels(view: ElementView, name: str, value: Any, n: int) -> list[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise view_error(view, f"{name} must be a list of strings, got {type(value).__name__}")
    labels = [str(x) for x in value]
    if len(labels) != n:
        raise view_error(view, f"{len(labels)} {name} for {n} values")
    if len(set(labels)) != n:
        raise view_error(view, f"{name} must be distinct, repeated: {sorted({x for x in labels if labels.count(x) > 1})[:5]}")
    return labels


def sig(x: float) -> float:
    return float(f"{x:.{_SIG}g}")


def distinct_colours(n: int, base: Sequence[str]) -> list[str]:
    """``base`` while it lasts; beyond it, ``n`` hues evenly spaced round the colour wheel."""
    if n <= len(base):
        return list(base[:n])
    out = []
    for i in range(n):
        r, g, b = colorsys.hls_to_rgb(i / n, 0.45, 0.7)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


def group_name(g: int) -> str:
    """The name of NMF group ``g`` (0-based) in every chart: legends, titles, tooltips."""
    return f"group {g + 1}"


def group_colours(k: int) -> list[str]:
    """The colour of each of ``k`` NMF groups: group ``g`` is ``group_colours(k)[g]`` in every element
    that draws those groups (the ``groups`` presentation, a heatmap of them, a group a link selected),
    so one group has one colour on the whole page."""
    return distinct_colours(k, GROUP_COLOURS)


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
    pil.save(buf, format="PNG", compress_level=6)  # optimize=True: 4× the time for 2% smaller (448 px photo)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def grid_scales(gh: int, gw: int) -> tuple[alt.Scale, alt.Scale]:
    return (alt.Scale(domain=[0, gw], nice=False, zero=False),
            alt.Scale(domain=[0, gh], nice=False, zero=False, reverse=True))


def image_layer(url: str, gh: int, gw: int) -> alt.Chart:
    """The image stretched over the whole ``gh × gw`` grid."""
    xs, ys = grid_scales(gh, gw)
    return alt.Chart({"values": [{"url": url, "x": 0, "x2": gw, "y": 0, "y2": gh}]}).mark_image(aspect=False).encode(
        x=alt.X("x:Q", scale=xs, axis=None), x2="x2:Q",
        y=alt.Y("y:Q", scale=ys, axis=None), y2="y2:Q",
        url="url:N",
    )


def cell_records(values: np.ndarray, alpha: np.ndarray, **extra: Any) -> list[dict[str, Any]]:
    """One row per grid cell: row, col, value, and its opacity ``alpha`` (drawn as is, see ALPHA)."""
    gh, gw = values.shape
    return [{**extra, "row": i, "col": j, "value": sig(values[i, j]), "alpha": round(float(alpha[i, j]), 3)}
            for i in range(gh) for j in range(gw)]


# Per-cell opacity is computed here and drawn without a scale: no opacity legend can appear, and
# Vega-Lite never tries to merge it with the colour legend (it does when both domains coincide).
ALPHA = alt.Opacity("alpha:Q", scale=None)


def ramp(v: np.ndarray, lo: float, hi: float, a0: float, a1: float) -> np.ndarray:
    """Opacity from ``a0`` at ``lo`` to ``a1`` at ``hi`` (clamped)."""
    t = np.clip((v - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(v)
    return a0 + (a1 - a0) * t


def cell_layer(rows: list[dict[str, Any]], gh: int, gw: int) -> alt.Chart:
    xs, ys = grid_scales(gh, gw)
    return (alt.Chart({"values": rows})
            .transform_calculate(col_end="datum.col + 1", row_end="datum.row + 1")
            .mark_rect(strokeWidth=0)
            .encode(x=alt.X("col:Q", scale=xs, axis=None), x2="col_end:Q",
                    y=alt.Y("row:Q", scale=ys, axis=None), y2="row_end:Q"))


def hover_ring(rows: list[dict[str, Any]], gh: int, gw: int, param, empty: bool = True) -> alt.LayerChart:
    """The cell ``param`` selects, outlined dark and light (a 3.5 px near-black ring under a 1.5 px white
    one), so it shows on any photo: a single orange outline vanished on an orange espresso. ``empty``:
    whether a selection with nothing in it rings every cell (False: none, until something is picked)."""
    base = cell_layer(rows, gh, gw).transform_filter({"param": param.name, "empty": empty})
    return alt.layer(base.mark_rect(fillOpacity=0, stroke="#111111", strokeWidth=3.5),
                     base.mark_rect(fillOpacity=0, stroke="#ffffff", strokeWidth=1.5))


def link_param(view: ElementView, fields: list[str]):
    """The selection parameter ``link`` of a view that is the source of a link (else None): the
    report's script and the dashboard listen to it. Hover links select on pointer-over, others on click."""
    src = view.link_source
    if not src:
        return None
    on = "pointerover" if src.get("event") == "hover" else "click"
    return alt.selection_point(name="link", fields=fields, on=on, clear=False, nearest=False, toggle=False)


def pick_layer(view: ElementView, gh: int, gw: int, param) -> alt.LayerChart:
    """Transparent cells over a map that select their position (col, row) for a link, the picked one
    ringed (:func:`hover_ring`; none before a pick)."""
    rows = [{"row": i, "col": j} for i in range(gh) for j in range(gw)]
    cells = cell_layer(rows, gh, gw).mark_rect(fill="#000000", fillOpacity=0.0, strokeWidth=0).encode(
        tooltip=[alt.Tooltip("col:Q", title="x"), alt.Tooltip("row:Q", title="y")],
    ).add_params(param)
    return alt.layer(cells, hover_ring(rows, gh, gw, param, empty=False))


def panel_px(image: np.ndarray, width: int) -> tuple[int, int]:
    h, w = image.shape[:2]
    return width, max(1, round(width * h / w))


# ----------------------------------------------------------------------------- shared by charts and links
def top_channels(values: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``top`` largest positive values (largest first) and of the ``top`` most
    negative ones (most negative first); zeros are in neither; ties keep channel order."""
    values = np.asarray(values)
    desc = np.argsort(-values, kind="stable")
    asc = np.argsort(values, kind="stable")
    return desc[values[desc] > 0][:top], asc[values[asc] < 0][:top]



BAR_ICON_PX = 40  # display side of a bar's icon
ICON_PX = 72  # display size of one icon


def icon_urls(view: ElementView, icons: Any, n: int | None = None) -> list[str]:
    if isinstance(icons, np.ndarray):
        icons = list(icons)
    if not isinstance(icons, Sequence) or (n is not None and len(icons) != n):
        raise view_error(view, f"icons must be a list of {n if n is not None else 'N'} (s, s, 3) images")
    urls = []
    for i, ic in enumerate(icons):
        a = np.asarray(ic, dtype=np.float32)
        if a.ndim != 3 or a.shape[2] != 3:
            raise view_error(view, f"icon {i} must be (s, s, 3), got shape {a.shape}")
        urls.append(png_data_url(a))  # native size: icons are smooth, the browser scales them
    return urls
