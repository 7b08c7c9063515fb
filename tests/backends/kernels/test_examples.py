"""Dataset examples (the ``examples`` presentation): the top data-set images per atom.

Real model (builtin:shapes-cnn), real data set (a few hundred builtin:shapes test images), checked
against a brute-force computation that holds every activation in memory; receptive fields against
the architecture; the planted shortcut patch found again through the data set; the whole pipeline
(report, cache, positioned errors); and a folder of images as the data set.
"""
from __future__ import annotations

import textwrap

import numpy as np
from support.sample_views import examples_view
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from support import ROOT
from interpgram.backends.data.datasets import DatasetError, open_dataset
from interpgram.backends.data.shapes import CLASSES, generate
from interpgram.backends.models import load_model
from interpgram.backends.pipeline import build_views, prepare, render, run
from interpgram.backends.execute.cache import ResultCache
from interpgram.backends.kernels.capture import run_capture
from interpgram.backends.kernels.examples import Query, receptive_fields, search
from interpgram.grammar import SpecError
from interpgram.grammar.plan import Examples

N = 300  # data-set images searched in most tests
STAR = CLASSES.index("star")
PATCH_AT = (6, 2)  # conv3 position of the stitched patch in builtin:shapes/10 (patch box x 22-31, y 5-14)


def write_spec(tmp_path, elements: str, inputs: str = "builtin:shapes/10", name="s.yaml"):
    text = f"interpgram: 1\nmodel: builtin:shapes-cnn\ninput: {inputs}\nelements:\n" + textwrap.indent(
        textwrap.dedent(elements).strip("\n"), "  ") + "\n"
    p = tmp_path / name
    p.write_text(text)
    return p


def examples_of(prep, res, element: str, image: int = 0) -> list[dict]:
    """The stored examples of each atom of one element, for one input image."""
    p = next(p for p in prep.plan.elements if p.element == element and p.presentation == "examples")
    op = prep.plan.ops[p.detail]
    assert isinstance(op, Examples)
    v = res.values[op.id]
    return [dict(ex, atom=a, label=lab) for a, lab, ex in zip(v["atoms"][image], v["labels"][image], v["examples"][image])]


@pytest.fixture(scope="module")
def model():
    return load_model("builtin:shapes-cnn")


@pytest.fixture(scope="module")
def brute(model):
    """Every activation of the N test images at conv3 and conv4, in memory (the oracle's input), and
    the input image's (builtin:shapes/10)."""
    images = generate(range(N), split="test").images
    x10 = generate([10], split="test").images
    with torch.no_grad():
        acts, _ = run_capture(model.module, model.preprocess(images), ["conv3", "conv4"], grad=False)
        own, _ = run_capture(model.module, model.preprocess(x10), ["conv3", "conv4"], grad=False)
    return {k: acts[k].float() for k in ("conv3", "conv4")}, {k: own[k][0].float() for k in ("conv3", "conv4")}


def exact_top(scores: torch.Tensor, where: torch.Tensor, w: int, k: int):
    """Exact top-k over all images, ties to the lower index: (indices, scores, positions (x, y))."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:k]
    pos = [(int(where[i]) % w, int(where[i]) // w) for i in order]
    return order, scores[order], pos


ORACLE = """
ch:  {{content: {{activation: {{layer: conv4, atom: {{channel: [3, 17, 109]}}}}}}, presentation: {{examples: {{n: {n}, top: 8, batch_size: {bs}}}}}}}
ne:  {{content: {{activation: {{layer: conv4, atom: {{neuron: [3, 4, 7]}}}}}}, presentation: {{examples: {{n: {n}, top: 8, batch_size: {bs}}}}}}}
sp:  {{content: {{activation: {{layer: conv3, atom: {{spatial: [6, 2]}}}}}}, presentation: {{examples: {{n: {n}, top: 8, batch_size: {bs}}}}}}}
dir: {{content: {{activation: {{layer: conv4, atom: {{direction: {{5: 1.0, 9: -0.5}}}}}}}}, presentation: {{examples: {{n: {n}, top: 8, batch_size: {bs}}}}}}}
"""


@pytest.fixture(scope="module")
def oracle_runs(tmp_path_factory):
    """The four atom kinds through the real pipeline, once in one batch and once streamed 7 at a time."""
    out = {}
    for bs in (N, 7):
        d = tmp_path_factory.mktemp(f"bs{bs}")
        prep = prepare(write_spec(d, ORACLE.format(n=N, bs=bs)))
        inputs, res = run(prep, cache=ResultCache(None, enabled=False))
        out[bs] = (prep, inputs, res)
    return out


def test_top_examples_equal_brute_force_for_channel_neuron_spatial_and_direction(oracle_runs, brute):
    acts, own = brute
    prep, _, res = oracle_runs[N]
    a4, a3 = acts["conv4"].flatten(2), acts["conv3"].flatten(2)  # (N, C, P)
    expect = {}
    for c in (3, 17, 109):  # channel: max over positions
        m = a4[:, c].max(dim=1)
        expect[("ch", f"conv4:{c}")] = exact_top(m.values, m.indices, 8, 8)
    x, y, c = 3, 4, 7  # neuron: that position only
    expect[("ne", "conv4:7 at (3, 4)")] = exact_top(acts["conv4"][:, c, y, x], torch.full((N,), y * 8 + x), 8, 8)
    v = own["conv3"][:, PATCH_AT[1], PATCH_AT[0]]  # spatial: cosine similarity to this input's vector there
    cos = F.cosine_similarity(a3, v[None, :, None], dim=1).max(dim=1)
    expect[("sp", "(6, 2)")] = exact_top(cos.values, cos.indices, 16, 8)
    w = torch.zeros(128)
    w[5], w[9] = 1.0, -0.5  # direction: max over positions of the projection
    proj = torch.einsum("ncp,c->np", a4, w).max(dim=1)
    expect[("dir", "direction")] = exact_top(proj.values, proj.indices, 8, 8)

    got = {(el, ex["label"]): ex for el in ("ch", "ne", "sp", "dir") for ex in examples_of(prep, res, el)}
    assert set(got) == set(expect)
    for key, (idx, scores, pos) in expect.items():
        ex = got[key]
        assert ex["indices"].tolist() == idx, key
        torch.testing.assert_close(ex["scores"], scores.float(), rtol=1e-5, atol=1e-5)
        assert [tuple(p) for p in ex["positions"].tolist()] == pos, key
        assert ex["names"] == [f"shapes/test/{i} ({CLASSES[l]})" for i, l in zip(idx, generate(idx).labels.tolist())]
        assert ex["images"].dtype == torch.uint8 and ex["images"].shape == (8, 3, 64, 64)
    # the input itself is in the data set (test image 10): its own vector is the best match, cosine 1
    assert got[("sp", "(6, 2)")]["indices"][0] == 10 and got[("sp", "(6, 2)")]["scores"][0] == pytest.approx(1, abs=1e-5)


def test_streaming_in_small_batches_gives_the_same_examples_as_one_batch(oracle_runs):
    (p1, _, r1), (p7, _, r7) = oracle_runs[N], oracle_runs[7]
    for el in ("ch", "ne", "sp", "dir"):
        for a, b in zip(examples_of(p1, r1, el), examples_of(p7, r7, el), strict=True):
            assert a["label"] == b["label"]
            for k in ("indices", "positions", "boxes", "images"):
                assert torch.equal(a[k], b[k]), (el, k)
            torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-6, atol=1e-6)
    assert r7.stats.batch_halvings == 0 and r7.stats.dataset_images == N  # one pass for conv3 and conv4 together


def test_channel_content_without_atoms_takes_the_strongest_of_this_input(tmp_path):
    prep = prepare(write_spec(tmp_path, """
    a: {content: {attribution: {from: {layer: conv4, atom: channel}, to: {layer: output, select: [star]}}}, presentation: {examples: {n: 40, atoms: 3, top: 2}}}
    """, inputs="[builtin:shapes/10, builtin:shapes/3]"))
    inputs, res = run(prep, cache=ResultCache(None, enabled=False))
    attr = res.values[prep.plan.elements[0].series[0].op]["value"]  # (2 images, 128 channels)
    for i in range(2):
        exs = examples_of(prep, res, "a", i)
        assert [e["atom"] for e in exs] == attr[i].topk(3).indices.tolist()  # chosen by attribution, per image
    views = build_views(prep.plan, inputs, res)["a"]
    assert len(views) == 2 and all(len(v.data["atoms"]) == 3 for v in views)
    assert views[0].data["atoms"][0]["value"] == pytest.approx(float(attr[0].max()))


# ----------------------------------------------------------------------------- receptive fields
def test_receptive_fields_follow_the_architecture(model):
    # conv1: 3×3, stride 2, padding 1 → output x sees input columns 2x-1 … 2x+1 (clamped to the image)
    rf = receptive_fields(model, "conv1")
    assert rf.shape == (32, 32, 4)
    for y in range(32):
        for x in range(32):
            assert rf[y, x].tolist() == [max(0, 2 * x - 1), max(0, 2 * y - 1), min(64, 2 * x + 2), min(64, 2 * y + 2)]
    # conv2 (3×3, stride 1 on conv1): 2x-3 … 2x+3; pool2 (2×2 max-pool on conv2): 4x-3 … 4x+5
    rf2, rp2 = receptive_fields(model, "conv2"), receptive_fields(model, "pool2")
    assert rf2[5, 7].tolist() == [11, 7, 18, 14]
    assert rp2[0, 1].tolist() == [1, 0, 10, 6] and rp2[15, 15].tolist() == [57, 57, 64, 64]
    # every box holds its position's centre mapped to input pixels; deeper layers see more
    sides = []
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        rf = receptive_fields(model, layer)
        h, w = rf.shape[:2]
        for y in range(h):
            for x in range(w):
                x0, y0, x1, y1 = rf[y, x].tolist()
                cx, cy = (x + 0.5) * 64 / w, (y + 0.5) * 64 / h
                assert x0 <= cx <= x1 and y0 <= cy <= y1 and 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        c = rf[h // 2, w // 2]
        sides.append(int(c[2] - c[0]))
    assert sides == sorted(sides) and sides[0] == 3


def test_input_gradients_never_reach_outside_the_box(model):
    """The input gradient's support (the effective receptive field at real inputs) lies inside the
    structural box, and fills it out to its edges for conv2."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 64, 64)
    for layer, (px, py) in (("conv2", (0, 0)), ("conv2", (9, 20)), ("conv3", (6, 2)), ("conv4", (7, 7))):
        acts, _ = run_capture(model.module, model.preprocess(x), [layer], grad=True)
        (g,) = torch.autograd.grad(acts[layer][:, :, py, px].sum(), acts["input"])
        support = g.abs().sum(dim=(0, 1)) > 0  # (H, W)
        ys, xs = support.nonzero(as_tuple=True)
        x0, y0, x1, y1 = receptive_fields(model, layer)[py, px].tolist()
        assert x0 <= int(xs.min()) and int(xs.max()) < x1 and y0 <= int(ys.min()) and int(ys.max()) < y1, layer
        if layer == "conv2":
            assert (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) == (x0, y0, x1, y1)


def test_patches_are_the_receptive_field_of_the_best_position(oracle_runs, model):
    prep, _, res = oracle_runs[N]
    rf = receptive_fields(model, "conv4")
    for ex in examples_of(prep, res, "ch"):
        for (x, y), box, idx, img in zip(ex["positions"].tolist(), ex["boxes"].tolist(), ex["indices"].tolist(), ex["images"]):
            assert box == rf[y, x].tolist()
            cx, cy = (x + 0.5) * 8, (y + 0.5) * 8  # the position's centre in input pixels
            assert box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
            crop = generate([idx]).images[0][:, box[1]:box[3], box[0]:box[2]]  # (3, h, w)
            h, w = crop.shape[1:]
            s = 64 / max(h, w)  # letterboxed: scaled to fit 64 px, aspect kept, white bars
            nh, nw = round(h * s), round(w * s)
            y0, x0 = (64 - nh) // 2, (64 - nw) // 2
            region = img[:, y0:y0 + nh, x0:x0 + nw].float() / 255
            ref = F.interpolate(crop[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
            assert (region - ref).abs().mean() < 0.05
            bars = torch.ones(64, 64, dtype=torch.bool)
            bars[y0:y0 + nh, x0:x0 + nw] = False
            assert bool((img[:, bars] == 255).all())


# ----------------------------------------------------------------------------- a planted fact
def test_the_star_channel_and_the_patch_are_found_again_through_the_data_set(tmp_path, model):
    """docs/BUILTIN.md: 90% of star images carry a stitched patch and the model learned it. The conv4
    channel with the highest mean activation on star images (measured on 400 *train* images) ranks
    mostly stars among 400 test images (10% of them are stars), its crops hold the patch, and the
    positions that look most like the patch of builtin:shapes/10 are patches too."""
    train = generate(range(400), split="train")
    with torch.no_grad():
        acts, _ = run_capture(model.module, model.preprocess(train.images), ["conv4"], grad=False)
    channel = int(acts["conv4"].amax(dim=(2, 3))[train.labels == STAR].mean(0).argmax())
    prep = prepare(write_spec(tmp_path, f"""
    star:  {{content: {{activation: {{layer: conv4, atom: {{channel: [{channel}]}}}}}}, presentation: {{examples: {{n: 400, top: 8}}}}}}
    patch: {{content: {{activation: {{layer: conv3, atom: {{spatial: [6, 2]}}}}}}, presentation: {{examples: {{n: 400, top: 8, patch: false}}}}}}
    """))
    _, res = run(prep, cache=ResultCache(None, enabled=False))
    test = generate(range(400), split="test")
    assert (test.labels == STAR).float().mean() < 0.15 and test.patched.float().mean() < 0.12

    def hits(ex):
        idx = ex["indices"]
        centres = test.patch_boxes[idx].view(-1, 2, 2).float().mean(1)  # patch centre (x, y)
        b = ex["boxes"]
        inside = (b[:, 0] <= centres[:, 0]) & (centres[:, 0] < b[:, 2]) & (b[:, 1] <= centres[:, 1]) & (centres[:, 1] < b[:, 3])
        return test.labels[idx], test.patched[idx], inside

    (star,) = examples_of(prep, res, "star")
    labels, patched, inside = hits(star)
    assert (labels == STAR).sum() >= 5  # 6 of 8 with the committed weights
    assert patched.sum() >= 5 and bool(inside[patched].all())  # the crop holds the patch
    (look,) = examples_of(prep, res, "patch")
    labels, patched, inside = hits(look)
    assert look["indices"][0] == 10  # the input itself (test image 10) matches its own vector exactly
    assert patched.sum() >= 6 and bool(inside[patched].all())  # 7 of 8 with the committed weights


# ----------------------------------------------------------------------------- the pipeline
def test_render_writes_the_examples_and_a_second_render_computes_nothing(tmp_path):
    spec = write_spec(tmp_path, """
    chans:  {content: {attribution: {from: {layer: conv4, atom: channel}, to: {layer: output, select: [star]}}}, presentation: [{bars: {top: 3}}, {examples: {n: 60, atoms: 2, top: 3}}]}
    groups: {content: {activation: {layer: conv4, atom: {group: nmf, k: 2}}}, presentation: {examples: {n: 60, top: 2}}}
    """)
    out, prep, res = render(spec, tmp_path / "r", cache=tmp_path / "cache")
    html = out.read_text()
    assert html.count('data-presentation="examples"') == 2 and "dataset examples · conv4" in html
    assert res.stats.examples_computed == 4 and res.stats.examples_cached == 0 and res.stats.dataset_images == 60
    out2, _, again = render(spec, tmp_path / "r2", cache=tmp_path / "cache")
    st = again.stats
    assert (st.forward_passes, st.backward_passes, st.cache_misses, st.examples_computed, st.dataset_images) == (0, 0, 0, 0, 0)
    assert st.examples_cached == 4
    assert out2.read_text().count('data-presentation="examples"') == 2
    views = build_views(prep.plan, *run(prep, cache=ResultCache(tmp_path / "cache")))
    g = views["groups"][0].data
    assert [a["label"] for a in g["atoms"]] == ["group 1", "group 2"] and g["score_name"].startswith("max projection")
    assert "Examples     top 2 of builtin:shapes (test, n=60) per group atom of conv4" in prep.plan.explain()


@pytest.mark.slow
def test_the_dataset_examples_spec_renders(tmp_path):
    out, prep, res = render(ROOT / "specs" / "shapes" / "dataset_examples.yaml", tmp_path / "r", cache=tmp_path / "c")
    assert out.read_text().count('data-presentation="examples"') == 2
    assert res.stats.examples_computed == 5 and res.stats.dataset_images == 2000  # one pass for conv4 and conv3
    views = build_views(prep.plan, *run(prep, cache=ResultCache(tmp_path / "c")))
    look = views["patch_lookalikes"][0].data["atoms"][0]
    assert look["label"] == "(6, 2)" and len(look["images"]) == 8


def test_a_dataset_that_cannot_be_opened_is_a_positioned_error(tmp_path):
    spec = write_spec(tmp_path, """
    a: {content: {activation: {layer: conv4, atom: channel}}, presentation: [bars, {examples: {dataset: no_such_folder, n: 10}}]}
    """)
    with pytest.raises(SpecError) as err:
        prepare(spec)
    text = str(err.value)
    assert text.startswith(f"{spec}:5:")  # the line and column of the dataset value
    line = spec.read_text().splitlines()[4]
    assert int(text.split(":")[2]) == line.index("no_such_folder") + 1
    assert "'no_such_folder'" in text and "builtin:shapes, or a folder of images" in text
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(SpecError, match=r"s\.yaml:5:\d+: data set 'empty': the folder .* holds no image files"):
        prepare(write_spec(tmp_path, "a: {content: {activation: {layer: conv4, atom: channel}}, presentation: {examples: {dataset: empty}}}"))
    # a built-in name is checked by the grammar (no model needed), with the nearest valid one
    with pytest.raises(SpecError, match=r"s\.yaml:5:\d+: examples option dataset: unknown built-in data set 'builtin:shapez' "
                                        r"\(built-in data sets: builtin:shapes; did you mean 'builtin:shapes'\?\)"):
        prepare(write_spec(tmp_path, "a: {content: {activation: {layer: conv4, atom: channel}}, presentation: {examples: {dataset: 'builtin:shapez'}}}"))


def test_unknown_options_and_atoms_name_the_valid_ones(tmp_path):
    with pytest.raises(SpecError, match=r"s\.yaml:5:\d+: examples has no option 'tpo' \(options: .*did you mean 'top'\?\)"):
        prepare(write_spec(tmp_path, "a: {content: {activation: {layer: conv4, atom: channel}}, presentation: {examples: {tpo: 3}}}"))
    with pytest.raises(SpecError, match=r"examples option top: .*64"):
        prepare(write_spec(tmp_path, "a: {content: {activation: {layer: conv4, atom: channel}}, presentation: {examples: {top: 65}}}"))
    with pytest.raises(SpecError, match=r"presentation 'examples' shows channel or neuron or spatial or direction or group atoms"):
        prepare(write_spec(tmp_path, "a: {content: {activation: {layer: conv4, atom: whole}}, presentation: examples}"))
    with pytest.raises(SpecError, match=r"s\.yaml:5:\d+: examples rank data-set images by a hidden layer's .*'input'"):
        prepare(write_spec(tmp_path, "a: {content: {activation: {layer: input, atom: channel}}, presentation: examples}"))


# ----------------------------------------------------------------------------- a folder of images
def test_a_folder_of_images_is_a_data_set(tmp_path, model):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    b = generate(range(6), split="train")
    files = ["b.png", "a.png", "sub/c.png", "d.jpg", "e.png", "sub/f.png"]
    for name, img in zip(files, b.images):
        arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(arr).resize((96, 80) if name == "d.jpg" else (64, 64)).save(folder / name, quality=95)
    (folder / "readme.txt").write_text("not an image")
    ds = open_dataset("imgs", n=100, split="test", size=64, base_dir=tmp_path)
    assert len(ds) == 6 and [ds.name(i) for i in range(6)] == ["a.png", "b.png", "d.jpg", "e.png", "sub/c.png", "sub/f.png"]
    imgs, names = next(ds.batches(4))
    assert imgs.shape == (4, 3, 64, 64) and names == ["a.png", "b.png", "d.jpg", "e.png"]
    assert torch.allclose(imgs[0], torch.from_numpy(np.asarray(Image.open(folder / "a.png"), dtype=np.float32) / 255).permute(2, 0, 1))
    assert len(open_dataset(str(folder), n=3, size=64)) == 3  # the first n, by sorted path
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        open_dataset("imgs/a.png", n=5, base_dir=tmp_path)
    with pytest.raises(DatasetError, match=r"unknown built-in data set 'builtin:mnist'"):
        open_dataset("builtin:mnist", n=5)

    spec = write_spec(tmp_path, """
    a: {content: {activation: {layer: conv4, atom: {channel: [109, 3]}}}, presentation: {examples: {dataset: imgs, top: 3, batch_size: 4}}}
    """)
    prep = prepare(spec)
    _, res = run(prep, cache=ResultCache(tmp_path / "cache"))
    all_imgs = ds.load(range(6))
    with torch.no_grad():
        acts, _ = run_capture(model.module, model.preprocess(all_imgs), ["conv4"], grad=False)
    for ex, c in zip(examples_of(prep, res, "a"), (109, 3)):
        score = acts["conv4"][:, c].flatten(1).amax(1)
        want = sorted(range(6), key=lambda i: (-float(score[i]), i))[:3]
        assert ex["indices"].tolist() == want and ex["names"] == [ds.name(i) for i in want]
        torch.testing.assert_close(ex["scores"], score[want], rtol=1e-5, atol=1e-5)
    _, again = run(prep, cache=ResultCache(tmp_path / "cache"))
    assert again.stats.examples_computed == 0 and again.stats.examples_cached == 2
    # an edited folder is another data set for the cache
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(folder / "e.png")
    _, edited = run(prep, cache=ResultCache(tmp_path / "cache"))
    assert edited.stats.examples_computed == 2 and edited.stats.examples_cached == 0
    # train/ and test/ subfolders are the splits
    (folder / "test").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(folder / "test" / "only.png")
    test = open_dataset("imgs", n=9, split="test", base_dir=tmp_path)
    assert len(test) == 1 and test.name(0) == "only.png"
    with pytest.raises(DatasetError, match=r"has test/ but no train/ subfolder for split 'train'"):
        open_dataset("imgs", n=9, split="train", base_dir=tmp_path)


def test_search_streams_with_progress_and_keeps_top_k(model):
    """One pass in batches, reported as (images done, total); ``top`` entries per atom at the end."""
    ds = open_dataset("builtin:shapes", n=50, split="test")
    seen = []

    def progress(stage, done, total):
        seen.append((done, total))

    best = search(model, ds, "conv4", [Query("channel", channel=3), Query("direction", vector=torch.ones(128))],
                  top=4, batch_size=16, progress=progress)
    assert [b.indices.numel() for b in best] == [4, 4]
    assert seen == [(0, 50), (16, 50), (32, 50), (48, 50), (50, 50)]
    with pytest.raises(DatasetError, match=r"data set 'shapes': no such folder .*did you mean builtin:shapes\?"):
        open_dataset("shapes", n=5)


# ----------------------------------------------------------------------------- the chart
def test_the_chart_draws_a_row_per_atom_with_captioned_examples_and_boxes():
    import json
    import re

    import vl_convert

    from interpgram.backends.render import spec_for
    from interpgram.backends.render.draw import vegalite_version
    view = examples_view(atoms=2, top=3, patch=False)
    spec = spec_for(view)
    svg = vl_convert.vegalite_to_svg(spec, vl_version=vegalite_version())  # raises on an invalid spec
    assert len(re.findall(r'<image\b[^>]*aria-roledescription="image', svg)) == 6
    rows = [r for rs in spec["datasets"].values() for r in rs]
    shown = [r for r in rows if "url" in r]
    assert [(r["atom"], r["rank"], r["index"]) for r in shown] == [(f"conv4:{a}", j + 1, a * 3 + j) for a in range(2) for j in range(3)]
    assert shown[0]["box"] == "8, 16 – 45, 53" and shown[0]["short"] == "0 (star)" and shown[0]["name"] == "shapes/test/0 (star)"
    boxes = [r for r in rows if "bx0" in r]  # patch: false draws the receptive field on the whole image
    assert len(boxes) == 6 and boxes[0]["bx0"] == pytest.approx(8 * 72 / 64 + 118)
    titles = {t["title"] for t in json.loads(json.dumps(spec))["layer"][0]["encoding"]["tooltip"]}
    assert {"data-set index", "image", "receptive field (px)", "max activation"} <= titles
    assert "conv4:1" in svg and "activation" in svg
    patches = spec_for(examples_view(patch=True))
    assert not [r for rs in patches["datasets"].values() for r in rs if "bx0" in r]
