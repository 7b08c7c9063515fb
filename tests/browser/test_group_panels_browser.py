"""Neuron groups on a 1280 px page: the heatmap of six groups (one panel per group) and the groups
element wrap their panels, so every group's panel lies on the page, seen in Chromium's layout."""
from __future__ import annotations

import re

import pytest

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


def test_every_group_panel_lies_on_a_1280_px_page(tmp_path, browser, artifacts):
    spec = tmp_path / "groups.yaml"
    spec.write_text(SPEC)
    path, _, _ = pipeline.render(spec, tmp_path / "report", cache=tmp_path / "cache")
    ctx, page = guarded_page(browser, ("file:",), viewport={"width": WIDTH, "height": 900})
    try:
        page.goto(path.as_uri())
        page.wait_for_function(DRAWN, timeout=120_000)
        assert page.locator(".chart[data-rendered=error]").count() == 0
        page.screenshot(path=str(artifacts / "groups-1280.png"), full_page=True)
        for el, panels in (("where", 2 + K), ("groups", 1 + K)):  # input, strongest group, K groups; combined map, K groups
            chart = f"#el-{el} > .chart:not([data-variant])"
            edges = right_edges(page, f"{chart} svg image")  # every panel draws the photo under its map
            assert len(edges) == panels, (el, edges)
            assert max(edges) <= WIDTH, f"{el}: a panel ends at x = {max(edges):.0f}, off a {WIDTH} px page"
            titles = {t.text_content(): t.bounding_box() for t in page.query_selector_all(f"{chart} svg text")
                      if re.fullmatch(r"group \d+", t.text_content() or "")}
            assert {f"group {g + 1}" for g in range(K)} <= set(titles), (el, sorted(titles))
            assert all(b["x"] + b["width"] <= WIDTH for b in titles.values()), (el, titles)
        assert page.errors == [] and page.blocked == []
    finally:
        ctx.close()
