"""An attribution method from captum is one small unit: this file defines one (captum's
LayerGradientXActivation, giving the attribution itself), registers it, and a spec names it
(`method: captum_gxa`). Through the whole pipeline its numbers equal the built-in grad_x_act's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from interpgram.backends.pipeline import prepare, run
from interpgram.grammar import SpecError, load_spec_text
from interpgram.grammar.attribution import ATTRIBUTION_METHODS, AttributionMethod, register_attribution_method


class CaptumGradXAct(AttributionMethod):
    name = "captum_gxa"
    help = "captum's LayerGradientXActivation"
    gives = "attribution"
    targets = ("logit",)

    def layer_values(self, module, x, layer, acts, *, target, predicted, steps):
        from captum.attr import LayerGradientXActivation
        cls = [target.cls] * x.shape[0] if target.cls is not None else predicted.tolist()
        with torch.enable_grad():
            return LayerGradientXActivation(module, module.get_submodule(layer)).attribute(x, target=cls)


@pytest.fixture
def captum_gxa():
    register_attribution_method(CaptumGradXAct)
    yield
    ATTRIBUTION_METHODS.unregister("captum_gxa")


SPEC = """interpgram: 1
model: builtin:shapes-cnn
input: builtin:shapes/0-3
elements:
  ours:
    content: {attribution: {from: {layer: conv3, atom: spatial}, to: {layer: output, select: [star, crescent]}}}
    presentation: heatmap
  theirs:
    content: {attribution: {from: {layer: conv3, atom: spatial}, to: {layer: output, select: [star, crescent]},
              method: captum_gxa}}
    presentation: heatmap
  channels:
    content: {attribution: {from: {layer: conv4, atom: channel}, to: {layer: output}, method: captum_gxa}}
    presentation: bars
"""


def test_a_captum_method_is_one_unit_and_matches_grad_x_act(captum_gxa, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    prep = prepare(spec)
    assert any(getattr(op, "method", "") == "captum_gxa" for op in prep.plan.ops.values())
    _, results = run(prep, cache=False)
    by = {p.element: p for p in prep.plan.elements}
    for ours, theirs in zip(by["ours"].series, by["theirs"].series):
        a = results.values[ours.op]["value"].numpy()
        b = results.values[theirs.op]["value"].numpy()
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
    assert results.values[by["channels"].series[0].op]["value"].shape == (4, 128)  # predicted class, per input


def test_its_name_is_checked_and_its_targets_are_enforced(captum_gxa):
    from interpgram.backends.models import load_model
    from interpgram.backends.pipeline import model_info
    from interpgram.grammar import compile_spec
    bad = SPEC.replace("method: captum_gxa}}\n    presentation: heatmap", "method: captum_gx}}\n    presentation: heatmap")
    with pytest.raises(SpecError, match="unknown method 'captum_gx' .*did you mean 'captum_gxa'"):
        load_spec_text(bad)
    layer_to_layer = SPEC.replace("to: {layer: output, select: [star, crescent]},\n              method",
                                  "to: {layer: conv4},\n              method")
    with pytest.raises(SpecError, match="method: captum_gxa is available for class targets; use grad_x_act for "
                                        "position targets"):
        compile_spec(load_spec_text(layer_to_layer), model_info(load_model("builtin:shapes-cnn")))


def test_without_the_plugin_the_method_is_unknown():
    assert "captum_gxa" not in ATTRIBUTION_METHODS
    assert {"grad_x_act", "integrated"} <= set(ATTRIBUTION_METHODS.names())
    with pytest.raises(SpecError, match="unknown method 'captum_gxa'"):
        load_spec_text(SPEC)
