"""``builtin:shapes``: the built-in shapes data set (``backends/data/shapes.py``). Image *i* of a split is a
pure function of (seed 0, split, *i*) and equals the input ``builtin:shapes/[train/]i``."""
from __future__ import annotations

import torch

from interpgram.backends.data.datasets import Dataset, dataset_source
from interpgram.backends.data.images import resize
from interpgram.backends.data.shapes import CLASSES, generate


class ShapesDataset(Dataset):
    kind = "shapes"

    def name(self, i: int) -> str:
        return self.load_named([i])[1][0]

    @property
    def identity(self) -> dict:
        return {"dataset": self.ref, "split": self.split, "n": self.length, **self.size_identity, "seed": 0}

    def _load(self, idx: list[int]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        b = generate(idx, split=self.split)
        imgs = b.images
        if tuple(imgs.shape[-2:]) != self.size:
            imgs = torch.stack([resize(im, self.fit) for im in imgs])
        return (imgs.float(), [f"shapes/{self.split}/{i} ({CLASSES[l]})" for i, l in zip(idx, b.labels.tolist())],
                b.labels.to(torch.int64))


@dataset_source("shapes", "builtin:shapes, the built-in data set of ten shape classes", lambda ref: ref == "builtin:shapes")
def open_shapes(ref: str, *, n: int, split: str, size: tuple[int, int], base_dir=None, allow_code: bool = False):
    return ShapesDataset(ref, split, size, n)
