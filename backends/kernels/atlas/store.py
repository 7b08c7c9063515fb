"""A chunked on-disk store of per-sample arrays with a manifest: where atlas collections live.

Layout of one store (a folder)::

    <path>/manifest.json      the single source of truth: which chunks are complete
    <path>/zarr.json          a zarr v3 group
    <path>/<field>/…          one zarr v3 array per field ("conv4/act" is array "act" in group "conv4")

Every array holds ``n_images × rows_per_image[field]`` rows of shape ``fields[field][0]`` and is
chunked along the row axis so that the rows of one store chunk (``chunk`` images) are whole zarr
chunks (one, or several for very wide rows, at most about :data:`MAX_ZARR_CHUNK_BYTES` each), never
shared with another store chunk. Chunks are zstd-compressed with a checksum.

Crash safety. :meth:`AtlasStore.write_chunk` writes every array's rows of the chunk, fsyncs their
chunk files, and only then adds the chunk to the manifest, which is replaced atomically (temporary
file, fsync, ``os.replace``, fsync of the folder; updates are serialised with an advisory lock,
so concurrent writers never lose each other's chunks). A chunk whose write was interrupted (a crash,
SIGKILL, Ctrl-C) is not in the manifest: it never reads as valid and the collector recomputes it;
its half-written files are simply overwritten.

The manifest holds the format version, the caller's ``meta`` (model digest, data-set identity,
layers, sampler, seed…), the fields (shape, dtype, rows per image), ``n_images``, the chunk size (in
images), the done chunks and created/updated times. Reopening with other meta or fields raises a
:class:`StoreError` that lists what differs (the collector puts each collection in a
content-addressed folder, so a mismatch means corruption or a bug: delete the folder).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Union

import numpy as np
from zarr.codecs import ZstdCodec

from interpgram.backends.files import atomic_write_text, exclusive_lock, fsync_path
from interpgram.grammar import did_you_mean

FORMAT = "interpgram-atlas-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_ZARR_CHUNK_BYTES = 64 << 20  # a store chunk with wider rows is split into several zarr chunks
_RESERVED = {MANIFEST, "zarr.json", ".lock"}

Rows = Union[None, slice, np.ndarray, list, range]

__all__ = ["AtlasStore", "FORMAT_VERSION", "StoreError", "StoreNotWritable"]


class StoreError(Exception):
    """A store in a bad state (missing, damaged, incomplete, other meta); the message says what to do."""


class StoreNotWritable(StoreError):
    """The store's folder cannot be written (read-only, full disk, no permission); ``__cause__`` is the
    ``OSError``. The chunks already marked done stay valid."""


def _not_writable(path: Path, e: OSError, doing: str) -> StoreNotWritable:
    err = StoreNotWritable(f"cannot write the atlas store {path} while {doing} ({e.strerror or e}); free space or "
                           "choose a writable cache folder (--cache-dir); the chunks already stored are kept and the "
                           "next run resumes from them")
    err.__cause__ = e
    return err


# ------------------------------------------------------------------------------ helpers
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _canon(obj: Any, what: str) -> Any:
    """``obj`` as plain JSON (tuples → lists), or a StoreError naming what cannot be stored."""
    try:
        return json.loads(json.dumps(obj, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise StoreError(f"{what} must be plain JSON (str, numbers, bools, lists, dicts): {e}") from None


def _diff(a: Any, b: Any, where: str, out: list[str], limit: int = 12) -> None:
    """Append ``where: stored X, asked Y`` for every leaf where plain-JSON values ``a`` and ``b`` differ."""
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{where}.{k}: not stored, asked {json.dumps(b[k])[:80]}")
            elif k not in b:
                out.append(f"{where}.{k}: stored {json.dumps(a[k])[:80]}, not asked")
            else:
                _diff(a[k], b[k], f"{where}.{k}", out, limit)
        return
    if a != b:
        out.append(f"{where}: stored {json.dumps(a)[:80]}, asked {json.dumps(b)[:80]}")


def _zarr():
    try:
        import zarr
    except ImportError as e:  # a declared dependency; say how to get it
        raise StoreError(f"the atlas store needs zarr>=3 ({e}); install it with: pip install 'zarr>=3'") from None
    if int(zarr.__version__.split(".")[0]) < 3:
        raise StoreError(f"the atlas store needs zarr>=3, found {zarr.__version__}; pip install -U 'zarr>=3'")
    return zarr


# ------------------------------------------------------------------------------ the store
class AtlasStore:
    """A chunked store (see the module docstring). Create or reopen one with :meth:`open`; open an
    existing one without knowing its fields with :meth:`load`."""

    def __init__(self, path: Path, manifest: dict, group: Any):
        self.path = Path(path)
        self._m = manifest
        self._group = group
        self._arrays: dict[str, Any] = {}
        self.meta: dict = manifest["meta"]
        self.fields: dict[str, tuple[tuple[int, ...], str]] = {
            k: (tuple(v["shape"]), v["dtype"]) for k, v in manifest["fields"].items()}
        self.rows_per_image: dict[str, int] = {k: int(v["rows_per_image"]) for k, v in manifest["fields"].items()}
        self.n_images: int = int(manifest["n_images"])
        self.chunk: int = int(manifest["chunk"])
        self.n_chunks: int = max(1, math.ceil(self.n_images / self.chunk))
        self._done: set[int] = set(int(i) for i in manifest["done"])

    def __repr__(self) -> str:
        return (f"AtlasStore({str(self.path)!r}, {self.n_images} images, {len(self._done)}/{self.n_chunks} chunks, "
                f"fields={list(self.fields)})")

    # -------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path, *, meta: dict, fields: dict[str, tuple[tuple[int, ...], str]],
             rows_per_image: dict[str, int], n_images: int, chunk: int) -> "AtlasStore":
        """Create the store at ``path``, or reopen it when its manifest says the same ``meta``, fields,
        ``n_images`` and ``chunk`` (else :class:`StoreError` listing what differs)."""
        path = Path(path)
        want = cls._manifest_for(meta, fields, rows_per_image, n_images, chunk)
        try:
            return cls._open(path, want)
        except OSError as e:
            raise _not_writable(path, e, "creating or opening it") from e

    @classmethod
    def _open(cls, path: Path, want: dict) -> "AtlasStore":
        path.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(path / ".lock"):
            if (path / MANIFEST).exists():
                have = cls._read_manifest(path)
                diffs: list[str] = []
                for key in ("meta", "fields", "n_images", "chunk"):
                    _diff(have[key], want[key], key, diffs)
                if diffs:
                    raise StoreError(
                        f"the atlas store {path} holds another collection than the one asked for: " + "; ".join(diffs)
                        + ". Its folder name is the collection's digest, so this means a damaged store or a bug: "
                        f"delete {path} and collect again")
                store = cls(path, have, cls._open_group(path, "r+"))
                store._check_arrays()
                store._touch()
                return store
            leftovers = [p.name for p in path.iterdir() if p.name not in _RESERVED and not p.name.startswith(MANIFEST)]
            if leftovers and not (path / "zarr.json").exists():
                raise StoreError(f"{path} is not empty and is not an atlas store (it holds {', '.join(sorted(leftovers)[:5])}); "
                                 "choose an empty or new folder")
            # new, or a creation that was interrupted before its manifest was written: (re)create everything
            group = cls._create(path, want)
            want["created"] = want["updated"] = _now()
            atomic_write_text(path / MANIFEST, json.dumps(want, indent=1, sort_keys=True))
            return cls(path, want, group)

    @classmethod
    def load(cls, path: str | Path) -> "AtlasStore":
        """An existing store, as its manifest describes it (:class:`StoreError` when there is none)."""
        path = Path(path)
        if not (path / MANIFEST).exists():
            raise StoreError(f"{path} is not an atlas store (no {MANIFEST}); collect it first")
        store = cls(path, cls._read_manifest(path), cls._open_group(path, "r+"))
        store._check_arrays()
        store._touch()
        return store

    def _touch(self) -> None:
        """Mark the store as used now (the result cache's size limit evicts the least recently used)."""
        try:
            os.utime(self.path / MANIFEST)
        except OSError:
            pass  # a read-only folder: nothing will be evicted from it either

    @staticmethod
    def _manifest_for(meta, fields, rows_per_image, n_images, chunk) -> dict:
        if not isinstance(meta, dict):
            raise StoreError(f"meta must be a dict, got {type(meta).__name__}")
        if not isinstance(n_images, int) or isinstance(n_images, bool) or n_images < 1:
            raise StoreError(f"n_images must be a whole number ≥ 1, got {n_images!r}")
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
            raise StoreError(f"chunk must be a whole number ≥ 1 (images per chunk), got {chunk!r}")
        if not fields:
            raise StoreError("a store needs at least one field")
        fdesc = {}
        for name, spec in fields.items():
            if not isinstance(name, str) or not name or name.startswith("/") or name.endswith("/") or "//" in name \
                    or name.split("/")[0] in _RESERVED or any(part in (".", "..") for part in name.split("/")):
                raise StoreError(f"bad field name {name!r}: use names like 'image' or 'conv4/act'")
            try:
                shape, dtype = spec
                shape = tuple(int(s) for s in shape)
                dt = np.dtype(dtype)
            except (TypeError, ValueError) as e:
                raise StoreError(f"field {name!r}: expected ((shape…), dtype), got {spec!r} ({e})") from None
            if any(s < 1 for s in shape) or dt.kind not in "biuf":
                raise StoreError(f"field {name!r}: shape {shape} / dtype {dt} (dimensions ≥ 1; bool, int, uint or float)")
            r = rows_per_image.get(name, 1)
            if not isinstance(r, int) or isinstance(r, bool) or r < 1:
                raise StoreError(f"field {name!r}: rows_per_image must be a whole number ≥ 1, got {r!r}")
            fdesc[name] = {"shape": list(shape), "dtype": dt.name, "rows_per_image": int(r)}
        extra = set(rows_per_image) - set(fields)
        if extra:
            raise StoreError(f"rows_per_image names fields that do not exist: {', '.join(sorted(extra))}")
        names = sorted(fdesc)
        for a in names:  # "conv4" cannot be both an array and the group of "conv4/act"
            clash = [b for b in names if b.startswith(a + "/")]
            if clash:
                raise StoreError(f"field {a!r} clashes with {clash[0]!r} (a field cannot also be a folder of fields)")
        return {"format": FORMAT, "version": FORMAT_VERSION, "meta": _canon(meta, "meta"), "fields": fdesc,
                "n_images": int(n_images), "chunk": int(chunk), "n_chunks": math.ceil(n_images / chunk), "done": []}

    @staticmethod
    def _read_manifest(path: Path) -> dict:
        p = path / MANIFEST
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StoreError(f"{p} cannot be read ({e}); the store is damaged: delete {path} and collect again") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise StoreError(f"{p} is not an atlas-store manifest; delete {path} (or choose another folder)")
        if m.get("version") != FORMAT_VERSION:
            raise StoreError(f"{path} was written in store format {m.get('version')!r}, this code reads "
                             f"{FORMAT_VERSION}: delete {path} and collect again")
        missing = [k for k in ("meta", "fields", "n_images", "chunk", "done") if k not in m]
        if missing:
            raise StoreError(f"{p} lacks {', '.join(missing)}; the store is damaged: delete {path} and collect again")
        return m

    @staticmethod
    def _open_group(path: Path, mode: str):
        zarr = _zarr()
        try:
            return zarr.open_group(str(path), mode=mode)
        except Exception as e:  # noqa: BLE001 - any zarr failure means a damaged folder
            raise StoreError(f"the zarr group in {path} cannot be opened ({type(e).__name__}: {e}); "
                             f"delete {path} and collect again") from None

    @staticmethod
    def _zarr_chunk_rows(chunk: int, r: int, row_bytes: int) -> int:
        """Rows per zarr chunk: ``r·d`` for the largest divisor d of ``chunk`` that keeps a zarr chunk
        under MAX_ZARR_CHUNK_BYTES (at least one image), so store chunks are whole zarr chunks."""
        best = 1
        for d in range(1, chunk + 1):
            if chunk % d == 0 and r * d * row_bytes <= MAX_ZARR_CHUNK_BYTES:
                best = d
        return r * best

    @classmethod
    def _create(cls, path: Path, m: dict):
        zarr = _zarr()

        group = zarr.open_group(str(path), mode="a")  # "w" would clear the folder, lock file included
        for name, f in m["fields"].items():
            shape, dt, r = tuple(f["shape"]), np.dtype(f["dtype"]), f["rows_per_image"]
            zc = cls._zarr_chunk_rows(m["chunk"], r, int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
            group.create_array(name, shape=(m["n_images"] * r, *shape), chunks=(zc, *shape), dtype=dt, fill_value=0,
                               compressors=ZstdCodec(level=1, checksum=True),
                               chunk_key_encoding={"name": "default", "separator": "/"},
                               config={"write_empty_chunks": True}, overwrite=True)
        return group

    def _array(self, name: str):
        if name not in self._arrays:
            try:
                self._arrays[name] = self._group[name]
            except Exception as e:  # noqa: BLE001
                raise StoreError(f"the store {self.path} lacks the array of field {name!r} ({type(e).__name__}: {e}); "
                                 f"it is damaged: delete {self.path} and collect again") from None
        return self._arrays[name]

    def _check_arrays(self) -> None:
        for name, (shape, dtype) in self.fields.items():
            a = self._array(name)
            want = (self.n_images * self.rows_per_image[name], *shape)
            if tuple(a.shape) != want or np.dtype(a.dtype) != np.dtype(dtype):
                raise StoreError(f"the array of field {name!r} in {self.path} has shape {tuple(a.shape)} {a.dtype}, "
                                 f"the manifest says {want} {dtype}; delete {self.path} and collect again")

    # -------------------------------------------------------------- state
    @property
    def complete(self) -> bool:
        return len(self._done) == self.n_chunks

    @property
    def done_chunks(self) -> list[int]:
        return sorted(self._done)

    def missing_chunks(self) -> list[int]:
        return [i for i in range(self.n_chunks) if i not in self._done]

    def chunk_images(self, i: int) -> range:
        """The data-set images of chunk ``i``."""
        if not 0 <= i < self.n_chunks:
            raise StoreError(f"chunk {i} is outside 0..{self.n_chunks - 1}")
        return range(i * self.chunk, min((i + 1) * self.chunk, self.n_images))

    def n_rows(self, field: str) -> int:
        self._field(field)
        return self.n_images * self.rows_per_image[field]

    @property
    def nbytes(self) -> int:
        """Bytes of all fields, uncompressed (what reading everything costs in memory)."""
        return sum(self.n_rows(f) * int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize
                   for f, (s, d) in self.fields.items())

    def disk_bytes(self) -> int:
        """Bytes the store takes on disk (compressed chunks, metadata, manifest)."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def _field(self, field: str) -> None:
        if field not in self.fields:
            raise StoreError(f"the store {self.path} has no field {field!r} "
                             f"{did_you_mean(field, list(self.fields), listing='fields')}")

    # -------------------------------------------------------------- writing
    def write_chunk(self, i: int, arrays: dict[str, np.ndarray]) -> None:
        """Write every field's rows of chunk ``i`` (validated first), fsync them, then mark the chunk done."""
        imgs = self.chunk_images(int(i))
        if set(arrays) != set(self.fields):
            missing, extra = sorted(set(self.fields) - set(arrays)), sorted(set(arrays) - set(self.fields))
            raise StoreError(f"chunk {i}: the fields do not match the store's"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(extra)}" if extra else ""))
        ready = {}
        for name, a in arrays.items():
            shape, dtype = self.fields[name]
            a = np.asarray(a)
            want = (len(imgs) * self.rows_per_image[name], *shape)
            if tuple(a.shape) != want:
                raise StoreError(f"chunk {i}: field {name!r} has shape {tuple(a.shape)}, expected {want}")
            if a.dtype != np.dtype(dtype):
                if not np.can_cast(a.dtype, dtype, casting="safe"):
                    raise StoreError(f"chunk {i}: field {name!r} is {a.dtype}, expected {dtype} "
                                     "(only lossless conversions are made)")
                a = a.astype(dtype)
            ready[name] = np.ascontiguousarray(a)
        try:
            for name, a in ready.items():
                r = self.rows_per_image[name]
                self._array(name)[imgs.start * r: imgs.stop * r] = a
            for name in ready:
                self._fsync_chunk(name, imgs)
            self._mark_done(int(i))
        except OSError as e:  # a full disk or a folder that turned read-only: chunk i stays unmarked
            raise _not_writable(self.path, e, f"writing chunk {i}") from e

    def _fsync_chunk(self, name: str, imgs: range) -> None:
        """fsync the zarr chunk files holding ``imgs`` of field ``name`` (and their folders)."""
        a = self._array(name)
        r, zc = self.rows_per_image[name], int(a.chunks[0])
        tail = ["0"] * (len(a.shape) - 1)
        dirs = set()
        for j in range(imgs.start * r // zc, -(-(imgs.stop * r) // zc)):
            p = self.path.joinpath(*name.split("/"), "c", str(j), *tail)
            fsync_path(p)
            dirs.add(p.parent)
        for d in dirs:
            fsync_path(d)

    def _mark_done(self, i: int) -> None:
        with exclusive_lock(self.path / ".lock"):
            m = self._read_manifest(self.path)  # another writer may have marked chunks since we read it
            done = set(int(j) for j in m["done"]) | self._done | {i}
            m["done"] = sorted(done)
            m["updated"] = _now()
            atomic_write_text(self.path / MANIFEST, json.dumps(m, indent=1, sort_keys=True))
        self._m = m
        self._done = done

    def refresh(self) -> "AtlasStore":
        """Re-read the manifest (chunks another process finished since this store was opened)."""
        m = self._read_manifest(self.path)
        self._m = m
        self._done = set(int(j) for j in m["done"])
        return self

    # -------------------------------------------------------------- reading
    def done_rows(self, field: str) -> np.ndarray:
        """The row indices of ``field`` that lie in done chunks, in order."""
        self._field(field)
        r = self.rows_per_image[field]
        parts = [np.arange(self.chunk_images(i).start * r, self.chunk_images(i).stop * r) for i in self.done_chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def read(self, field: str, rows: Rows = None, *, partial: bool = False) -> np.ndarray:
        """Rows of ``field`` as a numpy array: all of them (``rows=None``), a slice, or an index array.

        An incomplete store raises :class:`StoreError` unless ``partial``; then ``rows=None`` gives the
        rows of the done chunks only (in order; :meth:`done_rows` says which), and explicit rows must
        all lie in done chunks.
        """
        self._field(field)
        n = self.n_rows(field)
        r = self.rows_per_image[field]
        if not self.complete and not partial:
            raise StoreError(
                f"the atlas store {self.path} is incomplete ({len(self._done)} of {self.n_chunks} chunks done): run the "
                "collection again to finish it (it resumes), or read(..., partial=True) for the done chunks")
        a = self._array(field)
        try:
            if rows is None:
                if self.complete:
                    return a[:]
                runs: list[tuple[int, int]] = []
                for i in self.done_chunks:  # contiguous runs of done chunks, one read each
                    s, e = self.chunk_images(i).start * r, self.chunk_images(i).stop * r
                    if runs and runs[-1][1] == s:
                        runs[-1] = (runs[-1][0], e)
                    else:
                        runs.append((s, e))
                shape, dtype = self.fields[field]
                return (np.concatenate([a[s:e] for s, e in runs]) if runs else np.zeros((0, *shape), dtype))
            if isinstance(rows, (slice, range)):
                sl = slice(rows.start, rows.stop, rows.step) if isinstance(rows, range) else rows
                start, stop, step = sl.indices(n)
                if not self.complete:
                    self._check_done(np.arange(start, stop, step), r)
                if step == 1:
                    return a[start:stop]
                rows = np.arange(start, stop, step)
            idx = np.asarray(rows)
            if idx.dtype == bool:
                if idx.shape != (n,):
                    raise StoreError(f"a boolean row mask for {field!r} must have {n} entries, got {idx.shape}")
                idx = np.flatnonzero(idx)
            if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
                raise StoreError(f"rows must be None, a slice or a 1-d array of row indices, got {idx.dtype} {idx.shape}")
            idx = idx.astype(np.int64)
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise StoreError(f"row index out of range for {field!r} ({n} rows)")
            idx = np.where(idx < 0, idx + n, idx)
            if not self.complete:
                self._check_done(idx, r)
            if idx.size == 0:
                shape, dtype = self.fields[field]
                return np.zeros((0, *shape), dtype)
            return a.oindex[idx]
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - a chunk the manifest calls done that cannot be decoded
            raise StoreError(f"reading {field!r} from {self.path} failed ({type(e).__name__}: {e}); the store is "
                             f"damaged: delete {self.path} and collect again") from None

    def _check_done(self, idx: np.ndarray, r: int) -> None:
        if idx.size == 0:
            return
        chunks = np.unique(idx // (r * self.chunk))
        bad = [int(c) for c in chunks if int(c) not in self._done]
        if bad:
            raise StoreError(f"rows in chunk(s) {', '.join(map(str, bad[:5]))} of {self.path} are not collected yet; "
                             "run the collection again to finish it")
