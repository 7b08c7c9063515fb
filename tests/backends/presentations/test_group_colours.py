"""Linked elements of the same NMF groups: one group has one colour in every chart (the groups element,
the heatmap of those groups, the heatmap of one group a link selected), and the link's caption counts
the groups, not the layer's channels. Rendered from the real spec, specs/shapes/neuron_groups.yaml."""
from __future__ import annotations

import re

import pytest

from support import SPECS
from interpgram.backends import pipeline
from interpgram.backends.cli import main
from interpgram.backends.render import write_report
from interpgram.backends.render.draw import chart_for

SPEC = SPECS / "shapes" / "neuron_groups.yaml"
K = 5  # the spec's conv4 groups


def walk(d):
    """Every dict inside a Vega-Lite spec, depth first."""
    if isinstance(d, dict):
        yield d
        for v in d.values():
            yield from walk(v)
    elif isinstance(d, list):
        for v in d:
            yield from walk(v)


def scale_colours(spec: dict) -> dict[str, str]:
    """group name → colour, from every categorical colour scale over group names."""
    out: dict[str, str] = {}
    for d in walk(spec):
        sc = d.get("scale") if isinstance(d.get("scale"), dict) else None
        if sc and isinstance(sc.get("domain"), list) and isinstance(sc.get("range"), list):
            for name, colour in zip(sc["domain"], sc["range"]):
                if str(name).startswith("group "):
                    assert out.setdefault(name, colour) == colour, f"{name} has two colours in one chart"
    return out


def panel_colours(spec: dict, drawn_in_title_colour: bool = True) -> dict[str, str]:
    """group name → colour of each panel titled with it; with ``drawn_in_title_colour`` that panel's
    marks must be drawn in its title's colour (a feature visualisation panel has no coloured marks)."""
    out: dict[str, str] = {}
    for d in walk(spec):
        title = d.get("title")
        if isinstance(title, dict) and re.fullmatch(r"group \d+", str(title.get("text"))):
            name, colour = title["text"], title["color"]
            body = {k: v for k, v in d.items() if k != "title"}
            drawn = {c["value"] for sub in walk(body) for c in [sub.get("color")]
                     if isinstance(c, dict) and isinstance(c.get("value"), str)}
            drawn |= set(scale_colours(body).values())
            if drawn_in_title_colour:
                assert drawn == {colour}, f"panel {name} is titled in {colour} but drawn in {drawn}"
            assert out.setdefault(name, colour) == colour, f"{name} has panels in two colours"
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("neuron_groups")
    prep = pipeline.prepare(SPEC, icon_steps=1)
    cache = pipeline.make_cache(prep, out / "cache")
    inputs, results = pipeline.run(prep, cache=cache)
    parts = pipeline.report_parts(prep, inputs, results, cache=cache)
    page = write_report(parts.views, out / "report", **parts.kwargs())
    return parts, page.read_text()


def test_each_group_has_one_colour_in_the_groups_element_and_the_linked_heatmap(rendered):
    parts, _ = rendered
    views = {v.id: v for v in parts.views}
    names = [f"group {g + 1}" for g in range(K)]
    groups = chart_for(views["groups"]).to_dict()
    in_groups = scale_colours(groups)
    assert list(in_groups) == names and len(set(in_groups.values())) == K  # K distinct colours
    assert panel_colours(groups, drawn_in_title_colour=False) == in_groups  # its per-group titles agree
    where = chart_for(views["where"]).to_dict()
    assert panel_colours(where) == in_groups  # the heatmap's panel of group g is group g's colour
    assert scale_colours(where) == in_groups  # and so is its map of the strongest group
    # a click on group g shows that group alone, still in its colour
    focused = [v for v in parts.variants.get("where", []) if v.data.get("groups")]
    assert sorted(v.data["groups"]["ids"][0] for v in focused) == list(range(K))
    for v in focused:
        g = v.data["groups"]["ids"][0]
        assert panel_colours(chart_for(v).to_dict()) == {names[g]: in_groups[names[g]]}, v.id


def test_the_link_caption_counts_groups_not_channels(rendered):
    parts, page = rendered
    entry = next(e for e in parts.links if e["kind"] == "group")
    assert entry["total"] == K and len(entry["keys"]) == K
    assert f"({K} of {K} selections precomputed here)" in page
    assert "of 128 selections" not in page  # conv4's channels


GROUP_HEATMAP_OPTIONS = """\
interpgram: 1
model: builtin:shapes-cnn
input: builtin:shapes/3
elements:
  a:
    content: {activation: {layer: conv4, atom: {group: nmf, k: 3}}}
    presentation: {heatmap: {colours: ["#000000", "#ffffff", "#ff0000"]}}
  b:
    content: {activation: {layer: conv4, atom: {group: nmf, k: 3}}}
    presentation:
      heatmap: {scheme: magma}
  c:
    content: {activation: {layer: conv4, atom: spatial}}
    presentation: {heatmap: {scheme: magma}}
"""


def test_a_heatmap_of_groups_refuses_colours_of_its_own_at_check(tmp_path, capsys):
    """Colours or a scheme would give a group another colour than the one every other chart gives it."""
    spec = tmp_path / "colours.yaml"
    spec.write_text(GROUP_HEATMAP_OPTIONS)
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(str(spec))]
    assert len(lines) == 2, err  # element c (a spatial map) may choose its scheme
    assert lines[0].startswith(f"{spec}:7:") and "option 'colours'" in lines[0] and "NMF groups" in lines[0], err
    assert lines[1].startswith(f"{spec}:11:") and "option 'scheme'" in lines[1], err
    assert "Traceback" not in err
