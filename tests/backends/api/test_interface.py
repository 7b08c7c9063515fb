"""The Python API against real things: the built-in model and spec files, a module defined here with
its own preprocessing and class names, the real CLI for comparison, a real dashboard server."""
from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import interpgram
from support import ROOT
from interpgram.backends.render.export import NumbersError

DEMO = ROOT / "specs" / "shapes" / "demo.yaml"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api-cache")


@pytest.fixture(scope="module")
def demo(cache):
    """The demo spec from its file, run once (icons drafted at 2 steps)."""
    ui = interpgram.Interface(DEMO, cache=cache, icon_steps=2)
    return ui, ui.run()


def test_import_is_light_and_public_names_resolve():
    code = ("import sys, interpgram; assert 'torch' not in sys.modules, 'import interpgram pulled torch in'; "
            "print(interpgram.Interface.__name__, interpgram.load_numbers.__name__, sorted(interpgram.__all__))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Interface load_numbers")
    with pytest.raises(AttributeError, match="public names"):
        interpgram.Interfase  # noqa: B018


def test_path_text_and_dict_give_the_same_numbers(demo, cache):
    _, res = demo
    text = DEMO.read_text()
    by_text = interpgram.Interface(text, cache=cache, icon_steps=2).run()
    by_dict = interpgram.Interface(yaml.safe_load(text), cache=cache, icon_steps=2).run()
    assert list(res) == list(by_text) == list(by_dict) == ["where", "versus", "channels", "groups", "magnitude",
                                                          "upstream"]
    for key in res:
        for name, arr in res[key].arrays.items():
            np.testing.assert_array_equal(arr.numpy(), by_text[key][name].numpy())
            np.testing.assert_array_equal(arr.numpy(), by_dict[key][name].numpy())
            assert arr.dims == by_dict[key][name].dims


def test_numbers_are_the_executors_tensors_with_labels(demo):
    ui, res = demo
    prep = ui.prepared()
    where = next(p for p in prep.plan.base_elements if p.element == "where")
    raw = {s.label: res.raw.values[s.op]["value"] for s in where.series}
    star = res["where"].sel(input=0, cls="star")
    assert star.dims == ("y", "x") and star.shape == (16, 16)
    np.testing.assert_array_equal(star.numpy(), raw["star"][0].numpy())
    assert torch.equal(res["where"].sel(input="shapes/test/10 (star)", cls="crescent").torch(), raw["crescent"][0])
    assert res["where"].values.labels("cls") == ["star", "crescent"]
    # a list keeps the dim, in the order asked
    both = res["where"].sel(cls=["crescent", "star"])
    assert both.dims == ("input", "cls", "y", "x") and both.labels("cls") == ["crescent", "star"]
    # channels: the atom axis is labelled by channel index; bars of attribution to star
    ch = res["channels"].sel(input=0, cls="star")
    assert ch.dims == ("channel",) and ch.shape == (128,)
    assert float(ch.sel(channel=5)) == pytest.approx(float(ch.numpy()[5]))
    groups = res["groups"]
    assert groups["groups.spatial"].dims == ("input", "group", "y", "x")
    assert groups["groups.channels"].shape == (1, 5, 128)
    assert groups.sel(input=0, cls="star").dims == ("group",)
    assert "FeatureVis.images" in groups.arrays and groups["FeatureVis.images"].shape[:2] == (1, 5)
    # mistakes name what is there
    with pytest.raises(NumbersError, match="did you mean 'star'"):
        res["where"].sel(cls="stra")
    with pytest.raises(NumbersError, match="no dim 'class'.*did you mean 'cls'"):
        res["where"].sel(**{"class": "star"})
    with pytest.raises(NumbersError, match="no element 'wher'.*did you mean 'where'"):
        res["wher"]
    with pytest.raises(NumbersError, match="out of range"):
        res["where"].sel(input=3)


def test_plan_and_check_print_what_the_cli_prints(demo):
    ui, _ = demo
    cli = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "plan", str(DEMO)], capture_output=True,
                         text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    # the same plan, except the icon steps this interface drafts at (--icon-steps is a render option)
    full = interpgram.Interface(DEMO).plan()
    assert full == cli.stdout.rstrip("\n")
    assert repr(full) == str(full)  # a notebook shows it as text
    assert "2 steps" in ui.plan() and "2 steps" not in full
    assert ui.check().startswith(f"{DEMO}: ok — 6 elements on builtin:shapes-cnn")


def test_dict_spec_errors_name_the_key_path():
    spec = yaml.safe_load(DEMO.read_text())
    spec["elements"]["where"]["presentation"] = "heatmapp"
    spec["elements"]["magnitude"]["content"]["activation"]["layer"] = "conv9"
    with pytest.raises(interpgram.SpecError) as e:
        interpgram.Interface(spec).check()
    lines = str(e.value).splitlines()
    assert any(line.startswith("<dict>:elements.where.presentation: unknown presentation 'heatmapp'")
               and "did you mean 'heatmap'" in line for line in lines), lines
    spec["elements"]["where"]["presentation"] = "heatmap"
    with pytest.raises(interpgram.SpecError) as e:
        interpgram.Interface(spec).check()
    assert str(e.value).startswith("<dict>:elements.magnitude.content.activation.layer: unknown layer 'conv9'")
    assert "did you mean 'conv5'" in str(e.value)
    spec["layout"] = [["where", "nowhere"]]
    spec["elements"]["magnitude"]["content"]["activation"]["layer"] = "conv2"
    with pytest.raises(interpgram.SpecError, match=r"<dict>:layout\[0\]\[1\]: layout names 'nowhere'"):
        interpgram.Interface(spec).check()


def test_text_spec_errors_keep_line_and_column():
    text = DEMO.read_text().replace("from: {layer: conv3, atom: spatial}", "from: {layer: conv9, atom: spatial}")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "conv9" in t)
    col = text.splitlines()[line - 1].index("conv9") + 1
    with pytest.raises(interpgram.SpecError, match=rf"^<text>:{line}:{col}: unknown layer 'conv9'"):
        interpgram.Interface(text).check()
    with pytest.raises(interpgram.SpecError, match="no such file"):
        interpgram.Interface(ROOT / "specs" / "nope.yaml").check()


# ------------------------------------------------------------------ a model defined here, in memory
CLASSES = ["cat", "dog", "bird"]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1, stride=2), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, len(CLASSES))

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.conv1(x))).flatten(1))


SPEC = {  # no model: and no input: lines — both are given in Python
    "interpgram": 1,
    "elements": {
        "attr": {"content": {"attribution": {"from": {"layer": "conv2", "atom": "spatial"},
                                             "to": {"layer": "output", "select": ["dog", "bird"]}}},
                 "presentation": "heatmap"},
        "act": {"content": {"activation": {"layer": "conv2", "atom": "channel"}}, "presentation": {"bars": {"top": 4}}},
        "logits": {"content": {"activation": {"layer": "output", "atom": "channel"}}, "presentation": "bars"},
    },
}


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((3, 24, 24), dtype=np.float32) for _ in range(3)]


@pytest.fixture(scope="module")
def tiny(cache):
    net = TinyNet()
    imgs = _images()
    pil = Image.fromarray((imgs[1].transpose(1, 2, 0) * 255).round().astype(np.uint8))
    hwc = imgs[2].transpose(1, 2, 0).copy()  # numpy, channels last
    model = interpgram.Model(net, size=24, mean=MEAN, std=STD, classes=CLASSES, name="tiny")
    ui = interpgram.Interface(SPEC, model=model, inputs=[torch.from_numpy(imgs[0]), pil, hwc], cache=cache)
    return net, ui, ui.run(), [imgs[0], np.asarray(pil, dtype=np.float32).transpose(2, 0, 1) / 255.0, imgs[2]]


def test_module_in_memory_with_its_preprocessing_and_classes(tiny):
    net, ui, res, imgs = tiny
    assert res.numbers.classes == CLASSES and res.numbers.model == "tiny"
    assert res.numbers.inputs == ["tensor 0", "image 1", "tensor 2"]
    # the article's attribution, computed here by hand: Σ_c A·∂logit/∂A at conv2, after normalising
    x = (torch.from_numpy(np.stack(imgs)).float() - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    x.requires_grad_(True)  # interpgram froze the parameters (as every loaded model): a graph through x
    acts = {}
    h = net.conv2.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    try:
        logits = net(x)
    finally:
        h.remove()
    a = acts["a"]
    for k, cls in enumerate(CLASSES[1:], 1):
        (g,) = torch.autograd.grad(logits[:, k].sum(), a, retain_graph=True)
        want = (a * g).sum(1).detach().numpy()
        for i in range(3):
            np.testing.assert_allclose(res["attr"].sel(input=i, cls=cls).numpy(), want[i], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res["act"].sel(series=0).numpy(), a.mean(dim=(2, 3)).detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    logit = res["logits"].sel(input="image 1", series=0)
    assert logit.dims == ("cls",) and logit.labels("cls") == CLASSES
    np.testing.assert_allclose(logit.sel(cls="bird").numpy(), logits[1, 2].detach().numpy(), rtol=1e-5)
    assert "tiny" in ui.check() and "Capture" in ui.plan()


def test_editing_the_module_class_changes_its_cache_key(tiny):
    from interpgram.backends.models.base import from_module
    net = tiny[0]

    class Twin(TinyNet):
        def forward(self, x):
            return -super().forward(x)

    twin = Twin()
    twin.load_state_dict(net.state_dict())
    assert from_module(twin, size=24).digest != from_module(net, size=24).digest


def test_api_mistakes_say_what_to_pass(cache):
    with pytest.raises(interpgram.APIError, match=r"interpgram.Model\(module, size="):
        interpgram.Interface(SPEC, model=TinyNet()).check()
    model = interpgram.Model(TinyNet(), size=24, mean=MEAN, std=STD, classes=CLASSES)
    normalised = (torch.rand(3, 24, 24) - 0.5) / 0.2
    with pytest.raises(interpgram.APIError, match=r"inputs\[0\]: image values must be in \[0, 1\].*before the model's"):
        interpgram.Interface(SPEC, model=model, inputs=[normalised]).check()
    with pytest.raises(interpgram.APIError, match=r"inputs\[1\]: an image has 1 or 3 channels"):
        interpgram.Interface(SPEC, model=model, inputs=[torch.rand(3, 24, 24), torch.rand(5, 24, 24)]).check()
    with pytest.raises(interpgram.APIError, match=r"inputs\[0\]: input image not found"):
        interpgram.Interface(SPEC, model=model, inputs=["no-such.png"]).check()
    with pytest.raises(interpgram.APIError, match="three numbers"):
        interpgram.Model(TinyNet(), mean=(0.5,))
    with pytest.raises(interpgram.SpecError, match="missing the required key 'model'"):
        interpgram.Interface(SPEC, inputs=[torch.rand(3, 24, 24)]).check()


def test_model_reference_and_refs_as_inputs(cache):
    spec = yaml.safe_load(DEMO.read_text())
    del spec["model"], spec["input"], spec["layout"]
    spec["elements"] = {"magnitude": spec["elements"]["magnitude"]}
    res = interpgram.Interface(spec, model="builtin:shapes-cnn", inputs=["builtin:shapes/3-4", "builtin:shapes/10"],
                               cache=cache).run()
    assert res.numbers.inputs[2] == "shapes/test/10 (star)" and len(res.numbers.inputs) == 3
    assert res["magnitude"].values.dims == ("input", "series", "y", "x")


# ------------------------------------------------------------------ report, inline display, dashboard
def _section_specs(page: str) -> dict[str, dict]:
    return {m.group(1): json.loads(m.group(2)) for m in re.finditer(
        r'<section class="element" id="el-([^"]+)".*?<script type="application/json" class="spec">(.*?)</script>',
        page, flags=re.S)}


def test_report_is_the_cli_report(demo, cache, tmp_path):
    ui, res = demo
    page = ui.report(tmp_path / "api").read_text()
    cli = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "render", str(DEMO), "-o",
                          str(tmp_path / "cli"), "--cache-dir", str(cache), "--icon-steps", "2", "-q"],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    theirs = (tmp_path / "cli" / "index.html").read_text()
    ours = _section_specs(page)
    assert list(ours) == ["where", "versus", "channels", "groups", "magnitude", "upstream"]
    assert ours == _section_specs(theirs)
    assert re.search(r"<title>(.*?)</title>", page).group(1) == re.search(r"<title>(.*?)</title>", theirs).group(1)


def test_inline_display_is_the_report_offline(tiny):
    res = tiny[2]
    out = res._repr_html_()
    assert out.startswith('<iframe class="interpgram-report"') and 'sandbox="allow-scripts' in out
    page = html.unescape(re.search(r'srcdoc="(.*?)"></iframe>', out, flags=re.S).group(1))
    assert page == res.html() and page.startswith("<!DOCTYPE html>")
    srcs = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?([^\"' >]+)", page, flags=re.I)
    assert not [s for s in srcs if s.lower().startswith(("http:", "https:", "//"))], srcs
    assert "vegaEmbed" in page and len(page) > 500_000  # the Vega bundle itself is inlined
    assert set(_section_specs(page)) == {"attr-0", "attr-1", "attr-2", "act-0", "act-1", "act-2", "logits-0",
                                         "logits-1", "logits-2"}
    bundle = res._repr_mimebundle_()
    assert bundle["text/html"] == out and "attr" in bundle["text/plain"]


def test_serve_in_memory_model_from_a_thread(tiny):
    ui = tiny[1]
    served = ui.serve(port=0)
    try:
        assert served.url.startswith("http://127.0.0.1:")
        assert served.loaded.wait(120), "the dashboard's engine never finished loading the spec"
        _, good, error = served.engine.snapshot()
        assert error is None and good is not None
        assert good.prep.model.name == "tiny" and good.prep.inputs.names == ["tensor 0", "image 1", "tensor 2"]
        with urllib.request.urlopen(served.url, timeout=60) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        served.stop()
