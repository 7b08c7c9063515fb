"""Reports opened from file:// in Chromium with the network blocked: every element draws, nothing is
fetched, nothing is logged as an error.

The first test builds its report straight from ElementViews (all built-in presentations, no model);
the others render the demo spec through the real CLI."""
from __future__ import annotations


import numpy as np
import pytest

from support import ROOT
from interpgram.backends.render import ElementView, write_report

pytestmark = pytest.mark.browser

ALL_DRAWN = ("document.querySelectorAll('.chart').length > 0 && "
             "document.querySelectorAll('.chart').length === document.querySelectorAll('.chart[data-rendered]').length")


def _views() -> list[ElementView]:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    image = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx) * np.cos(6 * yy)], axis=-1).astype(np.float32)
    blob = np.exp(-(((np.mgrid[0:16, 0:16] - np.array([5, 9])[:, None, None]) ** 2).sum(0)) / 8.0)
    grammar = "InfoVis(Attribution(Network shapes-cnn conv3 Spatial, Output star))"
    signed = (blob - blob.T).astype(np.float32)
    return [
        ElementView("attr", "heatmap", "Spatial attribution conv3 → star", grammar, {"opacity": 0.6, "clip_negative": False},
                    {"image": image, "maps": [{"label": "star", "values": signed}], "signed": True}),
        ElementView("act", "heatmap", "How strongly conv2 fires", "InfoVis(Activation(Network shapes-cnn conv2 Spatial))",
                    {"opacity": 0.7, "clip_negative": False},
                    {"image": image, "maps": [{"label": "conv2", "values": (3 * blob).astype(np.float32)}], "signed": False}),
        ElementView("two", "heatmap", "star and crescent", "InfoVis(Attribution(Network conv3 Spatial, Output star, crescent))",
                    {"opacity": 0.6, "clip_negative": True},
                    {"image": image, "signed": True, "maps": [{"label": "star", "values": signed},
                                                              {"label": "crescent", "values": -signed}]}),
        ElementView("channels", "bars", "conv4 channels for star", "InfoVis(Attribution(Network conv4 Channel, Output star))",
                    {"top": 8}, {"labels": [f"conv4:{i}" for i in range(128)],
                                 "values": rng.standard_normal(128).astype(np.float32), "target": "star"}),
        ElementView("groups", "groups", "conv4 neuron groups", "InfoVis(Attribution(Network conv4 Group, Output star, crescent))",
                    {"top_channels": 5},
                    {"image": image, "spatial": rng.random((5, 8, 8)).astype(np.float32),
                     "channels": rng.random((5, 128)).astype(np.float32) ** 4,
                     "channel_labels": [f"conv4:{i}" for i in range(128)],
                     "attribution": {"star": rng.standard_normal(5).astype(np.float32),
                                     "crescent": rng.standard_normal(5).astype(np.float32)}}),
        ElementView("groups-only", "groups", "conv4 neuron groups, no classes", "InfoVis(Network conv4 Group)",
                    {"top_channels": 3},
                    {"image": image, "spatial": rng.random((3, 8, 8)).astype(np.float32),
                     "channels": rng.random((3, 16)).astype(np.float32),
                     "channel_labels": [f"conv4:{i}" for i in range(16)], "attribution": {}}),
    ]


def test_report_from_views_draws_every_element_offline(tmp_path, offline_page, artifacts):
    views = _views()
    layout = [["attr", "act"], ["two"], ["channels", "groups-only"], ["groups"]]
    meta = {"model": "builtin:shapes-cnn", "input": "shapes/test/10", "spec": "specs/shapes/demo.yaml",
            "device": "cpu", "timings": {"forward": 0.012, "backward": 0.034}, "cache hits": 4}
    path = write_report(views, tmp_path / "report", title="interpgram browser check", layout=layout, meta=meta)
    page = offline_page
    page.goto(path.as_uri())
    page.wait_for_function(ALL_DRAWN, timeout=30_000)

    sections = page.query_selector_all("section[id^=el-]")
    assert [s.get_attribute("id") for s in sections] == [f"el-{i}" for row in layout for i in row]
    for s in sections:
        sid = s.get_attribute("id")
        chart = s.query_selector(".chart")
        assert chart.get_attribute("data-rendered") == "ok", (sid, chart.inner_text())
        svg = chart.query_selector("svg")
        assert svg is not None, sid
        box = svg.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, (sid, box)
        assert s.query_selector_all("svg [role=graphics-symbol]"), sid  # marks, not an empty frame
        if s.get_attribute("data-presentation") in ("heatmap", "groups"):
            hrefs = [i.get_attribute("href") or i.get_attribute("xlink:href") for i in s.query_selector_all("svg image")]
            assert hrefs and all(h.startswith("data:image/png;base64,") for h in hrefs), sid

    # a layout row puts its elements side by side
    a, b = (page.query_selector(f"#el-{i}").bounding_box() for i in ("attr", "act"))
    assert a["y"] == b["y"] and b["x"] >= a["x"] + a["width"]
    # and nothing spills out of the page sideways
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400

    assert page.errors == []
    assert [w for w in page.warnings if "WARN" in w] == []  # Vega-Lite compiled every spec without complaint
    assert page.blocked == []  # the report asked for nothing outside the file
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)


def test_demo_report_opens_offline_and_shows_every_element(tmp_path, offline_page, artifacts):
    from interpgram.backends.cli import main

    out = tmp_path / "report"
    assert main(["render", str(ROOT / "specs" / "shapes" / "demo.yaml"), "-o", str(out), "--no-cache", "-q"]) == 0
    page = offline_page
    page.goto((out / "index.html").as_uri())
    page.wait_for_function(ALL_DRAWN, timeout=30_000)
    sections = page.query_selector_all("section.element")
    assert len(sections) >= 4
    for s in sections:
        assert s.query_selector(".chart").get_attribute("data-rendered") == "ok", s.get_attribute("id")
        box = s.query_selector(".chart svg").bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, s.get_attribute("id")
        # a chart with marks, not an empty frame
        assert s.query_selector_all(".chart svg path, .chart svg image"), s.get_attribute("id")
    assert page.errors == []
    assert page.blocked == []  # the report asked for nothing outside the file
    page.screenshot(path=str(artifacts / "demo-report.png"), full_page=True)


def test_tooltip_shows_values_on_hover(tmp_path, offline_page):
    from interpgram.backends.cli import main

    out = tmp_path / "report"
    assert main(["render", str(ROOT / "specs" / "shapes" / "demo.yaml"), "-o", str(out), "-q",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    page = offline_page
    page.goto((out / "index.html").as_uri())
    page.wait_for_function(ALL_DRAWN, timeout=30_000)
    section = page.query_selector("section[data-presentation=heatmap]")
    marks = section.query_selector_all("svg path[aria-roledescription='rect mark']")
    assert marks
    marks[len(marks) // 2].hover()
    page.wait_for_selector("#vg-tooltip-element.visible", timeout=5_000)
    text = page.inner_text("#vg-tooltip-element")
    assert "row" in text and "column" in text
