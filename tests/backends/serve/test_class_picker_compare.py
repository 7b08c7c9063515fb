"""The dashboard's class picker and comparisons: a `compare` of two classes keeps both sides (re-targeted,
both would be the picked class and the chart a − a = 0); a comparison within one class (two methods)
is still re-targeted, both sides together."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from interpgram.backends.serve import Dashboard, Session

SPEC = """\
interpgram: 1
title: class picker and comparisons
model: builtin:shapes-cnn
input: builtin:shapes/10
execution: {{cache: {cache}}}
elements:
  versus:
    content:
      transform:
        op: compare
        a: {{attribution: {{from: {{layer: conv3}}, to: {{layer: output, select: [star]}}}}}}
        b: {{attribution: {{from: {{layer: conv3}}, to: {{layer: output, select: [crescent]}}}}}}
    presentation: heatmap
  nested:
    content:
      transform:
        op: top_k
        k: 5
        of:
          transform:
            op: compare
            a: {{attribution: {{from: {{layer: conv4, atom: channel}}, to: {{layer: output, select: [star]}}}}}}
            b: {{attribution: {{from: {{layer: conv4, atom: channel}}, to: {{layer: output, select: [crescent]}}}}}}
    presentation: bars
  methods:
    content:
      transform:
        op: compare
        a: {{attribution: {{from: {{layer: conv3}}, to: {{layer: output, select: [star]}}}}}}
        b: {{attribution: {{from: {{layer: conv3}}, to: {{layer: output, select: [star]}}, method: integrated, steps: 4}}}}
    presentation: heatmap
  where:
    content: {{attribution: {{from: {{layer: conv3}}, to: {{layer: output, select: [star]}}}}}}
    presentation: heatmap
layout: [[versus, nested], [methods, where]]
"""


def datasets(pane) -> str:
    return json.dumps(pane.object.get("datasets"), sort_keys=True)


@pytest.fixture
def engine(tmp_path: Path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(cache=tmp_path / "cache"))
    e = Session(spec)
    assert e.load(), e.error
    yield e
    e.stop()


def test_the_class_picker_leaves_a_comparison_of_two_classes_as_it_is(engine):
    dash = Dashboard(engine)
    assert engine.class_driven(dash.comp) == ["methods", "where"]
    assert dash.comp.kept == ["versus", "nested"]
    note = dash.class_note.object
    assert "the class drives: methods, where" in note and "it leaves versus, nested as they are" in note
    before = {vid: datasets(p) for vid, p in dash.panes.items()}
    classes = engine.good.prep.info.classes
    dash.choose_class(classes.index("square"))
    after = {vid: datasets(p) for vid, p in dash.panes.items()}
    for vid in ("versus", "nested"):  # still star − crescent, not square − square
        assert after[vid] == before[vid], vid
        assert "leaves this comparison of two classes" in dash.captions[vid].object
        assert "class picker: <b>square" not in dash.captions[vid].object
    diff = dash.comp.views["versus"][0].data["maps"][0]["values"]
    assert np.abs(diff).max() > 0  # the chart shows a difference (a − a would be all zeros)
    for vid in ("methods", "where"):  # a comparison within one class follows the picked class, both sides
        assert after[vid] != before[vid], vid
        assert "class picker: <b>square</b>" in dash.captions[vid].object
    assert dash.cls is not None and set(dash.cls.views) == {"methods", "where"}
