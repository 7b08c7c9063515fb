"""Model sources through the real loading code, on weights the tests make themselves."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from interpgram.backends.models import SOURCES, ModelSourceError, load_model

FACTORY = """
import torch
from torch import nn
def build():
    m = nn.Sequential()
    m.add_module("conv", nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()))
    m.add_module("pool", nn.AdaptiveAvgPool2d(1))
    m.add_module("flat", nn.Flatten())
    m.add_module("fc", nn.Linear(6, 4))
    return m, {"size": 40, "classes": ["w", "x", "y", "z"], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
"""


@pytest.fixture
def factory_dir(tmp_path):
    (tmp_path / "fac.py").write_text(FACTORY)
    return tmp_path


def _built(factory_dir):
    import importlib.util
    spec = importlib.util.spec_from_file_location("fac_copy", factory_dir / "fac.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(3)
    return mod.build()[0]


def test_registered_sources():
    assert {"builtin", "inceptionv1", "torchvision", "timm", "file", "python"} <= set(SOURCES)


def test_builtin_layers_and_preprocess():
    m = load_model("builtin:shapes-cnn")
    layers = m.layers()
    assert [l for l in layers if "." not in l][:5] == ["conv1", "conv2", "pool2", "conv3", "pool3"]
    assert layers["conv3"] == (128, 16, 16) and layers["conv5"] == (256, 4, 4)
    assert m.preprocess.size == (64, 64) and len(m.classes) == 10
    assert not any(p.requires_grad for p in m.module.parameters())


def test_state_dict_with_factory(factory_dir):
    net = _built(factory_dir)
    torch.save(net.state_dict(), factory_dir / "w.pt")
    save_file(net.state_dict(), str(factory_dir / "w.safetensors"))
    x = torch.rand(2, 3, 40, 40)
    outs = []
    for f in ("w.pt", "w.safetensors"):
        m = load_model(f"file:{f}", factory="python:fac:build", allow_code=True, base_dir=factory_dir)
        assert m.classes == ["w", "x", "y", "z"] and m.preprocess.size == (40, 40)
        outs.append(m.module(x))
    torch.testing.assert_close(outs[0], net.eval()(x))
    torch.testing.assert_close(outs[1], outs[0])
    a = load_model("file:w.pt", factory="python:fac:build", allow_code=True, base_dir=factory_dir)
    torch.save({k: v + 1 for k, v in net.state_dict().items()}, factory_dir / "w2.pt")
    b = load_model("file:w2.pt", factory="python:fac:build", allow_code=True, base_dir=factory_dir)
    assert a.digest != b.digest  # cache keys follow the weights


def test_factory_needs_permission(factory_dir):
    torch.save(_built(factory_dir).state_dict(), factory_dir / "w.pt")
    with pytest.raises(ModelSourceError, match="--allow-code"):
        load_model("file:w.pt", factory="python:fac:build", base_dir=factory_dir)


def test_torchscript_file(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    torch.jit.script(net).save(str(tmp_path / "net.pt"))
    # a program: only with consent; then refused clearly (no forward hooks on ScriptModules)
    with pytest.raises(ModelSourceError, match="TorchScript archive, which is a program.*--allow-code"):
        load_model("file:net.pt", base_dir=tmp_path)
    with pytest.raises(ModelSourceError, match="forward hooks"):
        load_model("file:net.pt", base_dir=tmp_path, allow_code=True)


def test_mismatched_state_dict(factory_dir):
    torch.save({"conv.0.weight": torch.zeros(1)}, factory_dir / "bad.pt")
    with pytest.raises(ModelSourceError, match="does not fit the factory's model"):
        load_model("file:bad.pt", factory="python:fac:build", allow_code=True, base_dir=factory_dir)


def test_pickle_with_code_is_refused(factory_dir):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"w": Evil()}, factory_dir / "evil.pt")
    with pytest.raises(ModelSourceError, match="weights_only=True refused it"):
        load_model("file:evil.pt", factory="python:fac:build", allow_code=True, base_dir=factory_dir)


def test_python_factory_errors(factory_dir):
    with pytest.raises(ModelSourceError, match="has no 'biuld'.*did you mean 'build'"):
        load_model("python:fac:biuld", allow_code=True, base_dir=factory_dir)
    with pytest.raises(ModelSourceError, match="cannot import 'nothere'"):
        load_model("python:nothere:build", allow_code=True, base_dir=factory_dir)


def test_inceptionv1_without_weights_says_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("INTERPGRAM_INCEPTIONV1_WEIGHTS", raising=False)
    from interpgram.backends.models import inceptionv1 as iv1
    monkeypatch.setattr(iv1, "WEIGHTS_URL", "http://127.0.0.1:9/inception5h.pth")  # a closed port: offline
    with pytest.raises(ModelSourceError, match="INTERPGRAM_INCEPTIONV1_WEIGHTS"):
        load_model("inceptionv1")


def test_inceptionv1_from_a_weights_file(tmp_path):
    from interpgram.backends.models.inceptionv1 import INTERNAL_TO_PUBLISHED, InceptionV1
    torch.manual_seed(0)
    net = InceptionV1()
    sd = {INTERNAL_TO_PUBLISHED.get(k, k): v for k, v in net.state_dict().items()}
    torch.save(sd, tmp_path / "inception5h.pth")
    m = load_model("inceptionv1", weights=str(tmp_path / "inception5h.pth"))
    assert m.layers()["mixed4d"] == (528, 14, 14) and len(m.classes) == 1008
    assert m.preprocess.value_range == (-117.0, 138.0)
