"""Data sets streamed through a model: the images behind dataset examples (and, later, atlases).

A data set reference is one of

- ``builtin:shapes``: the built-in shapes data set (``backends/data/shapes.py``); image *i* of a split
  is a pure function of (seed 0, split, *i*) and equals the input ``builtin:shapes/[train/]i``;
- a folder of images (PNG, JPEG, ...; a path relative to the spec's folder): every image file under
  it, searched recursively, in sorted order of their paths relative to the folder. When the folder
  has ``train/`` or ``test/`` subfolders, the split's subfolder is used (and must exist); otherwise
  the split is ignored. Images are centre-cropped to the model's aspect ratio and resized
  (antialiased), exactly as input images are.
- ``python:MODULE:CALLABLE``: your own code (only with ``allow_code=True``, the CLI's ``--allow-code``).
  ``MODULE`` is imported with the spec's folder (``base_dir``) first on ``sys.path``, the way
  ``python:`` models are; ``CALLABLE`` is called (with ``split=`` when it takes a ``split``
  argument) and returns a map-style ``torch.utils.data.Dataset`` (``__len__`` and ``__getitem__``)
  whose items are an image, or a tuple ``(image, label, ...)``. An image is a (3, H, W) (or (1, H, W),
  repeated to RGB) float tensor in [0, 1] or uint8 tensor in [0, 255]; it is centre-cropped and
  resized like every other image. A label is an int class index (``-1``: unknown). The identity
  covers the reference, split, size, length and the source file of ``MODULE`` (not data the code
  reads from elsewhere: rename the callable when that changes).

:func:`open_dataset` resolves a reference to a :class:`Dataset` of its first ``n`` images (fewer when
the folder holds fewer). Nothing is read until asked for: :meth:`Dataset.batches` streams the images
in index order, :meth:`Dataset.load` fetches any of them by index (:meth:`Dataset.load_labeled` with their
labels, -1 where unknown), and :attr:`Dataset.identity` is a
stable description for cache keys (for a folder it covers the chosen files' names, sizes and
modification times, so an edited folder is never served stale results).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from interpgram.backends.code import CodeError, import_callable
from interpgram.backends.data.inputs import IMAGE_SUFFIXES, InputError, _resize

BUILTIN_DATASETS = ("builtin:shapes",)
SPLITS = ("train", "test")
VALID_FORMS = ("builtin:shapes, or a folder of images (a path, relative to the spec's folder); with --allow-code "
               "also python:MODULE:CALLABLE (your own torch Dataset)")

__all__ = ["BUILTIN_DATASETS", "Dataset", "DatasetError", "VALID_FORMS", "check_dataset_ref", "open_dataset"]


class DatasetError(InputError):
    """A data set reference that cannot be opened (or an image in it that cannot be read); the
    message names the bad value and the valid forms."""


def _bad(ref: str, why: str) -> DatasetError:
    return DatasetError(f"data set {ref!r}: {why}; a data set is {VALID_FORMS}")


def check_dataset_ref(ref: str) -> None:
    """Check the form of a reference without touching the disk (a ``builtin:`` name must exist)."""
    if not isinstance(ref, str) or not ref.strip():
        raise _bad(str(ref), "empty reference")
    if ref.startswith("builtin:") and ref not in BUILTIN_DATASETS:
        from interpgram.grammar import did_you_mean
        known = did_you_mean(ref, BUILTIN_DATASETS, listing="built-in data sets")
        raise DatasetError(f"unknown built-in data set {ref!r} {known}; a data set is {VALID_FORMS}")
    if ref.startswith("python:"):
        mod, _, attr = ref[len("python:"):].partition(":")
        if not mod.strip() or not attr.strip():
            raise _bad(ref, "expected python:MODULE:CALLABLE, e.g. python:mydata:build")


@dataclass
class Dataset:
    """The first ``len(self)`` images of a data set, at ``size`` = (H, W), read on demand."""

    ref: str
    split: str
    size: tuple[int, int]
    kind: str  # "shapes" | "folder" | "python"
    root: Optional[Path] = None
    files: list[Path] = field(default_factory=list)
    length: int = 0
    source: Any = None  # python: the torch Dataset the user's callable returned
    code: Optional[str] = None  # python: sha256 of the module's source file (None when it has none)

    def __len__(self) -> int:
        return self.length

    # ------------------------------------------------------------------ names and identity
    def name(self, i: int) -> str:
        """A short human name of image ``i``: ``shapes/test/17 (star)`` or the file's path in the folder."""
        if self.kind == "python":
            if not 0 <= int(i) < self.length:
                raise IndexError(f"image {i} is outside the data set {self.ref!r} of {self.length} images")
            return f"{self.ref}/{int(i)}"
        if self.kind == "shapes":
            return self.load_named([i])[1][0]
        return self.files[int(i)].relative_to(self.root).as_posix()

    @cached_property
    def identity(self) -> dict:
        """What the images depend on, for cache keys (computed once per opened data set)."""
        if self.kind == "shapes":
            return {"dataset": self.ref, "split": self.split, "n": self.length, "size": list(self.size), "seed": 0}
        if self.kind == "python":
            return {"dataset": self.ref, "split": self.split, "n": self.length, "size": list(self.size),
                    "code": self.code}
        h = hashlib.sha256()
        for p in self.files:
            st = p.stat()
            h.update(f"{p.relative_to(self.root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return {"dataset": "folder", "root": str(self.root), "n": self.length, "size": list(self.size),
                "files": h.hexdigest()}

    # ------------------------------------------------------------------ images
    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """Images ``indices`` as (B, 3, H, W) float32 in [0, 1]."""
        return self.load_named(indices)[0]

    def load_named(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
        """(images ``indices`` as (B, 3, H, W) float32 in [0, 1], their names)."""
        imgs, names, _ = self._load(indices)
        return imgs, names

    def load_labeled(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(images ``indices`` as (B, 3, H, W) float32 in [0, 1], their labels (B,) int64): the class
        index for ``builtin:shapes`` and for ``python:`` items that carry one, else -1."""
        imgs, _, labels = self._load(indices)
        return imgs, labels

    def _load(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        idx = [int(i) for i in indices]
        for i in idx:
            if not 0 <= i < self.length:
                raise IndexError(f"image {i} is outside the data set {self.ref!r} of {self.length} images")
        if not idx:
            return torch.zeros(0, 3, *self.size), [], torch.zeros(0, dtype=torch.int64)
        if self.kind == "shapes":
            from interpgram.backends.data.shapes import CLASSES, generate
            b = generate(idx, split=self.split)
            imgs = b.images
            if tuple(imgs.shape[-2:]) != self.size:
                imgs = torch.stack([_resize(im, self.size) for im in imgs])
            return (imgs.float(), [f"shapes/{self.split}/{i} ({CLASSES[l]})" for i, l in zip(idx, b.labels.tolist())],
                    b.labels.to(torch.int64))
        if self.kind == "python":
            items = [self._item(i) for i in idx]
            return (torch.stack([im for im, _ in items]), [f"{self.ref}/{i}" for i in idx],
                    torch.tensor([lab for _, lab in items], dtype=torch.int64))
        return (torch.stack([self._read(self.files[i]) for i in idx]).float(), [self.name(i) for i in idx],
                torch.full((len(idx),), -1, dtype=torch.int64))

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
        return _resize(img.cpu().contiguous(), self.size).float(), label

    def _read(self, p: Path) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"data set {self.ref!r}: {p} cannot be read as an image: {e}") from None
        return _resize(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), self.size)

    def batches(self, batch_size: int, start: int = 0,
                stop: Optional[int] = None) -> Iterator[tuple[torch.Tensor, list[str]]]:
        """``(images (B, 3, H, W) in [0, 1], names)`` for images ``start .. stop-1`` in index order."""
        stop = self.length if stop is None else min(stop, self.length)
        b = max(1, int(batch_size))
        for a in range(start, stop, b):
            yield self.load_named(range(a, min(a + b, stop)))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        return self.batches(256)


def _image_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                out.append(Path(dirpath) / f)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _open_python(ref: str, *, n: int, split: str, size: tuple[int, int], base_dir, allow_code: bool) -> Dataset:
    """A ``python:MODULE:CALLABLE`` data set: imported (and called) only with ``allow_code``, through the
    same gate as ``python:`` models."""
    import inspect
    import sys

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
    return Dataset(ref, split, size, "python", length=min(n, total), source=obj, code=code)


def open_dataset(ref: str, *, n: int, split: str = "test", size: tuple[int, int] | int = 64,
                 base_dir: str | Path | None = None, allow_code: bool = False) -> Dataset:
    """The first ``n`` images of data set ``ref`` (see the module docstring) at ``size``.

    Raises :class:`DatasetError` (an :class:`~.inputs.InputError`) naming the bad value and the valid
    forms when ``ref`` is neither a built-in data set nor a folder holding images, or when it is a
    ``python:`` data set and ``allow_code`` is false (the message says to pass ``--allow-code``).
    """
    size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if split not in SPLITS:
        raise DatasetError(f"data set {ref!r}: unknown split {split!r} (splits: {', '.join(SPLITS)})")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise DatasetError(f"data set {ref!r}: n must be a whole number ≥ 1, got {n!r}")
    check_dataset_ref(ref)
    if ref == "builtin:shapes":
        return Dataset(ref, split, size, "shapes", length=n)
    if ref.startswith("python:"):
        return _open_python(ref, n=n, split=split, size=size, base_dir=base_dir, allow_code=allow_code)
    p = Path(os.path.expanduser(ref))
    if not p.is_absolute():
        p = Path(base_dir or Path.cwd()) / p
    if not p.exists():
        hint = " (did you mean builtin:shapes?)" if ref.strip().lower() in ("shapes", "builtin/shapes") else ""
        raise _bad(ref, f"no such folder {p}{hint}")
    if not p.is_dir():
        raise _bad(ref, f"{p} is a file, not a folder")
    splits = [s for s in SPLITS if (p / s).is_dir()]
    if splits and split not in splits:
        raise _bad(ref, f"the folder {p} has {'/, '.join(splits)}/ but no {split}/ subfolder for split {split!r}")
    root = p / split if splits else p
    files = _image_files(root)
    if not files:
        raise _bad(ref, f"the folder {root} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    files = files[:n]
    return Dataset(ref, split, size, "folder", root=root.resolve(), files=[f.resolve() for f in files], length=len(files))
