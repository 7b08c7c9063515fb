"""`interpgram check` reports every problem of a spec in one run: schema errors of some elements,
compile errors of the others (unknown layer, channel out of range, unknown class, bad option), bad
links and layout entries, and missing input images — each at its own line."""
from __future__ import annotations

import re

from interpgram.backends.cli import main

SPEC = """\
interpgram: 1
model: builtin:shapes-cnn
input: [builtin:shapes/3, missing.png]
elements:
  a:
    content: {activation: {layer: conv33, atom: spatial}}
    presentation: heatmap
  b:
    content: {activation: {layer: conv4, atom: {channel: 500}}}
    presentation: bars
  c:
    titel: typo
    content: {activation: {layer: conv3, atom: spatial}}
    presentation: heatmap
  d:
    content:
      attribution:
        from: {layer: conv9, atom: channel}
        to: {layer: output, select: [stra]}
    presentation: {bars: {top: 8}}
  e:
    content: {activation: {layer: conv2, atom: spatial}}
    presentation: heatmapp
  f:
    content: {activation: {layer: conv2, atom: spatial}}
    presentation: {heatmap: {opacty: 0.5}}
  g:
    content:
      attribution:
        from: {layer: conv2, atom: spatial}
        to: {layer: conv_x, atom: spatial}
    presentation: {heatmap: {opacity: 7}}
links:
  - {from: a.hover, to: zz.from}
  - {from: b.hoover, to: d.from}
layout: [[a, b], [c, d], [e, f, g, h]]
"""

EXPECTED = [  # (line, a piece of the message)
    (3, "input image not found"),
    (6, "unknown layer 'conv33'"),
    (9, "channel 500 is outside 'conv4'"),
    (12, "unknown key 'titel'"),
    (18, "unknown layer 'conv9'"),
    (19, "unknown class 'stra'"),
    (23, "unknown presentation 'heatmapp'"),
    (26, "no option 'opacty'"),
    (31, "unknown layer 'conv_x'"),
    (32, "opacity"),
    (34, "no element 'zz'"),
    (35, "a link source is <element>.<event>"),
    (36, "layout names 'h'"),
]


def test_check_reports_every_problem_in_one_run(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC)
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith(str(spec))]
    found = {(int(re.match(rf"{re.escape(str(spec))}:(\d+):\d+: ", l).group(1)), l) for l in lines}
    for line, piece in EXPECTED:
        assert any(n == line and piece in l for n, l in found), f"line {line}: {piece!r} not reported:\n{err}"
    assert len(lines) == len(EXPECTED), err
    assert f"{len(EXPECTED)} problems found" in err
    assert "Traceback" not in err


def test_a_spec_whose_model_part_is_wrong_still_reports_its_other_schema_errors(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.replace("model: builtin:shapes-cnn", "model: {source: builtin:shapes-cnn, wieghts: x}"))
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'wieghts'" in err and "unknown key 'titel'" in err and "heatmapp" in err
