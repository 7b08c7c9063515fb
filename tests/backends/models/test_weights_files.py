"""Broken or wrong-shape weight files and labels files, through the real loaders: every one a
ModelSourceError naming the file and what is wrong (and, through the CLI, no traceback)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from interpgram.backends.models import ModelSourceError, load_model
from interpgram.backends.models.shapes_cnn import WEIGHTS, ShapesCNN

FACTORY = """
from torch import nn
def build():
    m = nn.Sequential()
    m.add_module("conv", nn.Conv2d(3, 6, 3, padding=1))
    m.add_module("pool", nn.AdaptiveAvgPool2d(1))
    m.add_module("flat", nn.Flatten())
    m.add_module("fc", nn.Linear(6, 4))
    return m, {"size": 32, "classes": ["w", "x", "y", "z"]}
"""


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


def _sd(**changes) -> dict[str, torch.Tensor]:
    sd = {k.replace("0.", "conv.").replace("3.", "fc."): v for k, v in _net().state_dict().items()}
    sd.update(changes)
    return {k: v for k, v in sd.items() if v is not None}


@pytest.fixture
def d(tmp_path):
    (tmp_path / "wfac.py").write_text(FACTORY)
    return tmp_path


def _load_factory(d, name):
    return load_model(f"file:{name}", factory="python:wfac:build", allow_code=True, base_dir=d)


def _truncate(path, keep=0.5):
    b = path.read_bytes()
    path.write_bytes(b[: int(len(b) * keep)])


# ----------------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("writer", ["zip", "legacy", "safetensors"])
def test_a_truncated_weights_file_says_truncated(d, writer):
    name = "w.safetensors" if writer == "safetensors" else "w.pt"
    if writer == "safetensors":
        save_file(_sd(), str(d / name))
    else:
        torch.save(_sd(), d / name, _use_new_zipfile_serialization=writer == "zip")
    assert _load_factory(d, name).classes == ["w", "x", "y", "z"]  # the whole file loads
    _truncate(d / name)
    with pytest.raises(ModelSourceError) as err:
        _load_factory(d, name)
    msg = str(err.value)
    assert str(d / name) in msg and ("truncated" in msg)


@pytest.mark.parametrize("content,why", [
    (b"", "is empty (0 bytes)"),
    (b"hello, I am a text file\n", "is not a PyTorch checkpoint or safetensors file"),
])
def test_a_file_that_is_no_checkpoint(d, content, why):
    for name in ("w.pt", "w.safetensors"):
        (d / name).write_bytes(content)
        with pytest.raises(ModelSourceError, match=re.escape(why)) as err:
            _load_factory(d, name)
        assert str(d / name) in str(err.value)


def test_the_format_is_read_from_the_bytes_not_the_name(d):
    save_file(_sd(), str(d / "really-safetensors.pt"))
    torch.save(_sd(), d / "really-torch.safetensors")
    a, b = _load_factory(d, "really-safetensors.pt"), _load_factory(d, "really-torch.safetensors")
    assert a.digest == b.digest


def test_a_training_checkpoint_is_named_as_such(d):
    torch.save({"state_dict": _sd(), "epoch": 7}, d / "ckpt.pt")
    with pytest.raises(ModelSourceError, match=r"not a flat state_dict.*training checkpoint: save "
                                               r"checkpoint\['state_dict'\] on its own"):
        _load_factory(d, "ckpt.pt")


# ----------------------------------------------------------------------------- keys and shapes
def test_missing_unexpected_and_misshapen_keys_are_listed(d):
    save_file(_sd(**{"fc.weight": torch.zeros(5, 6), "conv.bias": None, "extra.weight": torch.zeros(1)}),
              str(d / "w.safetensors"))
    with pytest.raises(ModelSourceError) as err:
        _load_factory(d, "w.safetensors")
    msg = str(err.value)
    assert f"{d / 'w.safetensors'} does not fit the factory's model (python:wfac:build)" in msg
    assert "1 missing keys ['conv.bias']" in msg and "1 unexpected keys ['extra.weight']" in msg
    assert "fc.weight: expected (4, 6) vs found (5, 6)" in msg


def test_a_wrapped_models_prefix_is_pointed_out(d):
    torch.save({f"module.{k}": v for k, v in _sd().items()}, d / "dp.pt")
    with pytest.raises(ModelSourceError, match="every key has the prefix 'module.'"):
        _load_factory(d, "dp.pt")


def test_python_model_with_wrong_weights(d):
    torch.save(_sd(**{"conv.weight": torch.zeros(6, 3, 5, 5)}), d / "w.pt")
    with pytest.raises(ModelSourceError, match=r"does not fit the model python:wfac:build builds: .*"
                                               r"conv.weight: expected \(6, 3, 3, 3\) vs found \(6, 3, 5, 5\)"):
        load_model("python:wfac:build", weights="w.pt", allow_code=True, base_dir=d)
    with pytest.raises(ModelSourceError, match=r"weights file .*absent.pt was not found"):
        load_model("python:wfac:build", weights="absent.pt", allow_code=True, base_dir=d)


def test_builtin_model_weights(tmp_path):
    other = ShapesCNN(widths=(16, 64, 128, 128, 256)).state_dict()
    save_file(other, str(tmp_path / "narrow.safetensors"))
    with pytest.raises(ModelSourceError, match=r"does not fit the weights of builtin:shapes-cnn: .*"
                                               r"conv1\.0\.weight: expected \(32, 3, 3, 3\) vs found \(16, 3, 3, 3\)"):
        load_model("builtin:shapes-cnn", weights="narrow.safetensors", base_dir=tmp_path)
    (tmp_path / "cut.safetensors").write_bytes(WEIGHTS.read_bytes()[:100_000])
    with pytest.raises(ModelSourceError, match=r"cut.safetensors is truncated"):
        load_model("builtin:shapes-cnn", weights="cut.safetensors", base_dir=tmp_path)
    torch.save(dict(ShapesCNN().state_dict()), tmp_path / "same.pt")  # a torch.save file of the right shapes loads
    assert load_model("builtin:shapes-cnn", weights="same.pt", base_dir=tmp_path).classes


def test_inceptionv1_weights(tmp_path):
    from interpgram.backends.models.inceptionv1 import InceptionV1
    sd = InceptionV1().state_dict()
    sd["mixed4d.conv_1x1.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ModelSourceError, match=r"bad.pth do not match lucid's InceptionV1 graph.*shape mismatches"):
        load_model("inceptionv1", weights="bad.pth", base_dir=tmp_path)
    _truncate(tmp_path / "bad.pth", 0.3)
    with pytest.raises(ModelSourceError, match=r"bad.pth is truncated"):
        load_model("inceptionv1", weights="bad.pth", base_dir=tmp_path)
    torch.save({"a": torch.zeros(2)}, tmp_path / "tiny.pth")
    with pytest.raises(ModelSourceError, match=r"missing keys"):
        load_model("inceptionv1", weights="tiny.pth", base_dir=tmp_path)


# ----------------------------------------------------------------------------- labels
def test_labels_files(d, tmp_path):
    save_file(_sd(), str(d / "w.safetensors"))
    with pytest.raises(ModelSourceError, match=r"labels file .*names.txt was not found"):
        load_model("file:w.safetensors", factory="python:wfac:build", labels="names.txt", allow_code=True, base_dir=d)
    (d / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ModelSourceError, match=r"labels file .*bin.txt is not UTF-8 text"):
        load_model("file:w.safetensors", factory="python:wfac:build", labels="bin.txt", allow_code=True, base_dir=d)
    (d / "names.txt").write_text("a\nb\n\nc\nd\n")
    m = load_model("file:w.safetensors", factory="python:wfac:build", labels="names.txt", allow_code=True, base_dir=d)
    assert m.classes == ["a", "b", "c", "d"]
    with pytest.raises(ModelSourceError, match=r"labels file .*absent.txt was not found"):
        load_model("inceptionv1", labels="absent.txt", base_dir=tmp_path)
    with pytest.raises(ModelSourceError, match=r"model.labels: .*names.txt has 5 lines; expected exactly 1008"):
        load_model("inceptionv1", labels="names.txt", base_dir=tmp_path)


# ----------------------------------------------------------------------------- through the CLI
def test_check_reports_a_broken_weights_file_without_a_traceback(tmp_path):
    (tmp_path / "cut.safetensors").write_bytes(WEIGHTS.read_bytes()[:5000])
    (tmp_path / "s.yaml").write_text(
        "interpgram: 1\nmodel: {source: builtin:shapes-cnn, weights: cut.safetensors}\ninput: builtin:shapes/1\n"
        "elements:\n  a:\n    content: {activation: {layer: conv3, atom: spatial}}\n    presentation: heatmap\n")
    r = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "check", str(tmp_path / "s.yaml")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cut.safetensors is truncated" in r.stderr
