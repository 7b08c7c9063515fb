"""Feature visualisation through the grammar: plans, execution, caching, views, CLI sprites.

The engine itself (objectives, parameterisations, transforms, render loop, ground truth) is tested in
test_optvis.py; here the icons come from specs, with few steps so that the file stays fast.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from support import ROOT
from interpgram.backends.cli import main as cli
from interpgram.backends.pipeline import build_views, prepare, run
from interpgram.backends.execute.cache import ResultCache
from interpgram.grammar.plan import ActivationGrid, FeatureVis

FAST = "steps: 12, size: 32"


def write_spec(tmp_path, elements: str, inputs: str = "builtin:shapes/10", name="s.yaml", extra=""):
    text = f"interpgram: 1\nmodel: builtin:shapes-cnn\ninput: {inputs}\n{extra}elements:\n" + textwrap.indent(
        textwrap.dedent(elements).strip("\n"), "  ") + "\n"
    p = tmp_path / name
    p.write_text(text)
    return p


def test_icons_of_one_layer_and_settings_are_one_batched_optimisation(tmp_path):
    prep = prepare(write_spec(tmp_path, f"""
    chans: {{content: {{activation: {{layer: conv4, atom: channel}}}}, presentation: {{featurevis: {{top: 3, {FAST}}}}}}}
    dict:  {{content: {{activation: {{layer: conv4, atom: spatial}}}}, presentation: {{semantic_dictionary: {{icon: {{{FAST}}}}}}}}}
    bars:  {{content: {{attribution: {{from: {{layer: conv4, atom: channel}}, to: {{layer: output, select: [star]}}}}}}, presentation: {{bars: {{icons: true, icon: {{{FAST}}}}}}}}}
    other: {{content: {{activation: {{layer: conv3, atom: channel}}}}, presentation: {{featurevis: {{top: 2, {FAST}}}}}}}
    slow:  {{content: {{activation: {{layer: conv4, atom: channel}}}}, presentation: {{featurevis: {{top: 2, steps: 13, size: 32}}}}}}
    """))
    fv = prep.plan.of_type(FeatureVis)
    assert len(fv) == 5
    batch = {op.id: op.batch for op in fv}
    conv4_default = {b for op_id, b in batch.items() if prep.plan.ops[op_id].layer == "conv4"
                     and prep.plan.ops[op_id].setting_dict["steps"] == 12}
    assert len(conv4_default) == 1  # featurevis, dictionary and bars icons of conv4 share one optimisation
    assert len(set(batch.values())) == 3  # + conv3, + conv4 with other settings
    text = prep.plan.explain()
    assert "FeatureVis" in text and "5 feature-visualisation request(s) in 3 batched optimisation(s)" in text
    assert prep.plan.ops[fv[0].id].setting_dict["size"] == 32


def test_default_icon_size_is_the_models_input_size(tmp_path):
    prep = prepare(write_spec(tmp_path, "a: {content: {activation: {layer: conv4, atom: channel}}, presentation: featurevis}"))
    op = prep.plan.of_type(FeatureVis)[0]
    assert op.setting_dict["size"] == 64 and op.setting_dict["steps"] == 256 and op.setting_dict["attempts"] == 1
    assert op.setting_dict["transforms"] == "standard"


def test_featurevis_for_every_atom_kind_renders_and_caches(tmp_path):
    spec = write_spec(tmp_path, f"""
    channel:   {{content: {{activation: {{layer: conv4, atom: {{channel: [5, 9]}}}}}}, presentation: {{featurevis: {{{FAST}}}}}}}
    top:       {{content: {{activation: {{layer: conv4, atom: channel}}}}, presentation: {{featurevis: {{top: 3, {FAST}}}}}}}
    neuron:    {{content: {{activation: {{layer: conv4, atom: {{neuron: [3, 4, 7]}}}}}}, presentation: {{featurevis: {{{FAST}}}}}}}
    spatial:   {{content: {{activation: {{layer: conv4, atom: {{spatial: [3, 0]}}}}}}, presentation: {{featurevis: {{cossim_pow: 1, {FAST}}}}}}}
    positions: {{content: {{attribution: {{from: {{layer: conv4, atom: spatial}}, to: {{layer: output, select: [star]}}}}}}, presentation: {{featurevis: {{top: 2, {FAST}}}}}}}
    group:     {{content: {{activation: {{layer: conv4, atom: {{group: nmf, k: 3}}}}}}, presentation: {{featurevis: {{{FAST}}}}}}}
    direction: {{content: {{activation: {{layer: conv4, atom: {{direction: {{5: 1.0, 9: -0.5}}}}}}}}, presentation: [{{featurevis: {{{FAST}}}}}, heatmap]}}
    """)
    prep = prepare(spec)
    cache = ResultCache(tmp_path / "cache")
    inputs, res = run(prep, cache=cache)
    views = build_views(prep.plan, inputs, res)
    n_icons = {el: len(vs[0].data["icons"]) for el, vs in views.items() if vs[0].presentation == "featurevis"}
    assert n_icons == {"channel": 2, "top": 3, "neuron": 1, "spatial": 1, "positions": 2, "group": 3, "direction": 1}
    assert views["channel"][0].data["labels"] == ["conv4:5", "conv4:9"]
    assert views["spatial"][0].data["labels"] == ["(3, 0)"]
    assert views["group"][0].data["labels"] == ["group 1", "group 2", "group 3"]
    # the direction's map is the projection of the activation onto it
    from interpgram.backends.kernels.capture import run_capture
    with torch.no_grad():
        acts, _ = run_capture(prep.model.module, prep.model.preprocess(inputs.images), ["conv4"], grad=False)
    want = acts["conv4"][0, 5] - 0.5 * acts["conv4"][0, 9]
    heat = next(v for v in views["direction"] if v.presentation == "heatmap")
    np.testing.assert_allclose(heat.data["maps"][0]["values"], want.numpy(), rtol=1e-5, atol=1e-5)
    # top channels are the most active ones
    chans = acts["conv4"][0].mean((1, 2))
    assert views["top"][0].data["labels"] == [f"conv4:{c}" for c in chans.topk(3).indices.tolist()]
    for vs in views.values():
        for v in vs:
            for ic in v.data.get("icons", []):
                assert ic.shape == (32, 32, 3) and 0 <= ic.min() and ic.max() <= 1
    rendered = res.stats.icons_rendered
    assert rendered == 13 and res.stats.icons_cached == 0  # 2 + 3 + 1 + 1 + 2 + 3 + 1
    # a second run renders nothing and gives the same icons
    inputs2, again = run(prepare(spec), cache=cache)
    assert again.stats.icons_rendered == 0 and again.stats.icons_cached == rendered
    views2 = build_views(prep.plan, inputs2, again)
    for el in n_icons:
        for a, b in zip(views[el][0].data["icons"], views2[el][0].data["icons"]):
            np.testing.assert_array_equal(a, b)


def test_the_same_seed_gives_the_same_icon_and_another_seed_another(tmp_path):
    body = f"a: {{content: {{activation: {{layer: conv4, atom: {{channel: 7}}}}}}, presentation: {{featurevis: {{{FAST}}}}}}}"
    icons = []
    for seed in (0, 0, 1):
        spec = write_spec(tmp_path, body, extra=f"execution: {{seed: {seed}, cache: false}}\n", name=f"s{len(icons)}.yaml")
        prep = prepare(spec)
        inputs, res = run(prep, cache=ResultCache(None, enabled=False))
        icons.append(build_views(prep.plan, inputs, res)["a"][0].data["icons"][0])
    np.testing.assert_array_equal(icons[0], icons[1])
    assert np.abs(icons[0] - icons[2]).max() > 0.05


def test_semantic_dictionary_has_an_icon_for_every_top_channel_of_every_position(tmp_path):
    prep = prepare(write_spec(tmp_path, f"d: {{content: {{activation: {{layer: conv4, atom: spatial}}}}, presentation: {{semantic_dictionary: {{top: 2, icon: {{{FAST}}}}}}}}}"))
    inputs, res = run(prep, cache=ResultCache(tmp_path / "c"))
    v = build_views(prep.plan, inputs, res)["d"][0]
    acts = v.data["activations"]
    assert acts.shape == (128, 8, 8)
    need = set(np.argsort(-acts.reshape(128, -1), axis=0)[:2].flatten().tolist())
    assert set(v.data["icons"]) == need
    from interpgram.backends.render import spec_for
    spec = spec_for(v)
    assert "position" in str(spec)  # the hover selection that drives the dictionary
    # the selected position (at first the strongest) is outlined dark under light, once, so that it
    # shows on any photo (a single orange outline vanished on an orange espresso)
    import re

    import vl_convert

    from interpgram.backends.render.draw import vegalite_version
    svg = vl_convert.vegalite_to_svg(spec, vl_version=vegalite_version())
    dark = re.findall(r'<path[^>]* d="([^"]+)"[^>]*stroke="#111111" stroke-width="3.5"', svg)
    light = re.findall(r'<path[^>]* d="([^"]+)"[^>]*stroke="#ffffff" stroke-width="1.5"', svg)  # not the faint grid
    assert len(dark) == 1 and dark == light, (dark, light)
    c = int(np.argmax(np.linalg.norm(acts, axis=0)))  # the strongest position, (row, col) of 8 × 8
    side = float(re.search(r"h([0-9.]+)v", dark[0]).group(1))
    assert dark[0].startswith(f"M{c % 8 * side:g},{c // 8 * side:g}h")


def test_activation_grid_is_cached_per_image_and_sized_by_magnitude(tmp_path):
    spec = write_spec(tmp_path, "g: {content: {activation: {layer: conv5, atom: spatial}}, presentation: {activation_grid: {steps: 6, cell_size: 16}}}",
                      inputs="[builtin:shapes/10, builtin:shapes/11]")
    prep = prepare(spec)
    assert len(prep.plan.of_type(ActivationGrid)) == 1
    cache = ResultCache(tmp_path / "c")
    inputs, res = run(prep, cache=cache)
    assert res.stats.grids_rendered == 2
    views = build_views(prep.plan, inputs, res)["g"]
    assert len(views) == 2
    v = views[0]
    assert v.data["icons"].shape == (4, 4, 3, 16, 16)
    from interpgram.backends.kernels.capture import run_capture
    with torch.no_grad():
        acts, _ = run_capture(prep.model.module, prep.model.preprocess(inputs.images), ["conv5"], grad=False)
    np.testing.assert_allclose(v.data["magnitude"], acts["conv5"][0].norm(dim=0).numpy(), rtol=1e-5)
    _, again = run(prepare(spec), cache=cache)
    assert again.stats.grids_rendered == 0 and again.stats.grids_cached == 2


def test_group_icons_sit_with_the_groups_and_bars_get_channel_icons(tmp_path):
    prep = prepare(write_spec(tmp_path, f"""
    g: {{content: {{attribution: {{from: {{layer: conv4, atom: {{group: nmf, k: 3}}}}, to: {{layer: output, select: [star]}}}}}}, presentation: {{groups: {{icon: {{{FAST}}}}}}}}}
    b: {{content: {{attribution: {{from: {{layer: conv4, atom: channel}}, to: {{layer: output, select: [star, ring]}}}}}}, presentation: {{bars: {{top: 3, icons: true, icon: {{{FAST}}}}}}}}}
    """))
    inputs, res = run(prep, cache=ResultCache(tmp_path / "c"))
    views = build_views(prep.plan, inputs, res)
    assert len(views["g"][0].data["icons"]) == 3
    for v in views["b"]:  # one bars view per class, each with the icons of its own top channels
        vals = v.data["values"]
        top = set(np.argsort(-vals)[:3][vals[np.argsort(-vals)[:3]] > 0]) | set(np.argsort(vals)[:3][vals[np.argsort(vals)[:3]] < 0])
        assert set(v.data["icons"]) == {f"conv4:{c}" for c in top}
    from interpgram.backends.render import spec_for
    assert str(spec_for(views["b"][0])).count("data:image/png") >= 1


def test_sprites_command_renders_once_then_reads_the_cache(tmp_path, capsys):
    args = ["sprites", "builtin:shapes-cnn", "conv5", "--channels", "0", "1", "2", "--steps", "8", "--size", "24",
            "--cache-dir", str(tmp_path / "c"), "-q", "-o", str(tmp_path / "sheet.png")]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "3 channel icons (24 px, 8 steps × 1) · 3 rendered" in out
    from PIL import Image
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape == (2 + 2 * 26, 2 + 2 * 26, 3)
    assert cli(args) == 0
    again = capsys.readouterr().out
    assert "0 rendered in" in again and "3 from the cache" in again


def test_sprites_are_reused_by_a_spec_with_the_same_settings(tmp_path, capsys):
    cache = tmp_path / "c"
    assert cli(["sprites", "builtin:shapes-cnn", "conv4", "--steps", "6", "--size", "24", "--cache-dir", str(cache), "-q"]) == 0
    prep = prepare(write_spec(tmp_path, "d: {content: {activation: {layer: conv4, atom: spatial}}, presentation: {semantic_dictionary: {icon: {steps: 6, size: 24}}}}"))
    _, res = run(prep, cache=ResultCache(cache))
    assert res.stats.icons_rendered == 0 and res.stats.icons_cached > 0


@pytest.mark.parametrize("argv,msg", [
    (["sprites", "builtin:shapes-cnn", "conv9"], "unknown layer 'conv9' in builtin:shapes-cnn"),
    (["sprites", "builtin:shapes-cnn", "conv4", "--channels", "500"], "channel 500 is outside 'conv4' (128 channels: 0..127)"),
    (["sprites", "nosuch:model", "conv4"], "unknown model source 'nosuch:model'"),
])
def test_sprites_errors_name_the_problem(argv, msg, capsys):
    rc = cli(argv)
    err = capsys.readouterr().err
    assert rc == 1 and msg in err, err


# the built-in model's specs; specs/inceptionv1 needs weights that cannot be downloaded here and is
# compiled (with weights the tests make) in tests/specs/test_inceptionv1_specs.py
SPECS = sorted((ROOT / "specs" / "shapes").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_spec_in_specs_compiles(path):
    prep = prepare(path)
    assert prep.plan.elements


@pytest.mark.slow
@pytest.mark.parametrize("name", ["semantic_dictionary", "activation_grid", "neuron_groups"])
def test_the_feature_visualisation_specs_render_as_a_draft(name, tmp_path):
    """The article's interfaces as specs, rendered end to end with 4 steps per icon (--icon-steps)."""
    from interpgram.backends.pipeline import render
    path = ROOT / "specs" / "shapes" / f"{name}.yaml"
    out, prep, res = render(path, tmp_path / "r", cache=tmp_path / "c", icon_steps=4)
    html = out.read_text()
    assert html.count('class="chart"') == len(prep.plan.elements)
    assert res.stats.icons_rendered + res.stats.grids_rendered > 0
    assert all(dict(op.settings)["steps"] == 4 for op in prep.plan.ops.values() if hasattr(op, "settings"))


def test_every_presentation_is_one_complete_unit():
    from interpgram.grammar.presentation import PRESENTATIONS, Presentation, register_presentation
    for name, unit in PRESENTATIONS.items():
        assert unit.name == name
        for method in ("views", "chart"):  # each builtin unit implements both (the base raises)
            assert getattr(type(unit), method) is not getattr(Presentation, method), (name, method)
        assert unit.defaults() == unit.Options().model_dump()
    with pytest.raises(ValueError, match="registered twice"):
        register_presentation(type(PRESENTATIONS["heatmap"]))
