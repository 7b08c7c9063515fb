"""InceptionV1 ("GoogLeNet", lucid's ``inception5h`` graph) in PyTorch.

This is the network the Distill articles (Feature Visualization, Building Blocks,
Activation Atlas) were written against: lucid's ``modelzoo.vision_models.InceptionV1``.
It is *not* torchvision's GoogLeNet (that one has BatchNorm, a 3x3 conv in the
"5x5" branch, 1000 classes and 512 channels in inception4a; its channel indices do
not carry over).

Graph (lucid node names are the module paths here)::

    conv2d0 (7x7/2) -> maxpool0 -> localresponsenorm0 -> conv2d1 (1x1) -> conv2d2 (3x3)
    -> localresponsenorm1 -> maxpool1 -> mixed3a -> mixed3b -> maxpool4
    -> mixed4a .. mixed4e -> maxpool10 -> mixed5a -> mixed5b -> avgpool0
    -> softmax2_pre_activation (linear 1024 -> 1008 logits)

Every ``conv2d*`` / ``mixed*`` module returns its *post-ReLU* activation, exactly
the tensor lucid calls by that name, so a forward hook on ``mixed4d`` sees
``(N, 528, 14, 14)`` at a 224x224 input.  Pre-ReLU tensors are the outputs of the
``conv`` submodules (``conv2d0.conv``, ``mixed4d.conv_3x3`` ...); see
:data:`LUCID_NODE_TO_MODULE`.

Faithfulness notes
------------------
* Padding is TensorFlow ``SAME``, computed from the actual input size on every call
  (extra pixel on the bottom/right when the total is odd), for convs (zeros) and max
  pools (-inf, i.e. the padding never wins).  At 224 this gives conv2d0 a (2, 3)
  pad and the stride-2 pools a (0, 1) pad.
* Local response normalisation follows ``tf.nn.local_response_normalization`` with
  the parameters stored in lucid's graph for ``localresponsenorm0/1``:
  ``depth_radius=5, bias=2.0, alpha=1e-4, beta=0.5``, i.e.
  ``x / (2 + 1e-4 * sum_{|c'-c|<=5} x_c'^2) ** 0.5``.  (PyTorch's
  ``nn.LocalResponseNorm`` divides alpha by the window size; the MMdnn-converted
  port used by lucent kept ``size=9, k=1`` and is wrong on both counts -- lucent
  PR #51, captum PR #621.)
* Plain, separate, non-in-place ``nn.ReLU`` modules: gradients are the true
  gradients.  There is no "redirected ReLU" here (lucent enables one permanently
  by default); if a feature-visualisation recipe wants it, it must add it itself.
* ``avgpool0`` is a global average pool.  Lucid's graph uses a 7x7 VALID average
  pool, which at the 224 input (mixed5b is 7x7) is the very same number.  At other
  sizes lucid's graph would produce an (H-6)x(W-6) grid of pooled vectors (and a
  meaningless reshape); here the classifier always sees one global average, so
  logits exist for any input size.  Only 224 reproduces lucid's logits.
* ``forward`` returns the 1008 logits (lucid's ``softmax2_pre_activation``); apply
  a softmax yourself for probabilities.  Classes 0 and 1001-1007 are "dummy"
  outputs of the original training setup (lucid issue #140).

Input: NCHW float RGB in lucid's value range ``(-117, 138)``, i.e.
``x01 * 255 - 117`` for an image in [0, 1] (see :func:`to_model_input`).
Any spatial size works (lucid's ``forget_xy_shape``); 224 is the trained size.

Weights: :func:`load_inceptionv1` reads the PyTorch port of lucid's weights that
lucent downloads (``inception5h.pth``, flat key names such as
``mixed4d_3x3_pre_relu_conv.weight``); :data:`PUBLISHED_TO_INTERNAL` maps those
names onto this module tree.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from interpgram.backends.files import path_problem
from interpgram.backends.models.base import LOAD_ERRORS, sniff_tensor_file

__all__ = [
    "INPUT_RANGE",
    "INPUT_SIZE",
    "NUM_CLASSES",
    "LAYER_DEPTHS",
    "MIXED_LAYERS",
    "WEIGHTS_URL",
    "WEIGHTS_GIT_BLOB",
    "git_blob_id",
    "WEIGHTS_ENV_VAR",
    "LABELS_ENV_VAR",
    "WEIGHTS_FILENAME",
    "LABELS_FILENAME",
    "BUNDLED_LABELS",
    "UNUSED",
    "PUBLISHED_TO_INTERNAL",
    "INTERNAL_TO_PUBLISHED",
    "LUCID_NODE_TO_MODULE",
    "InceptionV1",
    "InceptionBlock",
    "ConvReLU",
    "Conv2dSame",
    "MaxPool2dSame",
    "LocalResponseNorm",
    "tf_same_padding",
    "to_model_input",
    "InceptionV1WeightsError",
    "WeightsUnavailable",
    "WeightsFormatError",
    "WeightsMismatch",
    "default_weights_path",
    "read_state_dict",
    "to_internal_state_dict",
    "load_inceptionv1",
    "load_labels",
]

# --------------------------------------------------------------------------- constants

#: lucid's ``image_value_range`` for InceptionV1: ``x01 * 255 - 117``.
INPUT_RANGE: tuple[float, float] = (-117.0, 138.0)
#: The size the network was trained at (and the only size where lucid's classifier applies).
INPUT_SIZE: int = 224
NUM_CLASSES: int = 1008

#: Channel depth of every lucid layer name that is a module path here.
LAYER_DEPTHS: dict[str, int] = {
    "conv2d0": 64,
    "conv2d1": 64,
    "conv2d2": 192,
    "mixed3a": 256,
    "mixed3b": 480,
    "mixed4a": 508,
    "mixed4b": 512,
    "mixed4c": 512,
    "mixed4d": 528,
    "mixed4e": 832,
    "mixed5a": 832,
    "mixed5b": 1024,
    "softmax2_pre_activation": NUM_CLASSES,
}

# name: (in, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool reduce), lucid's graph.
_BLOCKS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "mixed3a": (192, 64, 96, 128, 16, 32, 32),
    "mixed3b": (256, 128, 128, 192, 32, 96, 64),
    "mixed4a": (480, 192, 96, 204, 16, 48, 64),
    "mixed4b": (508, 160, 112, 224, 24, 64, 64),
    "mixed4c": (512, 128, 128, 256, 24, 64, 64),
    "mixed4d": (512, 112, 144, 288, 32, 64, 64),
    "mixed4e": (528, 256, 160, 320, 32, 128, 128),
    "mixed5a": (832, 256, 160, 320, 48, 128, 128),
    "mixed5b": (832, 384, 192, 384, 48, 128, 128),
}
MIXED_LAYERS: tuple[str, ...] = tuple(_BLOCKS)

# Parameters of lucid's LRN nodes (both localresponsenorm0 and localresponsenorm1).
_LRN = dict(depth_radius=5, bias=2.0, alpha=1e-4, beta=0.5)

#: The PyTorch port of lucid's weights that lucent (greentfrapp/lucent,
#: lucent/modelzoo/inceptionv1/InceptionV1.py, ``model_urls['inceptionv1']``) downloads.
WEIGHTS_URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"
#: the published file's identity: its git blob id in that repository (``git hash-object inception5h.pth``,
#: SHA-1 of ``b"blob <size>\0" + bytes``), unchanged since commit 3903934 "Fixed the Inception5h model"
#: (2020-04-10); no sha256 is published. A download that does not have it is refused.
WEIGHTS_GIT_BLOB = "119f77db85c8352960933e025312b507d9a96ed7"


def git_blob_id(path: Path) -> str:
    """``git hash-object`` of a file: the SHA-1 of ``b"blob <size>\0"`` followed by its bytes."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
WEIGHTS_FILENAME = "inception5h.pth"
WEIGHTS_ENV_VAR = "INTERPGRAM_INCEPTIONV1_WEIGHTS"
LABELS_ENV_VAR = "INTERPGRAM_INCEPTIONV1_LABELS"
LABELS_FILENAME = "labels.txt"
_DEFAULT_CACHE_DIR = "~/.cache/interpgram"

#: the label strings that ship with inception5h.zip (``imagenet_comp_graph_label_strings.txt``): 1,001 names,
#: ``dummy`` first, one per logit in order; logits 1001-1007 have no name there (the graph pads to 1,008)
BUNDLED_LABELS = Path(__file__).resolve().parent / "weights" / "inceptionv1_labels.txt"
#: the names :func:`load_labels` gives the logits the label list does not name
UNUSED = tuple(f"unused {i}" for i in range(1001, NUM_CLASSES))

# ----------------------------------------------------------------------------- layers


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's ``SAME`` for one spatial dimension.

    ``out = ceil(size / stride)``; the total pad is whatever makes the last window fit,
    and an odd total puts the extra pixel *after* (bottom/right).
    """
    out = -(-size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` zero padding computed per input size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class MaxPool2dSame(nn.Module):
    """Max pooling with TensorFlow ``SAME`` padding (padded cells are -inf, never selected)."""

    def __init__(self, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_padding(x.shape[-2], self.kernel_size, self.stride)
        left, right = tf_same_padding(x.shape[-1], self.kernel_size, self.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


class LocalResponseNorm(nn.Module):
    """``tf.nn.local_response_normalization`` (TensorFlow's parameterisation).

    ``out[:, c] = x[:, c] / (bias + alpha * sum_{c' in [c-r, c+r]} x[:, c']**2) ** beta``
    with the window clipped at the channel ends.  Unlike ``torch.nn.LocalResponseNorm``,
    alpha is *not* divided by the window size.
    """

    def __init__(self, depth_radius: int, bias: float, alpha: float, beta: float):
        super().__init__()
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.depth_radius
        channels = x.shape[1]
        squared = F.pad(x * x, (0, 0, 0, 0, r, r))  # zero channels on both ends
        sqr_sum = squared[:, 0:channels]
        for offset in range(1, 2 * r + 1):
            sqr_sum = sqr_sum + squared[:, offset : offset + channels]
        return x / (self.bias + self.alpha * sqr_sum).pow(self.beta)

    def extra_repr(self) -> str:
        return f"depth_radius={self.depth_radius}, bias={self.bias}, alpha={self.alpha}, beta={self.beta}"


class ConvReLU(nn.Module):
    """A SAME conv followed by its own ReLU; the module output is the post-ReLU tensor."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv = Conv2dSame(in_channels, out_channels, kernel_size, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class InceptionBlock(nn.Module):
    """One lucid ``mixedXY`` block; returns concat(1x1, 3x3, 5x5, pool_reduce), post-ReLU.

    Submodule outputs match lucid's nodes: ``conv_1x1`` = ``mixedXY_1x1_pre_relu``,
    ``relu_1x1`` = ``mixedXY_1x1``, ``pool`` = ``mixedXY_pool``, and so on.
    """

    def __init__(self, in_ch: int, c1x1: int, c3x3_bottleneck: int, c3x3: int,
                 c5x5_bottleneck: int, c5x5: int, c_pool_reduce: int):
        super().__init__()
        self.conv_1x1 = Conv2dSame(in_ch, c1x1, 1)
        self.relu_1x1 = nn.ReLU()
        self.conv_3x3_bottleneck = Conv2dSame(in_ch, c3x3_bottleneck, 1)
        self.relu_3x3_bottleneck = nn.ReLU()
        self.conv_3x3 = Conv2dSame(c3x3_bottleneck, c3x3, 3)
        self.relu_3x3 = nn.ReLU()
        self.conv_5x5_bottleneck = Conv2dSame(in_ch, c5x5_bottleneck, 1)
        self.relu_5x5_bottleneck = nn.ReLU()
        self.conv_5x5 = Conv2dSame(c5x5_bottleneck, c5x5, 5)
        self.relu_5x5 = nn.ReLU()
        self.pool = MaxPool2dSame(3, 1)
        self.conv_pool_reduce = Conv2dSame(in_ch, c_pool_reduce, 1)
        self.relu_pool_reduce = nn.ReLU()
        self.out_channels = c1x1 + c3x3 + c5x5 + c_pool_reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.relu_1x1(self.conv_1x1(x))
        b3 = self.relu_3x3(self.conv_3x3(self.relu_3x3_bottleneck(self.conv_3x3_bottleneck(x))))
        b5 = self.relu_5x5(self.conv_5x5(self.relu_5x5_bottleneck(self.conv_5x5_bottleneck(x))))
        bp = self.relu_pool_reduce(self.conv_pool_reduce(self.pool(x)))
        return torch.cat([b1, b3, b5, bp], dim=1)


class InceptionV1(nn.Module):
    """Lucid's InceptionV1 graph; module paths are lucid's layer names.

    ``forward(x)`` takes NCHW RGB in :data:`INPUT_RANGE` and returns ``(N, 1008)`` logits.
    Construct with random weights; use :func:`load_inceptionv1` for the published ones.
    """

    input_range = INPUT_RANGE
    input_size = INPUT_SIZE
    num_classes = NUM_CLASSES

    def __init__(self) -> None:
        super().__init__()
        self.conv2d0 = ConvReLU(3, 64, 7, stride=2)
        self.maxpool0 = MaxPool2dSame(3, 2)
        self.localresponsenorm0 = LocalResponseNorm(**_LRN)
        self.conv2d1 = ConvReLU(64, 64, 1)
        self.conv2d2 = ConvReLU(64, 192, 3)
        self.localresponsenorm1 = LocalResponseNorm(**_LRN)
        self.maxpool1 = MaxPool2dSame(3, 2)
        self.mixed3a = InceptionBlock(*_BLOCKS["mixed3a"])
        self.mixed3b = InceptionBlock(*_BLOCKS["mixed3b"])
        self.maxpool4 = MaxPool2dSame(3, 2)
        self.mixed4a = InceptionBlock(*_BLOCKS["mixed4a"])
        self.mixed4b = InceptionBlock(*_BLOCKS["mixed4b"])
        self.mixed4c = InceptionBlock(*_BLOCKS["mixed4c"])
        self.mixed4d = InceptionBlock(*_BLOCKS["mixed4d"])
        self.mixed4e = InceptionBlock(*_BLOCKS["mixed4e"])
        self.maxpool10 = MaxPool2dSame(3, 2)
        self.mixed5a = InceptionBlock(*_BLOCKS["mixed5a"])
        self.mixed5b = InceptionBlock(*_BLOCKS["mixed5b"])
        self.avgpool0 = nn.AdaptiveAvgPool2d(1)
        self.softmax2_pre_activation = nn.Linear(1024, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"InceptionV1 expects an NCHW RGB batch of shape (N, 3, H, W) in the value range "
                f"{INPUT_RANGE} (x01 * 255 - 117); got shape {tuple(x.shape)}"
            )
        x = self.conv2d0(x)
        x = self.maxpool0(x)
        x = self.localresponsenorm0(x)
        x = self.conv2d1(x)
        x = self.conv2d2(x)
        x = self.localresponsenorm1(x)
        x = self.maxpool1(x)
        x = self.mixed3a(x)
        x = self.mixed3b(x)
        x = self.maxpool4(x)
        x = self.mixed4a(x)
        x = self.mixed4b(x)
        x = self.mixed4c(x)
        x = self.mixed4d(x)
        x = self.mixed4e(x)
        x = self.maxpool10(x)
        x = self.mixed5a(x)
        x = self.mixed5b(x)
        x = torch.flatten(self.avgpool0(x), 1)
        return self.softmax2_pre_activation(x)


def to_model_input(x01: torch.Tensor) -> torch.Tensor:
    """Map an RGB image batch in [0, 1] to lucid's InceptionV1 input range (-117, 138)."""
    low, high = INPUT_RANGE
    return x01 * (high - low) + low


# --------------------------------------------------------------------- name mappings


def _build_name_maps() -> tuple[dict[str, str], dict[str, str]]:
    published: dict[str, str] = {}
    nodes: dict[str, str] = {}
    for stem in ("conv2d0", "conv2d1", "conv2d2"):
        for p in ("weight", "bias"):
            published[f"{stem}_pre_relu_conv.{p}"] = f"{stem}.conv.{p}"
        nodes[stem] = stem
        nodes[f"{stem}_pre_relu"] = f"{stem}.conv"
    for name in ("maxpool0", "localresponsenorm0", "localresponsenorm1", "maxpool1",
                 "maxpool4", "maxpool10", "avgpool0"):
        nodes[name] = name
    for block in MIXED_LAYERS:
        nodes[block] = block
        for branch in ("1x1", "3x3_bottleneck", "3x3", "5x5_bottleneck", "5x5", "pool_reduce"):
            for p in ("weight", "bias"):
                published[f"{block}_{branch}_pre_relu_conv.{p}"] = f"{block}.conv_{branch}.{p}"
            nodes[f"{block}_{branch}_pre_relu"] = f"{block}.conv_{branch}"
            nodes[f"{block}_{branch}"] = f"{block}.relu_{branch}"
        nodes[f"{block}_pool"] = f"{block}.pool"
    for p in ("weight", "bias"):
        published[f"softmax2_pre_activation_matmul.{p}"] = f"softmax2_pre_activation.{p}"
    nodes["softmax2_pre_activation"] = "softmax2_pre_activation"
    return published, nodes


#: Published port key (lucent's ``inception5h.pth``) -> this module's state_dict key.
PUBLISHED_TO_INTERNAL: dict[str, str]
#: Lucid graph node name -> module path whose output is that tensor.
LUCID_NODE_TO_MODULE: dict[str, str]
PUBLISHED_TO_INTERNAL, LUCID_NODE_TO_MODULE = _build_name_maps()
INTERNAL_TO_PUBLISHED: dict[str, str] = {v: k for k, v in PUBLISHED_TO_INTERNAL.items()}

# ---------------------------------------------------------------------------- loading


class InceptionV1WeightsError(RuntimeError):
    """Base class of the weight-loading errors below."""


class WeightsUnavailable(InceptionV1WeightsError):
    """No weights file could be found or fetched."""


class WeightsFormatError(InceptionV1WeightsError):
    """A weights file exists but is not a plain tensor state_dict we are willing to read."""


class WeightsMismatch(InceptionV1WeightsError):
    """A state_dict's keys or shapes do not match the InceptionV1 graph."""


PathLike = Union[str, "os.PathLike[str]"]
_SHOW = 5  # offending keys listed in an error message


def _cache_root(cache_dir: PathLike | None) -> Path:
    return Path(os.path.expanduser(os.fspath(cache_dir if cache_dir is not None else _DEFAULT_CACHE_DIR)))


def default_weights_path(cache_dir: PathLike | None = None) -> Path:
    """``<cache_dir>/inceptionv1/inception5h.pth`` (cache_dir defaults to ``~/.cache/interpgram``)."""
    return _cache_root(cache_dir) / "inceptionv1" / WEIGHTS_FILENAME


def _is_safetensors(path: Path) -> bool:
    return path.suffix.lower() == ".safetensors"


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a tensor state_dict safely: safetensors, or ``torch.load(weights_only=True)``.

    Anything else (a pickled module, a custom class, non-tensor values) is refused with
    :class:`WeightsFormatError`; nothing is ever unpickled with full pickle.
    """

    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise WeightsUnavailable(f"InceptionV1 weights file {path} {problem[1]}")
    try:
        fmt, damage = sniff_tensor_file(path)
    except OSError as exc:
        raise WeightsFormatError(f"InceptionV1 weights file {path} cannot be read: {exc.strerror or exc}") from None
    if damage and not (_is_safetensors(path) and fmt == "unknown"):
        raise WeightsFormatError(f"InceptionV1 weights file {path} {damage}")
    try:
        if _is_safetensors(path):

            obj = load_file(os.fspath(path), device="cpu")
        else:
            obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except LOAD_ERRORS as exc:  # the unpickler / safetensors raise many types
        kind = "safetensors" if _is_safetensors(path) else "torch.load(..., weights_only=True)"
        raise WeightsFormatError(
            f"Refused to load InceptionV1 weights from {path}: it is not a plain tensor state_dict "
            f"that {kind} accepts ({type(exc).__name__}: {_first_line(exc)}). Only pure state_dicts "
            f"(a dict of name -> tensor, as written by torch.save(model.state_dict()) or "
            f"safetensors) are read; pickled objects are never unpickled."
        ) from exc
    return _check_tensor_mapping(obj, str(path))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def _check_tensor_mapping(obj: object, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise WeightsFormatError(
            f"InceptionV1 weights from {source} are a {type(obj).__name__}, not a state_dict "
            f"(a dict of name -> tensor)."
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsFormatError(
            f"InceptionV1 weights from {source} are not a pure state_dict: {len(bad)} entries are not "
            f"str -> tensor, e.g. {[repr(k) for k in bad[:_SHOW]]}"
        )
    return dict(obj)


def to_internal_state_dict(state_dict: Mapping[str, torch.Tensor], source: str = "state_dict") -> dict[str, torch.Tensor]:
    """Translate a published-port state_dict to this module's key names, strictly.

    Keys may use the published names (``mixed4d_1x1_pre_relu_conv.weight``; the real
    ``inception5h.pth`` loads unchanged) or this module's own names
    (``mixed4d.conv_1x1.weight``, i.e. ``InceptionV1().state_dict()``).  Missing or
    unexpected keys and shape mismatches raise :class:`WeightsMismatch` listing the
    first few offenders.
    """
    state_dict = _check_tensor_mapping(state_dict, source)
    expected = {k: tuple(v) for k, v in _reference_shapes().items()}
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    duplicated: list[str] = []
    for key, value in state_dict.items():
        internal = PUBLISHED_TO_INTERNAL.get(key, key if key in expected else None)
        if internal is None:
            unexpected.append(key)
        elif internal in out:
            duplicated.append(key)
        else:
            out[internal] = value
    missing = [INTERNAL_TO_PUBLISHED[k] for k in expected if k not in out]
    shapes = [
        f"{INTERNAL_TO_PUBLISHED[k]}: file {tuple(v.shape)} vs model {expected[k]}"
        for k, v in out.items()
        if tuple(v.shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {missing[:_SHOW]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {unexpected[:_SHOW]}")
    if duplicated:
        problems.append(
            f"{len(duplicated)} parameters given twice (published and internal name): {duplicated[:_SHOW]}"
        )
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {shapes[:_SHOW]}")
    if problems:
        raise WeightsMismatch(
            f"InceptionV1 weights from {source} do not match lucid's InceptionV1 graph "
            f"(expected the {len(expected)} keys of the published inception5h.pth port, e.g. "
            f"'conv2d0_pre_relu_conv.weight'): " + "; ".join(problems)
        )
    return out


_SHAPES_CACHE: dict[str, torch.Size] = {}


def _reference_shapes() -> dict[str, torch.Size]:
    if not _SHAPES_CACHE:
        with torch.device("meta"):
            model = InceptionV1()
        _SHAPES_CACHE.update({k: v.shape for k, v in model.state_dict().items()})
    return _SHAPES_CACHE


def _unavailable_message(reason: str, target: Path) -> str:
    return (
        f"InceptionV1 weights are unavailable: {reason}\n"
        f"To fix it, either\n"
        f"  * put the published PyTorch port of lucid's weights ({WEIGHTS_URL}) at {target}, or\n"
        f"  * set the environment variable {WEIGHTS_ENV_VAR}=/path/to/inception5h.pth "
        f"(a .pth/.pt state_dict or a .safetensors file), or\n"
        f"  * pass the path: load_inceptionv1('/path/to/inception5h.pth')."
    )


def _download(url: str, dest: Path, timeout: float, blob: str = WEIGHTS_GIT_BLOB) -> dict[str, torch.Tensor]:
    """Fetch ``url`` into ``dest`` atomically; returns the verified internal state_dict. The file must have the
    git blob id ``blob`` (the published file's, :data:`WEIGHTS_GIT_BLOB`) before it is even unpickled."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise WeightsUnavailable(_unavailable_message(f"cannot write to {dest.parent} ({exc})", dest)) from exc
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    expected_len = response.headers.get("Content-Length")
                    shutil.copyfileobj(response, fh, 1 << 20)
                    written = fh.tell()
                fh.flush()
                os.fsync(fh.fileno())
            if expected_len is not None and expected_len.isdigit() and int(expected_len) != written:
                raise WeightsUnavailable(
                    _unavailable_message(
                        f"download of {url} was cut short ({written} of {expected_len} bytes)", dest
                    )
                )
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
            raise WeightsUnavailable(
                _unavailable_message(f"downloading {url} failed ({type(exc).__name__}: {exc})", dest)
            ) from exc
        got = git_blob_id(tmp)
        if got != blob:
            raise WeightsUnavailable(
                _unavailable_message(
                    f"the file downloaded from {url} is not the published inception5h.pth (its git blob id is "
                    f"{got}, the published file's {blob}); it was not kept",
                    dest,
                )
            )
        try:
            raw = torch.load(os.fspath(tmp), map_location="cpu", weights_only=True)
            state = to_internal_state_dict(_check_tensor_mapping(raw, url), source=url)
        except Exception as exc:
            raise WeightsUnavailable(
                _unavailable_message(
                    f"the file downloaded from {url} is not a valid InceptionV1 state_dict "
                    f"({type(exc).__name__}: {_first_line(exc)})",
                    dest,
                )
            ) from exc
        os.replace(tmp, dest)
        return state
    finally:
        if tmp.exists():
            tmp.unlink()


def load_inceptionv1(
    weights: PathLike | Mapping[str, torch.Tensor] | None = None,
    *,
    cache_dir: PathLike | None = None,
    allow_download: bool = True,
    url: str = WEIGHTS_URL,
    timeout: float = 60.0,
    blob: str = WEIGHTS_GIT_BLOB,
) -> InceptionV1:
    """Build :class:`InceptionV1` with the published lucid weights, in eval mode on CPU.

    ``weights`` is a ``.pth``/``.pt`` state_dict (read with ``torch.load(...,
    weights_only=True)``), a ``.safetensors`` file, or an in-memory state_dict.  With
    ``None`` the file is looked up, in order, at ``$INTERPGRAM_INCEPTIONV1_WEIGHTS``
    (which must exist if set) and ``<cache_dir>/inceptionv1/inception5h.pth``; if it is
    absent and ``allow_download``, :data:`WEIGHTS_URL` is downloaded to a temporary
    file next to it, verified (its git blob id must be ``blob``, the published file's
    :data:`WEIGHTS_GIT_BLOB`, before it is unpickled), and moved into place atomically.  Raises
    :class:`WeightsUnavailable` (no file / network failure),
    :class:`WeightsFormatError` (not a pure state_dict) or :class:`WeightsMismatch`.
    """
    if isinstance(weights, Mapping):
        state = to_internal_state_dict(weights, source="the given state_dict")
    elif weights is not None:
        path = Path(os.path.expanduser(os.fspath(weights)))
        if not path.is_file():
            raise WeightsUnavailable(_unavailable_message(f"no file at {path}", path))
        state = to_internal_state_dict(read_state_dict(path), source=str(path))
    else:
        env = os.environ.get(WEIGHTS_ENV_VAR)
        cached = default_weights_path(cache_dir)
        if env:
            path = Path(os.path.expanduser(env))
            if not path.is_file():
                raise WeightsUnavailable(
                    _unavailable_message(f"{WEIGHTS_ENV_VAR} is set to {env!r}, but there is no file there", cached)
                )
            state = to_internal_state_dict(read_state_dict(path), source=str(path))
        elif cached.is_file():
            state = to_internal_state_dict(read_state_dict(cached), source=str(cached))
        elif allow_download:
            state = _download(url, cached, timeout, blob)
        else:
            raise WeightsUnavailable(
                _unavailable_message(f"no file at {cached} and downloading is disabled (allow_download=False)", cached)
            )
    model = InceptionV1()
    model.load_state_dict(state, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------- labels

def load_labels(path: PathLike | None = None, *, cache_dir: PathLike | None = None) -> list[str]:
    """The 1008 class names, one per logit.

    Reads ``path`` if given, else ``$INTERPGRAM_INCEPTIONV1_LABELS`` if set, else
    ``<cache_dir>/inceptionv1/labels.txt`` if present, else the bundled list
    (:data:`BUNDLED_LABELS`, inception5h's own label strings). A file holds one name per line: 1,008
    lines (lucid's ``ImageNet_alternate.txt`` form), or 1,001 (inception5h's
    ``imagenet_comp_graph_label_strings.txt``; logits 1001-1007 are then ``unused 1001`` ...).
    """
    cached = _cache_root(cache_dir) / "inceptionv1" / LABELS_FILENAME
    explicit = path if path is not None else os.environ.get(LABELS_ENV_VAR) or None
    if explicit is not None:
        file = Path(os.path.expanduser(os.fspath(explicit)))
        if not file.is_file():
            origin = "given path" if path is not None else f"{LABELS_ENV_VAR}"
            raise FileNotFoundError(f"InceptionV1 labels file not found: {file} (from the {origin})")
    elif cached.is_file():
        file = cached
    else:
        file = BUNDLED_LABELS
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    if len(lines) == NUM_CLASSES - len(UNUSED):
        return lines + list(UNUSED)
    if len(lines) != NUM_CLASSES:
        raise ValueError(
            f"InceptionV1 labels file {file} has {len(lines)} lines; expected exactly {NUM_CLASSES} "
            f"(one name per logit, lucid's ImageNet_alternate.txt order) or {NUM_CLASSES - len(UNUSED)} "
            "(inception5h's imagenet_comp_graph_label_strings.txt)"
        )
    return lines


def __getattr__(name: str):
    # ``LABELS`` is resolved lazily (PEP 562) so importing this module reads no file;
    # the first access reads the labels file.
    if name == "LABELS":
        labels = tuple(load_labels())
        globals()["LABELS"] = labels
        return labels
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
