"""The zoomable activation-atlas chart: a pure function of the atlas's cells (no registry entry
here; the integrator registers a presentation that calls :func:`atlas_chart`).

Left, the atlas: one icon per kept cell of the grid, placed at its (col, row) with row 0 at the
bottom (the layout's y points up, as the article draws it); cells that were not kept are blank,
a kept cell without an icon is a grey square. The x and y scales are bound to an interval
selection, so the mouse wheel zooms and dragging pans (double-click resets); icons are placed in
data coordinates and grow with the zoom. Hovering a cell shows its top class, its count and a
strip of example patches (vega-tooltip draws a tooltip field titled ``image`` as an ``<img>``;
the tooltip field titled ``title`` becomes its heading). With ``sized`` every icon's side is
scaled by the cell's ``size`` (``log count / log max count``).

Right: the clicked cell's mean attribution to its strongest classes (a point selection named
``cell`` on ``col, row``; it opens on the cell with the largest count, outlined on the atlas).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np

from interpgram.backends.render.charts import NEGATIVE, POSITIVE, sig

__all__ = ["atlas_chart"]

MAX_PANEL = 720  # px: the atlas panel's side is grid × icon_px up to this; zoom brings icons back up
TOP_CLASSES = 10  # bars shown for the selected cell
HIGHLIGHT = "#e8710a"
PLACEHOLDER = "#e8eaed"
_KEYS = ("col", "row", "count", "top_class", "icon", "patches", "attribution", "size")


def _check(cells: Sequence[Mapping[str, Any]], classes: Sequence[str], grid: int) -> None:
    if not isinstance(grid, (int, np.integer)) or isinstance(grid, bool) or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    if not cells:
        raise ValueError("an atlas needs at least one cell")
    seen = set()
    for i, c in enumerate(cells):
        if not isinstance(c, Mapping):
            raise ValueError(f"cells[{i}] must be a dict, got {type(c).__name__}")
        missing = [k for k in _KEYS if k not in c]
        if missing:
            raise ValueError(f"cells[{i}] lacks {', '.join(missing)}")
        col, row = int(c["col"]), int(c["row"])
        if not (0 <= col < grid and 0 <= row < grid):
            raise ValueError(f"cells[{i}] at (col {col}, row {row}) is outside the {grid}×{grid} grid")
        if (col, row) in seen:
            raise ValueError(f"two cells at (col {col}, row {row})")
        seen.add((col, row))
        if len(c["attribution"]) != len(classes):
            raise ValueError(f"cells[{i}] has {len(c['attribution'])} attributions for {len(classes)} classes")
        if not -1 <= int(c["top_class"]) < len(classes):
            raise ValueError(f"cells[{i}] top_class {c['top_class']} out of range for {len(classes)} classes")
        for key in ("icon", "patches"):
            v = c[key]
            if v is not None and not (isinstance(v, str) and v.startswith("data:image/")):
                raise ValueError(f"cells[{i}].{key} must be a data:image/… URL or None (no external URLs)")
        s = float(c["size"])
        if not (np.isfinite(s) and 0 <= s <= 1):
            raise ValueError(f"cells[{i}].size must lie in [0, 1], got {s}")


def atlas_chart(cells: list[dict], classes: list[str], *, title: str, grid: int, icon_px: int = 48,
                patch_test: dict | None = None,
                sized: bool = False, subtitle: str = "", x_title: str | None = None,
                y_title: str | None = None) -> alt.TopLevelMixin:
    """The atlas (left) and the selected cell's attribution to classes (right).

    ``cells``: one dict per kept cell with ``col``, ``row`` (grid cell, row 0 at the bottom),
    ``count``, ``top_class`` (index into ``classes``, -1 for none), ``icon`` and ``patches`` (PNG
    data URLs or None), ``attribution`` (the cell's mean attribution to each class) and ``size``
    (in [0, 1]; used when ``sized``). ``grid`` is the grid's side; the panel is ``grid × icon_px``
    pixels square up to :data:`MAX_PANEL`. ``x_title``/``y_title`` label the axes (the two-class
    atlas's attribution axis); without them the atlas has no axes.
    """
    classes = [str(c) for c in classes]
    _check(cells, classes, grid)
    grid = int(grid)
    side = max(120, min(grid * int(icon_px), MAX_PANEL))
    pad = 0.03  # a thin gap between neighbouring icons
    cell_rows, icon_rows, bar_rows = [], [], []
    for c in cells:
        col, row = int(c["col"]), int(c["row"])
        top = int(c["top_class"])
        r = {"col": col, "row": row, "col_end": col + 1, "row_end": row + 1, "count": int(c["count"]),
             "top": classes[top] if top >= 0 else "—", "fo": 0.0 if c["icon"] else 1.0}
        r["desc"] = f"cell ({col}, {row}): {r['top']}, {r['count']} samples"  # not the data URLs
        if c["patches"]:
            r["patches"] = c["patches"]
        if patch_test is not None and c.get("flip") is not None:  # the article's patch experiment, per cell
            r["flip"] = float(c["flip"])
            r["flip_text"] = (f"patch test: this icon pasted ({patch_test['size']} px)\n"
                              f"onto {patch_test['n']} images turns {100 * r['flip']:.1f}%\n"
                              f"into {patch_test['class']} (a noise patch: {100 * patch_test['noise']:.1f}%)")
        cell_rows.append(r)
        if c["icon"]:
            half = 0.5 * (1 - 2 * pad) * (float(c["size"]) if sized else 1.0)
            icon_rows.append({"col": col, "row": row, "icon": c["icon"],
                              "x0": round(col + 0.5 - half, 4), "x1": round(col + 0.5 + half, 4),
                              "y0": round(row + 0.5 - half, 4), "y1": round(row + 0.5 + half, 4)})
        attr = np.asarray(c["attribution"], dtype=np.float64)
        order = np.argsort(-attr, kind="stable")[:TOP_CLASSES]
        for rank, k in enumerate(order):
            bar_rows.append({"col": col, "row": row, "class": classes[int(k)], "attribution": sig(float(attr[k])),
                             "rank": rank})

    biggest = max(cells, key=lambda c: int(c["count"]))  # the first of the largest
    if patch_test is not None:  # a class atlas with its patch test opens on the strongest patch
        biggest = max(cells, key=lambda c: float(c.get("flip") or 0.0))
    zoom = alt.selection_interval(name="zoom", bind="scales", encodings=["x", "y"])
    cell = alt.selection_point(name="cell", fields=["col", "row"], on="click", clear=False, toggle=False,
                               nearest=False, value=[{"col": int(biggest["col"]), "row": int(biggest["row"])}])

    def axis(t: str | None) -> alt.Axis | None:
        if t is None:
            return None
        return alt.Axis(title=t, labels=False, ticks=False, domain=False, grid=False)

    xs = alt.Scale(domain=[0, grid], nice=False, zero=False)
    ys = alt.Scale(domain=[0, grid], nice=False, zero=False)  # row 0 at the bottom: y up
    x = alt.X("col:Q", scale=xs, axis=axis(x_title))
    y = alt.Y("row:Q", scale=ys, axis=axis(y_title))

    tips = [alt.Tooltip("top:N", title="title"), alt.Tooltip("count:Q", title="samples")]
    if patch_test is not None:
        tips.append(alt.Tooltip("flip:Q", title=f"patch → {patch_test['class']}", format=".1%"))
    if any("patches" in r for r in cell_rows):
        tips.append(alt.Tooltip("patches:N", title="image"))
    hits = alt.Chart(alt.InlineData(values=cell_rows)).mark_rect(
        fill=PLACEHOLDER, strokeWidth=2, clip=True).encode(
        x=x, x2="col_end:Q", y=y, y2="row_end:Q",
        fillOpacity=alt.FillOpacity("fo:Q", scale=None),
        stroke=alt.condition(cell, alt.value(HIGHLIGHT), alt.value("#ffffff"), empty=False),
        strokeOpacity=alt.condition(cell, alt.value(1.0), alt.value(0.0), empty=False),
        tooltip=tips, description=alt.Description("desc:N"),
    ).add_params(zoom, cell)
    layers = []
    if icon_rows:
        layers.append(alt.Chart(alt.InlineData(values=icon_rows)).mark_image(aspect=False, clip=True, aria=False).encode(
            x=alt.X("x0:Q", scale=xs, axis=axis(x_title)), x2="x1:Q",
            y=alt.Y("y0:Q", scale=ys, axis=axis(y_title)), y2="y1:Q", url="icon:N"))
    layers.append(hits)  # on top: it takes the pointer (tooltip, click, zoom)
    atlas = alt.layer(*layers).properties(
        width=side, height=side,
        title=alt.TitleParams("scroll to zoom · drag to pan · click a cell",
                              subtitle=f"{grid}×{grid} grid, {len(cells)} cells, "
                                       f"{sum(int(c['count']) for c in cells)} samples"))

    k = min(TOP_CLASSES, len(classes))
    bars = alt.Chart(alt.InlineData(values=bar_rows)).transform_filter({"param": "cell", "empty": False}).mark_bar(
        height={"band": 0.8}).encode(
        y=alt.Y("class:N", sort=alt.EncodingSortField("rank", order="ascending"), title=None,
                axis=alt.Axis(labelLimit=160)),
        x=alt.X("attribution:Q", title="mean attribution"),
        color=alt.condition("datum.attribution > 0", alt.value(POSITIVE), alt.value(NEGATIVE)),
        tooltip=[alt.Tooltip("class:N", title="class"), alt.Tooltip("attribution:Q", format=".4g")],
    ).properties(width=220, height=max(60, 18 * k),
                 title=alt.TitleParams("attribution to classes",
                                       subtitle=f"the selected cell's top {k}" if len(classes) > k else
                                       "the selected cell"))
    right = bars
    if patch_test is not None:
        note = alt.Chart(alt.InlineData(values=cell_rows)).transform_filter({"param": "cell", "empty": False}).mark_text(
            align="left", baseline="top", fontSize=11, lineBreak="\n").encode(
            text="flip_text:N", x=alt.value(0), y=alt.value(0)).properties(width=220, height=40)
        right = alt.vconcat(bars, note, spacing=8)
    return alt.hconcat(atlas, right, spacing=24).properties(
        title=alt.TitleParams(title, subtitle=subtitle or alt.Undefined))
