"""``hf:``: Hugging Face transformers image classifiers, built here from small configs (real transformers
classes, random weights), written with ``save_pretrained`` into tmp_path and loaded back through
``load_model`` and the public Python API; nothing is downloaded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import interpgram
from interpgram.backends.cli import main
from interpgram.backends.models import load_model
from interpgram.backends.models.base import ModelSourceError
from interpgram.grammar import SpecError
from support import ROOT

from transformers import (BertConfig, ConvNextImageProcessorPil, ResNetConfig,  # noqa: E402 - the hf extra (in the test extra): missing, this module fails
                          ResNetForImageClassification, ViTConfig, ViTForImageClassification, ViTImageProcessorPil)

CLASSES = ["cat", "dog", "bird"]
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
STAGE = "resnet.encoder.stages.0"  # a conv stage: (8, 8, 8) on 32 px


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny ResNet with names and a ViT processor (exact 32 × 32 resize), a tiny ViT with a ConvNeXt
    processor (shortest edge 32), both written by save_pretrained."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    rcfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                        num_labels=3, id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)})
    resnet = ResNetForImageClassification(rcfg).eval()
    resnet.save_pretrained(root / "resnet")
    ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD).save_pretrained(root / "resnet")
    vcfg = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, num_labels=3, id2label=dict(enumerate(CLASSES)))
    vit = ViTForImageClassification(vcfg).eval()
    vit.save_pretrained(root / "vit")
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, image_mean=MEAN, image_std=STD).save_pretrained(root / "vit")
    return root, resnet, vit


def test_a_saved_folder_loads_with_its_processor_and_labels(saved):
    root, resnet, _ = saved
    m = load_model("hf:resnet", base_dir=root)  # relative to the spec's folder
    assert m.classes == CLASSES and m.name == "hf:resnet"
    p = m.preprocess
    assert p.size == (32, 32) and p.resize == "stretch" and p.value_range == (0.0, 1.0)
    np.testing.assert_allclose(p.mean, MEAN) and np.testing.assert_allclose(p.std, STD)
    assert not m.module.training and not any(q.requires_grad for q in m.module.parameters())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_array_equal(m.module(x).logits.numpy(), resnet(x).logits.numpy())
    assert m.layers()[STAGE] == (8, 8, 8) and m.layers()["classifier"] == (3,)


def test_the_specs_keys_and_labels_override_the_processor(saved, tmp_path):
    root, _, _ = saved
    (tmp_path / "names.txt").write_text("tabby\nterrier\nrobin\n")
    m = load_model(f"hf:{root / 'resnet'}", labels="names.txt", base_dir=tmp_path,
                   preprocess={"mean": [0.5, 0.5, 0.5], "resize": "pad"})
    assert m.classes == ["tabby", "terrier", "robin"]
    assert m.preprocess.mean == (0.5, 0.5, 0.5) and m.preprocess.std == tuple(STD) and m.preprocess.resize == "pad"
    assert m.digest != load_model(f"hf:{root / 'resnet'}").digest
    (tmp_path / "two.txt").write_text("a\nb\n")
    with pytest.raises(ModelSourceError, match=r"has 2 names, but hf:.* has 3 outputs"):
        load_model(f"hf:{root / 'resnet'}", labels="two.txt", base_dir=tmp_path)


def test_a_convnext_processor_is_a_cover_and_centre_crop_noted(saved):
    m = load_model(f"hf:{saved[0] / 'vit'}")
    assert m.preprocess.size == (32, 32) and m.preprocess.resize == "shorter"
    assert any("crop_pct 0.875" in n and "36 px" in n for n in m.notes), m.notes


def test_spatial_attribution_on_a_conv_stage_is_grad_times_act(saved):
    root, resnet, _ = saved
    spec = {"interpgram": 1, "elements": {
        "attr": {"content": {"attribution": {"from": {"layer": STAGE, "atom": "spatial"},
                                             "to": {"layer": "output", "select": ["dog", "bird"]}}},
                 "presentation": "heatmap"},
        "logits": {"content": {"activation": {"layer": "output", "atom": "channel"}}, "presentation": "bars"}}}
    rng = np.random.default_rng(0)
    imgs = [rng.random((3, 32, 32), dtype=np.float32) for _ in range(2)]
    res = interpgram.Interface(spec, model=f"hf:{root / 'resnet'}", inputs=[torch.from_numpy(i) for i in imgs],
                               cache=root / "cache").run()
    assert res.numbers.classes == CLASSES
    x = (torch.from_numpy(np.stack(imgs)) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    x.requires_grad_(True)
    acts = {}
    h = resnet.get_submodule(STAGE).register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    try:
        logits = resnet(x).logits
    finally:
        h.remove()
    a = acts["a"]
    for k in (1, 2):
        (g,) = torch.autograd.grad(logits[:, k].sum(), a, retain_graph=True)
        want = (a * g).sum(1).detach().numpy()
        for i in range(2):
            np.testing.assert_allclose(res["attr"].sel(input=i, cls=CLASSES[k]).numpy(), want[i], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res["logits"].sel(input=1, series=0).numpy(), logits[1].detach().numpy(), rtol=1e-5,
                               atol=1e-6)


def test_vit_layers_are_listed_token_layers_refused_at_check_and_logits_work(saved, tmp_path, capsys):
    root, _, vit = saved
    # the default listing: the blocks inside ``vit`` (whose forward returns a ModelOutput, no tensor) and the head
    assert main(["layers", f"hf:{root / 'vit'}"]) == 0
    out = capsys.readouterr().out
    assert [ln.split()[0] for ln in out.splitlines()[2:9]] == ["input", "vit.embeddings", "vit.layers.0",
                                                               "vit.layers.1", "vit.layernorm", "classifier", "output"]
    assert "(17, 16)" in out and "vit.layers.0.mlp.fc1" not in out
    assert main(["layers", f"hf:{root / 'vit'}", "--all"]) == 0
    out = capsys.readouterr().out
    assert "vit.layers.0.mlp.fc1" in out and "(17, 32)" in out and "(3,)" in out
    (tmp_path / "vit.yaml").write_text(textwrap.dedent(f"""\
        interpgram: 1
        model: hf:{root / 'vit'}
        input: builtin:shapes/2
        elements:
          tokens:
            content: {{activation: {{layer: vit.layers.0.mlp.fc1, atom: channel}}}}
            presentation: bars
        """))
    with pytest.raises(SpecError) as e:
        interpgram.Interface(tmp_path / "vit.yaml").check()
    (msg,) = [str(d) for d in e.value.diagnostics]
    assert msg.startswith(f"{tmp_path / 'vit.yaml'}:6:") and "(17, 32)" in msg and "token layer" in msg
    spec = {"interpgram": 1, "elements": {
        "logits": {"content": {"activation": {"layer": "output", "atom": "channel"}}, "presentation": "bars"}}}
    img = torch.rand(3, 32, 32)
    res = interpgram.Interface(spec, model=f"hf:{root / 'vit'}", inputs=[img], cache=tmp_path / "cache").run()
    x = (img[None] - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = vit(x).logits[0].numpy()
    got = res["logits"].sel(input=0, series=0)
    assert got.labels("cls") == CLASSES
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_a_pickle_checkpoint_loads_tensors_only(saved, tmp_path):
    root, resnet, _ = saved
    (tmp_path / "bin").mkdir()
    resnet.config.save_pretrained(tmp_path / "bin")
    torch.save(resnet.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    m = load_model(f"hf:{tmp_path / 'bin'}")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_array_equal(m.module(x).logits.numpy(), resnet(x).logits.numpy())
    (tmp_path / "evil").mkdir()
    resnet.config.save_pretrained(tmp_path / "evil")
    torch.save({"w": torch.zeros(1), "obj": ModelSourceError("runs on load")}, tmp_path / "evil" / "pytorch_model.bin")
    with pytest.raises(ModelSourceError, match=r"the model does not load: .*[Ww]eights only"):
        load_model(f"hf:{tmp_path / 'evil'}")


def test_a_weights_file_replaces_the_saved_weights_key_by_key(saved, tmp_path):
    root, resnet, _ = saved
    torch.manual_seed(5)
    tuned = ResNetForImageClassification(resnet.config).eval()
    save_file({k: v.contiguous() for k, v in tuned.state_dict().items()}, str(tmp_path / "tuned.safetensors"))
    m = load_model(f"hf:{root / 'resnet'}", weights="tuned.safetensors", base_dir=tmp_path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_array_equal(m.module(x).logits.numpy(), tuned(x).logits.numpy())
    save_file({"classifier.1.weight": torch.zeros(3, 5)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelSourceError, match=r"does not fit the model hf:.*'s config describes"):
        load_model(f"hf:{root / 'resnet'}", weights="other.safetensors", base_dir=tmp_path)
    with pytest.raises(ModelSourceError, match="model.factory is for file:"):
        load_model(f"hf:{root / 'resnet'}", factory="python:x:y")


def test_weights_that_do_not_fit_are_refused_not_filled_at_random(saved, tmp_path):
    root, resnet, _ = saved
    (tmp_path / "headless").mkdir()
    resnet.config.save_pretrained(tmp_path / "headless")
    sd = {k: v.contiguous() for k, v in resnet.state_dict().items() if not k.startswith("classifier")}
    save_file(sd, str(tmp_path / "headless" / "model.safetensors"))
    with pytest.raises(ModelSourceError, match=r"do not fit .* 2 missing keys \['classifier.1.bias', 'classifier.1.weight'\]"):
        load_model(f"hf:{tmp_path / 'headless'}")


CONFIG_PY = '''
from transformers import PretrainedConfig

class TinyConfig(PretrainedConfig):
    model_type = "interpgram-tiny"

    def __init__(self, width=4, **kw):
        self.width = width
        super().__init__(**kw)
'''
MODEL_PY = '''
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
from .configuration_tiny import TinyConfig

class TinyNet(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.conv = nn.Conv2d(3, config.width, 3, padding=1)
        self.head = nn.Linear(config.width, config.num_labels)
        self.post_init()

    def forward(self, pixel_values, **kw):
        return ImageClassifierOutput(logits=self.head(self.conv(pixel_values).relu().mean((2, 3))))
'''


def test_custom_code_needs_allow_code(tmp_path):
    d = tmp_path / "custom"
    d.mkdir()
    (d / "configuration_tiny.py").write_text(CONFIG_PY)
    (d / "modeling_tiny.py").write_text(MODEL_PY)
    (d / "config.json").write_text(json.dumps({
        "model_type": "interpgram-tiny", "width": 4, "num_labels": 2, "id2label": {"0": "yes", "1": "no"},
        "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig",
                     "AutoModelForImageClassification": "modeling_tiny.TinyNet"}}))
    torch.manual_seed(1)
    sd = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.randn(4), "head.weight": torch.randn(2, 4),
          "head.bias": torch.randn(2)}
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(ModelSourceError, match=r"runs custom Python code .* --allow-code"):
        load_model(f"hf:{d}")
    m = load_model(f"hf:{d}", allow_code=True)
    assert m.classes == ["yes", "no"] and torch.equal(m.module.conv.weight, sd["conv.weight"])
    assert m.layers()["conv"] == (4, 224, 224)  # no processor, no image_size: the default size, said in a note
    assert any("no preprocessor_config.json" in n for n in m.notes)


def test_mistakes_are_clear_errors(saved, tmp_path):
    with pytest.raises(ModelSourceError, match=r"no folder .*no-such/dir/here .* not a Hugging Face hub id"):
        load_model("hf:no-such/dir/here", base_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="has no config.json, so it is not a folder written by save_pretrained"):
        load_model(f"hf:{tmp_path / 'empty'}")
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(ModelSourceError, match="is a file; hf: takes the folder"):
        load_model(f"hf:{tmp_path / 'weights.safetensors'}")
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(
        tmp_path / "bert")
    with pytest.raises(ModelSourceError, match="is a 'bert' model, not an image classifier"):
        load_model(f"hf:{tmp_path / 'bert'}")


def test_a_hub_id_offline_is_a_clear_error(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    r = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "layers", "hf:google/vit-base-patch16-224"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "hf:google/vit-base-patch16-224" in r.stderr and "a hub id" in r.stderr and "offline" in r.stderr
