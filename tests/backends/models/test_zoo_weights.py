"""torchvision: and timm: honour the spec's ``weights:`` file and ``labels:`` file (the zoos themselves
cannot be imported on this machine: torchvision needs another torch build, timm depends on it, so
the shared step is tested on a real module, real files, through the same function the sources call;
test_zoo_sources.py loads resnet18 through each source where the zoo imports, and tests the error
path where it does not)."""
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
