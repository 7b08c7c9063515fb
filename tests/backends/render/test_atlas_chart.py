"""The zoomable atlas chart (backends/view/_atlas_chart.py): a valid Vega-Lite spec with the
scale-bound zoom, the ``cell`` click selection opening on the largest cell, the image tooltip,
one image per cell with its data URL, and a spec that Vega compiles and draws (vl-convert)."""
from __future__ import annotations

import json
import re

import numpy as np

from support.atlas_cells import classes, make_cells
import pytest
import vl_convert

from interpgram.backends.render.atlas_chart import TOP_CLASSES, atlas_chart
from interpgram.backends.render.draw import vegalite_version

POSITIVE, NEGATIVE = "#d6604d", "#4393c3"


def datasets(spec):
    return spec.get("datasets", {})


def values_of(spec, unit):
    data = unit["data"]
    return datasets(spec)[data["name"]] if "name" in data else data["values"]


def units(spec):
    """Every unit view (a dict with a mark) in the spec, depth first."""
    out = []

    def walk(v):
        if isinstance(v, dict):
            if "mark" in v:
                out.append(v)
            for key in ("hconcat", "vconcat", "layer", "concat"):
                for s in v.get(key, []):
                    walk(s)
    walk(spec)
    return out


def mark_type(unit):
    return unit["mark"]["type"] if isinstance(unit["mark"], dict) else unit["mark"]


def render_svg(spec):
    return vl_convert.vegalite_to_svg(spec, vl_version=vegalite_version())


def test_spec_is_valid_and_has_zoom_cell_selection_and_image_tooltip():
    cells = make_cells()
    chart = atlas_chart(cells, classes(), title="class atlas", grid=5, subtitle="mixed4d")
    spec = chart.to_dict()  # validates against the Vega-Lite schema
    params = {p["name"]: p for p in spec["params"]}
    zoom = params["zoom"]
    assert zoom["select"]["type"] == "interval" and zoom["bind"] == "scales"
    assert set(zoom["select"]["encodings"]) == {"x", "y"}
    cell = params["cell"]
    assert cell["select"]["type"] == "point" and cell["select"]["fields"] == ["col", "row"]
    assert cell["select"]["on"] == "click"
    assert cell["value"] == [{"col": 4, "row": 4}]  # the largest cell (count 40)
    assert zoom["views"] == cell["views"]  # both on the atlas's cell layer

    rect = next(u for u in units(spec) if mark_type(u) == "rect")
    tips = {t["title"]: t["field"] for t in rect["encoding"]["tooltip"]}
    assert tips["image"] == "patches"  # vega-tooltip draws the field titled "image" as <img>
    assert tips["title"] == "top"  # … and "title" as the heading
    rows = {(r["col"], r["row"]): r for r in values_of(spec, rect)}
    assert len(rows) == len(cells)
    for c in cells:
        r = rows[(c["col"], c["row"])]
        assert r["count"] == c["count"] and r["top"] == f"class {c['top_class']}"
        assert r.get("patches") == c["patches"]
    # the outline of the selected cell
    assert rect["encoding"]["stroke"]["condition"]["param"] == "cell"
    assert rect["encoding"]["stroke"]["condition"]["empty"] is False


def test_one_image_per_cell_with_its_data_url_and_sizes():
    cells = make_cells()
    for sized in (False, True):
        spec = atlas_chart(cells, classes(), title="t", grid=5, sized=sized).to_dict()
        images = [u for u in units(spec) if mark_type(u) == "image"]
        assert len(images) == 1
        img = images[0]
        assert img["encoding"]["url"]["field"] == "icon"
        rows = values_of(spec, img)
        with_icons = [c for c in cells if c["icon"]]
        assert len(rows) == len(with_icons) == 5
        by_cell = {(r["col"], r["row"]): r for r in rows}
        for c in with_icons:
            r = by_cell[(c["col"], c["row"])]
            assert r["icon"] == c["icon"]
            side = r["x1"] - r["x0"]
            assert r["y1"] - r["y0"] == pytest.approx(side, abs=1e-3)
            # centred in its cell (row 0 at the bottom: y grows with row)
            assert (r["x0"] + r["x1"]) / 2 == pytest.approx(c["col"] + 0.5)
            assert (r["y0"] + r["y1"]) / 2 == pytest.approx(c["row"] + 0.5)
            assert side == pytest.approx(0.94 * (c["size"] if sized else 1.0), abs=1e-3)
    # y scale not reversed: the layout's y points up
    assert "reverse" not in img["encoding"]["y"]["scale"]
    assert '"http' not in json.dumps({k: v for k, v in spec.items() if k != "$schema"})  # no external URLs


def test_bars_show_the_top_classes_of_the_selected_cell():
    cells = make_cells(n_classes=15)
    spec = atlas_chart(cells, classes(15), title="t", grid=5).to_dict()
    bar = next(u for u in units(spec) if mark_type(u) == "bar")
    assert {"filter": {"param": "cell", "empty": False}} in bar["transform"]
    rows = values_of(spec, bar)
    for c in cells:
        mine = sorted((r for r in rows if (r["col"], r["row"]) == (c["col"], c["row"])), key=lambda r: r["rank"])
        assert len(mine) == TOP_CLASSES
        want = np.argsort(-np.asarray(c["attribution"]))[:TOP_CLASSES]
        assert [r["class"] for r in mine] == [f"class {k}" for k in want]
        assert [r["attribution"] for r in mine] == pytest.approx([c["attribution"][k] for k in want], rel=1e-4)
    # few classes: all of them
    few = make_cells(n_classes=3)
    rows = values_of(spec := atlas_chart(few, classes(3), title="t", grid=5).to_dict(),
                     next(u for u in units(spec) if mark_type(u) == "bar"))
    assert len(rows) == 3 * len(few)


def test_vega_draws_one_image_per_icon_the_outline_and_the_largest_cells_bars():
    cells = make_cells()
    spec = atlas_chart(cells, classes(), title="class atlas", grid=5, sized=True,
                       x_title="← class 0 · class 1 →", y_title="1-D UMAP").to_dict()
    svg = render_svg(spec)
    hrefs = re.findall(r'<image[^>]*href="(data:image/png;base64,[^"]+)"', svg)
    assert sorted(hrefs) == sorted(c["icon"] for c in cells if c["icon"])
    assert svg.count('stroke="#e8710a"') == 1  # the selected cell's outline
    # the bar panel is filtered by the initial selection: the largest cell's top 10 classes
    assert len(re.findall(r'aria-roledescription="bar"', svg)) == TOP_CLASSES
    biggest = max(cells, key=lambda c: c["count"])
    n_pos = sum(1 for v in sorted(biggest["attribution"], reverse=True)[:TOP_CLASSES] if v > 0)
    assert svg.count(f'fill="{POSITIVE}"') == n_pos and svg.count(f'fill="{NEGATIVE}"') == TOP_CLASSES - n_pos
    assert "← class 0 · class 1 →" in svg and "1-D UMAP" in svg
    assert len(re.findall(r"aria-label=\"[^\"]*data:image", svg)) == 0  # data URLs stay out of descriptions
    png = vl_convert.vegalite_to_png(spec, vl_version=vegalite_version(), scale=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_cells_are_refused():
    good = make_cells()
    with pytest.raises(ValueError, match="outside"):
        atlas_chart([{**good[0], "col": 5}], classes(), title="t", grid=5)
    with pytest.raises(ValueError, match="two cells"):
        atlas_chart([good[0], dict(good[0])], classes(), title="t", grid=5)
    with pytest.raises(ValueError, match="data:image"):
        atlas_chart([{**good[0], "icon": "https://example.com/x.png"}], classes(), title="t", grid=5)
    with pytest.raises(ValueError, match="attributions"):
        atlas_chart([good[0]], classes(3), title="t", grid=5)
    with pytest.raises(ValueError, match="lacks"):
        atlas_chart([{k: v for k, v in good[0].items() if k != "size"}], classes(), title="t", grid=5)
    with pytest.raises(ValueError, match="at least one"):
        atlas_chart([], classes(), title="t", grid=5)
