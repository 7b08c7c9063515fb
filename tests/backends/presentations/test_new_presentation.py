"""A new presentation is one file: this test file defines one (options, views, chart) outside the
package, registers it, and renders a spec that uses it into a real report — nothing else in
interpgram names it."""
from __future__ import annotations

import html
import json
import re

import altair as alt
import numpy as np
import pytest
from pydantic import Field

from interpgram.backends.pipeline import render
from interpgram.backends.render.types import ElementView
from interpgram.backends.render.views import ViewContext
from interpgram.grammar import SpecError, load_spec_text
from interpgram.grammar.options import OptionsModel
from interpgram.grammar.presentation import PRESENTATIONS, Presentation, register_presentation


class SparklineOptions(OptionsModel):
    height: int = Field(40, ge=10, le=400, description="px")


class Sparkline(Presentation):
    """A channel activation as one line over the channel index."""

    name = "sparkline"
    Options = SparklineOptions
    atoms = ("channel",)
    contents = ("activation",)
    help = "a line over the channels of a layer"

    def views(self, c: ViewContext) -> list:
        return [c.view({"values": c.vals[0][c.i].float().numpy()})]

    def chart(self, view: ElementView) -> alt.TopLevelMixin:
        rows = [{"channel": i, "value": float(v)} for i, v in enumerate(view.data["values"])]
        return (alt.Chart(alt.InlineData(values=rows)).mark_line().encode(x="channel:Q", y="value:Q")
                .properties(width=240, height=int(view.options["height"]), title=view.title))


@pytest.fixture
def sparkline():
    register_presentation(Sparkline)
    yield
    PRESENTATIONS.unregister("sparkline")


SPEC = """interpgram: 1
model: builtin:shapes-cnn
input: builtin:shapes/3
elements:
  line:
    content: {activation: {layer: conv4, atom: channel}}
    presentation: {sparkline: {height: 60}}
  bars:
    content: {activation: {layer: conv4, atom: channel}}
    presentation: bars
"""


def test_a_presentation_from_a_test_file_renders_in_a_report(sparkline, tmp_path):
    spec = tmp_path / "spark.yaml"
    spec.write_text(SPEC)
    out, prep, results = render(spec, tmp_path / "report", cache=False)
    page = out.read_text()
    assert 'data-presentation="sparkline"' in page
    section = page[page.index('data-presentation="sparkline"'):]
    vl = json.loads(html.unescape(re.search(r'<script type="application/json" class="spec">(.*?)</script>',
                                            section, re.S).group(1)))
    assert vl["height"] == 60 and vl["mark"]["type"] == "line"
    drawn = [r["value"] for r in (vl["data"]["values"] if "values" in vl["data"] else
                                  vl["datasets"][vl["data"]["name"]])]
    line = next(p for p in prep.plan.elements if p.presentation == "sparkline")
    want = results.values[line.series[0].op]["value"][0].float().numpy()
    np.testing.assert_allclose(drawn, want, rtol=1e-5, atol=1e-6)


def _problems(text: str) -> str:
    from interpgram.backends.models import load_model
    from interpgram.backends.pipeline import model_info
    from interpgram.grammar import compile_spec
    with pytest.raises(SpecError) as err:
        compile_spec(load_spec_text(text), model_info(load_model("builtin:shapes-cnn")))
    return str(err.value)


def test_its_options_and_atoms_are_checked_with_positions(sparkline):
    assert _problems(SPEC.replace("height: 60", "height: 5")) == \
        "<spec>:7:40: sparkline option height: input should be greater than or equal to 10"
    text = _problems(SPEC.replace("conv4, atom: channel}}\n    presentation: {sp", "conv4, atom: spatial}}\n    presentation: {sp"))
    assert text.startswith("<spec>:7:19: presentation 'sparkline' shows channel atoms, but this content is conv4·spatial")


def test_without_it_the_name_is_unknown():
    assert "sparkline" not in PRESENTATIONS
    with pytest.raises(SpecError, match="unknown presentation 'sparkline'"):
        load_spec_text(SPEC)
