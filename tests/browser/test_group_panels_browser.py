"""Neuron groups on a 1280 px page: the heatmap of six groups (one panel per group) and the groups
element wrap their panels, so every group's panel lies on the page and inside its chart's box (not
scrolled out of it), seen in Chromium's layout: on the built-in CNN and on the real ImageNet spec,
whose long channel labels (_blocks.10:102) make the groups' columns wider."""
from __future__ import annotations

import re

import pytest

from support import SPECS
from support.browser import guarded_page
from interpgram.backends import pipeline

pytestmark = pytest.mark.browser

K = 6
SPEC = f"""\
interpgram: 1
title: six neuron groups at 1280 px
model: builtin:shapes-cnn
input: builtin:shapes/10
elements:
  groups:
    content:
      attribution:
        from: {{layer: conv4, atom: {{group: nmf, k: {K}}}}}
        to: {{layer: output, select: [star, crescent]}}
    presentation: {{groups: {{icons: false}}}}
  where:
    content: {{activation: {{layer: conv4, atom: {{group: nmf, k: {K}}}}}}}
    presentation: heatmap
links:
  - {{from: groups.click, to: where.group}}
"""
WIDTH = 1280
DRAWN = ("document.querySelectorAll('section.element > .chart:not([data-variant])').length === "
         "document.querySelectorAll('section.element > .chart:not([data-variant])[data-rendered=ok]').length")


def right_edges(page, selector: str) -> list[float]:
    return [b["x"] + b["width"] for b in (e.bounding_box() for e in page.query_selector_all(selector)) if b]


def check_panels(page, el: str, panels: int, k: int) -> None:
    chart = f"#el-{el} > .chart:not([data-variant])"
    box = page.query_selector(chart).bounding_box()
    right = box["x"] + box["width"]  # what the chart's box shows without scrolling
    assert right <= WIDTH
    edges = right_edges(page, f"{chart} svg image")  # every panel draws the photo under its map
    assert len(edges) == panels, (el, edges)
    assert max(edges) <= right, f"{el}: a panel ends at x = {max(edges):.0f}, past the chart's {right:.0f} px"
    titles = {t.text_content(): t.bounding_box() for t in page.query_selector_all(f"{chart} svg text")
              if re.fullmatch(r"group \d+", t.text_content() or "")}
    assert {f"group {g + 1}" for g in range(k)} <= set(titles), (el, sorted(titles))
    assert all(b["x"] + b["width"] <= right for b in titles.values()), (el, titles)


def open_at_1280(browser, path, artifacts, name: str):
    ctx, page = guarded_page(browser, ("file:",), viewport={"width": WIDTH, "height": 900})
    page.goto(path.as_uri())
    page.wait_for_function(DRAWN, timeout=120_000)
    assert page.locator(".chart[data-rendered=error]").count() == 0
    page.screenshot(path=str(artifacts / name), full_page=True)
    return ctx, page


def test_every_group_panel_lies_on_a_1280_px_page(tmp_path, browser, artifacts):
    spec = tmp_path / "groups.yaml"
    spec.write_text(SPEC)
    path, _, _ = pipeline.render(spec, tmp_path / "report", cache=tmp_path / "cache")
    ctx, page = open_at_1280(browser, path, artifacts, "groups-1280.png")
    try:
        check_panels(page, "where", 2 + K, K)  # input, strongest group, K groups
        check_panels(page, "groups", 1 + K, K)  # combined map, K groups
        assert page.errors == [] and page.blocked == []
    finally:
        ctx.close()


def test_the_imagenet_neuron_groups_lie_on_a_1280_px_page(tmp_path, browser, artifacts):
    """specs/imagenet/neuron_groups.yaml (six groups of EfficientNet-Lite0's _blocks.10, with icons)."""
    path, _, _ = pipeline.render(SPECS / "imagenet" / "neuron_groups.yaml", tmp_path / "report", cache=tmp_path / "cache",
                                 icon_steps=1)
    ctx, page = open_at_1280(browser, path, artifacts, "imagenet-neuron-groups-1280.png")
    try:
        check_panels(page, "where", 2 + 6, 6)
        check_panels(page, "groups", 1 + 2 * 6, 6)  # combined map; per group its icon and its map
        assert page.errors == [] and page.blocked == []
    finally:
        ctx.close()
