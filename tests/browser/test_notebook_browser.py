"""A notebook's inline display of Results (``_repr_html_``) in Chromium with the network blocked:
the iframe's report draws every chart, nothing is fetched, nothing is logged as an error."""
from __future__ import annotations


import pytest

import interpgram

pytestmark = pytest.mark.browser

DRAWN = ("() => { const c = document.querySelectorAll('.chart'); return c.length > 0 && "
         "c.length === document.querySelectorAll('.chart[data-rendered]').length; }")


def test_inline_display_draws_offline(tmp_path, offline_page):
    spec = {"interpgram": 1, "model": "builtin:shapes-cnn", "input": "builtin:shapes/10",
            "elements": {"where": {"content": {"attribution": {"from": {"layer": "conv3", "atom": "spatial"},
                                                               "to": {"layer": "output", "select": ["star"]}}},
                                   "presentation": "heatmap"},
                         "channels": {"content": {"activation": {"layer": "conv4", "atom": "channel"}},
                                      "presentation": {"bars": {"top": 5}}}}}
    res = interpgram.Interface(spec, cache=tmp_path / "cache").run()
    # what Jupyter does with _repr_html_: the fragment placed inside the notebook's own page
    page = tmp_path / "notebook.html"
    page.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><title>notebook</title></head><body>"
                    "<div class='jp-OutputArea-output'>" + res._repr_html_() + "</div></body></html>")
    offline_page.goto(page.as_uri())
    frame = offline_page.frame_locator("iframe.interpgram-report")
    frame.locator(".chart[data-rendered='ok']").first.wait_for(timeout=60_000)
    inner = next(f for f in offline_page.frames if f != offline_page.main_frame)
    inner.wait_for_function(DRAWN, timeout=60_000)
    assert inner.eval_on_selector_all(".chart", "cs => cs.map(c => c.getAttribute('data-rendered'))") == ["ok", "ok"]
    marks = inner.eval_on_selector_all(".chart svg .mark-rect path, .chart svg .mark-rect rect, .chart svg path",
                                       "ps => ps.length")
    assert marks > 50  # the heatmap's cells and the bars are drawn as SVG
    assert inner.eval_on_selector("#chart-where svg", "s => s.getBoundingClientRect().width") > 100
    assert offline_page.blocked == [] and offline_page.errors == []
