"""Links and comparisons: a selection re-plans its target element through the compiler; the
variant's numbers equal the element written out by hand; layer-to-layer channel attribution
matches captum; wrong links are positioned errors."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from interpgram.backends import links, pipeline
from interpgram.grammar import SpecError

HEADER = "interpgram: 1\nmodel: builtin:shapes-cnn\ninput: builtin:shapes/10\n"


def write(tmp_path, body: str, name: str = "s.yaml"):
    p = tmp_path / name
    p.write_text(HEADER + f"execution: {{cache: {tmp_path / 'cache'}}}\n" + textwrap.dedent(body))
    return p


LINKED = """
elements:
  where: {content: {activation: {layer: conv4, atom: spatial}}, presentation: heatmap}
  upstream:
    content: {attribution: {from: {layer: conv2, atom: spatial}, to: {layer: conv4, atom: spatial}}}
    presentation: heatmap
  logits: {content: {activation: {layer: output}}, presentation: {bars: {top: 2}}}
  channels:
    content: {attribution: {from: {layer: conv4, atom: channel}, to: {layer: output}}}
    presentation: bars
  groups: {content: {activation: {layer: conv4, atom: {group: nmf, k: 3}}}, presentation: {groups: {icons: false}}}
  groupmap: {content: {activation: {layer: conv4, atom: {group: nmf, k: 3}}}, presentation: heatmap}
links:
  - {from: where.hover, to: upstream.to}
  - {from: logits.click, to: channels.class}
  - {from: groups.click, to: groupmap.group}
"""


def values_of(spec_path, element: str) -> list[np.ndarray]:
    prep = pipeline.prepare(spec_path)
    _, results = pipeline.run(prep)
    p = next(p for p in prep.plan.base_elements if p.element == element)
    return [results.values[s.op]["value"][0].numpy() for s in p.series]


@pytest.fixture(scope="module")
def linked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("links")
    path = write(tmp, LINKED)
    prep = pipeline.prepare(path)
    cache = pipeline.make_cache(prep)
    inputs, results = pipeline.run(prep, cache=cache)
    return tmp, prep, cache, inputs, results


def test_links_resolve_to_what_the_source_selects(linked):
    _, prep, *_ = linked
    kinds = {(li.source, li.element, li.target): li.kind for li in prep.plan.link_info}
    assert kinds == {("where", "upstream", "to"): "position", ("logits", "channels", "class"): "class",
                     ("groups", "groupmap", "group"): "group"}
    li = prep.plan.link_info[0]
    assert li.source_layer == "conv4" and li.source_shape == (128, 8, 8) and li.precompute == 64


def test_a_position_variant_equals_the_element_written_by_hand(linked):
    tmp, prep, cache, inputs, _ = linked
    li = prep.plan.link_info[0]
    views = links.variant_views(prep, inputs, li.index, (5, 2), cache=cache)
    (v,) = views
    assert v.base == "upstream" and v.key == "5,2" and v.id == "upstream~0~5,2"
    got = v.data["maps"][0]["values"]
    by_hand = write(tmp, """
    elements:
      u: {content: {attribution: {from: {layer: conv2, atom: spatial}, to: {layer: conv4, atom: {spatial: [5, 2]}}}},
          presentation: heatmap}
    """, "hand.yaml")
    np.testing.assert_allclose(got, values_of(by_hand, "u")[0], rtol=1e-5, atol=1e-7)
    # a position the source layer shares with a coarser target maps onto the cell covering it
    assert v.data["maps"][0]["label"] == "conv4 at (5, 2)"


def test_a_class_variant_equals_the_element_with_that_class(linked):
    tmp, prep, cache, inputs, _ = linked
    li = next(l for l in prep.plan.link_info if l.kind == "class")
    crescent = prep.info.classes.index("crescent")
    (v,) = links.variant_views(prep, inputs, li.index, crescent, cache=cache)
    by_hand = write(tmp, """
    elements:
      c: {content: {attribution: {from: {layer: conv4, atom: channel}, to: {layer: output, select: [crescent]}}},
          presentation: bars}
    """, "hand2.yaml")
    np.testing.assert_allclose(v.data["values"], values_of(by_hand, "c")[0], rtol=1e-5, atol=1e-7)
    assert v.data["target"] == "crescent"


def test_a_group_selection_shows_that_group_alone(linked):
    _, prep, cache, inputs, results = linked
    li = next(l for l in prep.plan.link_info if l.kind == "group")
    base = next(p for p in prep.plan.base_elements if p.element == "groupmap")
    g = results.values[base.groups]
    (v,) = links.variant_views(prep, inputs, li.index, 1, cache=cache)
    (m,) = v.data["maps"]
    share = (g["spatial"][0, 1] * g["channels"][0, 1].norm()).numpy()
    assert m["label"] == "group 2"
    np.testing.assert_allclose(m["values"], share, rtol=1e-6)


def test_a_repeated_selection_comes_from_the_cache(linked):
    _, prep, cache, inputs, _ = linked
    li = prep.plan.link_info[0]
    plan, results, _ = links.run_variants(prep, inputs, [(li, (1, 6))], cache=cache)
    plan2, results2, _ = links.run_variants(prep, inputs, [(li, (1, 6))], cache=cache)
    assert results.stats.backward_passes == 1
    assert results2.stats.forward_passes == 0 and results2.stats.backward_passes == 0
    assert results2.stats.cache_hits >= 1


def test_precomputed_selections_are_one_fused_plan(linked):
    _, prep, _, _, results = linked
    sels = links.selections(prep.plan, results)
    by_link = {}
    for li, v in sels:
        by_link.setdefault(li.kind, []).append(v)
    assert len(by_link["position"]) == 64  # conv4 is 8×8: every position fits the bound
    assert by_link["group"] == [0, 1, 2]
    # the classes the logits bars show: the top 2 positive and top 2 negative logits
    logits = results.values[next(p for p in prep.plan.base_elements if p.element == "logits").series[0].op]["value"][0]
    shown = set(torch.argsort(logits, descending=True)[:2].tolist()) | set(torch.argsort(logits)[:2].tolist())
    assert set(by_link["class"]) == shown
    vplan = links.variant_plan(prep, sels)
    passes = vplan.passes()
    assert passes["forward"] == 1
    assert passes["backward"] == 64 + len(shown)  # one per target position and per class; groups need none


def test_position_domain_subsamples_evenly_within_the_bound():
    assert len(links.position_domain((8, 16, 16), 64)) == 64
    dom = links.position_domain((8, 16, 16), 64)
    assert {x for x, _ in dom} == set(range(1, 16, 2)) and {y for _, y in dom} == set(range(1, 16, 2))
    assert len(links.position_domain((8, 14, 14), 50)) <= 50
    assert links.position_domain((8, 4, 4), 0) == []
    assert len(links.position_domain((8, 4, 4), 100)) == 16


def test_layer_to_layer_channel_attribution_matches_captum(tmp_path):
    import captum.attr as captum  # a test dependency (pip install .[test]): missing fails, never skips
    path = write(tmp_path, """
    elements:
      flow:
        content: {attribution: {from: {layer: conv2, atom: channel}, to: {layer: conv4, atom: {channel: [7, 40]}}}}
        presentation: bars
    """)
    prep = pipeline.prepare(path)
    inputs, results = pipeline.run(prep)
    p = prep.plan.base_elements[0]
    assert [s.label for s in p.series] == ["conv4:7", "conv4:40"]
    net = prep.model.module if hasattr(prep.model, "module") else prep.model.model

    class UpToConv4(torch.nn.Module):  # Σ over positions of each conv4 channel
        def forward(self, x):
            out = {}
            h = net.conv4.register_forward_hook(lambda m, i, o: out.__setitem__("a", o))
            try:
                net(x)
            finally:
                h.remove()
            return out["a"].sum(dim=(2, 3))

    x = prep.model.preprocess(inputs.images)
    lga = captum.LayerGradientXActivation(UpToConv4(), net.conv2)
    for s, ch in zip(p.series, (7, 40)):
        want = lga.attribute(x, target=ch).sum(dim=(2, 3))[0]
        np.testing.assert_allclose(results.values[s.op]["value"][0].numpy(), want.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_channel_selection_drives_a_channel_target(tmp_path):
    path = write(tmp_path, """
    elements:
      c4: {content: {attribution: {from: {layer: conv4, atom: channel}, to: {layer: output, select: [star]}}}, presentation: bars}
      c2: {content: {attribution: {from: {layer: conv2, atom: channel}, to: {layer: conv4, atom: channel}}}, presentation: bars}
      hand: {content: {attribution: {from: {layer: conv2, atom: channel}, to: {layer: conv4, atom: {channel: 17}}}}, presentation: bars}
    links: [{from: c4.click, to: c2.to}]
    """)
    prep = pipeline.prepare(path)
    cache = pipeline.make_cache(prep)
    inputs, results = pipeline.run(prep, cache=cache)
    (v,) = links.variant_views(prep, inputs, 0, 17, cache=cache)
    hand = next(p for p in prep.plan.base_elements if p.element == "hand")
    np.testing.assert_allclose(v.data["values"], results.values[hand.series[0].op]["value"][0].numpy(), rtol=1e-6)


def test_reduce_channels_at_a_position_and_the_map_of_one_channel():
    from interpgram.backends.kernels.attribution import reduce
    a, g = torch.rand(2, 5, 4, 3), torch.randn(2, 5, 4, 3)
    torch.testing.assert_close(reduce(a, None, "channel", at=(2, 1)), a[:, :, 1, 2])
    torch.testing.assert_close(reduce(a, g, "channel", at=(2, 1), channels=(0, 3)), (a * g)[:, [0, 3], 1, 2])
    torch.testing.assert_close(reduce(a, None, "spatial", channels=(4,)), a[:, 4])
    torch.testing.assert_close(reduce(a, g, "spatial", channels=(1, 2)), (a * g)[:, 1:3].sum(1))


@pytest.mark.parametrize("links_yaml, where, message", [
    ("[{from: where.hover, to: logits.class}]", "to",
     "link where.hover → logits.class: 'where' selects a position of conv4, but nothing in this element's content "
     "takes a position as `class`"),
    ("[{from: logits.click, to: upstream.to}]", "to",
     "'logits' selects a class, but a class selection drives `to` of an attribution to 'conv4' (select a position)"),
    ("[{from: where.hover, to: groupmap.group}]", "to", "'where' selects a position of conv4, but a position selection "
     "cannot drive `group`"),
    ("[{from: where.hover, to: upstream.from}]", "to", "but heatmap draws a map over positions, and one selected "
     "position is a single value"),
])
def test_wrong_links_are_positioned_errors(tmp_path, links_yaml, where, message):
    path = write(tmp_path, f"""
    elements:
      where: {{content: {{activation: {{layer: conv4, atom: spatial}}}}, presentation: heatmap}}
      upstream: {{content: {{attribution: {{from: {{layer: conv2}}, to: {{layer: conv4}}}}}}, presentation: heatmap}}
      logits: {{content: {{activation: {{layer: output}}}}, presentation: bars}}
      groupmap: {{content: {{activation: {{layer: conv4, atom: {{group: nmf, k: 3}}}}}}, presentation: heatmap}}
    links: {links_yaml}
    """)
    with pytest.raises(SpecError) as e:
        pipeline.prepare(path)
    text = str(e.value)
    assert message in text, text
    line = path.read_text().splitlines().index(next(l for l in path.read_text().splitlines() if l.startswith("links:"))) + 1
    assert f"s.yaml:{line}:" in text


def test_vary_class_and_layer_put_views_side_by_side(tmp_path):
    path = write(tmp_path, """
    elements:
      classes:
        content: {attribution: {from: {layer: conv3, atom: spatial}, to: {layer: output}}}
        presentation: heatmap
        vary: {class: [star, crescent]}
      layers:
        content: {attribution: {from: {layer: conv3, atom: channel}, to: {layer: output, select: [star]}}}
        presentation: bars
        vary: {layer: [conv3, conv4]}
      star: {content: {attribution: {from: {layer: conv3, atom: spatial}, to: {layer: output, select: [star]}}}, presentation: heatmap}
    """)
    prep = pipeline.prepare(path)
    inputs, results = pipeline.run(prep)
    views = pipeline.build_views(prep.plan, inputs, results)
    assert [v.id for v in views["classes"]] == ["classes-star", "classes-crescent"]
    assert [v.id for v in views["layers"]] == ["layers-conv3", "layers-conv4"]
    assert views["classes"][0].title.endswith("· star")
    np.testing.assert_allclose(views["classes"][0].data["maps"][0]["values"], views["star"][0].data["maps"][0]["values"])
    assert len(views["layers"][0].data["values"]) == 128 and len(views["layers"][1].data["values"]) == 128
    assert not np.allclose(views["layers"][0].data["values"], views["layers"][1].data["values"])
    assert prep.plan.passes() == {"forward": 1, "backward": 2}  # star is shared by three views


def test_vary_errors_are_positioned(tmp_path):
    path = write(tmp_path, """
    elements:
      a:
        content: {activation: {layer: conv3, atom: spatial}}
        presentation: heatmap
        vary: {class: [star, crescent]}
      b:
        content: {attribution: {from: {layer: conv3}, to: {layer: output}}}
        presentation: heatmap
        vary: {layer: [conv3, conv9]}
      c:
        content: {attribution: {from: {layer: conv3}, to: {layer: output}}}
        presentation: heatmap
        vary: {class: [star, starr]}
    """)
    with pytest.raises(SpecError) as e:
        pipeline.prepare(path)
    text = str(e.value)
    assert "s.yaml:10:20: vary class: nothing in this element's content takes a class" in text
    assert "unknown layer 'conv9'" in text and "did you mean 'conv2'" in text or "did you mean" in text
    assert "unknown class 'starr'" in text and "did you mean 'star'" in text


def test_vary_model_compares_two_checkpoints(tmp_path):
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    import interpgram.backends.models as M
    sd = load_file(str(Path(M.__file__).parent / "weights" / "shapes_cnn.safetensors"))
    g = torch.Generator().manual_seed(1)
    save_file({k: v + 0.05 * torch.randn(v.shape, generator=g) if k.endswith("weight") else v for k, v in sd.items()},
              str(tmp_path / "other.safetensors"))
    path = write(tmp_path, """
    elements:
      m:
        content: {attribution: {from: {layer: conv3, atom: spatial}, to: {layer: output, select: [3]}}}
        presentation: heatmap
        vary:
          model: [{source: "file:other.safetensors", factory: "python:interpgram.backends.models.shapes_cnn:ShapesCNN"}]
    """)
    with pytest.raises(SpecError, match="--allow-code"):
        pipeline.render(path, tmp_path / "out")
    assert not (tmp_path / "out" / "index.html").exists()
    out, prep, _ = pipeline.render(path, tmp_path / "out", allow_code=True)
    html = out.read_text()
    assert "· builtin:shapes-cnn<" in html and "· file:other.safetensors<" in html


def test_top_k_classes_are_each_inputs_most_likely_classes(tmp_path):
    path = write(tmp_path, """
    elements:
      top:
        content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [top1, top2]}}}
        presentation: heatmap
      side:
        content: {attribution: {from: {layer: conv3}, to: {layer: output}}}
        presentation: heatmap
        vary: {class: [top2, top1]}
    """)
    prep = pipeline.prepare(path)
    inputs, results = pipeline.run(prep)
    top = next(p for p in prep.plan.base_elements if p.element == "top")
    side = next(p for p in prep.plan.base_elements if p.element == "side")
    assert [s.label for s in top.series] == ["predicted class", "top-2 class"] and side.side == "top2"
    net = prep.model.module
    with torch.no_grad():
        order = net(prep.model.preprocess(inputs.images)).argsort(dim=1, descending=True)[0]
    names = [prep.info.classes[int(i)] for i in order[:2]]
    by_hand = write(tmp_path, f"""
    elements:
      h:
        content: {{attribution: {{from: {{layer: conv3}}, to: {{layer: output, select: [{names[0]}, {names[1]}]}}}}}}
        presentation: heatmap
    """, "hand.yaml")
    want = values_of(by_hand, "h")
    for s, w in zip(top.series, want):
        np.testing.assert_allclose(results.values[s.op]["value"][0].numpy(), w, rtol=1e-6)
    np.testing.assert_allclose(results.values[side.series[0].op]["value"][0].numpy(), want[1], rtol=1e-6)
