"""Data sets streamed through a model: the images behind dataset examples and atlases.

A data set reference is one of

- ``builtin:shapes``: the built-in shapes data set (``backends/data/shapes.py``); image *i* of a split
  is a pure function of (seed 0, split, *i*) and equals the input ``builtin:shapes/[train/]i``;
- a folder of images (PNG, JPEG, ...; a path relative to the spec's folder): every image file under
  it, searched recursively, in sorted order of their paths relative to the folder. When the folder
  has ``train/`` or ``test/`` subfolders, the split's subfolder is used (and must exist); otherwise
  the split is ignored. Images are brought to the model's size by its ``resize`` policy (by default
  centre-cropped to its aspect ratio, then resized, antialiased), exactly as input images are.
- ``python:MODULE:CALLABLE``: your own code (only with ``allow_code=True``, the CLI's ``--allow-code``).
  ``MODULE`` is imported with the spec's folder (``base_dir``) first on ``sys.path``, the way
  ``python:`` models are; ``CALLABLE`` is called (with ``split=`` when it takes a ``split``
  argument) and returns a map-style ``torch.utils.data.Dataset`` (``__len__`` and ``__getitem__``)
  whose items are an image, or a tuple ``(image, label, ...)``. An image is a (3, H, W) (or (1, H, W),
  repeated to RGB) float tensor in [0, 1] or uint8 tensor in [0, 255]; it is brought to the model's
  size like every other image. A label is an int class index (``-1``: unknown). The identity
  covers the reference, split, size, length and the source file of ``MODULE`` (not data the code
  reads from elsewhere: rename the callable when that changes).

Each kind of reference is one file of ``sources/`` (a :class:`DatasetSource` in :data:`DATASET_SOURCES`;
other packages add kinds through the ``interpgram.datasets`` entry-point group).

:func:`open_dataset` resolves a reference to a :class:`Dataset` of its first ``n`` images (fewer when
the folder holds fewer). Nothing is read until asked for: :meth:`Dataset.batches` streams the images
in index order, :meth:`Dataset.load` fetches any of them by index (:meth:`Dataset.load_labeled` with their
labels, -1 where unknown), and :attr:`Dataset.identity` is a
stable description for cache keys (for a folder it covers the chosen files' names, sizes and
modification times, so an edited folder is never served stale results).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from interpgram.backends.data.images import Fit, as_fit
from interpgram.backends.data.inputs import InputError
from interpgram.grammar.registry import Registry
from interpgram.grammar.spec.errors import did_you_mean

BUILTIN_DATASETS = ("builtin:shapes",)
SPLITS = ("train", "test")
VALID_FORMS = ("builtin:shapes, or a folder of images (a path, relative to the spec's folder); with --allow-code "
               "also python:MODULE:CALLABLE (your own torch Dataset)")

__all__ = ["BUILTIN_DATASETS", "DATASET_SOURCES", "Dataset", "DatasetError", "DatasetSource", "VALID_FORMS",
           "check_dataset_ref", "dataset_source", "open_dataset"]


class DatasetError(InputError):
    """A data set reference that cannot be opened (or an image in it that cannot be read); the
    message names the bad value and the valid forms."""


def bad_dataset(ref: str, why: str) -> DatasetError:
    return DatasetError(f"data set {ref!r}: {why}; a data set is {VALID_FORMS}")


def check_dataset_ref(ref: str) -> None:
    """Check the form of a reference without touching the disk (a ``builtin:`` name must exist)."""
    if not isinstance(ref, str) or not ref.strip():
        raise bad_dataset(str(ref), "empty reference")
    if ref.startswith("builtin:") and ref not in BUILTIN_DATASETS:
        known = did_you_mean(ref, BUILTIN_DATASETS, listing="built-in data sets")
        raise DatasetError(f"unknown built-in data set {ref!r} {known}; a data set is {VALID_FORMS}")
    if ref.startswith("python:"):
        mod, _, attr = ref[len("python:"):].partition(":")
        if not mod.strip() or not attr.strip():
            raise bad_dataset(ref, "expected python:MODULE:CALLABLE, e.g. python:mydata:build")


class Dataset:
    """The first ``len(self)`` images of a data set, at ``size`` = (H, W), read on demand.

    ``size`` may be the model's :class:`~.images.Fit` (its ``resize`` policy), which every image then goes
    through exactly as input images do; (H, W) alone is the default policy (``shorter``: centre crop).
    A kind of data set implements :meth:`_load` (images, names and labels of some indices, brought to
    :attr:`fit`), :meth:`name` and :attr:`identity` (with :attr:`size_identity`); the rest is shared."""

    kind = ""  # the source's name: "shapes" | "folder" | "python" | a plug-in's

    def __init__(self, ref: str, split: str, size: Fit | tuple[int, int], length: int):
        self.fit = as_fit(size)  # how each image is brought to the model's size (its ``resize``)
        self.ref, self.split, self.size, self.length = ref, split, self.fit.size, int(length)

    @property
    def size_identity(self) -> dict:
        """The size, and the resize policy where it is not the default, for :attr:`identity`."""
        d: dict = {"size": list(self.size)}
        if self.fit.resize != "shorter":
            d.update(resize=self.fit.resize, fill=[float(c) for c in self.fit.fill])
        return d

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ref!r}, split={self.split!r}, n={self.length}, size={self.size})"

    # ------------------------------------------------------------------ what a kind provides
    def name(self, i: int) -> str:
        """A short human name of image ``i``."""
        raise NotImplementedError

    @property
    def identity(self) -> dict:
        """What the images depend on, for cache keys."""
        raise NotImplementedError

    def _load(self, idx: list[int]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """(images (B, 3, H, W) float32 in [0, 1] at ``size``, names, labels (B,) int64, -1 unknown)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ images
    def check_index(self, i: int) -> int:
        if not 0 <= int(i) < self.length:
            raise IndexError(f"image {i} is outside the data set {self.ref!r} of {self.length} images")
        return int(i)

    def load(self, indices: Sequence[int]) -> torch.Tensor:
        """Images ``indices`` as (B, 3, H, W) float32 in [0, 1]."""
        return self.load_named(indices)[0]

    def load_named(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[str]]:
        """(images ``indices`` as (B, 3, H, W) float32 in [0, 1], their names)."""
        imgs, names, _ = self.load_all(indices)
        return imgs, names

    def load_labeled(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(images ``indices`` as (B, 3, H, W) float32 in [0, 1], their labels (B,) int64): the class
        index for ``builtin:shapes`` and for ``python:`` items that carry one, else -1."""
        imgs, _, labels = self.load_all(indices)
        return imgs, labels

    def load_all(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        idx = [self.check_index(i) for i in indices]
        if not idx:
            return torch.zeros(0, 3, *self.size), [], torch.zeros(0, dtype=torch.int64)
        return self._load(idx)

    def batches(self, batch_size: int, start: int = 0,
                stop: Optional[int] = None) -> Iterator[tuple[torch.Tensor, list[str]]]:
        """``(images (B, 3, H, W) in [0, 1], names)`` for images ``start .. stop-1`` in index order."""
        stop = self.length if stop is None else min(stop, self.length)
        b = max(1, int(batch_size))
        for a in range(start, stop, b):
            yield self.load_named(range(a, min(a + b, stop)))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        return self.batches(256)


Opener = Callable[..., Dataset]


@dataclass(frozen=True)
class DatasetSource:
    """One kind of data-set reference: which references it claims, and how to open one.

    ``open(ref, *, n, split, size, base_dir, allow_code)`` returns a :class:`Dataset`. The source
    with ``fallback`` (a folder of images) takes every reference no other source claims."""

    name: str
    help: str
    claims: Callable[[str], bool]
    open: Opener
    fallback: bool = False


DATASET_SOURCES: Registry[DatasetSource] = Registry("data-set source", group="interpgram.datasets")


def dataset_source(name: str, help: str, claims: Callable[[str], bool], *,
                   fallback: bool = False) -> Callable[[Opener], Opener]:
    """Decorator: register ``open`` as the opener of the references ``claims`` accepts."""
    def deco(fn: Opener) -> Opener:
        DATASET_SOURCES.register(name, DatasetSource(name, help, claims, fn, fallback))
        return fn
    return deco


def open_dataset(ref: str, *, n: int, split: str = "test", size: Fit | tuple[int, int] | int = 64,
                 base_dir: str | Path | None = None, allow_code: bool = False) -> Dataset:
    """The first ``n`` images of data set ``ref`` (see the module docstring) at ``size``: (H, W), or the
    model's :class:`~.images.Fit` (``model.preprocess.fit``) so that its ``resize`` policy applies.

    Raises :class:`DatasetError` (an :class:`~.inputs.InputError`) naming the bad value and the valid
    forms when ``ref`` is neither a built-in data set nor a folder holding images, or when it is a
    ``python:`` data set and ``allow_code`` is false (the message says to pass ``--allow-code``).
    """
    if not isinstance(size, Fit):
        size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if split not in SPLITS:
        raise DatasetError(f"data set {ref!r}: unknown split {split!r} (splits: {', '.join(SPLITS)})")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise DatasetError(f"data set {ref!r}: n must be a whole number ≥ 1, got {n!r}")
    check_dataset_ref(ref)
    kinds = [s for _, s in DATASET_SOURCES.items()]
    source = next((s for s in kinds if not s.fallback and s.claims(ref)), None) or \
        next((s for s in kinds if s.fallback), None)
    if source is None:
        raise bad_dataset(ref, "no registered kind of data set takes it")
    return source.open(ref, n=n, split=split, size=size, base_dir=base_dir, allow_code=allow_code)
