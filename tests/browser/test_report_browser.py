"""The demo report, rendered by the real CLI, opened from file:// in Chromium with the network blocked."""
from __future__ import annotations

from pathlib import Path

import pytest

from interpgram.backends.cli import main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser


def test_demo_report_opens_offline_and_shows_every_element(tmp_path, offline_page, artifacts):
    out = tmp_path / "report"
    assert main(["render", str(ROOT / "specs" / "shapes" / "demo.yaml"), "-o", str(out), "--no-cache", "-q"]) == 0
    page = offline_page
    page.goto((out / "index.html").as_uri())
    page.wait_for_function(
        "document.querySelectorAll('.chart').length > 0 && "
        "document.querySelectorAll('.chart').length === document.querySelectorAll('.chart[data-rendered]').length",
        timeout=30_000)
    sections = page.query_selector_all("section.element")
    assert len(sections) >= 4
    for s in sections:
        box = s.query_selector(".chart svg").bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, s.get_attribute("id")
        # a chart with marks, not an empty frame
        assert s.query_selector_all(".chart svg path, .chart svg image"), s.get_attribute("id")
    assert page.errors == []
    assert page.blocked == []  # the report asked for nothing outside the file
    page.screenshot(path=str(artifacts / "demo-report.png"), full_page=True)


def test_tooltip_shows_values_on_hover(tmp_path, offline_page):
    out = tmp_path / "report"
    assert main(["render", str(ROOT / "specs" / "shapes" / "demo.yaml"), "-o", str(out), "-q",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    page = offline_page
    page.goto((out / "index.html").as_uri())
    page.wait_for_selector(".chart[data-rendered] svg")
    section = page.query_selector("section[data-presentation=heatmap]")
    marks = section.query_selector_all("svg path[aria-roledescription='rect']") or section.query_selector_all("svg .mark-rect path")
    assert marks
    marks[len(marks) // 2].hover()
    page.wait_for_selector("#vg-tooltip-element.visible", timeout=5_000)
    assert "value" in page.inner_text("#vg-tooltip-element")
