"""Atlases through the whole pipeline: spec → plan → collection → layout → grid → icons → report.

Real model (builtin:shapes-cnn), real data set (a few hundred builtin:shapes images), real files
(the chunked store and the result cache in tmp_path), real UMAP. Small settings keep it fast; the
numbers are checked against the store itself (cell means, attribution ordering of the two-class
atlas), and the Ray engine against the local one on a real local Ray instance.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from interpgram.backends.data.shapes import CLASSES
from interpgram.backends.pipeline import build_views, make_cache, prepare, render, run
from interpgram.grammar import SpecError

pytestmark = pytest.mark.slow

STAR, CROSS = CLASSES.index("star"), CLASSES.index("cross")
ICON = "icon: {size: 32, steps: 6, attempts: 2, batch: 16}"


def write(tmp_path, body: str, *, n: int = 400, extra: str = "", name: str = "atlas.yaml"):
    text = (f"interpgram: 1\nmodel: builtin:shapes-cnn\n"
            f"dataset: {{source: builtin:shapes, n: {n}, split: train, chunk: 128, batch_size: 64}}\n{extra}"
            "elements:\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "  ") + "\n")
    p = tmp_path / name
    p.write_text(text)
    return p


BODY = f"""
all:
  content: {{activation: {{layer: conv4}}}}
  presentation: {{atlas: {{grid: 6, min_count: 3, {ICON}}}}}
star:
  content: {{attribution: {{from: {{layer: conv4}}, to: {{layer: output, select: [star]}}}}}}
  presentation: {{atlas: {{grid: 4, min_count: 2, winners: false, top: 120, {ICON}, patch_test: {{n: 40}}}}}}
two:
  content:
    transform:
      op: compare
      a: {{attribution: {{from: {{layer: conv4}}, to: {{layer: output, select: [star]}}}}}}
      b: {{attribution: {{from: {{layer: conv4}}, to: {{layer: output, select: [cross]}}}}}}
  presentation: {{atlas: {{grid: 5, min_count: 2, top: 80, {ICON}}}}}
layers:
  content: {{activation: {{layer: conv4}}}}
  presentation: {{atlas: {{grid: 4, min_count: 3, {ICON}}}}}
  vary: {{layer: [conv3, conv5]}}
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atlas")
    spec = write(tmp, BODY)
    path, prep, res = render(spec, tmp / "report", cache=tmp / "cache")
    return tmp, spec, path, prep, res


def _store(prep, cache_dir):
    from interpgram.backends.kernels.atlas.run import AtlasRun
    from interpgram.backends.execute.executor import Executor
    from interpgram.backends.data.inputs import Inputs
    ex = Executor(prep.plan, prep.model, Inputs([], [], torch.zeros(0, 3, 64, 64), []), cache=make_cache(prep, cache_dir))
    return AtlasRun(ex.context)


def test_one_collection_serves_every_atlas(rendered):
    tmp, spec, path, prep, res = rendered
    from interpgram.grammar.plan import Collect, Layout
    (c,) = prep.plan.of_type(Collect)
    assert c.layers == ("conv3", "conv4", "conv5") and c.n == 400 and c.positions == "random"
    kinds = sorted(op.kind for op in prep.plan.of_type(Layout))
    assert kinds == ["activation", "activation", "activation", "class", "compare"]  # conv4 layout shared, not duplicated
    assert res.stats.atlas_samples == 400
    html = path.read_text()
    for el in ("all", "star", "two", "layers-conv3", "layers-conv5"):
        assert f'id="{el}"' in html or f"'{el}'" in html or el in html


def test_cell_means_are_the_means_of_their_members(rendered):
    tmp, spec, path, prep, res = rendered
    run_ = _store(prep, tmp / "cache")
    acts = run_.layer_data("conv4")["act"]
    p = next(p for p in prep.plan.elements if p.element == "all")
    g = res.values[p.detail]
    ptr, rows = g["member_ptr"].numpy(), g["member_rows"].numpy()
    assert (np.diff(ptr) == g["count"].numpy()).all() and (g["count"].numpy() >= 3).all()
    for j in range(len(ptr) - 1):
        np.testing.assert_allclose(g["mean_act"][j].numpy(), acts[rows[ptr[j]:ptr[j + 1]]].mean(0), rtol=1e-4, atol=1e-5)
    icons = res.values[p.icons[0]]
    assert icons["images"].shape == (len(ptr) - 1, 3, 32, 32)
    assert icons["images"].std(dim=(1, 2, 3)).min() > 0.01  # optimised images, not blank


def test_two_class_atlas_puts_the_first_class_on_the_right(rendered):
    tmp, spec, path, prep, res = rendered
    p = next(p for p in prep.plan.elements if p.element == "two")
    g = res.values[p.detail]
    diff = (g["mean_attr"][:, STAR] - g["mean_attr"][:, CROSS]).numpy()
    col = g["cells"][:, 0].numpy()
    assert np.corrcoef(col, diff)[0, 1] > 0.7, (col, diff)
    view = build_views(prep.plan, *run(prep, cache=make_cache(prep, tmp / "cache")))["two"][0]
    assert view.data["atlas_classes"] == ["star", "cross"]


def test_class_atlas_keeps_the_top_samples_and_tests_each_cell_as_a_patch(rendered):
    tmp, spec, path, prep, res = rendered
    run_ = _store(prep, tmp / "cache")
    attr = run_.layer_data("conv4")["attr"]
    p = next(p for p in prep.plan.elements if p.element == "star")
    lay = res.values[prep.plan.ops[p.detail].layout]
    top = np.argsort(-attr[:, STAR], kind="stable")[:120]
    assert set(lay["rows"].tolist()) == set(top[attr[top, STAR] > 0].tolist())
    pt = res.values[p.icons[1]]
    n_cells = res.values[p.detail]["count"].numel()
    assert pt["flip"].shape == (n_cells,) and int(pt["n"][0]) == 40 and int(pt["size"][0]) == 9
    assert ((pt["flip"] >= 0) & (pt["flip"] <= 1)).all()
    assert "patch test" in path.read_text()


def test_second_render_collects_and_renders_nothing(rendered):
    tmp, spec, path, prep, res = rendered
    _, _, res2 = render(spec, tmp / "report2", cache=tmp / "cache")
    assert res2.stats.atlas_samples == 0  # every layout came from the cache: the store was not even opened
    assert res2.stats.icons_rendered == 0 and res2.stats.icons_cached == res.stats.icons_rendered + res.stats.icons_cached
    for p in prep.plan.elements:
        for op in p.icons:
            a, b = res.values[op], res2.values[op]
            for k in a:
                assert torch.equal(a[k], b[k]), (op, k)


def test_plan_explains_the_atlas_ops(rendered):
    tmp, spec, path, prep, res = rendered
    text = prep.plan.explain()
    assert "Collect      builtin:shapes (train, n=400, random positions) → conv3, conv4, conv5" in text
    assert "atlas collection: one pass over 400 images serves 5 atlas view(s)" in text
    assert "PatchTest" in text and "input none (atlases only)" in text


def test_ray_engine_gives_the_local_results(tmp_path, rendered):
    """execution: {engine: ray} on a real local Ray instance: the collection store and every atlas
    op equal the local engine's, bit for bit, when both run torch with the same number of threads
    (a Ray task uses one; with another thread count CPU float sums — and so icons, after their
    optimisation amplifies that — differ in the last bits)."""
    import ray  # noqa: F401  (a missing ray fails here, not skips)
    spec = write(tmp_path, BODY, extra="execution: {engine: ray}\n")
    prep = prepare(spec)
    _, res = run(prep, cache=make_cache(prep, tmp_path / "cache-ray"))
    assert res.stats.atlas_samples == 400 and res.stats.icons_rendered > 0
    local = write(tmp_path, BODY, name="local.yaml")
    prep_local = prepare(local)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, res_local = run(prep_local, cache=make_cache(prep_local, tmp_path / "cache-local"))
    finally:
        torch.set_num_threads(threads)
    for p, q in zip(prep_local.plan.elements, prep.plan.elements):
        assert p.id == q.id
        for a_id, b_id in zip((p.detail,) + p.icons, (q.detail,) + q.icons):
            a, b = res_local.values[a_id], res.values[b_id]
            for k in a:
                assert torch.equal(a[k], b[k]), (p.id, a_id, k)
    # with the default threads, the local engine's icons differ from these only in float rounding grown by
    # the optimisation: the same icons to the eye
    _, _, _, prep_default, res_default = rendered
    p = next(p for p in prep_default.plan.elements if p.element == "all")
    a, b = res_default.values[p.icons[0]]["images"], res.values[p.icons[0]]["images"]
    assert (a - b).abs().mean() < 1e-3


def test_atlas_errors_name_what_to_fix(tmp_path):
    few = write(tmp_path, """
    star:
      content: {attribution: {from: {layer: conv4}, to: {layer: output, select: [star]}}}
      presentation: {atlas: {winners: false, top: 2}}
    """, n=20)
    from interpgram.backends.cli import main
    assert main(["render", str(few), "-o", str(tmp_path / "r"), "--cache", str(tmp_path / "c")]) == 1
    assert not (tmp_path / "r" / "index.html").exists()
    missing = write(tmp_path, "a: {content: {activation: {layer: conv4}}, presentation: atlas}",
                    name="m.yaml").read_text().replace("builtin:shapes,", "no/such/folder,")
    (tmp_path / "m.yaml").write_text(missing)
    with pytest.raises(SpecError) as e:
        prepare(tmp_path / "m.yaml")
    assert "no such folder" in str(e.value) and "m.yaml:3:" in str(e.value)
    code = write(tmp_path, "a: {content: {activation: {layer: conv4}}, presentation: atlas}", name="p.yaml")
    code.write_text(code.read_text().replace("builtin:shapes,", "python:mydata:build,"))
    with pytest.raises(SpecError) as e:
        prepare(code)
    assert "--allow-code" in str(e.value)


def test_the_dashboard_serves_the_atlases_from_the_cache(rendered):
    """interpgram serve's engine on the same spec and cache: every atlas view is drawn (icons inline),
    nothing is recomputed."""
    from interpgram.backends.serve import Session
    tmp, spec, path, prep, res = rendered
    eng = Session(spec, cache_dir=tmp / "cache")
    try:
        assert eng.load(), eng.error
        _, good, err = eng.snapshot()
        assert err is None
        charts = good.base.charts
        assert {v.split("~")[0] for v in charts} == {"all", "star", "two", "layers-conv3", "layers-conv5"}
        assert all(c.count("data:image/png;base64") >= 4 for c in charts.values())
        assert good.base.results.stats.icons_rendered == 0 and good.base.results.stats.atlas_samples == 0
    finally:
        eng.stop()
