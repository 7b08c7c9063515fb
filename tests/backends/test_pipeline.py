"""The pipeline end to end on the built-in model: passes executed, cache reuse, meaningful maps."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from interpgram.backends.pipeline import build_views, prepare, run
from interpgram.backends.execute.cache import ResultCache


def write_spec(tmp_path, elements: str, inputs: str = "builtin:shapes/7", name="s.yaml"):
    text = f"interpgram: 1\nmodel: builtin:shapes-cnn\ninput: {inputs}\nelements:\n" + textwrap.indent(
        textwrap.dedent(elements).strip("\n"), "  ") + "\n"
    p = tmp_path / name
    p.write_text(text)
    return p


SIX = """
attr2: {content: {attribution: {from: {layer: conv2}, to: {layer: output, select: [star, triangle]}}}, presentation: heatmap}
attr3: {content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [star, triangle]}}}, presentation: heatmap}
chan4: {content: {attribution: {from: {layer: conv4, atom: channel}, to: {layer: output, select: [star]}}}, presentation: bars}
mag3:  {content: {activation: {layer: conv3}}, presentation: heatmap}
groups: {content: {attribution: {from: {layer: conv4, atom: {group: nmf, k: 4}}, to: {layer: output, select: [star, triangle]}}}, presentation: groups}
l2l:   {content: {attribution: {from: {layer: conv2}, to: {layer: conv4, atom: {spatial: [3, 4]}}}}, presentation: heatmap}
"""


def test_executed_passes_match_the_plan_and_cache_reuses(tmp_path):
    prep = prepare(write_spec(tmp_path, SIX))
    cache = ResultCache(tmp_path / "cache")
    inputs, res = run(prep, cache=cache)
    assert prep.plan.passes() == {"forward": 1, "backward": 3}
    assert (res.stats.forward_passes, res.stats.backward_passes) == (1, 3)
    assert res.stats.cache_hits == 0
    _, again = run(prep, cache=cache)
    assert (again.stats.forward_passes, again.stats.backward_passes) == (0, 0)
    assert again.stats.cache_misses == 0 and again.stats.cache_hits > 0
    for op_id, v in res.values.items():
        for name, t in v.items():
            torch.testing.assert_close(again.values[op_id][name], t) if op_id in again.values else None


def test_partial_cache_computes_only_what_is_missing(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    run(prepare(write_spec(tmp_path, "a: {content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [star]}}}, presentation: heatmap}")), cache=cache)
    both = prepare(write_spec(tmp_path, """
    a: {content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [star]}}}, presentation: heatmap}
    b: {content: {attribution: {from: {layer: conv4}, to: {layer: output, select: [ring]}}}, presentation: heatmap}
    """, name="t.yaml"))
    _, res = run(both, cache=cache)
    assert res.stats.cache_hits == 1
    assert (res.stats.forward_passes, res.stats.backward_passes) == (1, 1)  # only ring's backward pass


def test_views_have_the_shapes_the_presentations_need(tmp_path):
    prep = prepare(write_spec(tmp_path, SIX, inputs="[builtin:shapes/3, builtin:shapes/4]"))
    inputs, res = run(prep, cache=ResultCache(None, enabled=False))
    views = build_views(prep.plan, inputs, res)
    assert set(views) == {"attr2", "attr3", "chan4", "mag3", "groups", "l2l"}
    h = views["attr3"][1]
    assert h.id == "attr3-1" and h.data["image"].shape == (64, 64, 3)
    assert [m["label"] for m in h.data["maps"]] == ["star", "triangle"] and h.data["maps"][0]["values"].shape == (16, 16)
    g = views["groups"][0].data
    assert g["spatial"].shape[0] == 4 and g["channels"].shape == (4, 128) and set(g["attribution"]) == {"star", "triangle"}
    b = views["chan4"][0].data
    assert len(b["labels"]) == b["values"].shape[0] == 128 and b["labels"][5] == "conv4:5"


def test_group_attributions_add_up_to_the_reconstruction(tmp_path):
    """Σ_i group_i attribution = ∇·(W H), the attribution of the NMF reconstruction."""
    prep = prepare(write_spec(tmp_path, "g: {content: {attribution: {from: {layer: conv4, atom: {group: nmf, k: 5}}, to: {layer: output, select: [star]}}}, presentation: groups}"))
    inputs, res = run(prep, cache=ResultCache(None, enabled=False))
    p = prep.plan.elements[0]
    nmf = res.values[p.groups]
    gattr = res.values[p.series[0].op]["value"][0]
    grad_op = prep.plan.ops[p.series[0].op].gradient
    grad = res.values[grad_op]["value"][0]
    recon = torch.einsum("khw,kc->chw", nmf["spatial"][0], nmf["channels"][0])
    torch.testing.assert_close(gattr.sum(), (recon * grad).sum(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_attribution_lands_on_the_object(tmp_path):
    """The pointing game at the layer's own resolution: the conv3 cell (4×4 px) with the largest
    spatial attribution to the predicted class holds pixels of the object's ground-truth mask.
    Images carrying the planted patch are left out: their evidence may rightly sit on the patch."""
    n = 80
    prep = prepare(write_spec(tmp_path, "a: {content: {attribution: {from: {layer: conv3}, to: {layer: output}}}, presentation: heatmap}",
                              inputs=f"builtin:shapes/0-{n - 1}"))
    inputs, res = run(prep, cache=ResultCache(None, enabled=False))
    maps = res.values[prep.plan.elements[0].series[0].op]["value"]  # (n, 16, 16)
    hits, chance = [], []
    for i in range(n):
        t = inputs.truth[i]
        if t["patched"]:
            continue
        cells = torch.nn.functional.max_pool2d(torch.as_tensor(t["mask"], dtype=torch.float32)[None, None], 4)[0, 0]
        hits.append(bool(cells.flatten()[int(maps[i].argmax())]))
        chance.append(float(cells.mean()))
    rate, base = float(np.mean(hits)), float(np.mean(chance))
    print(f"pointing game (conv3 cells): {rate:.2f} of {len(hits)} clean images (chance {base:.2f})")
    assert len(hits) >= 70
    assert rate >= 0.7 and rate >= 4 * base


def test_transforms_top_k_select_filter(tmp_path):
    base = "{attribution: {from: {layer: conv4, atom: channel}, to: {layer: output, select: [star]}}}"
    prep = prepare(write_spec(tmp_path, f"""
    all: {{content: {base}, presentation: bars}}
    top: {{content: {{transform: {{op: top_k, k: 5, of: {base}}}}}, presentation: bars}}
    big: {{content: {{transform: {{op: top_k, k: 5, by: abs, of: {base}}}}}, presentation: bars}}
    sel: {{content: {{transform: {{op: select, atoms: [3, 7, 11], of: {base}}}}}, presentation: bars}}
    pos: {{content: {{transform: {{op: filter, of: {base}, by: {base}, threshold: 0.0}}}}, presentation: bars}}
    """))
    _, res = run(prep, cache=ResultCache(None, enabled=False))
    v = {p.element: res.values[p.series[0].op]["value"][0] for p in prep.plan.elements}
    full = v["all"]
    assert torch.equal(torch.nonzero(v["top"]).flatten().sort().values, full.topk(5).indices.sort().values)
    assert torch.equal(torch.nonzero(v["big"]).flatten().sort().values, full.abs().topk(5).indices.sort().values)
    assert torch.nonzero(v["sel"]).flatten().tolist() == [3, 7, 11] and torch.equal(v["sel"][[3, 7, 11]], full[[3, 7, 11]])
    torch.testing.assert_close(v["pos"], full.clamp(min=0))


def test_bfloat16_execution_is_close_to_float32(tmp_path):
    el = "a: {content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [star]}}}, presentation: heatmap}"
    p32 = prepare(write_spec(tmp_path, el))
    text = (tmp_path / "s.yaml").read_text() + "execution: {dtype: bfloat16}\n"
    (tmp_path / "b.yaml").write_text(text)
    p16 = prepare(tmp_path / "b.yaml")
    off = ResultCache(None, enabled=False)
    a = run(p32, cache=off)[1].values[p32.plan.elements[0].series[0].op]["value"]
    b = run(p16, cache=off)[1].values[p16.plan.elements[0].series[0].op]["value"]
    assert b.dtype == torch.float32
    corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
    assert corr > 0.95, corr
    again = run(p32, cache=off)[1].values[p32.plan.elements[0].series[0].op]["value"]
    torch.testing.assert_close(again, a)  # the bfloat16 run left the float32 model untouched
