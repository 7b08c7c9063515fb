"""A folder of images (PNG, JPEG, ...; a path relative to the spec's folder): every image file under it,
searched recursively, in sorted order of their paths relative to the folder. When the folder has
``train/`` or ``test/`` subfolders, the split's subfolder is used (and must exist); otherwise the split
is ignored. Images are brought to the model's size by its ``resize`` policy, exactly as input images are
(``images.read_fitted``). The identity covers the chosen files' names, sizes and modification times, so an
edited folder is never served stale results. Opening reads every chosen file's header: all that cannot be
images (damaged, empty, a symlink loop, a named pipe, over the pixel limit) are named in one error; pixel
data that fails to decode names every bad file of its batch."""
from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path

import torch

from interpgram.backends.files import path_problem
from interpgram.backends.data.datasets import SPLITS, Dataset, DatasetError, bad_dataset, dataset_source
from interpgram.backends.data.images import IMAGE_SUFFIXES, Fit, ImageError, probe_image, read_fitted


class FolderDataset(Dataset):
    kind = "folder"

    def __init__(self, ref: str, split: str, size: Fit | tuple[int, int], root: Path, files: list[Path]):
        super().__init__(ref, split, size, len(files))
        self.root, self.files = root, files

    def name(self, i: int) -> str:
        return self.files[self.check_index(i)].relative_to(self.root).as_posix()

    @cached_property
    def identity(self) -> dict:
        h = hashlib.sha256()
        for p in self.files:
            st = p.stat()
            h.update(f"{p.relative_to(self.root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return {"dataset": "folder", "root": str(self.root), "n": self.length, **self.size_identity,
                "files": h.hexdigest()}

    def _load(self, idx: list[int]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        imgs, bad = [], []
        for i in idx:  # every image of the batch is tried, so one error names all the bad ones
            try:
                imgs.append(read_fitted(self.files[i], self.fit)[0])
            except ImageError as e:
                bad.append((self.name(i), str(e).removeprefix(str(self.files[i])).strip()))
        if bad:
            raise DatasetError(f"data set {self.ref!r}: {unreadable(bad, len(idx), self.root)}")
        return (torch.stack(imgs).float(), [self.name(i) for i in idx],
                torch.full((len(idx),), -1, dtype=torch.int64))


def unreadable(bad: list[tuple[str, str]], of: int, root: Path) -> str:
    """``N of M image files in ROOT cannot be read:`` then every file, grouped by reason."""
    by: dict[str, list[str]] = {}
    for name, why in bad:
        by.setdefault(why, []).append(name)
    groups = "; ".join(f"{', '.join(names)}: {why}" for why, names in by.items())
    return f"{len(bad)} of {of} image files in {root} cannot be read ({groups}); fix or remove them"


_GOOD: set[tuple] = set()  # (path, size, mtime, inode) of files whose header was read fine in this process


def _probe(p: Path):
    """:func:`probe_image`, remembered for files that passed and have not changed since (a data set is
    opened several times per render: check, plan, each kernel)."""
    try:
        st = os.stat(p)
        key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        return probe_image(p)
    if key in _GOOD:
        return None
    why = probe_image(p)
    if why is None:
        _GOOD.add(key)
    return why


def image_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                out.append(Path(dirpath) / f)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


@dataset_source("folder", "a folder of images (a path, relative to the spec's folder)", lambda ref: True, fallback=True)
def open_folder(ref: str, *, n: int, split: str, size: Fit | tuple[int, int], base_dir=None, allow_code: bool = False):
    p = Path(os.path.expanduser(ref))
    if not p.is_absolute():
        p = Path(base_dir or Path.cwd()) / p
    problem = path_problem(p)
    if problem and problem[0] == "loop":
        raise bad_dataset(ref, f"{p} {problem[1]}")
    if not p.exists():
        hint = " (did you mean builtin:shapes?)" if ref.strip().lower() in ("shapes", "builtin/shapes") else ""
        raise bad_dataset(ref, f"no such folder {p}{hint}")
    if not p.is_dir():
        raise bad_dataset(ref, f"{p} is a file, not a folder")
    splits = [s for s in SPLITS if (p / s).is_dir()]
    if splits and split not in splits:
        raise bad_dataset(ref, f"the folder {p} has {'/, '.join(splits)}/ but no {split}/ subfolder for split {split!r}")
    root = p / split if splits else p
    files = image_files(root)
    if not files:
        raise bad_dataset(ref, f"the folder {root} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    files = files[:n]
    bad = [(f.relative_to(root).as_posix(), why) for f in files if (why := _probe(f))]
    if bad:  # every unreadable file at once, from headers (a damaged pixel stream shows when it is decoded)
        raise DatasetError(f"data set {ref!r}: {unreadable(bad, len(files), root)}")
    real = root.resolve()
    return FolderDataset(ref, split, size, real, [real / f.relative_to(root) for f in files])
