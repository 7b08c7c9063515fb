"""Every built-in spec under specs/shapes, rendered through the pipeline (icons as quick drafts) and
opened from file:// in Chromium with the network blocked: every element draws, nothing is fetched,
nothing is logged as an error; the links of the static report change their target element when the
source is hovered or clicked, with the precomputed variants."""
from __future__ import annotations

from pathlib import Path

import pytest

from support import ROOT
from interpgram.backends import pipeline

from support.tooltips import hover_until_tooltip

SPECS = sorted(s for s in (ROOT / "specs" / "shapes").glob("*.yaml") if "atlas" not in s.stem)
ATLASES = sorted(s for s in (ROOT / "specs" / "shapes").glob("*.yaml") if "atlas" in s.stem)
pytestmark = pytest.mark.browser

DRAWN = ("document.querySelectorAll('section.element > .chart:not([data-variant])').length === "
         "document.querySelectorAll('section.element > .chart:not([data-variant])[data-rendered=ok]').length")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("spec-cache")


def render(spec: Path, out: Path, cache_dir: Path) -> Path:
    path, _, _ = pipeline.render(spec, out, cache=cache_dir, icon_steps=4)
    return path


def open_report(page, path: Path) -> None:
    page.goto(path.as_uri())
    page.wait_for_function(DRAWN, timeout=120_000)
    page.wait_for_function("document.body.getAttribute('data-links') === 'ready' || "
                           "!document.getElementById('interpgram-links')", timeout=60_000)


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_spec_renders_and_draws_offline(spec, tmp_path, cache_dir, offline_page, artifacts):
    path = render(spec, tmp_path / "report", cache_dir)
    page = offline_page
    open_report(page, path)
    sections = page.locator("section.element")
    assert sections.count() >= 1
    assert page.locator(".chart[data-rendered=error]").count() == 0
    for i in range(sections.count()):  # every element shows a drawn chart
        assert sections.nth(i).locator("svg.marks").count() >= 1, sections.nth(i).get_attribute("id")
    assert page.blocked == [] and page.errors == []
    page.screenshot(path=str(artifacts / f"spec-{spec.stem}.png"), full_page=True)


def _caption(page, target: str) -> str:
    return page.locator(f"#el-{target} .selection").inner_text()


def _visible_chart_html(page, target: str) -> str:
    return page.evaluate(f"""[...document.querySelectorAll('#el-{target} > .chart')]
                              .filter(d => !d.hidden).map(d => d.innerHTML).join('')""")


def test_hovering_the_grid_drives_layer_to_layer_and_channel_attribution(tmp_path, cache_dir, offline_page, artifacts):
    path = render(ROOT / "specs/shapes/spatial_attribution.yaml", tmp_path / "r", cache_dir)
    page = offline_page
    open_report(page, path)
    assert "64 of 64 selections precomputed" in _caption(page, "upstream")
    before_up, before_here = _visible_chart_html(page, "upstream"), _visible_chart_html(page, "here")
    cells = page.locator("#el-grid path[fill-opacity='0']:not([stroke])")
    assert cells.count() == 64  # conv4 is 8×8
    ring = page.locator("#el-grid path[stroke='#111111']")
    assert ring.count() == 0  # nothing picked yet
    seen = set()
    for idx in (0, 27, 63):
        cells.nth(idx).hover(force=True)
        x, y = idx % 8, idx // 8
        # the hovered position is ringed dark under light, on that cell only
        page.wait_for_function("document.querySelectorAll(\"#el-grid path[stroke='#111111']\").length === 1")
        assert ring.first.get_attribute("d") == cells.nth(idx).get_attribute("d")
        assert page.locator("#el-grid path[stroke='#ffffff'][stroke-width='1.5']").count() == 1
        page.wait_for_function(f"document.getElementById('el-upstream').dataset.selected === '0|{x},{y}'")
        page.wait_for_function(f"document.getElementById('el-here').dataset.selected === '1|{x},{y}'")
        page.wait_for_function("[...document.querySelectorAll('#el-upstream > .chart')].filter(d => !d.hidden)"
                               ".every(d => d.dataset.rendered === 'ok')")
        assert f"position ({x}, {y})" in _caption(page, "upstream")
        assert f"position ({x}, {y})" in _caption(page, "here")
        up = _visible_chart_html(page, "upstream")
        assert f"conv4 at ({x}, {y})" in up
        seen.add(up)
    assert len(seen) == 3 and before_up not in seen
    assert _visible_chart_html(page, "here") != before_here
    assert page.errors == [] and page.blocked == []
    page.screenshot(path=str(artifacts / "links-spatial-attribution.png"), full_page=True)


def test_clicking_a_class_and_a_channel_retargets_channel_attribution(tmp_path, cache_dir, offline_page):
    path = render(ROOT / "specs/shapes/channel_attribution.yaml", tmp_path / "r", cache_dir)
    page = offline_page
    open_report(page, path)
    bars = page.locator("#el-logits g.mark-rect path")
    assert bars.count() == 8  # the top 4 and bottom 4 logits
    bars.nth(1).click(force=True)
    page.wait_for_function("document.getElementById('el-channels').dataset.selected.startsWith('0|')")
    page.wait_for_function("[...document.querySelectorAll('#el-channels > .chart')].filter(d => !d.hidden)"
                           ".every(d => d.dataset.rendered === 'ok')")
    caption = _caption(page, "channels")
    cls = caption.split("class ")[1].split(" ")[0]
    assert f"strongest channels for {cls}" in _visible_chart_html(page, "channels")
    # a channel of the class's channel attribution (the variant shown now) drives layer-to-layer attribution
    page.locator("#el-channels > .chart:not([hidden]) g.mark-rect path").nth(0).click(force=True)
    page.wait_for_function("document.getElementById('el-flow').dataset.selected.startsWith('1|')")
    ch = page.evaluate("document.getElementById('el-flow').dataset.selected.split('|')[1]")
    page.wait_for_function("[...document.querySelectorAll('#el-flow > .chart')].filter(d => !d.hidden)"
                           ".every(d => d.dataset.rendered === 'ok')")
    assert f"conv4:{ch}" in _visible_chart_html(page, "flow")
    assert page.errors == [] and page.blocked == []


def test_clicking_a_group_shows_it_alone(tmp_path, cache_dir, offline_page):
    path = render(ROOT / "specs/shapes/neuron_groups.yaml", tmp_path / "r", cache_dir)
    page = offline_page
    open_report(page, path)
    cells = page.locator("#el-groups .chart:not([data-variant]) g.mark-rect").first.locator("path")
    assert cells.count() == 64
    cells.nth(10).click(force=True)
    page.wait_for_function("(document.getElementById('el-where').dataset.selected || '').startsWith('0|')")
    g = int(page.evaluate("document.getElementById('el-where').dataset.selected.split('|')[1]"))
    assert f"group {g + 1}" in _caption(page, "where")
    page.wait_for_function("[...document.querySelectorAll('#el-where > .chart')].filter(d => !d.hidden)"
                           ".every(d => d.dataset.rendered === 'ok')")
    shown = _visible_chart_html(page, "where")
    assert f"group {g + 1}" in shown and all(f">group {k}<" not in shown for k in range(1, 6) if k != g + 1)
    assert page.errors == [] and page.blocked == []


@pytest.mark.parametrize("spec", ATLASES, ids=[s.stem for s in ATLASES])
def test_every_atlas_spec_renders_and_draws_offline(spec, tmp_path, cache_dir, offline_page, artifacts):
    """The atlas specs as written, on fewer images (n: 600; the full runs are timed in benchmarks/ and the
    class atlas is rendered in full by tests/specs/test_atlas_shortcut.py): icons on the grid, hover shows the
    examples, a click switches the attribution bars to that cell."""
    import re
    small = tmp_path / spec.name
    small.write_text(re.sub(r"n: \d+", "n: 600", spec.read_text()).replace("top: 2000", "top: 300"))
    path = render(small, tmp_path / "report", cache_dir)
    page = offline_page
    open_report(page, path)
    assert page.locator(".chart[data-rendered=error]").count() == 0
    sections = page.locator("section.element")
    for i in range(sections.count()):
        sec = sections.nth(i)
        assert sec.locator("svg.marks image").count() >= 4, sec.get_attribute("id")  # icons on the grid
    first = sections.nth(0)
    bars_before = first.locator("svg.marks").inner_html()
    # a cell other than the selected one (its outline is drawn with stroke-opacity 1), scrolled into view:
    # the 16 × 16 atlas is taller than the window
    others = first.locator('svg.marks path[aria-label^="cell ("][stroke-opacity="0"]')
    assert others.count() >= 3
    target = others.nth(others.count() // 2)
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    hover_until_tooltip(page, *centre)  # the cell's example patches
    page.mouse.click(*centre)
    page.wait_for_function(f"document.querySelector('section.element svg.marks').innerHTML !== {bars_before!r}",
                           timeout=10_000)
    assert page.blocked == [] and page.errors == []
    page.screenshot(path=str(artifacts / f"spec-{spec.stem}.png"), full_page=True)
