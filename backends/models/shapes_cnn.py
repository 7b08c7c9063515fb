"""builtin:shapes-cnn — a small CNN trained on builtin:shapes by ``train_shapes_cnn.py``.

Five named conv stages ``conv1`` … ``conv5`` (each conv → BatchNorm → ReLU; a forward hook on
``conv3`` gives that stage's post-ReLU activation), 2×2 max-pools ``pool2`` … ``pool4`` after stages
2–4, global average pooling ``gap`` and a linear classifier ``fc``. Input: images normalised with
``MEAN``/``STD`` (the data set's per-channel statistics). 64×64 → conv1 32×32 → conv2 32×32 →
pool2 16×16 → conv3 16×16 → pool3 8×8 → conv4 8×8 → pool4 4×4 → conv5 4×4.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).parent / "weights" / "shapes_cnn.safetensors"
METADATA = WEIGHTS.with_suffix(".json")
WIDTHS = (32, 64, 128, 128, 256)
# per-channel mean and std of builtin:shapes (train split, 8,192 images; see train_shapes_cnn.py)
MEAN = (0.4039, 0.4045, 0.4043)
STD = (0.2486, 0.2494, 0.2488)


def _stage(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=False))


class ShapesCNN(nn.Module):
    def __init__(self, n_classes: int = 10, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.conv1 = _stage(3, w1, stride=2)
        self.conv2 = _stage(w1, w2)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = _stage(w2, w3)
        self.pool3 = nn.MaxPool2d(2)
        self.conv4 = _stage(w3, w4)
        self.pool4 = nn.MaxPool2d(2)
        self.conv5 = _stage(w4, w5)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w5, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.conv1(x)))
        x = self.pool3(self.conv3(x))
        x = self.pool4(self.conv4(x))
        return self.fc(self.flatten(self.gap(self.conv5(x))))


def normalize(x01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std


def load_shapes_cnn(path: str | Path | None = None) -> ShapesCNN:
    """The committed weights (safetensors), in eval mode."""
    from safetensors.torch import load_file

    p = Path(path) if path else WEIGHTS
    if not p.exists():
        raise FileNotFoundError(
            f"{p} is missing; train it with: python -m interpgram.backends.models.train_shapes_cnn --out {p.parent}")
    model = ShapesCNN()
    model.load_state_dict(load_file(str(p)))
    return model.eval()
