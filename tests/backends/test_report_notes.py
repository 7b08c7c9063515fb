"""The report header carries every note of the model, not only the first (a model source may say several
things: its default preprocessing, generic class names, what the spec changed). The source here is a
plug-in registered the way another package registers one."""
from __future__ import annotations

import textwrap

import pytest
from torch import nn

from interpgram.backends import pipeline
from interpgram.backends.models.base import MODEL_SOURCES, Preprocess, finish, model_source


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture
def two_note_source():
    @model_source("twonotes", "twonotes:NAME, a test plug-in whose models carry two notes")
    def _load(ctx):
        return finish(f"twonotes:{ctx.ref}", _Net(), Preprocess((16, 16)), ["a", "b"],
                      notes=["first: the class names are placeholders", "second: the weights are random"])
    yield
    MODEL_SOURCES.unregister("twonotes")


def test_every_model_note_reaches_the_report_header(tmp_path, two_note_source):
    (tmp_path / "spec.yaml").write_text(textwrap.dedent("""
        interpgram: 1
        model: twonotes:net
        input: img.png
        elements:
          where:
            content: {activation: {layer: conv, atom: spatial}}
            presentation: heatmap
    """))
    from PIL import Image
    Image.new("RGB", (16, 16), (120, 30, 200)).save(tmp_path / "img.png")
    out, _, _ = pipeline.render(tmp_path / "spec.yaml", tmp_path / "report", cache=tmp_path / "cache")
    html = out.read_text()
    assert "first: the class names are placeholders" in html and "second: the weights are random" in html
