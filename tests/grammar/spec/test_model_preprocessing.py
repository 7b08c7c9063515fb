"""Preprocessing as part of the model spec: ``model: {source, size, mean, std, resize, crop, labels}`` on a
real torch model that only takes 64 px, the factory's ``(module, {size, mean, std, classes})`` return,
the Python API's same keys, positioned errors, the JSON Schema, ``interpgram layers``, and ``check``
reporting a missing image together with another mistake."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import interpgram
from interpgram.backends import pipeline
from interpgram.backends.cli import main as cli_main
from interpgram.backends.models.base import ModelSourceError, from_module
from interpgram.grammar import SpecError, json_schema

TINY = '''
import torch
from torch import nn


class Tiny(nn.Module):
    """Takes exactly 64×64 images: the Linear after the flatten needs 8·8·8 features."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


def build():
    return Tiny()


def build_with_meta():
    return Tiny(), {"size": 64, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "classes": ["a", "b", "c"]}


def build_with_typo():
    return Tiny(), {"sise": 64}
'''

SPEC = """\
interpgram: 1
model: {{source: "python:tiny:{fn}"{extra}}}
input: {input}
elements:
  logits:
    content: {{activation: {{layer: output}}}}
    presentation: {{bars: {{top: 3}}}}
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    (tmp_path / "tiny.py").write_text(TINY)
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((48, 96, 3)) * 255).astype(np.uint8)).save(tmp_path / "wide.png")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _spec(folder, fn="build", extra="", input="wide.png", name="s.yaml"):
    p = folder / name
    p.write_text(SPEC.format(fn=fn, extra=extra, input=input))
    return p


def _expected_logits(folder, mean, std):
    import importlib
    import sys
    sys.modules.pop("tiny", None)
    tiny = importlib.import_module("tiny")
    with Image.open(folder / "wide.png") as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)[:, 24:72] / 255.0  # the centre 48×48
    x = torch.from_numpy(arr).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", antialias=True).clamp(0, 1)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return tiny.build().eval()((x - m) / s)[0]


# ----------------------------------------------------------------------------- the spec's keys
def test_a_spec_with_size_mean_and_std_runs_at_64_px_with_its_normalisation(folder):
    """The model takes only 64 px; the spec says so, with its mean and std: the logits the report shows
    are the module's on the centre-cropped, 64 px, normalised image (computed here independently)."""
    spec = _spec(folder, extra=", size: 64, mean: [0.5, 0.4, 0.3], std: [0.25, 0.2, 0.3]")
    prep = pipeline.prepare(spec, allow_code=True)
    assert prep.model.preprocess.size == (64, 64)
    assert prep.model.preprocess.mean == (0.5, 0.4, 0.3) and prep.model.preprocess.std == (0.25, 0.2, 0.3)
    res = interpgram.Interface(spec, allow_code=True, cache=False).run()
    got = res["logits"].values.sel(input=0).torch().flatten()
    want = _expected_logits(folder, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    inputs = pipeline.load_spec_inputs(prep)
    assert tuple(inputs.images.shape) == (1, 3, 64, 64)
    assert inputs.notes == ["PNG 96×48 → centre crop 48×48 at (24, 0) (50% of the width kept) → resized to 64×64"]


def test_the_report_header_states_the_preprocessing_and_each_inputs_crop(folder):
    spec = _spec(folder, extra=", size: 64, resize: pad")
    path, _, _ = pipeline.render(spec, folder / "out", allow_code=True, cache=False)
    page = path.read_text()
    assert "64×64 px, resize: pad, crop: none" in page
    assert "wide.png: PNG 96×48 → resized to 64×32, padded to 64×64 with the model&#x27;s mean colour" in page


def test_without_a_size_a_model_that_takes_64_px_is_a_positioned_error(folder):
    with pytest.raises(SpecError) as err:
        pipeline.prepare(_spec(folder), allow_code=True)
    msg = str(err.value)
    assert msg.startswith(f"{folder / 's.yaml'}:2:")
    assert "fails on a 224×224 input (the default size, as nothing states one)" in msg
    assert "set model: {size: N}" in msg


def test_the_factorys_metadata_is_used_and_the_spec_overrides_it(folder):
    prep = pipeline.prepare(_spec(folder, fn="build_with_meta"), allow_code=True)
    pre = prep.model.preprocess
    assert (pre.size, pre.mean, pre.std, prep.model.classes) == ((64, 64), (0.5,) * 3, (0.25,) * 3, ["a", "b", "c"])
    over = pipeline.prepare(_spec(folder, fn="build_with_meta", extra=", std: [0.5, 0.5, 0.5], resize: stretch",
                                  name="o.yaml"), allow_code=True)
    assert over.model.preprocess.std == (0.5,) * 3 and over.model.preprocess.resize == "stretch"
    assert over.model.preprocess.size == (64, 64)  # kept from the factory
    assert over.model.digest != prep.model.digest  # the result cache never serves the other normalisation
    with pytest.raises(SpecError, match=r"s\.yaml:2:\d+: .*unknown key 'sise' \(keys: .*did you mean 'size'\?\)"):
        pipeline.prepare(_spec(folder, fn="build_with_typo"), allow_code=True)


def test_bad_preprocessing_keys_are_positioned_errors_all_at_once(folder):
    spec = folder / "bad.yaml"
    spec.write_text(textwrap.dedent("""\
        interpgram: 1
        model:
          source: builtin:shapes-cnn
          size: 0
          mean: [0.5, 0.5]
          std: [0.2, 0, 0.2]
          resize: shorterr
        input: builtin:shapes/1
        elements:
          a: {content: {activation: {layer: output}}, presentation: bars}
        """))
    with pytest.raises(SpecError) as err:
        interpgram.Interface(spec).check()
    lines = str(err.value).splitlines()
    assert lines == [
        f"{spec}:4:9: size: one whole number of pixels (a square input) or [height, width], each 1…16384; got 0",
        f"{spec}:5:9: mean: three numbers, one per channel (R, G, B), e.g. [0.485, 0.456, 0.406]",
        f"{spec}:6:8: std: every value is positive (pixels are divided by them); got [0.2, 0.0, 0.2]",
        f"{spec}:7:11: resize: 'shorterr' is not allowed (valid: shorter, stretch, pad; did you mean 'shorter'?)",
    ]
    spec.write_text(spec.read_text().replace("  size: 0\n  mean: [0.5, 0.5]\n  std: [0.2, 0, 0.2]\n  resize: shorterr\n",
                                             "  resize: stretch\n  crop: center\n"))
    with pytest.raises(SpecError) as err:
        interpgram.Interface(spec).check()
    assert str(err.value) == (f"{spec}:5:9: crop: center does not go with resize: stretch, which keeps the whole image "
                              "(crop: none); leave crop out, or pick resize: shorter")


def test_a_builtin_model_takes_the_spec_size_and_says_so(folder):
    spec = folder / "b.yaml"
    spec.write_text("interpgram: 1\nmodel: {source: builtin:shapes-cnn, size: [48, 32], crop: none}\n"
                    "input: builtin:shapes/3\nelements:\n  a: {content: {activation: {layer: output}}, presentation: bars}\n")
    prep = pipeline.prepare(spec)
    assert prep.model.preprocess.size == (48, 32) and prep.model.preprocess.resize == "pad"  # crop: none alone
    assert prep.info.input_shape == (3, 48, 32)
    assert any("size 32×48 (the source's 64×64), resize pad (the source's shorter)" in n for n in prep.model.notes)
    inputs = pipeline.load_spec_inputs(prep)
    assert tuple(inputs.images.shape) == (1, 3, 48, 32)
    assert inputs.notes == ["built-in 64×64 → resized to 32×32, padded to 32×48 with the model's mean colour (nothing cut)"]


def test_the_json_schema_has_the_preprocessing_keys():
    props = json_schema()["$defs"]["ModelSpec"]["properties"]
    assert {"size", "mean", "std", "resize", "crop", "labels"} <= set(props)
    enums = {k: [x.get("enum") for x in props[k].get("anyOf", []) if "enum" in x] for k in ("resize", "crop")}
    assert enums == {"resize": [["shorter", "stretch", "pad"]], "crop": [["center", "none"]]}
    assert "description" in props["size"] and "shorter" in props["resize"]["description"]


def test_layers_shows_the_preprocessing(folder, monkeypatch, capsys):
    monkeypatch.chdir(folder)
    assert cli_main(["layers", "python:tiny:build_with_meta", "--allow-code"]) == 0
    out = capsys.readouterr().out
    assert "preprocessing: 64×64 px, resize: shorter, crop: center, (x − mean) / std with mean (0.5, 0.5, 0.5), " \
           "std (0.25, 0.25, 0.25)" in out


# ----------------------------------------------------------------------------- the Python API
def test_the_python_api_takes_the_same_keys(folder):
    import importlib
    tiny = importlib.import_module("tiny")
    model = interpgram.Model(tiny.build(), size=64, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3), resize="shorter",
                             crop="center")
    spec = {"interpgram": 1, "elements": {"logits": {"content": {"activation": {"layer": "output"}},
                                                     "presentation": {"bars": {"top": 3}}}}}
    res = interpgram.Interface(spec, model=model, inputs=[folder / "wide.png"], cache=False).run()
    torch.testing.assert_close(res["logits"].values.sel(input=0).torch().flatten(),
                               _expected_logits(folder, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)), rtol=1e-4, atol=1e-5)
    padded = interpgram.Model(tiny.build(), size=64, resize="pad").load()
    assert padded.preprocess.fit.resize == "pad"
    assert padded.digest != interpgram.Model(tiny.build(), size=64).load().digest
    with pytest.raises(interpgram.APIError,
                       match=r"resize 'strech' is not one of shorter, stretch, pad .*did you mean 'stretch'"):
        interpgram.Model(tiny.build(), size=64, resize="strech")
    with pytest.raises(ModelSourceError, match="resize: shorter goes with crop: center, not none"):
        from_module(tiny.build(), size=64, resize="shorter", crop="none")


# ----------------------------------------------------------------------------- check: everything at once
def test_check_reports_a_missing_and_a_damaged_image_with_another_mistake(folder):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    spec = folder / "c.yaml"
    spec.write_text(textwrap.dedent("""\
        interpgram: 1
        model: builtin:shapes-cnn
        input: [gone.png, broken.png, builtin:shapes/2]
        elements:
          a:
            content: {activation: {layer: conv33, atom: spatial}}
            presentation: heatmap
        """))
    with pytest.raises(SpecError) as err:
        pipeline.prepare(spec)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{spec}:3:9: input image not found: {folder / 'gone.png'}"
    assert lines[1].startswith(f"{spec}:3:19: input image {folder / 'broken.png'} cannot be read as an image")
    assert lines[2].startswith(f"{spec}:6:35: unknown layer 'conv33'") and "did you mean 'conv3'" in lines[2]
    assert len(lines) == 3


# ----------------------------------------------------------------------------- data sets follow the policy
@pytest.mark.parametrize("resize", ["shorter", "stretch", "pad"])
def test_data_set_images_go_through_the_models_resize_policy_like_inputs(folder, resize):
    """A folder of photos used by dataset examples is brought to the model's size by the spec's
    ``resize`` exactly as the inputs are: the same photo as input and as data-set image gives the same
    activation, and a stretch or pad differs from a centre crop (the photo is 2:1)."""
    photos = folder / "photos"
    photos.mkdir()
    (photos / "wide.png").write_bytes((folder / "wide.png").read_bytes())
    spec = folder / "s.yaml"
    spec.write_text(textwrap.dedent(f"""\
        interpgram: 1
        model: {{source: "python:tiny:build", size: 64, resize: {resize}}}
        input: wide.png
        elements:
          act:
            content: {{activation: {{layer: conv, atom: channel}}}}
            presentation: {{bars: {{top: 8}}}}
          ex:
            content: {{activation: {{layer: conv, atom: channel}}}}
            presentation: {{examples: {{dataset: photos, top: 1}}}}
        """))
    prep = pipeline.prepare(spec, allow_code=True)
    from interpgram.backends.data.datasets import open_dataset
    from interpgram.backends.data.images import Fit, read_fitted

    ds = open_dataset("photos", n=5, size=prep.model.preprocess.fit, base_dir=folder)
    want, _ = read_fitted(folder / "wide.png", Fit((64, 64), resize, prep.model.preprocess.fill))
    torch.testing.assert_close(ds.load([0])[0], want, rtol=0, atol=0)
    torch.testing.assert_close(pipeline.load_spec_inputs(prep).images[0], want, rtol=0, atol=0)
    if resize != "shorter":
        centre, _ = read_fitted(folder / "wide.png", Fit((64, 64)))
        assert float((want - centre).abs().max()) > 0.1
        assert ds.identity != open_dataset("photos", n=5, size=(64, 64), base_dir=folder).identity
    # the examples kernel read the photo the same way: each channel's top score is the max of that
    # channel of the module's conv on the fitted photo
    p = next(p for p in prep.plan.elements if p.element == "ex" and p.presentation == "examples")
    _, _, results = pipeline.render(prep, folder / "out", cache=False)
    v = results.values[prep.plan.ops[p.detail].id]
    with torch.no_grad():
        act = prep.model.module.conv(prep.model.preprocess(want[None]))[0]
    for atom, ex in zip(v["atoms"][0], v["examples"][0]):
        assert ex["names"] == ["wide.png"]
        assert float(ex["scores"][0]) == pytest.approx(float(act[atom].max()), rel=1e-5)
