"""``python:MODULE:CALLABLE``: your own code (only with ``allow_code=True``, the CLI's ``--allow-code``).

``MODULE`` is imported with the spec's folder (``base_dir``) first on ``sys.path``, the way ``python:``
models are; ``CALLABLE`` is called (with ``split=`` when it takes a ``split`` argument) and returns a
map-style ``torch.utils.data.Dataset`` (``__len__`` and ``__getitem__``) whose items are an image, or a
tuple ``(image, label, ...)``. An image is a (3, H, W) (or (1, H, W), repeated to RGB) float tensor in
[0, 1] or uint8 tensor in [0, 255]; it is brought to the model's size like every other image. A label is
an int class index (``-1``: unknown). The identity covers the reference, split, size, length and the
source file of ``MODULE`` (not data the code reads from elsewhere: rename the callable when that
changes)."""
from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from interpgram.backends.code import CodeError, import_callable
from interpgram.backends.data.datasets import Dataset, DatasetError, dataset_source
from interpgram.backends.data.images import resize


class PythonDataset(Dataset):
    kind = "python"

    def __init__(self, ref: str, split: str, size: tuple[int, int], length: int, source: Any, code: Optional[str]):
        super().__init__(ref, split, size, length)
        self.source = source  # the torch Dataset the user's callable returned
        self.code = code  # sha256 of the module's source file (None when it has none)

    def name(self, i: int) -> str:
        return f"{self.ref}/{self.check_index(i)}"

    @property
    def identity(self) -> dict:
        return {"dataset": self.ref, "split": self.split, "n": self.length, **self.size_identity, "code": self.code}

    def _load(self, idx: list[int]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        items = [self._item(i) for i in idx]
        return (torch.stack([im for im, _ in items]), [f"{self.ref}/{i}" for i in idx],
                torch.tensor([lab for _, lab in items], dtype=torch.int64))

    def _item(self, i: int) -> tuple[torch.Tensor, int]:
        """Item ``i`` of a ``python:`` data set as ((3, H, W) float32 in [0, 1] at ``size``, label or -1)."""
        try:
            item = self.source[i]
        except Exception as e:
            raise DatasetError(f"data set {self.ref!r}: item {i} failed: {type(e).__name__}: {e}") from e
        label = -1
        if isinstance(item, (tuple, list)):
            if not item:
                raise DatasetError(f"data set {self.ref!r}: item {i} is an empty {type(item).__name__}")
            if len(item) > 1:
                lab = item[1]
                if isinstance(lab, torch.Tensor) and lab.numel() == 1:
                    lab = lab.item()
                if isinstance(lab, (int, np.integer)) and not isinstance(lab, bool):
                    label = int(lab)
                elif lab is not None:
                    raise DatasetError(f"data set {self.ref!r}: item {i}'s label is {type(lab).__name__} {lab!r}, "
                                       "not an int class index (use -1 or None for unknown)")
            item = item[0]
        img = item
        if isinstance(img, np.ndarray):
            img = torch.from_numpy(img)
        if not isinstance(img, torch.Tensor):
            raise DatasetError(f"data set {self.ref!r}: item {i} is a {type(img).__name__}; items must be an image "
                               "tensor (3, H, W) in [0, 1] or a tuple (image, label)")
        if img.dim() != 3 or img.shape[0] not in (1, 3):
            raise DatasetError(f"data set {self.ref!r}: item {i} has shape {tuple(img.shape)}; expected an image "
                               "(3, H, W) (or (1, H, W), channels first)")
        if img.dtype == torch.uint8:
            img = img.float() / 255.0
        elif img.is_floating_point():
            img = img.detach().float()
            lo, hi = (float(img.min()), float(img.max())) if img.numel() else (0.0, 0.0)
            if lo < -1e-3 or hi > 1 + 1e-3 or lo != lo or hi != hi:
                raise DatasetError(f"data set {self.ref!r}: item {i} has values in [{lo:.3g}, {hi:.3g}]; images must "
                                   "be in [0, 1] (float) or [0, 255] (uint8), before any normalisation (the "
                                   "model's preprocessing is applied afterwards)")
            img = img.clamp(0, 1)
        else:
            raise DatasetError(f"data set {self.ref!r}: item {i} has dtype {img.dtype}; expected float in [0, 1] or uint8")
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        return resize(img.cpu().contiguous(), self.fit).float(), label


@dataset_source("python", "python:MODULE:CALLABLE, your own torch Dataset (needs --allow-code)",
                lambda ref: ref.startswith("python:"))
def open_python(ref: str, *, n: int, split: str, size: tuple[int, int], base_dir=None, allow_code: bool = False):
    """A ``python:MODULE:CALLABLE`` data set: imported (and called) only with ``allow_code``, through the
    same gate as ``python:`` models."""
    target = ref[len("python:"):]
    try:
        obj = import_callable(target, base_dir=Path(base_dir) if base_dir else Path.cwd(), allow_code=allow_code,
                              what=f"data set {ref}")
    except CodeError as e:
        raise DatasetError(str(e)) from None
    if callable(obj) and not (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")):
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            params = {}
        try:
            obj = obj(split=split) if "split" in params else obj()
        except Exception as e:
            raise DatasetError(f"data set {ref!r}: calling {target} failed: {type(e).__name__}: {e}") from e
    if not (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")):
        raise DatasetError(f"data set {ref!r}: {target} gave a {type(obj).__name__}, not a map-style "
                           "torch.utils.data.Dataset (one with __len__ and __getitem__)")
    try:
        total = len(obj)
    except Exception as e:
        raise DatasetError(f"data set {ref!r}: len() of its Dataset failed: {type(e).__name__}: {e}") from e
    if total < 1:
        raise DatasetError(f"data set {ref!r}: its Dataset is empty")
    code = None
    mod = sys.modules.get(target.partition(":")[0])
    src = getattr(mod, "__file__", None)
    if src and Path(src).is_file():
        code = hashlib.sha256(Path(src).read_bytes()).hexdigest()
    return PythonDataset(ref, split, size, min(n, total), obj, code)
