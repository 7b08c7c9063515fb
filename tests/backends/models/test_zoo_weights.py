"""torchvision: and timm: honour the spec's ``weights:`` file and ``labels:`` file (the zoos themselves
cannot be imported on this machine: torchvision needs another torch build, timm depends on it, so
the shared step is tested on a real module, real files, through the same function the sources call)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from interpgram.backends.models.base import ModelSourceError, SourceContext, zoo_weights_and_labels


def ctx(tmp_path, **kw):
    return SourceContext("resnet18", base_dir=tmp_path, **kw)


def test_a_weights_file_is_loaded_key_by_key(tmp_path):
    src, dst = nn.Linear(4, 3), nn.Linear(4, 3)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    classes = zoo_weights_and_labels(ctx(tmp_path, weights="w.safetensors"), dst, ["a", "b", "c"], "timm:x")
    assert classes == ["a", "b", "c"]
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)


def test_a_weights_file_of_another_shape_names_the_keys(tmp_path):
    save_file(nn.Linear(5, 3).state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelSourceError, match=r"weight: expected \(3, 4\) vs found \(3, 5\)"):
        zoo_weights_and_labels(ctx(tmp_path, weights="w.safetensors"), nn.Linear(4, 3), ["a", "b", "c"],
                               "torchvision:x")


def test_labels_replace_the_names_and_must_match_the_outputs(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    assert zoo_weights_and_labels(ctx(tmp_path, labels="labels.txt"), nn.Linear(4, 3), ["c0", "c1", "c2"],
                                  "timm:x") == ["cat", "dog", "bird"]
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    with pytest.raises(ModelSourceError, match="has 2 names, but timm:x has 3 outputs"):
        zoo_weights_and_labels(ctx(tmp_path, labels="two.txt"), nn.Linear(4, 3), ["c0", "c1", "c2"], "timm:x")


@pytest.mark.parametrize("ref,module,extra", [("timm:resnet18", "timm", "interpgram[timm]"),
                                               ("torchvision:resnet18", "torchvision", "interpgram[torchvision]")])
def test_without_the_zoo_the_error_says_which_extra(ref, module, extra):
    from interpgram.backends.models import load_model
    try:
        __import__(module)
    except Exception:  # noqa: BLE001 - not importable here, for whatever reason: the case under test
        pass
    else:
        pytest.skip(f"{module} imports on this machine, so the missing-extra message cannot be shown")
    with pytest.raises(ModelSourceError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        load_model(ref)
