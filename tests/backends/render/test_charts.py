"""The view layer: presentations compile to valid Vega-Lite and draw what they claim; the report is
one self-contained file, written atomically. Fast: no browser (see tests/browser for that)."""
from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import vl_convert
from PIL import Image

from interpgram.backends.render import (ElementRenderError, ElementView, UnknownPresentationError, chart_for,
                                      registered, render_html, spec_for, to_png, to_svg, write_report)
from interpgram.backends.render.charts import CLASS_COLOURS, GROUP_COLOURS, NEGATIVE, POSITIVE, top_channels
from interpgram.backends.render.draw import vegalite_version
from interpgram.grammar.presentation import PRESENTATIONS

RNG = np.random.default_rng(0)
IMAGE = RNG.random((64, 64, 3)).astype(np.float32)


def heat(n_maps=1, signed=True, clip=False, image=IMAGE, grid=(16, 16), vid="h"):
    maps = [{"label": f"class{i}", "values": RNG.standard_normal(grid).astype(np.float32)} for i in range(n_maps)]
    return ElementView(vid, "heatmap", "heat", "InfoVis(Attribution(Network conv3 Spatial, Output class0))",
                       {"opacity": 0.6, "clip_negative": clip}, {"image": image, "maps": maps, "signed": signed})


def bars(top=4, values=None, vid="b"):
    values = RNG.standard_normal(20).astype(np.float32) if values is None else np.asarray(values, dtype=np.float32)
    return ElementView(vid, "bars", "bars", "InfoVis(Attribution(Network conv4 Channel, Output star))", {"top": top},
                       {"labels": [f"conv4:{i}" for i in range(len(values))], "values": values, "target": "star"})


def groups(k=3, attribution=True, vid="g", spatial=None, channels=None, attr=None):
    spatial = RNG.random((k, 8, 8)).astype(np.float32) if spatial is None else spatial
    channels = RNG.random((k, 32)).astype(np.float32) if channels is None else channels
    if attr is None:
        attr = ({"star": RNG.standard_normal(k).astype(np.float32), "ring": RNG.standard_normal(k).astype(np.float32)}
                if attribution else {})
    return ElementView(vid, "groups", "groups", "InfoVis(Attribution(Network conv4 Group, Output star, ring))",
                       {"top_channels": 3},
                       {"image": IMAGE, "spatial": spatial, "channels": channels,
                        "channel_labels": [f"conv4:{i}" for i in range(channels.shape[1])], "attribution": attr})


def icons(n, s=16):
    return [RNG.random((s, s, 3)).astype(np.float32) for _ in range(n)]


def featurevis_view(n=5, vid="f"):
    return ElementView(vid, "featurevis", "icons", "FeatureVis(Activation(Network conv4 Channel))", {},
                       {"icons": icons(n), "labels": [f"conv4:{i}" for i in range(n)],
                        "values": RNG.random(n).tolist(), "scores": RNG.random(n).tolist()})


def dictionary_view(top=3, vid="d", acts=None):
    acts = RNG.random((10, 4, 5)).astype(np.float32) if acts is None else acts
    return ElementView(vid, "semantic_dictionary", "dict", "InfoVis(Activation(Network conv4 Spatial))", {"top": top},
                       {"image": IMAGE, "activations": acts, "icons": dict(enumerate(icons(acts.shape[0]))),
                        "layer": "conv4"})


def grid_view(vid="a", mag=None):
    mag = RNG.random((3, 4)).astype(np.float32) if mag is None else mag
    h, w = mag.shape
    return ElementView(vid, "activation_grid", "grid", "FeatureVis(Activation(Network conv4 Spatial))", {},
                       {"image": IMAGE, "icons": RNG.random((h, w, 3, 8, 8)).astype(np.float32), "magnitude": mag,
                        "layer": "conv4"})


def svg_of(view) -> str:
    return vl_convert.vegalite_to_svg(spec_for(view), vl_version=vegalite_version())  # raises on an invalid spec


def symbols(svg: str, kind: str) -> list[dict[str, str]]:
    """Attributes of the drawn marks of one kind (rect, bar, image, line) in a Vega SVG."""
    out = []
    for tag in re.findall(r"<(?:path|image)\b[^>]*>", svg):
        attrs = dict(re.findall(r'([\w:-]+)="([^"]*)"', tag))
        if attrs.get("role") == "graphics-symbol" and attrs.get("aria-roledescription") in (kind, f"{kind} mark"):
            out.append(attrs)
    return out


def marks(svg: str, kind: str) -> int:
    return len(symbols(svg, kind))


def fills(svg: str) -> set[str]:
    """The colours of the visible rects and bars."""
    return {a["fill"].lower() for kind in ("rect", "bar") for a in symbols(svg, kind)
            if a.get("opacity", "1") != "0" and a.get("fill", "").startswith("#")}


def datasets(spec: dict) -> list[dict]:
    return [row for rows in spec.get("datasets", {}).values() for row in rows]


# ----------------------------------------------------------------------------- presentations
@pytest.mark.parametrize("view, cells", [
    (heat(1), 256), (heat(1, signed=False), 256), (heat(1, clip=True), 256),
    (heat(2), 3 * 256), (heat(3), 4 * 256),
    (heat(1, image=RNG.random((48, 64, 3)), grid=(12, 16)), 12 * 16),  # not square
    (heat(2, image=RNG.random((224, 224, 3)), grid=(14, 14)), 3 * 196),  # large input: still one image
    (groups(3), 4 * 64), (groups(6, attribution=False), 7 * 64),
], ids=["signed", "magnitude", "clipped", "two-class", "three-class", "non-square", "224px", "groups", "groups-6-no-attr"])
def test_raster_presentations_compile_and_draw_every_cell(view, cells):
    svg = svg_of(view)
    assert marks(svg, "rect") == cells  # one rect per layer cell in every map panel
    assert marks(svg, "image") >= 2  # the input image under the maps


def test_the_input_image_is_embedded_once_per_size():
    spec = json.dumps(spec_for(heat(3, image=RNG.random((224, 224, 3)), grid=(14, 14))))
    # the photo once (the input panel) and its muted grey version once (shared by the four map panels)
    assert spec.count("data:image/png;base64,") == 2
    assert len(spec) < 400_000


def test_maps_lie_over_a_muted_photo_and_show_the_middle_of_the_range():
    from interpgram.backends.presentations.heatmap import muted, strength_alpha
    img = RNG.random((8, 8, 3))
    m = muted(img)
    assert m.shape == img.shape and m.min() >= 0.55 and m.max() <= 1.0  # light grey: any colour reads on it
    assert np.allclose(m[..., 0], m[..., 2])
    v = np.array([0.0, 0.01, 0.25, 1.0])
    # a quarter of the peak is drawn at half the peak's opacity (linear: a quarter), a hundredth at a tenth
    np.testing.assert_allclose(strength_alpha(v, 1.0, 0.8, 0.5), [0, 0.08, 0.4, 0.8])
    np.testing.assert_allclose(strength_alpha(v, 1.0, 0.8, 1.0), [0, 0.008, 0.2, 0.8])
    spec = spec_for(heat(2))
    titles = [p.get("title") for p in spec["hconcat"]]
    assert all(isinstance(t, dict) and t["subtitle"].startswith("peak ") for t in titles[1:3])  # each class's own scale


def test_heatmap_scales():
    signed = spec_for(heat(1, signed=True))["hconcat"][1]["layer"][1]["encoding"]
    assert signed["color"]["scale"]["domainMid"] == 0
    lo, hi = signed["color"]["scale"]["domain"]
    assert lo == -hi and hi > 0
    magnitude = spec_for(heat(1, signed=False))["hconcat"][1]["layer"][1]["encoding"]
    assert magnitude["color"]["scale"]["scheme"] == "viridis"
    assert "domainMid" not in magnitude["color"]["scale"]


def test_two_class_heatmap_draws_two_colours_positive_only():
    view = heat(2)
    svg = svg_of(view)
    assert fills(svg) == {CLASS_COLOURS[0], CLASS_COLOURS[1]}
    spec = spec_for(view)
    assert len(spec["hconcat"]) == 4  # input, class 0, class 1, which class wins
    rows = datasets(spec)
    assert min(r["value"] for r in rows if "value" in r) >= 0  # clipped at zero
    # where a class has no positive evidence the cell is fully transparent
    neg = np.asarray(view.data["maps"][0]["values"]) <= 0
    class0 = spec["hconcat"][1]["layer"][1]
    cells = [r for r in spec["datasets"][class0["data"]["name"]]]
    assert all(r["alpha"] == 0 for r in cells if neg[r["row"], r["col"]])


def test_three_classes_get_three_distinct_colours():
    assert fills(svg_of(heat(3))) == set(CLASS_COLOURS[:3])


def test_which_class_panel_takes_the_stronger_class():
    a = np.array([[1.0, 0.0], [0.2, -1.0]], dtype=np.float32)
    b = np.array([[0.5, 2.0], [0.1, -3.0]], dtype=np.float32)
    view = ElementView("h", "heatmap", "t", "g", {}, {"image": IMAGE, "signed": True,
                                                      "maps": [{"label": "star", "values": a}, {"label": "ring", "values": b}]})
    rows = [r for r in datasets(spec_for(view)) if "class" in r]
    got = {(r["row"], r["col"]): r["class"] for r in rows}
    assert got == {(0, 0): "star", (0, 1): "ring", (1, 0): "star", (1, 1): "(no positive evidence)"}
    assert [r["alpha"] for r in rows if r["class"] == "(no positive evidence)"] == [0]
    # a class may be called anything, even what the panel calls "no class"
    view.data["maps"][1]["label"] = "(no positive evidence)"
    rows = [r for r in datasets(spec_for(view)) if "class" in r]
    assert {r["class"] for r in rows} == {"star", "(no positive evidence)", "(no positive evidence)*"}


def test_bars_show_exactly_top_n_each_side_sorted_and_coloured_by_sign():
    values = RNG.standard_normal(64).astype(np.float32)
    view = bars(top=5, values=values)
    svg = svg_of(view)
    assert marks(svg, "bar") == 10
    assert fills(svg) == {POSITIVE, NEGATIVE}
    rows = datasets(spec_for(view))
    shown = [r["channel"] for r in rows if "channel" in r]
    expected_pos = [f"conv4:{i}" for i in np.argsort(-values)[:5]]
    expected_neg = [f"conv4:{i}" for i in np.argsort(values)[:5]]
    assert shown == expected_pos + expected_neg
    # the axis lists them by value, largest first
    drawn = symbols(svg, "bar")
    top_down = [re.search(r"channel: (conv4:\d+)", a["aria-label"]).group(1)
                for a in sorted(drawn, key=lambda a: float(re.match(r"M[-\d.]+,([-\d.]+)", a["d"]).group(1)))]
    assert top_down == expected_pos + expected_neg[::-1]
    assert {a["fill"] for a in drawn if "sign: positive" in a["aria-label"]} == {POSITIVE}


def test_bars_with_few_positives_show_what_there_is():
    view = bars(top=3, values=[0.0, -1.0, 2.0, -3.0, -0.5, -0.2, 0.0])
    rows = [r for r in datasets(spec_for(view)) if "channel" in r]
    assert [(r["channel"], r["sign"]) for r in rows] == [
        ("conv4:2", "positive"), ("conv4:3", "negative"), ("conv4:1", "negative"), ("conv4:4", "negative")]
    assert marks(svg_of(view), "bar") == 4


def test_top_channels_is_stable_and_skips_zeros():
    pos, neg = top_channels(np.array([1.0, 0.0, 1.0, -2.0, 3.0, -2.0]), 2)
    assert pos.tolist() == [4, 0] and neg.tolist() == [3, 5]


def test_groups_combined_map_uses_each_groups_scale_free_share():
    spatial = RNG.random((3, 8, 8)).astype(np.float32)
    channels = RNG.random((3, 32)).astype(np.float32)
    share = spatial * np.linalg.norm(channels, axis=1)[:, None, None]
    attr = {"star": np.array([1.0, -2.0, 0.5], dtype=np.float32)}  # group attribution is scale-free too
    spec = spec_for(groups(3, spatial=spatial, channels=channels, attr=attr))
    combined = spec["vconcat"][0]["hconcat"][0]["layer"][1]["data"]["name"]
    rows = spec["datasets"][combined]
    assert len(rows) == 64
    for r in rows:
        assert r["group"] == f"group {int(share[:, r['row'], r['col']].argmax()) + 1}"
        assert r["value"] == pytest.approx(float(share[:, r["row"], r["col"]].max()), rel=1e-4)
    # NMF leaves the scale between the two factors free: rescaling them changes nothing drawn
    scale = np.array([10.0, 0.1, 3.0], dtype=np.float32)
    again = spec_for(groups(3, spatial=spatial * scale[:, None, None], channels=channels / scale[:, None], attr=attr))
    a, b = list(spec["datasets"].values()), list(again["datasets"].values())
    assert len(a) == len(b)
    for rows_a, rows_b in zip(a, b):
        assert len(rows_a) == len(rows_b)
        for ra, rb in zip(rows_a, rows_b):
            assert ra.keys() == rb.keys()
            for key in ra:
                if isinstance(ra[key], float):
                    assert ra[key] == pytest.approx(rb[key], rel=1e-3, abs=2e-3), key
                else:
                    assert ra[key] == rb[key], key


def test_groups_parts():
    view = groups(4)
    spec = spec_for(view)
    text = json.dumps(spec)
    assert "each group's attribution to each class" in text
    rows = datasets(spec)
    assert {r["class"] for r in rows if "class" in r} == {"star", "ring"}
    assert sum(1 for r in rows if "weight" in r) == 4 * 3  # top_channels=3 for each of 4 groups
    svg = svg_of(view)
    assert set(GROUP_COLOURS[:4]) <= fills(svg)
    assert "each group's attribution" not in json.dumps(spec_for(groups(4, attribution=False)))


def test_many_groups_get_distinct_colours():
    svg = svg_of(groups(len(GROUP_COLOURS) + 3, attribution=False))
    assert len(fills(svg)) == len(GROUP_COLOURS) + 3


@pytest.mark.parametrize("mutate, message", [
    (lambda v: v.data.update(image=np.zeros((64, 64))), "image must be a non-empty 3-d array"),
    (lambda v: v.data.update(image=IMAGE * 255), r"image values must lie in \[0, 1\]"),
    (lambda v: v.data.update(maps="not a list"), "'maps' must be a non-empty list"),
    (lambda v: v.data["maps"][0].update(values=np.full((16, 16), np.nan)), "NaN"),
    (lambda v: v.data.pop("image"), "data lacks 'image'"),
    (lambda v: v.options.update(colour="red"), "unknown option.*'colour'"),
    (lambda v: v.options.update(opacity=2), "'opacity' must be a number in"),
])
def test_bad_heatmap_input_fails_clearly(mutate, message):
    view = heat(1)
    mutate(view)
    with pytest.raises(ValueError, match=rf"element 'h' \(heatmap\): .*{message}"):
        chart_for(view)


def test_bad_bars_and_groups_input_fail_clearly():
    view = bars()
    view.data["labels"] = view.data["labels"][:-1]
    with pytest.raises(ValueError, match="19 labels for 20 values"):
        chart_for(view)
    view = groups(3)
    view.data["spatial"] = -view.data["spatial"]
    with pytest.raises(ValueError, match="spatial must be non-negative"):
        chart_for(view)
    view = groups(3)
    view.data["attribution"] = {"star": np.ones(2)}
    with pytest.raises(ValueError, match=r"attribution\['star'\] has 2 values for 3 groups"):
        chart_for(view)


# ----------------------------------------------------------------------------- registry
def test_unknown_presentation_lists_the_registered_ones():
    with pytest.raises(UnknownPresentationError) as err:
        chart_for(ElementView("x", "sparkles", "", "", {}, {}))
    assert isinstance(err.value, KeyError)
    assert str(err.value) == f"no chart for presentation 'sparkles' (registered: {', '.join(registered())})"
    assert {"heatmap", "bars", "groups"} <= set(registered()) == set(PRESENTATIONS.names())


def test_every_builtin_presentation_draws_with_its_own_default_options():
    from support.sample_views import atlas_view, examples_view

    examples = {"heatmap": heat(2), "bars": bars(), "groups": groups(3), "featurevis": featurevis_view(),
                "semantic_dictionary": dictionary_view(), "activation_grid": grid_view(), "examples": examples_view(),
                "atlas": atlas_view()}
    assert set(examples) <= set(PRESENTATIONS.names())
    for name, view in examples.items():
        view.options = PRESENTATIONS[name].defaults()  # the unit's defaults, exactly as the executor passes them
        svg_of(view)


# ----------------------------------------------------------------------------- report
class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _parse(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    return p


def test_report_is_self_contained(tmp_path):
    views = [heat(2), bars(), groups()]
    path = write_report(views, tmp_path / "new" / "dir", title="t", layout=[["h", "b"], ["g"]], meta={"model": "m"})
    assert path == tmp_path / "new" / "dir" / "index.html"
    html = path.read_text(encoding="utf-8")
    page = _parse(html)
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            assert not re.match(r"\s*(https?:)?//", attrs.get(key) or ""), (tag, attrs)
    assert not [a for t, a in page.tags if t == "script" and "src" in a]
    assert not [a for t, a in page.tags if t == "link"]
    assert not re.search(r"<(script|link)[^>]+(src|href)\s*=\s*[\"']?https?:", html, re.I)
    assert "window.vegaEmbed" in html and "data:image/png;base64," in html
    # every spec is embedded, exactly as the presentation built it
    embedded = re.findall(r'<script type="application/json" class="spec">(.*?)</script>', html, re.S)
    assert [json.loads(s) for s in embedded] == [spec_for(v) for v in views]


def test_report_page_structure(tmp_path):
    meta = {"model": "builtin:shapes-cnn", "timings": {"load": 0.123456, "attr": 1.5}, "cache hits": 3,
            "inputs": ["a.png", "b.png"], "spec": "specs/<demo>.yaml"}
    views = [heat(1, vid="first"), bars(vid="second"), groups(vid="third"), bars(vid="extra")]
    html = write_report(views, tmp_path, title="A <b>report</b>", layout=[["third"], ["second", "first"]],
                        meta=meta).read_text()
    page = _parse(html)
    sections = [a for t, a in page.tags if t == "section"]
    # layout order, and a view the layout leaves out still shows, after it
    assert [s["id"] for s in sections] == ["el-third", "el-second", "el-first", "el-extra"]
    assert [s["data-presentation"] for s in sections] == ["groups", "bars", "heatmap", "bars"]
    rows = re.findall(r'<div class="row">(.*?)</div>\s*(?=<div class="row">|\n</main>)', html, re.S)
    assert [re.findall(r'id="el-(\w+)"', r) for r in rows] == [["third"], ["second", "first"], ["extra"]]
    assert "<title>A &lt;b&gt;report&lt;/b&gt;</title>" in html
    assert "<dt>timings</dt><dd><ul><li>load: 0.1235</li><li>attr: 1.5</li></ul></dd>" in html
    assert "<dt>cache hits</dt><dd>3</dd>" in html and "specs/&lt;demo&gt;.yaml" in html
    assert "InfoVis(Attribution(Network conv4 Channel, Output star))" in html
    from importlib.metadata import version
    assert re.search(rf"<footer>interpgram {re.escape(version('interpgram'))}\b", html)


def test_spec_text_cannot_close_its_script_element(tmp_path):
    view = bars()
    view.data["target"] = "</script x><script>alert(1)</SCRIPT ><!--"
    html = write_report([view], tmp_path, title="t").read_text()
    assert "<script>alert(1)" not in html and "<!--" not in html
    # every "</script" in the page closes one of its own script elements
    assert len(re.findall(r"</script", html, re.I)) == sum(1 for t, _ in _parse(html).tags if t == "script")
    embedded = re.findall(r'<script type="application/json" class="spec">(.*?)</script>', html, re.S)
    assert view.data["target"] in json.dumps(json.loads(embedded[0]), ensure_ascii=False)


@pytest.mark.parametrize("layout, message", [
    ([["nope"]], "layout names views that do not exist: nope"),
    ([["b"], ["b"]], "layout places a view twice: b"),
])
def test_layout_must_name_real_views_once(layout, message):
    with pytest.raises(ValueError, match=message):
        render_html([bars()], title="t", layout=layout)


def test_view_ids_are_unique():
    with pytest.raises(ValueError, match="must be unique"):
        render_html([bars(), bars()], title="t")


def test_write_leaves_no_temporary_file(tmp_path):
    write_report([bars()], tmp_path, title="one")
    write_report([bars(), heat()], tmp_path, title="two")
    assert os.listdir(tmp_path) == ["index.html"]
    assert "<title>two</title>" in (tmp_path / "index.html").read_text()


def test_a_failing_element_leaves_the_previous_report_intact(tmp_path):
    path = write_report([bars()], tmp_path, title="first")
    before = path.read_bytes()
    broken = heat(1, vid="broken")
    broken.data["maps"][0]["values"] = np.zeros((3, 3, 3))  # the element fails while the page is being rendered
    with pytest.raises(ElementRenderError, match=r"element 'broken' \(presentation 'heatmap'\) could not be drawn"):
        write_report([bars(), groups(), broken], tmp_path, title="second")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["index.html"]


def test_a_failing_write_removes_its_temporary_file(tmp_path):
    # index.html is a non-empty folder: os.replace of the finished temporary file onto it fails for real
    (tmp_path / "index.html").mkdir()
    (tmp_path / "index.html" / "keep").write_text("x")
    with pytest.raises(OSError):
        write_report([bars()], tmp_path, title="t")
    assert sorted(os.listdir(tmp_path)) == ["index.html"]
    assert (tmp_path / "index.html" / "keep").read_text() == "x"


def test_png_and_svg_export(tmp_path):
    png = to_png(heat(2), tmp_path / "out" / "h.png", scale=1)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 4 * 220 and im.height > 220
    svg = to_svg(groups(), tmp_path / "g.svg").read_text()
    assert svg.startswith("<svg") and "groups" in svg and "InfoVis(Attribution(Network conv4 Group" in svg
    bar_svg = to_svg(bars(), tmp_path / "b.svg").read_text()  # a chart with its own title keeps it
    assert "strongest channels for star" in bar_svg and ">bars<" in bar_svg
    assert sorted(os.listdir(tmp_path)) == ["b.svg", "g.svg", "out"]


# ----------------------------------------------------------------------------- feature visualisation
def test_featurevis_draws_one_image_per_icon_with_its_caption():
    v = featurevis_view(5)
    svg = svg_of(v)
    assert len(symbols(svg, "image")) == 5
    for i in range(5):
        assert f"conv4:{i}" in svg


def test_featurevis_rejects_icons_that_do_not_match_the_labels():
    v = featurevis_view(3)
    v.data["labels"] = ["a", "b"]
    with pytest.raises(ValueError, match="icons must be a list of 2"):
        chart_for(v)


def test_semantic_dictionary_opens_on_the_strongest_position_and_lists_its_top_channels():
    acts = np.zeros((6, 2, 3), dtype=np.float32)
    acts[4, 1, 2] = 9.0  # strongest vector at x=2, y=1 (position 5): channel 4, then 1 and 0
    acts[1, 1, 2] = 5.0
    acts[0, 1, 2] = 3.0
    acts[2, 0, 0] = 1.0
    v = dictionary_view(top=3, acts=acts)
    spec = spec_for(v)
    params = [p for p in spec.get("params", []) if p.get("name") == "position"]
    if not params:  # concatenated views keep their params on the sub-view
        params = [p for sub in spec["hconcat"] for layer in sub.get("layer", []) for p in layer.get("params", [])
                  if p.get("name") == "position"]
    assert params and params[0]["value"] == [{"pos": 5}]
    svg = svg_of(v)
    assert len(symbols(svg, "image")) == 1 + 3  # the input and the three icons of position 5
    for ch in ("conv4:4", "conv4:1", "conv4:0"):
        assert ch in svg


def test_semantic_dictionary_needs_an_icon_for_every_channel_it_shows():
    v = dictionary_view()
    del v.data["icons"][next(iter(v.data["icons"]))]
    with pytest.raises(ValueError, match="no icon for channel"):
        chart_for(v)


def test_activation_grid_sizes_icons_by_magnitude():
    mag = np.array([[4.0, 1.0], [0.0, 0.25]], dtype=np.float32)
    spec = spec_for(grid_view(mag=mag))
    rows = next(d["values"] for d in _datasets(spec) if d["values"] and "x0" in d["values"][0])
    side = {(r["col"], r["row"]): r["x1"] - r["x0"] for r in rows}
    assert side[(0, 0)] == pytest.approx(0.96)
    assert side[(1, 0)] / side[(0, 0)] == pytest.approx(0.5)  # area ∝ magnitude: side ∝ sqrt
    assert side[(1, 1)] / side[(0, 0)] == pytest.approx(0.25)
    assert len(symbols(svg_of(grid_view(mag=mag)), "image")) == 1 + 4


def _datasets(spec):
    out = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("data"), dict) and "values" in node["data"]:
                out.append(node["data"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(spec)
    for d in (spec.get("datasets") or {}).values():
        out.append({"values": d})
    return out


def test_bars_and_groups_show_icons_when_given():
    b = bars(top=2, values=[3.0, -1.0, 2.0, -4.0, 0.5])
    b.data["icons"] = {f"conv4:{i}": ic for i, ic in enumerate(icons(5))}
    assert len(symbols(svg_of(b), "image")) == 4
    g = groups(3)
    g.data["icons"] = icons(3)
    plain = len(symbols(svg_of(groups(3)), "image"))
    assert len(symbols(svg_of(g), "image")) == plain + 3
