"""Feature-visualisation presentations in Chromium, from file:// with the network blocked: icons
draw, and hovering a position of a semantic dictionary shows that position's top channels."""
from __future__ import annotations

import re

import numpy as np
import pytest

from interpgram.backends.pipeline import build_views, load_spec_inputs, render

pytestmark = pytest.mark.browser

ALL_DRAWN = ("document.querySelectorAll('.chart').length > 0 && "
             "document.querySelectorAll('.chart').length === document.querySelectorAll('.chart[data-rendered]').length")
FAST = "steps: 10, size: 32"
SPEC = f"""interpgram: 1
title: feature visualisation in a browser
model: builtin:shapes-cnn
input: builtin:shapes/10
elements:
  dict:  {{content: {{activation: {{layer: conv4, atom: spatial}}}}, presentation: {{semantic_dictionary: {{top: 3, icon: {{{FAST}}}}}}}}}
  icons: {{content: {{activation: {{layer: conv4, atom: channel}}}}, presentation: {{featurevis: {{top: 4, {FAST}}}}}}}
  grid:  {{content: {{activation: {{layer: conv5, atom: spatial}}}}, presentation: {{activation_grid: {{steps: 4, cell_size: 16}}}}}}
  groups: {{content: {{activation: {{layer: conv4, atom: {{group: nmf, k: 3}}}}}}, presentation: {{groups: {{icon: {{{FAST}}}}}}}}}
"""


def _labels(page, section: str) -> list[str]:
    texts = page.eval_on_selector_all(f"#{section} svg text", "els => els.map(e => e.textContent)")
    return [t for t in texts if re.fullmatch(r"conv4:\d+", t)]


def test_feature_visualisations_draw_offline_and_the_dictionary_follows_the_pointer(tmp_path, offline_page, artifacts):
    spec = tmp_path / "fv.yaml"
    spec.write_text(SPEC)
    path, prep, results = render(spec, tmp_path / "report", cache=tmp_path / "cache")
    inputs = load_spec_inputs(prep)
    dictionary = build_views(prep.plan, inputs, results)["dict"][0]
    acts = dictionary.data["activations"]  # (C, 8, 8)
    order = np.argsort(-acts.reshape(acts.shape[0], -1), axis=0, kind="stable")[:3]

    page = offline_page
    page.goto(path.as_uri())
    page.wait_for_function(ALL_DRAWN, timeout=60_000)
    assert page.errors == [] and page.blocked == []
    for sid in ("el-dict", "el-icons", "el-grid", "el-groups"):
        chart = page.query_selector(f"#{sid} .chart")
        assert chart.get_attribute("data-rendered") == "ok", (sid, chart.inner_text())
        hrefs = [i.get_attribute("href") or i.get_attribute("xlink:href") for i in page.query_selector_all(f"#{sid} svg image")]
        assert len(hrefs) >= 2 and all(h.startswith("data:image/png;base64,") for h in hrefs), sid
    assert len(page.query_selector_all("#el-icons svg image")) == 4
    assert len(page.query_selector_all("#el-grid svg image")) == 1 + 16  # input + 4×4 cells

    # opens on the strongest position
    mag = np.linalg.norm(acts, axis=0)
    start = int(mag.argmax())
    assert _labels(page, "el-dict") == [f"conv4:{c}" for c in order[:, start]]
    page.screenshot(path=str(artifacts / "featurevis-report.png"), full_page=True)

    # hover another position: the listed channels become that position's top channels
    target = next(p for p in range(64) if list(order[:, p]) != list(order[:, start]))
    y, x = divmod(target, 8)
    box = page.query_selector("#el-dict svg image").bounding_box()  # the input image spans the 8×8 grid
    page.mouse.move(box["x"] + (x + 0.5) * box["width"] / 8, box["y"] + (y + 0.5) * box["height"] / 8)
    page.wait_for_timeout(300)
    assert _labels(page, "el-dict") == [f"conv4:{c}" for c in order[:, target]]
    page.query_selector("#el-dict").screenshot(path=str(artifacts / "semantic-dictionary-hover.png"))
    assert page.errors == []
