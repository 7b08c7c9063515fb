"""The compiler's fusion: pass counts, shared nodes, and what it refuses."""
from __future__ import annotations

import textwrap

import pytest

from interpgram.grammar import ModelInfo, SpecError, compile_spec, load_spec_text
from interpgram.grammar.plan import Capture, Factorize, Gradient, PathGradient, Reduce

INFO = ModelInfo(
    "toy",
    {"conv1": (16, 32, 32), "conv2": (32, 16, 16), "conv3": (64, 8, 8), "conv4": (64, 4, 4), "fc": (5,)},
    ["cat", "dog", "kite", "fish", "car"],
    (3, 64, 64),
)


def plan_of(elements: str, extra: str = ""):
    text = "interpgram: 1\nmodel: builtin:toy\ninput: builtin:shapes/1\nelements:\n" + textwrap.indent(
        textwrap.dedent(elements).strip("\n"), "  ") + "\n" + extra
    return compile_spec(load_spec_text(text, "t.yaml"), INFO)


SIX = """
a: {content: {attribution: {from: {layer: conv2}, to: {layer: output, select: [cat, dog]}}}, presentation: heatmap}
b: {content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [cat, dog]}}}, presentation: heatmap}
c: {content: {attribution: {from: {layer: conv3, atom: channel}, to: {layer: output, select: [cat]}}}, presentation: bars}
d: {content: {attribution: {from: {layer: conv4, atom: channel}, to: {layer: output, select: [dog]}}}, presentation: bars}
e: {content: {activation: {layer: conv1}}, presentation: heatmap}
f: {content: {attribution: {from: {layer: conv4, atom: {group: nmf, k: 3}}, to: {layer: output, select: [cat, dog]}}}, presentation: groups}
"""


def test_one_forward_and_one_backward_per_target():
    plan = plan_of(SIX)
    caps = plan.of_type(Capture)
    grads = plan.of_type(Gradient)
    assert len(caps) == 1 and set(caps[0].layers) == {"conv1", "conv2", "conv3", "conv4"}
    assert caps[0].layers == ("conv1", "conv2", "conv3", "conv4")  # execution order
    assert sorted(g.target.cls for g in grads) == [0, 1]  # cat and dog: two backward passes in all
    by_cls = {g.target.cls: set(g.wrt) for g in grads}
    assert by_cls[0] == {"conv2", "conv3", "conv4"} and by_cls[1] == {"conv2", "conv3", "conv4"}
    assert plan.passes() == {"forward": 1, "backward": 2}
    # one element at a time: 6 forward passes and 2+2+1+1+0+2 backward passes
    assert plan.unfused == {"forward": 6, "backward": 8}


def test_identical_requests_share_one_node():
    plan = plan_of("""
    a: {content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [cat]}}}, presentation: heatmap}
    b: {content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [cat]}}}, presentation: {heatmap: {opacity: 0.3}}}
    c:
      content:
        transform:
          op: compare
          a: {attribution: {from: {layer: conv3}, to: {layer: output, select: [cat]}}}
          b: {attribution: {from: {layer: conv3}, to: {layer: output, select: [dog]}}}
      presentation: heatmap
    """)
    pa, pb, pc = plan.elements
    assert pa.series[0].op == pb.series[0].op
    cmp = plan.ops[pc.series[0].op]
    assert cmp.inputs[0] == pa.series[0].op  # the comparison reuses a's attribution
    assert len(plan.of_type(Reduce)) == 2 and len(plan.of_type(Gradient)) == 2


def test_layer_to_layer_target_is_a_norm_and_shares_the_forward_pass():
    plan = plan_of("""
    a: {content: {attribution: {from: {layer: conv1}, to: {layer: conv3, atom: {spatial: [2, 5]}}}}, presentation: heatmap}
    b: {content: {attribution: {from: {layer: conv2}, to: {layer: conv3, atom: {spatial: [2, 5]}}}}, presentation: heatmap}
    """)
    (g,) = plan.of_type(Gradient)
    assert g.target.kind == "norm" and g.target.layer == "conv3" and g.target.at == (2, 5)
    assert set(g.wrt) == {"conv1", "conv2"}
    assert plan.of_type(Capture)[0].layers == ("conv1", "conv2", "conv3")


def test_groups_factorise_once_and_attribute_through_gradients():
    plan = plan_of("""
    g1: {content: {attribution: {from: {layer: conv3, atom: {group: nmf, k: 4}}, to: {layer: output, select: [cat, dog]}}}, presentation: groups}
    g2: {content: {activation: {layer: conv3, atom: {group: nmf, k: 4}}}, presentation: groups}
    """)
    (f,) = plan.of_type(Factorize)
    assert f.k == 4
    assert plan.elements[0].groups == plan.elements[1].groups == f.id


def test_integrated_is_its_own_pass():
    plan = plan_of("""
    a: {content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [cat]}, method: integrated, steps: 16}}, presentation: heatmap}
    b: {content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [cat]}}}, presentation: heatmap}
    """)
    (p,) = plan.of_type(PathGradient)
    assert p.steps == 16 and p.layer == "conv3"
    assert plan.passes() == {"forward": 2, "backward": 2}
    assert plan.elements[0].series[0].op != plan.elements[1].series[0].op


def test_predicted_class_is_the_default_target():
    plan = plan_of("a: {content: {attribution: {from: {layer: conv2}, to: {layer: output}}}, presentation: heatmap}")
    (g,) = plan.of_type(Gradient)
    assert g.target.kind == "logit" and g.target.cls is None


def test_explain_lists_passes_ops_and_memory():
    text = plan_of(SIX).explain()
    assert "passes  1 forward, 2 backward   (one element at a time: 6 forward, 8 backward)" in text
    assert "Capture      forward conv1, conv2, conv3, conv4" in text
    assert "estimated tensor memory:" in text and "KiB" in text


@pytest.mark.parametrize("elements,fragment", [
    ("a: {content: {attribution: {from: {layer: output}, to: {layer: output}}}, presentation: heatmap}",
     "attribution starts at the input or a hidden layer"),
    ("a: {content: {activation: {layer: conv3, atom: {group: nmf, k: 65}}}, presentation: groups}",
     "k: 65 is out of range"),
    ("a: {content: {activation: {layer: conv4, atom: {group: nmf, k: 20}}}, presentation: groups}",
     "k=20 groups is more than 'conv4' allows"),
    ("a: {content: {activation: {layer: fc}}, presentation: heatmap}",
     "spatial atoms need a layer with positions"),
    ("a: {content: {dataset: builtin:shapes}, presentation: heatmap}", "unknown key 'dataset'"),
    ("a: {content: {activation: {dataset: builtin:shapes}}, presentation: heatmap}",
     "a dataset substrate is collected for atlases"),
])
def test_refusals(elements, fragment):
    with pytest.raises(SpecError) as ei:
        plan_of(elements)
    assert any(fragment in d.message for d in ei.value.diagnostics), [d.message for d in ei.value.diagnostics]
