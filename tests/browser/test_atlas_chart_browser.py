"""The atlas chart (backends/view/_atlas_chart.py) in Debian's chromium: it opens on the largest cell,
a click selects a cell and its bars replace the others, hovering shows the example patches in the
tooltip, the mouse wheel zooms."""
from __future__ import annotations

import re

import numpy as np
import pytest

from interpgram.backends.render.atlas_chart import TOP_CLASSES, atlas_chart
from support.atlas_cells import classes, make_cells
from support.tooltips import hover_until_tooltip

pytestmark = pytest.mark.browser


def _page_html(spec: dict) -> str:
    from interpgram.backends.render.report import _script_json, vega_bundle

    return ("<!doctype html><html><head><meta charset='utf-8'><script>" + vega_bundle() + "</script></head>"
            "<body><div id='vis'></div><script>vegaEmbed('#vis', " + _script_json(spec) +
            ", {renderer: 'svg', actions: false}).then(r => { window.view = r.view; window.drawn = true; })"
            ".catch(e => { window.failed = String(e); });</script></body></html>")


def _bar_labels(page) -> list[str]:
    """The bar panel's class labels from top to bottom (on screen: Vega may keep the DOM order of
    labels it reuses)."""
    labs = page.eval_on_selector_all(
        "svg text", "els => els.map(e => [e.textContent, e.getBoundingClientRect().y])")
    return [t for t, _ in sorted((lab for lab in labs if re.fullmatch(r"class \d+", lab[0])), key=lambda lab: lab[1])]


def _centre(page, label_start: str) -> tuple[float, float]:
    box = page.query_selector(f'svg [aria-label^="{label_start}"]').bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_click_selects_a_cell_hover_shows_patches_and_the_wheel_zooms(tmp_path, browser):
    cells = make_cells()
    spec = atlas_chart(cells, classes(), title="atlas", grid=5, icon_px=80).to_dict()
    page_file = tmp_path / "atlas.html"
    page_file.write_text(_page_html(spec), encoding="utf-8")

    def top(c):
        return [f"class {k}" for k in np.argsort(-np.asarray(c["attribution"]))[:TOP_CLASSES]]

    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        page.wait_for_function("window.drawn || window.failed", timeout=60_000)
        assert page.evaluate("window.failed || null") is None and errors == []
        assert len(page.query_selector_all("svg image")) == 5
        # opens on the largest cell
        assert _bar_labels(page) == top(max(cells, key=lambda c: c["count"]))
        # a click on another cell selects it and its bars replace the others
        other = cells[1]
        page.mouse.click(*_centre(page, f"cell ({other['col']}, {other['row']})"))
        page.wait_for_timeout(200)
        assert _bar_labels(page) == top(other)
        # hovering a cell with patches: the tooltip shows the class as heading and the patches image
        hover_until_tooltip(page, *_centre(page, f"cell ({cells[0]['col']}, {cells[0]['row']})"))
        tip = page.query_selector("#vg-tooltip-element")
        assert tip.query_selector("img").get_attribute("src") == cells[0]["patches"]
        assert tip.query_selector("h2").inner_text() == f"class {cells[0]['top_class']}"
        # the mouse wheel zooms: icons grow
        def widths():
            return [i.bounding_box()["width"] for i in page.query_selector_all("svg image")]
        before = widths()
        page.mouse.move(*_centre(page, f"cell ({cells[2]['col']}, {cells[2]['row']})"))
        page.mouse.wheel(0, -400)
        page.wait_for_timeout(300)
        after = widths()
        assert len(after) == len(before) and min(a / b for a, b in zip(after, before)) > 1.3
    finally:
        ctx.close()
