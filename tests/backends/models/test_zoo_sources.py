"""torchvision:resnet18 and timm:resnet18 through load_model with a weights file and a labels file.

Where the zoo imports, the test builds its resnet18, saves a random state_dict as safetensors, and
checks that the source loads it (nothing downloaded): the class names, and a forward pass equal to the
module the weights came from. Where it does not import (these machines: neither package is installed,
and torchvision wheels are built for one torch), the same call must fail with a message that names
the extra to install and the import error itself, and the CLI must say it without a traceback. Either
way the test asserts something real."""
from __future__ import annotations

import importlib

import pytest
import torch
from safetensors.torch import save_file

from interpgram.backends.cli import main
from interpgram.backends.models import load_model
from interpgram.backends.models.base import ModelSourceError
from interpgram.backends.models.efficientnet_lite import imagenet_classes

ZOOS = ["torchvision", "timm"]


def _import_error(module: str):
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - ImportError, or a torchvision built for another torch (RuntimeError, ...)
        return e
    return None


def _resnet18(zoo: str, num_classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if zoo == "torchvision":
        from torchvision.models import resnet18
        net = resnet18(num_classes=num_classes)
    else:
        import timm
        net = timm.create_model("resnet18", pretrained=False, num_classes=num_classes)
    for m in net.modules():  # running statistics that are not the identity, so eval mode is seen in the numbers
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("zoo", ZOOS)
def test_resnet18_with_a_weights_file_and_labels(zoo, tmp_path, capsys):
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    ref = f"{zoo}:resnet18"
    err = _import_error(zoo)
    if err is not None:  # the error path, for real: what to install, and why it failed here
        with pytest.raises(ModelSourceError) as e:
            load_model(ref, weights="w.safetensors", labels="labels.txt", base_dir=tmp_path)
        assert f"pip install 'interpgram[{zoo}]'" in str(e.value)
        assert f"{type(err).__name__}: {err}" in str(e.value)
        assert main(["layers", ref]) == 1
        out = capsys.readouterr()
        assert f"interpgram[{zoo}]" in out.err and "Traceback" not in out.err
        return
    net = _resnet18(zoo, 3)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    m = load_model(ref, weights="w.safetensors", labels="labels.txt", base_dir=tmp_path)
    assert m.classes == ["cat", "dog", "bird"]
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(m.module(x), net(x))
    assert m.preprocess.size == (224, 224)
    # a 1,000-class weights file without labels: the ImageNet names
    big = _resnet18(zoo, 1000)
    save_file({k: v.contiguous() for k, v in big.state_dict().items()}, str(tmp_path / "big.safetensors"))
    m = load_model(ref, weights="big.safetensors", base_dir=tmp_path)
    assert len(m.classes) == 1000 and m.classes[0] == imagenet_classes()[0]
    with torch.no_grad():
        torch.testing.assert_close(m.module(x[:1]), big(x[:1]))
    # a weights file of another architecture: the keys that differ, not a silent partial load
    save_file({"fc.weight": torch.zeros(3, 7)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelSourceError, match="does not fit"):
        load_model(ref, weights="other.safetensors", labels="labels.txt", base_dir=tmp_path)
