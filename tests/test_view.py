"""Presentations compile to valid Vega-Lite; the report is self-contained and written atomically."""
from __future__ import annotations

import re

import numpy as np
import pytest
import vl_convert

from interpgram.backends.view import REGISTRY, ElementView, chart_for, render_html, to_png, to_svg, write_report
from interpgram.backends.view._charts import CLASS_COLOURS, _top_bars

RNG = np.random.default_rng(0)
IMAGE = RNG.random((64, 64, 3)).astype(np.float32)


def heat(n_maps=1, signed=True):
    maps = [{"label": f"class{i}", "values": RNG.standard_normal((16, 16)).astype(np.float32)} for i in range(n_maps)]
    return ElementView("h", "heatmap", "heat", "InfoVis(...)", {"opacity": 0.6}, {"image": IMAGE, "maps": maps, "signed": signed})


def bars(top=4):
    return ElementView("b", "bars", "bars", "InfoVis(...)", {"top": top},
                       {"labels": [f"conv4:{i}" for i in range(20)], "values": RNG.standard_normal(20).astype(np.float32), "target": "star"})


def groups(k=3):
    return ElementView("g", "groups", "groups", "InfoVis(...)", {"top_channels": 3},
                       {"image": IMAGE, "spatial": RNG.random((k, 8, 8)).astype(np.float32), "channels": RNG.random((k, 32)).astype(np.float32),
                        "channel_labels": [f"conv4:{i}" for i in range(32)],
                        "attribution": {"star": RNG.standard_normal(k).astype(np.float32), "ring": RNG.standard_normal(k).astype(np.float32)}})


@pytest.mark.parametrize("view", [heat(1), heat(1, signed=False), heat(2), bars(), groups(), groups(6)], ids=lambda v: v.presentation)
def test_presentations_compile_to_valid_vega_lite(view):
    svg = vl_convert.vegalite_to_svg(chart_for(view).to_dict())  # raises on an invalid spec
    assert svg.startswith("<svg") and "<image" in svg or view.presentation == "bars"


def test_bars_show_exactly_top_n_each_way():
    values = np.array([5, -1, 3, -7, 0.5, -2, 9, 0], dtype=np.float32)
    df = _top_bars([f"c{i}" for i in range(8)], values, 2)
    assert list(df["channel"]) == ["c6", "c0", "c5", "c3"]
    assert (df["sign"] == ["positive", "positive", "negative", "negative"]).all()


def test_two_class_heatmap_uses_two_colours():
    spec = chart_for(heat(2)).to_dict()
    text = str(spec)
    assert CLASS_COLOURS[0] in text and CLASS_COLOURS[1] in text
    assert len(spec["hconcat"]) == 4  # input, class 0, class 1, combined


def test_unknown_presentation_lists_the_registered_ones():
    with pytest.raises(KeyError, match="registered: bars, groups, heatmap"):
        chart_for(ElementView("x", "sparkles", "", "", {}, {}))
    assert {"heatmap", "bars", "groups"} <= set(REGISTRY)


def test_report_is_self_contained(tmp_path):
    path = write_report([heat(2), bars(), groups()], tmp_path, title="t", layout=[["h", "b"], ["g"]], meta={"model": "m"})
    html = path.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']https?://", html)
    assert html.count('<section class="element"') == 3
    assert "vegaEmbed" in html and "data:image/png;base64," in html
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"]


def test_failed_render_leaves_the_previous_report(tmp_path, monkeypatch):
    path = write_report([bars()], tmp_path, title="first")
    before = path.read_text()
    broken = ElementView("z", "heatmap", "broken", "", {}, {"image": IMAGE, "maps": "not a list"})
    with pytest.raises(Exception):
        write_report([bars(), broken], tmp_path, title="second")
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = write_report([bars()], tmp_path, title="first")
    before = path.read_text()
    import os

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report([bars(), heat()], tmp_path, title="second")
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]


def test_layout_must_name_real_views(tmp_path):
    with pytest.raises(ValueError, match="do not exist: nope"):
        render_html([bars()], title="t", layout=[["nope"]])


def test_png_and_svg_export(tmp_path):
    png = to_png(heat(2), tmp_path / "h.png")
    svg = to_svg(groups(), tmp_path / "g.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert svg.read_text().startswith("<svg")
