"""Every malformed spec gets positioned, actionable messages: one table, one row per mistake.

Each row: a spec text, then for every diagnostic in order (line, anchor, message fragment): the
column must be where ``anchor`` starts on that line (column 1 when the anchor is None).
Model-dependent rows (layers, classes, positions) compile against the real built-in model.
"""
from __future__ import annotations

import textwrap

import pytest

from interpgram.grammar.presentation import PRESENTATIONS
from interpgram.grammar import SpecError, load_spec, load_spec_text

HEAD = "interpgram: 1\nmodel: builtin:shapes-cnn\ninput: builtin:shapes/7\n"


def spec(body: str) -> str:
    return HEAD + textwrap.dedent(body).lstrip("\n")


def el(content: str, presentation: str = "heatmap") -> str:
    return spec(f"elements:\n  e:\n    content: {content}\n    presentation: {presentation}\n")


CASES = [
    # ---- file-level problems
    ("empty", "", [(1, None, "the spec is empty")]),
    ("only comments", "# nothing\n", [(1, None, "the spec is empty")]),
    ("a list", "- a\n- b\n", [(1, None, "this file holds a list")]),
    ("a scalar", "hello\n", [(1, None, "this file holds a single value")]),
    ("tab indent", "interpgram: 1\nelements:\n\te: 1\n", [(3, None, "tab character")]),
    ("bad yaml", "interpgram: 1\nmodel: [a, b\n", [(3, None, "invalid YAML")]),
    ("duplicate key", spec("elements: {}\nelements: {}\n"), [(5, "elements", "duplicate key 'elements' (first defined at line 4)")]),
    ("python tag", "interpgram: 1\nmodel: !!python/object/apply:os.system [ls]\n", [(2, "!!python", "unsupported YAML value")]),
    # ---- top level
    ("missing version", "model: builtin:shapes-cnn\ninput: builtin:shapes/7\nelements: {e: {content: {activation: {layer: conv3}}, presentation: heatmap}}\n",
     [(1, None, "missing the required key 'interpgram' (write 'interpgram: 1' at the top)")]),
    ("bad version", spec("elements: {e: {content: {activation: {layer: conv3}}, presentation: heatmap}}\n").replace("interpgram: 1", "interpgram: 2"),
     [(1, "2", "interpgram: 2 is not allowed")]),
    ("unknown top key", spec("elemnts: {}\n"), [(4, "elemnts", "unknown key 'elemnts' (valid: interpgram, title, model, input, dataset, elements, links, layout, execution; did you mean 'elements'?)")]),
    ("no elements", spec("elements: {}\n"), [(4, "{}", "a spec needs at least one element")]),
    ("elements a list", spec("elements: [a, b]\n"), [(4, "[a", "elements: expected a mapping, got a list")]),
    ("bad element id", spec("elements:\n  'my elem': {content: {activation: {layer: conv3}}, presentation: heatmap}\n"), [(5, "'my", "element ids are names")]),
    # ---- elements and content
    ("unknown element key", el("{activation: {layer: conv3}}\n    titel: x"), [(7, "titel", "unknown key 'titel' under 'e' (valid: content, presentation, title, vary; did you mean 'title'?)")]),
    ("unknown atom", el("{activation: {layer: conv3, atom: spatail}}"), [(6, "spatail", "atom: 'spatail' is not allowed (valid: neuron, spatial, channel, group, whole; did you mean 'spatial'?)")]),
    ("unknown presentation", el("{activation: {layer: conv3}}", "heatmpa"), [(7, "heatmpa", f"unknown presentation 'heatmpa' (valid: {', '.join(PRESENTATIONS.names())}; did you mean 'heatmap'?)")]),
    ("unknown attribution key", el("{attribution: {from: {layer: conv3}, to: {layer: output}, methd: x}}"),
     [(6, "methd", "unknown key 'methd' under 'attribution' (valid: from, to, method, steps; did you mean 'method'?)")]),
    ("bad method", el("{attribution: {from: {layer: conv3}, to: {layer: output}, method: integrated_gradients}}"),
     [(6, "integrated_", "unknown method 'integrated_gradients' (valid: grad_x_act, integrated; did you mean 'integrated'?)")]),
    ("group k zero", el("{activation: {layer: conv4, atom: {group: nmf, k: 0}}}", "groups"), [(6, "0}", "k: 0 is out of range")]),
    ("k on spatial", el("{activation: {layer: conv4, atom: {spatial: [1, 2], k: 3}}}"), [(6, "{spatial", "k, of and sign apply only to group atoms")]),
    ("transform missing operand", el("{transform: {op: compare, a: {activation: {layer: conv3}}}}"), [(6, "{op", "transform compare needs a and b (missing b)")]),
    ("select on hidden", el("{activation: {layer: conv3, select: [star]}}"), [(6, "{layer", "select (classes) applies only to layer: output")]),
    ("bad option", el("{activation: {layer: conv3}}", "{heatmap: {opacity: 2}}"), [(7, "2}", "heatmap option opacity: input should be less than or equal to 1")]),
    ("unknown option", el("{activation: {layer: conv3}}", "{bars: {tpo: 3}}"), [(7, "tpo", "bars has no option 'tpo' (options: top, icons, icon; did you mean 'top'?)")]),
    ("presentation mismatch", el("{activation: {layer: conv3, atom: channel}}", "heatmap"),
     [(7, "heatmap", "presentation 'heatmap' shows spatial or direction or group atoms, but this content is conv3·channel; for channel content use bars or examples or featurevis")]),
    # ---- model-dependent (compiled against the real built-in model)
    ("unknown layer", el("{activation: {layer: conv9}}"), [(6, "conv9", "unknown layer 'conv9' in builtin:shapes-cnn (layers: input, conv1")]),
    ("unknown class", el("{attribution: {from: {layer: conv3}, to: {layer: output, select: [stra]}}}"),
     [(6, "stra", "unknown class 'stra' (classes: circle, square, triangle, star, cross, ring, stripes, crescent, ellipse, frame; did you mean 'star'?)")]),
    ("class index out of range", el("{attribution: {from: {layer: conv3}, to: {layer: output, select: [12]}}}"),
     [(6, "12", "class index 12 is out of range (the model has 10 classes: 0..9)")]),
    ("position outside", el("{activation: {layer: conv4, atom: {spatial: [40, 1]}}}"), [(6, "{spatial", "position x=40, y=1 is outside 'conv4'")]),
    ("backwards attribution", el("{attribution: {from: {layer: conv4}, to: {layer: conv2, atom: {spatial: [1, 1]}}}}"),
     [(6, "conv2", "attribution goes from an earlier layer to a later one; 'conv2' does not come after 'conv4'")]),
    ("link to missing element", spec("elements:\n  e: {content: {activation: {layer: conv3}}, presentation: heatmap}\nlinks: [{from: grid.hover, to: e.from}]\n"),
     [(6, "grid.hover", "link from 'grid.hover': no element 'grid'")]),
    ("bad link event", spec("elements:\n  e: {content: {activation: {layer: conv3}}, presentation: heatmap}\nlinks: [{from: e.hovr, to: e.from}]\n"),
     [(6, "e.hovr", "a link source is <element>.<event> with event one of hover, click, select")]),
    ("layout unknown element", spec("elements:\n  e: {content: {activation: {layer: conv3}}, presentation: heatmap}\nlayout: [[e, f]]\n"),
     [(6, "f]", "layout names 'f', which is not an element")]),
    ("bad device", spec("elements:\n  e: {content: {activation: {layer: conv3}}, presentation: heatmap}\nexecution: {device: gpu}\n"),
     [(6, "gpu", "device 'gpu' is not one of auto, cpu, cuda, cuda:N, mps")]),
    ("unknown model source", el("{activation: {layer: conv3}}").replace("builtin:shapes-cnn", "builtn:shapes-cnn"),
     [(2, "builtn", "unknown model source 'builtn:shapes-cnn' (sources: builtin:")]),
    ("unknown builtin model", el("{activation: {layer: conv3}}").replace("shapes-cnn", "shapes-net"),
     [(2, "builtin", "unknown built-in model 'shapes-net'")]),
    ("python model without permission", el("{activation: {layer: conv3}}").replace("builtin:shapes-cnn", "python:os:getcwd"),
     [(2, "python", "runs Python code from 'os:getcwd'; run it only if you trust it, by passing --allow-code")]),
    # ---- feature visualisation
    ("featurevis of the output", el("{activation: {layer: output}}", "featurevis"),
     [(7, "featurevis", "featurevis shows hidden layers; 'output' has no icons to optimise")]),
    ("dictionary of an attribution", el("{attribution: {from: {layer: conv3}, to: {layer: output}}}", "semantic_dictionary"),
     [(7, "semantic_dictionary", "presentation 'semantic_dictionary' shows activation content, but this element's content is attribution")]),
    ("direction of the wrong length", el("{activation: {layer: conv4, atom: {direction: [1, 2]}}}", "featurevis"),
     [(6, "{direction", "a direction in 'conv4' needs 128 weights (one per channel), got 2")]),
    ("direction channel outside", el("{activation: {layer: conv4, atom: {direction: {200: 1.0}}}}", "featurevis"),
     [(6, "{direction", "direction names channel 200, outside 'conv4' (128 channels: 0..127)")]),
    ("bare direction", el("{activation: {layer: conv4, atom: direction}}", "featurevis"),
     [(6, "direction}", "atom: 'direction' is not allowed (valid: neuron, spatial, channel, group, whole)")]),
    ("unknown transform", el("{activation: {layer: conv4, atom: channel}}", "{featurevis: {transforms: [{jiter: 4}]}}"),
     [(7, "[{jiter", "featurevis option transforms: transform step 0: unknown kind 'jiter' (kinds: pad, jitter, scale, rotate, crop_or_pad; did you mean 'jitter'?)")]),
    ("unknown nested icon option", el("{activation: {layer: conv4, atom: {group: nmf}}}", "{groups: {icon: {stpes: 10}}}"),
     [(7, "stpes", "groups icon has no option 'stpes' (options: size, steps, lr, attempts, param, decorrelate, transforms, relu_redirect, race, autocast; did you mean 'steps'?)")]),
    ("bad nested icon option", el("{activation: {layer: conv4, atom: {group: nmf}}}", "{groups: {icon: {steps: -1}}}"),
     [(7, "-1", "groups option icon.steps: input should be greater than or equal to 1")]),
    # ---- atlases
    ("atlas option", el("{activation: {layer: conv4}}", "{atlas: {grdi: 10}}"),
     [(7, "grdi", "atlas has no option 'grdi' (options: grid, min_count, whiten, layout, icon, sized, winners, top, examples, patch_test; did you mean 'grid'?)")]),
    ("atlas layout option", el("{activation: {layer: conv4}}", "{atlas: {layout: {metric: manhatan}}}"),
     [(7, "manhatan", "atlas option layout.metric: input should be 'cosine' or 'euclidean'")]),
    ("atlas of channels", el("{activation: {layer: conv4, atom: channel}}", "atlas"),
     [(6, "channel}", "an atlas shows activation vectors at positions: atom: spatial (or leave atom out)")]),
    ("atlas of output", el("{activation: {layer: output}}", "atlas"),
     [(6, "output}", "an atlas lays out a hidden layer's activation vectors, not 'output'")]),
    ("class atlas of two classes", el("{attribution: {from: {layer: conv4}, to: {layer: output, select: [star, cross]}}}", "atlas"),
     [(6, "[star", "a class atlas shows one class: select: [<class>] (got 2); compare two with a transform compare")]),
    ("class atlas top1", el("{attribution: {from: {layer: conv4}, to: {layer: output, select: [top1]}}}", "atlas"),
     [(6, "top1", "'top1' picks an input's likely classes, but an atlas shows a data set: name a class")]),
    ("class atlas unknown class", el("{attribution: {from: {layer: conv4}, to: {layer: output, select: [starr]}}}", "atlas"),
     [(6, "starr", "unknown class 'starr'")]),
    ("atlas with another presentation", el("{activation: {layer: conv4}}", "[heatmap, atlas]"),
     [(7, "[heatmap", "an atlas is an element of its own")]),
    ("two-class atlas of one class", el("{transform: {op: compare, a: {attribution: {from: {layer: conv4}, to: {layer: output, select: [star]}}}, "
                                        "b: {attribution: {from: {layer: conv4}, to: {layer: output, select: [star]}}}}}", "atlas"),
     [(6, "{attribution: {from: {layer: conv4}, to: {layer: output, select: [star]}}}}", "a two-class atlas needs two different classes (both are star)")]),
    ("atlas data set typo", spec("dataset: {source: builtin:shape}\nelements: {e: {content: {activation: {layer: conv4}}, presentation: atlas}}\n"),
     [(4, "builtin:shape}", "unknown built-in data set 'builtin:shape'")]),
    ("data set without an atlas", spec("dataset: {n: 10}\nelements: {e: {content: {activation: {layer: conv4}}, presentation: heatmap}}\n"),
     [(4, "dataset", "dataset: is the data set of atlases, and no element is an atlas")]),
    ("no input for a heatmap", "interpgram: 1\nmodel: builtin:shapes-cnn\nelements: {e: {content: {activation: {layer: conv4}}, presentation: heatmap}}\n",
     [(1, None, "input is missing: element e shows an input image")]),
    ("ray engine typo", spec("execution: {engine: rey}\nelements: {e: {content: {activation: {layer: conv4}}, presentation: atlas}}\n"),
     [(4, "rey", "engine: 'rey' is not allowed (valid: local, ray; did you mean 'ray'?)")]),
]
# Rows checked by `interpgram check` (the compiler, with the real model) rather than by loading alone.
MODEL_DEPENDENT = {"bad option", "unknown option", "presentation mismatch", "link to missing element",
                   "layout unknown element", "unknown layer", "unknown class", "class index out of range", "position outside", "backwards attribution",
                   "unknown model source", "unknown builtin model", "python model without permission",
                   "featurevis of the output", "dictionary of an attribution", "direction of the wrong length",
                   "direction channel outside", "unknown transform", "unknown nested icon option", "bad nested icon option",
                   "atlas option", "atlas layout option", "atlas of channels", "atlas of output", "class atlas of two classes",
                   "class atlas top1", "class atlas unknown class", "atlas with another presentation",
                   "two-class atlas of one class", "data set without an atlas", "no input for a heatmap"}


def _diagnose(text: str, name: str, tmp_path) -> list:
    f = tmp_path / "spec.yaml"
    f.write_text(text)
    if name in MODEL_DEPENDENT:
        from interpgram.backends.pipeline import prepare
        with pytest.raises(SpecError) as ei:
            prepare(f)
        return ei.value.diagnostics
    with pytest.raises(SpecError) as ei:
        load_spec(f)
    return ei.value.diagnostics


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec(name, text, expected, tmp_path):
    diags = _diagnose(text, name, tmp_path)
    got = [(d.line, d.col, d.message) for d in diags]
    assert len(got) == len(expected), got
    lines = text.splitlines()
    for (line, col, msg), (eline, anchor, frag) in zip(got, expected):
        assert frag in msg, (msg, frag)
        # the column is where the anchor token starts on that line (1 when no anchor is given)
        ecol = lines[eline - 1].index(anchor) + 1 if anchor else 1
        assert (line, col) == (eline, ecol), (line, col, msg)
    for d in diags:
        assert str(d).startswith(f"{tmp_path / 'spec.yaml'}:{d.line}:{d.col}: ")


def test_table_is_large():
    assert len(CASES) >= 25


def test_all_problems_reported_at_once(tmp_path):
    text = el("{activation: {layer: conv3, atom: spatail}}", "heatmpa") + "execution: {device: gpu, dtype: float64}\n"
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(SpecError) as ei:
        load_spec(f)
    assert len(ei.value.diagnostics) == 4


def test_binary_and_missing_files(tmp_path):
    b = tmp_path / "b.yaml"
    b.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    with pytest.raises(SpecError, match=r"b.yaml:1:1: this is a binary file"):
        load_spec(b)
    with pytest.raises(SpecError, match=r"nope.yaml:1:1: no such file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match=r"this is a folder"):
        load_spec(tmp_path)


def test_valid_shorthands_load():
    loaded = load_spec_text(el("{activation: {layer: conv4, atom: {group: nmf, k: 3}}}", "[groups, {groups: {top_channels: 3}}]"))
    e = loaded.spec.elements["e"]
    assert e.content.activation.atom.k == 3
