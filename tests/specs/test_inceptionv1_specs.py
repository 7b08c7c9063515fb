"""The Building Blocks interfaces on InceptionV1 (specs/inceptionv1): every spec compiles against the
real InceptionV1 graph, and the spatial-attribution, channel-attribution and neuron-group specs
render end to end (links precomputed) with weights these tests make themselves — the published
file cannot be downloaded here. With the real weights and image the same specs run unchanged."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from support import ROOT
from interpgram.backends import pipeline
from interpgram.backends.models.inceptionv1 import INTERNAL_TO_PUBLISHED, LABELS_ENV_VAR, WEIGHTS_ENV_VAR, InceptionV1

ALL = sorted((ROOT / "specs" / "inceptionv1").glob("*.yaml"))
ATLASES = [s for s in ALL if "atlas" in s.stem]
SPECS = [s for s in ALL if s not in ATLASES]


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inceptionv1")
    torch.manual_seed(0)
    net = InceptionV1().eval()
    torch.save({INTERNAL_TO_PUBLISHED.get(k, k): v for k, v in net.state_dict().items()}, tmp / "inception5h.pth")
    # a smooth synthetic photo stand-in with the article's file name
    yy, xx = np.mgrid[0:224, 0:224] / 223.0
    img = np.stack([0.5 + 0.4 * np.sin(7 * xx + 2 * yy), 0.5 + 0.4 * np.cos(5 * yy), 0.5 + 0.3 * np.sin(9 * xx * yy)], -1)
    for spec in SPECS:
        shutil.copy(spec, tmp / spec.name)
    for spec in ATLASES:
        shutil.copy(spec, tmp / spec.name)
    Image.fromarray((img * 255).astype(np.uint8)).save(tmp / "dog_cat.png")
    # the atlases' data set (a folder of images) and a 1008-line label list naming the classes they use
    (tmp / "imagenet").mkdir()
    for i in range(3):
        Image.fromarray((np.roll(img, 40 * i, axis=1) * 255).astype(np.uint8)).save(tmp / "imagenet" / f"{i}.jpg")
    labels = ["dummy"] + [f"class {i}" for i in range(1, 1008)]
    labels[10], labels[20] = "snorkel", "scuba diver"
    (tmp / "labels.txt").write_text("\n".join(labels) + "\n")
    mp = pytest.MonkeyPatch()
    mp.setenv(WEIGHTS_ENV_VAR, str(tmp / "inception5h.pth"))
    mp.setenv(LABELS_ENV_VAR, str(tmp / "labels.txt"))
    yield tmp
    mp.undo()


def test_there_is_one_spec_per_article_interface():
    assert {s.stem for s in SPECS} == {"semantic_dictionary", "activation_grid", "spatial_attribution",
                                       "channel_attribution", "neuron_groups", "combined"}
    shapes = {s.stem for s in (ROOT / "specs" / "shapes").glob("*.yaml")}
    assert {s.stem for s in SPECS} <= shapes  # and each exists for the built-in model


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_spec_compiles_against_the_inceptionv1_graph(spec, spec_dir):
    prep = pipeline.prepare(spec_dir / spec.name)
    assert prep.model.name.startswith("inceptionv1")
    assert prep.plan.passes()["forward"] == 1
    assert {p.element for p in prep.plan.base_elements} == set(prep.loaded.spec.elements)
    assert all(l.startswith("mixed") for l in prep.plan.layer_shapes if l not in ("output",))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spatial_attribution", "channel_attribution", "neuron_groups"])
def test_specs_render_end_to_end(name, spec_dir, tmp_path):
    out, prep, results = pipeline.render(spec_dir / f"{name}.yaml", tmp_path / "report", cache=tmp_path / "cache",
                                         icon_steps=1)
    html = out.read_text()
    for el in prep.loaded.spec.elements:
        assert f'id="el-{el}' in html
    if name == "spatial_attribution":
        # mixed4d has 14×14 positions: 49 (every second) are precomputed within the default bound of 64
        assert 'class="variants"' in html and "49 of 196 selections precomputed" in html
    for vals in results.values.values():
        for t in vals.values():
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                assert torch.isfinite(t).all()


def test_the_atlas_specs_exist_for_both_models():
    assert {s.stem for s in ATLASES} == {"atlas", "class_atlas", "two_class_atlas"}
    assert {s.stem for s in ATLASES} <= {s.stem for s in (ROOT / "specs" / "shapes").glob("*.yaml")}


@pytest.mark.parametrize("spec", ATLASES, ids=[s.stem for s in ATLASES])
def test_every_atlas_spec_compiles_against_the_inceptionv1_graph(spec, spec_dir):
    from interpgram.grammar.plan import Collect, Layout
    prep = pipeline.prepare(spec_dir / spec.name)
    (c,) = prep.plan.of_type(Collect)
    assert c.dataset == "imagenet" and all(l.startswith("mixed") for l in c.layers)
    kinds = {op.kind for op in prep.plan.of_type(Layout)}
    assert kinds == {"atlas": {"activation"}, "class_atlas": {"class"}, "two_class_atlas": {"compare"}}[spec.stem]
    if spec.stem != "atlas":
        assert [prep.info.classes[k] for op in prep.plan.of_type(Layout) for k in op.classes][0] == "snorkel"
