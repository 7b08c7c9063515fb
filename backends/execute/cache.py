"""Content-addressed on-disk cache of results.

A result is a ``dict`` with string keys whose values are tensors, NumPy arrays, or JSON values
(``None``, bool, int, float, str, lists/tuples and dicts with string keys), nested freely: tensors and
arrays may sit anywhere inside the lists and dicts. Nothing is ever unpickled.

Keys
----
:func:`cache_key` hashes (SHA-256) a canonical JSON of its keyword arguments plus :data:`CODE_VERSION`:
dict keys sorted, no whitespace, ASCII only; tensors and arrays are replaced by their dtype, shape and
:func:`tensor_digest`; ``torch.dtype``/``torch.device``/``pathlib.Path`` by their ``str``; NumPy
scalars by the equal Python number; ``bytes`` by their SHA-256. Floats are written with Python's
shortest round-trip ``repr``, so the key is the same in every process (no use of ``hash()``). Tuples
and lists hash alike; ``1`` and ``1.0`` do not. Any other type raises ``TypeError``.

On-disk format (one file per entry, ``root/<key[:2]>/<key>.ig``)
----------------------------------------------------------------
::

    b"IGCACHE\\x01"                 8 bytes: magic and format version
    header length                   8 bytes, unsigned little-endian
    header                          UTF-8 JSON: {"format": 1, "code_version": ..., "key": ...,
                                    "value": <the dict, with tensors
                                    replaced by {"$ig:tensor": i} / {"$ig:ndarray": i}>}
    payload                         safetensors bytes holding tensors "0", "1", ...
    sha256                          32 bytes: SHA-256 of everything above
    b"IGEND\\x00\\x00\\x01"            8 bytes: end marker

The digest covers the header and every tensor byte, so a truncated file, a flipped bit anywhere, or
a file cut short by a crash is detected on read. The entry's own key is in the header and must match
the requested key (a file copied or renamed to the wrong place is not served).

Reading back: tensors come back as CPU ``torch.Tensor`` of the same dtype and shape (``requires_grad``
is not kept); NumPy arrays come back as ``np.ndarray`` of the same dtype (native byte order) and
shape; tuples come back as lists; NumPy scalars as Python numbers. Values that cannot be stored
exactly (sets, objects, dicts with non-string keys, object/str arrays, sparse tensors) raise
``TypeError`` in :meth:`ResultCache.put`.

Writes and crashes
------------------
:meth:`ResultCache.put` writes the whole file to a temporary file in the entry's own directory
(``.<key>.<pid>.<random>.tmp``), flushes and ``fsync``\\ s it, then ``os.replace``\\ s it onto the entry's
name (atomic on POSIX and Windows) and ``fsync``\\ s the directory. Readers therefore see either the old
entry, or no entry, or the complete new one. Two writers of the same key each write their own
temporary file; the last ``os.replace`` wins and both are complete entries.

Temporary-file cleanup rules:

1. If the write fails or is interrupted inside the process (any exception, ``KeyboardInterrupt``
   included), ``put`` deletes its temporary file before re-raising.
2. If the process dies hard (``SIGKILL``, power loss), the temporary file stays. It is never read as
   an entry (``get`` only opens ``<key>.ig``). Each ``put`` removes temporary files older than
   ``stale_tmp_s`` (default one hour, long enough not to race a live writer) from the directory it
   writes to, and :meth:`ResultCache.cleanup` removes them from the whole cache.

Size limit (least recently used goes first)
-------------------------------------------
The cache holds at most ``max_bytes`` (default :data:`DEFAULT_MAX_BYTES`, 2 GiB; ``$INTERPGRAM_CACHE_MAX_SIZE``
or ``--cache-max-size`` such as ``500M``, ``2G``, ``none``), counting result entries and the atlas
collections under ``root/atlas``. A hit bumps the entry's modification time; when a ``put`` takes the
cache past its limit, the least recently used entries (and whole atlas stores) are deleted, under an
advisory lock, until it is back under 90% of the limit. Each deletion is atomic: an entry is one
``unlink`` (a reader that already opened it still reads it whole, a later reader misses), an atlas
store is first renamed into ``root/_trash`` and then removed, so no half-deleted store is ever seen
at its own name. The entry just written and the stores this process uses (:meth:`ResultCache.pin`)
are never evicted by the same process.

A cache that cannot be written
------------------------------
When a write fails with an ``OSError`` (a read-only folder, a full disk, a quota), ``put`` logs one
line saying so, stops writing (``writable`` becomes ``False``, ``degraded`` holds the reason) and
returns: the value is in memory and the caller goes on without the cache; reads still work.

Corrupt entries
---------------
A corrupt, truncated or unreadable entry makes ``get`` return ``None`` (so the caller recomputes),
counts in ``stats.corrupt`` (and ``stats.misses``), logs one warning for that entry, and is moved
aside to ``root/_corrupt/`` (or deleted if it cannot be moved); the newest
:data:`KEEP_CORRUPT` files are kept there for inspection, older ones are deleted.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from interpgram.backends.files import exclusive_lock, default_root, fsync_path

__all__ = [
    "CODE_VERSION",
    "DEFAULT_MAX_BYTES",
    "KEEP_CORRUPT",
    "MAX_SIZE_ENV",
    "CacheStats",
    "CorruptEntry",
    "ResultCache",
    "cache_key",
    "default_max_bytes",
    "default_root",
    "format_size",
    "parse_size",
    "tensor_digest",
]

log = logging.getLogger(__name__)

#: Bump when a change in the code changes results: every key includes it, so old entries are
#: simply never looked up again.
CODE_VERSION = "1"

#: How many moved-aside corrupt entries ``root/_corrupt`` keeps.
KEEP_CORRUPT = 16

_MAGIC = b"IGCACHE\x01"
_END = b"IGEND\x00\x00\x01"
_DIGEST_LEN = 32
_MIN_LEN = len(_MAGIC) + 8 + _DIGEST_LEN + len(_END)
_TENSOR_TAG = "$ig:tensor"
_ARRAY_TAG = "$ig:ndarray"
_RESERVED_PREFIX = "$ig:"
_SUFFIX = ".ig"
_TMP_SUFFIX = ".tmp"
_CORRUPT_DIR = "_corrupt"
_ATLAS_DIR = "atlas"
_TRASH_DIR = "_trash"
_LOCK = ".lock"

#: The default size limit of a cache (result entries and atlas collections together).
DEFAULT_MAX_BYTES = 2 << 30
#: The environment variable that sets the size limit (``500M``, ``2G``, ``none``).
MAX_SIZE_ENV = "INTERPGRAM_CACHE_MAX_SIZE"
_EVICT_TO = 0.9  # an eviction pass brings the cache down to this fraction of its limit
_RESCAN_EVERY = 64  # puts between two scans of the folder (other processes write too)

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str | int | None, *, what: str = "cache size") -> Optional[int]:
    """Bytes from ``500M``, ``2G``, ``1.5GiB``, ``800k``, ``123`` (bytes; units are powers of 1024);
    ``None`` for ``none``/``unlimited``. Anything else raises ``ValueError`` saying what is accepted."""
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        n = text
    else:
        t = str(text).strip()
        if t.lower() in ("none", "unlimited", "inf"):
            return None
        m = _SIZE_RE.match(t)
        if not m:
            raise ValueError(f"{what}: {text!r} is not a size; write e.g. 500M, 2G, 1.5GiB, 800k, a number of bytes, "
                             "or none (no limit)")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n < 1:
        raise ValueError(f"{what}: {text!r} is below one byte; to keep nothing use --no-cache (or execution.cache: "
                         "false), for no limit write none")
    return n


def format_size(n: Optional[int]) -> str:
    """``1.5 GiB``, ``512 MiB``, ``900 B``; ``no limit`` for ``None``."""
    if n is None:
        return "no limit"
    for unit, f in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f:
            v = n / f
            return f"{v:.1f} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{n} B"


def default_max_bytes() -> Optional[int]:
    """``$INTERPGRAM_CACHE_MAX_SIZE`` if set (``ValueError`` naming it when it is not a size), else
    :data:`DEFAULT_MAX_BYTES`."""
    env = os.environ.get(MAX_SIZE_ENV)
    if env is None or not env.strip():
        return DEFAULT_MAX_BYTES
    return parse_size(env, what=f"${MAX_SIZE_ENV}")


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass  # removed meanwhile
    return total


class CorruptEntry(Exception):
    """A stored entry failed its integrity or format checks."""


# --------------------------------------------------------------------------------------------------
# Digests and keys


def _dtype_name(dtype: torch.dtype | np.dtype) -> str:
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return np.dtype(dtype).name


def _tensor_bytes_view(t: torch.Tensor) -> np.ndarray:
    """The tensor's bytes (CPU, C-contiguous, conj/neg resolved) as a flat uint8 array."""
    if t.layout != torch.strided:
        raise TypeError(f"only dense (strided) tensors are supported, got layout {t.layout}")
    t = t.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
    if t.numel() == 0:
        return np.zeros(0, dtype=np.uint8)
    return t.reshape(-1).view(torch.uint8).numpy()


def _array_le(a: np.ndarray) -> np.ndarray:
    if a.dtype.hasobject or a.dtype.kind in "OUSVMm":
        raise TypeError(f"NumPy arrays of dtype {a.dtype} are not supported (numeric and bool only)")
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        a = a.astype(a.dtype.newbyteorder("<"))
    return np.ascontiguousarray(a)


def tensor_digest(t: torch.Tensor | np.ndarray) -> str:
    """SHA-256 hex of a tensor's (or NumPy array's) dtype, shape and bytes.

    The bytes are those of a CPU, C-contiguous, little-endian copy, so the digest does not depend on
    device, strides or byte order, and a NumPy array and a tensor with equal dtype, shape and values
    have the same digest.
    """
    if isinstance(t, torch.Tensor):
        dtype, shape, data = _dtype_name(t.dtype), tuple(t.shape), _tensor_bytes_view(t)
    elif isinstance(t, np.ndarray):
        a = _array_le(t)
        dtype, shape, data = _dtype_name(a.dtype), a.shape, a.reshape(-1).view(np.uint8)
    else:
        raise TypeError(f"tensor_digest: expected a torch.Tensor or np.ndarray, got {type(t).__name__}")
    h = hashlib.sha256()
    h.update(f"{dtype}|{','.join(map(str, shape))}|".encode())
    h.update(memoryview(data))
    return h.hexdigest()


def _canonical(obj: Any, where: str) -> Any:
    """A JSON-able canonical form of a key part."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        dt = obj.dtype
        return {_TENSOR_TAG: [_dtype_name(dt), list(obj.shape), tensor_digest(obj)]}
    if isinstance(obj, np.generic) and not isinstance(obj, (np.str_, np.bytes_, np.void)):
        return _canonical(obj.item(), where)
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"$ig:bytes": hashlib.sha256(bytes(obj)).hexdigest()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"cache_key: dict keys must be str, got {k!r} at {where}")
            if k.startswith(_RESERVED_PREFIX):
                raise ValueError(f"cache_key: dict key {k!r} at {where} uses the reserved prefix '$ig:'")
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    raise TypeError(
        f"cache_key: cannot hash {type(obj).__name__} at {where}; use str/int/float/bool/None, "
        "lists, dicts with str keys, tensors, arrays, torch.dtype/device, Path or bytes"
    )


def cache_key(**parts: Any) -> str:
    """Stable SHA-256 hex key over ``parts`` and :data:`CODE_VERSION` (see the module docstring).

    Example: ``cache_key(model=model_digest, input=tensor_digest(x), op="nmf", params={"k": 6})``.
    """
    canon = {"code_version": CODE_VERSION, "parts": _canonical(parts, "parts")}
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------------------------------
# Encoding


def _encode_value(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:
            raise TypeError(f"ResultCache.put: {where} is a {obj.layout} tensor; only dense tensors are stored")
        name = str(len(tensors))
        # clone: safetensors refuses tensors that share storage; resolve conj/neg bits first.
        tensors[name] = obj.detach().to("cpu").resolve_conj().resolve_neg().clone(
            memory_format=torch.contiguous_format
        )
        return {_TENSOR_TAG: len(tensors) - 1}
    if isinstance(obj, np.ndarray):
        try:
            a = _array_le(obj)
            t = torch.from_numpy(a.copy())
        except TypeError as e:
            raise TypeError(f"ResultCache.put: {where}: {e}") from None
        name = str(len(tensors))
        tensors[name] = t
        return {_ARRAY_TAG: len(tensors) - 1}
    if isinstance(obj, np.generic) and not isinstance(obj, (np.str_, np.bytes_, np.void)):
        return _encode_value(obj.item(), tensors, where)
    if isinstance(obj, (list, tuple)):
        return [_encode_value(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"ResultCache.put: dict keys must be str (JSON would turn {k!r} into a string), at {where}"
                )
            if k.startswith(_RESERVED_PREFIX):
                raise ValueError(f"ResultCache.put: dict key {k!r} at {where} uses the reserved prefix '$ig:'")
            out[k] = _encode_value(v, tensors, f"{where}.{k}")
        return out
    raise TypeError(
        f"ResultCache.put: {where} is a {type(obj).__name__}, which cannot be stored without pickling; "
        "store tensors, NumPy arrays, or JSON values (None, bool, int, float, str, list, dict with str keys)"
    )


def _decode_value(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode_value(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if len(obj) == 1 and (_TENSOR_TAG in obj or _ARRAY_TAG in obj):
            (tag, idx), = obj.items()
            t = tensors[str(idx)]
            return t if tag == _TENSOR_TAG else t.numpy()
        return {k: _decode_value(v, tensors) for k, v in obj.items()}
    return obj


def _encode(key: str, value: dict) -> bytes:
    if not isinstance(value, dict):
        raise TypeError(f"ResultCache.put: value must be a dict, got {type(value).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode_value(value, tensors, "value")
    header = json.dumps(
        {"format": 1, "code_version": CODE_VERSION, "key": key, "value": encoded},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=True,
    ).encode("utf-8")
    try:
        payload = _st_save(tensors)
    except Exception as e:  # e.g. a dtype safetensors cannot store
        dtypes = sorted({_dtype_name(t.dtype) for t in tensors.values()})
        raise TypeError(f"ResultCache.put: cannot store tensors of dtypes {dtypes}: {e}") from e
    body = b"".join([_MAGIC, len(header).to_bytes(8, "little"), header, payload])
    return body + hashlib.sha256(body).digest() + _END


def _decode(key: str, data: bytes) -> dict:
    if len(data) < _MIN_LEN:
        raise CorruptEntry(f"file too short ({len(data)} bytes)")
    if data[: len(_MAGIC)] != _MAGIC:
        raise CorruptEntry("bad magic or unknown format version")
    if data[-len(_END):] != _END:
        raise CorruptEntry("missing end marker (truncated or partially written)")
    view = memoryview(data)
    body, digest = view[: -len(_END) - _DIGEST_LEN], view[-len(_END) - _DIGEST_LEN : -len(_END)]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptEntry("SHA-256 mismatch (content changed after it was written)")
    hlen = int.from_bytes(body[len(_MAGIC) : len(_MAGIC) + 8], "little")
    start = len(_MAGIC) + 8
    if start + hlen > len(body):
        raise CorruptEntry("header length past the end of the file")
    try:
        header = json.loads(bytes(body[start : start + hlen]).decode("utf-8"))
        tensors = _st_load(bytes(body[start + hlen :]))
    except Exception as e:  # a digest-valid file written by a different/buggy writer
        raise CorruptEntry(f"undecodable content: {e}") from e
    if not isinstance(header, dict) or header.get("key") != key:
        raise CorruptEntry(f"entry belongs to key {header.get('key') if isinstance(header, dict) else '?'!r}")
    try:
        value = _decode_value(header["value"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptEntry(f"inconsistent header: {e!r}") from e
    if not isinstance(value, dict):
        raise CorruptEntry("stored value is not a dict")
    return value


# --------------------------------------------------------------------------------------------------
# The cache


@dataclass
class CacheStats:
    """Counters of one :class:`ResultCache`: ``misses`` includes ``corrupt`` entries."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    reused: int = 0  # of the hits: served by a disabled cache from this object's memory (see RUN_MEMORY_BYTES)


def _check_key(key: str) -> str:
    if not isinstance(key, str) or len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"cache key must be 64 lowercase hex characters (from cache_key), got {key!r}")
    return key


#: a disabled cache (``--no-cache``) still keeps what one run computes, in memory, up to this many bytes
#: (least recently used out first; an entry over a quarter of it is not kept), so that a piece two
#: stages need (an icon of an element and of a link selection) is not computed twice in one render
RUN_MEMORY_BYTES = 256 * 2**20


class ResultCache:
    """Content-addressed on-disk cache (format and guarantees in the module docstring).

    Args:
        root: directory of the cache; ``None`` means :func:`default_root`. Created on first write.
        enabled: when ``False`` the cache never touches the disk and nothing outlives the object:
            ``get`` misses except for what this object's own ``put`` kept in memory (the encoded entry,
            so a hit is a fresh copy; at most :data:`RUN_MEMORY_BYTES`), so one run reuses its own pieces
            and ``stats.reused`` counts those hits.
        stale_tmp_s: age in seconds after which a leftover temporary file is deleted by ``put`` (in
            the directory it writes to) and by :meth:`cleanup`.
        max_bytes: the size limit (entries and atlas stores); ``"default"`` means
            :func:`default_max_bytes` (``$INTERPGRAM_CACHE_MAX_SIZE`` or 2 GiB), ``None`` no limit; a
            string such as ``"500M"`` is parsed by :func:`parse_size`.
    """

    def __init__(self, root: str | Path | None = None, *, enabled: bool = True, stale_tmp_s: float = 3600.0,
                 max_bytes: int | str | None = "default"):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.enabled = bool(enabled)
        self.stale_tmp_s = float(stale_tmp_s)
        self.max_bytes: Optional[int] = (default_max_bytes() if max_bytes == "default"
                                         else parse_size(max_bytes, what="cache max_bytes"))
        self.stats = CacheStats()
        self.writable = True  # False after a write failed (read-only or full folder): reads go on
        self.degraded: Optional[str] = None  # why the cache stopped writing, for the user
        self.evicted = 0  # entries and stores this object evicted
        self._pinned: set[Path] = set()
        self._estimate: Optional[int] = None  # bytes in the cache as last scanned plus this process's puts
        self._puts_since_scan = 0
        self._memory: OrderedDict[str, bytes] = OrderedDict()  # a disabled cache's own puts, encoded
        self._memory_bytes = 0

    def __repr__(self) -> str:
        return f"ResultCache({str(self.root)!r}, enabled={self.enabled}, stats={self.stats})"

    def pin(self, path: str | Path) -> None:
        """Never evict ``path`` (an atlas store under ``root/atlas``) from this object."""
        self._pinned.add(Path(path))

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives: ``root/<key[:2]>/<key>.ig``."""
        key = _check_key(key)
        return self.root / key[:2] / f"{key}{_SUFFIX}"

    # -- reading ------------------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, torch.Tensor | Any] | None:
        """The stored value for ``key``, or ``None`` on a miss or a corrupt/unreadable entry."""
        path = self.path(key)
        if not self.enabled:
            data = self._memory.get(key)
            if data is None:
                self.stats.misses += 1
                return None
            self._memory.move_to_end(key)
            self.stats.hits += 1
            self.stats.reused += 1
            return _decode(key, data)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        except OSError as e:
            self._corrupt(path, f"unreadable: {e}")
            return None
        try:
            value = _decode(key, data)
        except CorruptEntry as e:
            self._corrupt(path, str(e))
            return None
        self.stats.hits += 1
        if self.writable:
            try:
                os.utime(path)  # recency for the size limit (least recently used goes first)
            except OSError:
                pass  # a read-only cache, or evicted meanwhile: the value is already read
        return value

    def __contains__(self, key: str) -> bool:
        """Whether a file exists for ``key`` (its integrity is checked only by :meth:`get`); for a disabled
        cache, whether this object kept it in memory."""
        return self.path(key).is_file() if self.enabled else _check_key(key) in self._memory

    def _corrupt(self, path: Path, reason: str) -> None:
        self.stats.misses += 1
        self.stats.corrupt += 1
        qdir = self.root / _CORRUPT_DIR
        dest = qdir / f"{path.stem}.{time.time_ns()}.{os.getpid()}{_SUFFIX}"
        try:
            qdir.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
            where = f"moved to {dest}"
        except FileNotFoundError:
            where = "already gone"
        except OSError:
            try:
                path.unlink()
                where = "deleted"
            except OSError as e:
                where = f"could not be removed ({e})"
        log.warning("interpgram cache: corrupt entry %s (%s); %s; it will be recomputed", path.name, reason, where)
        self._prune_corrupt(qdir)

    @staticmethod
    def _prune_corrupt(qdir: Path) -> None:
        try:
            files = sorted(qdir.glob(f"*{_SUFFIX}"), key=lambda p: p.stat().st_mtime_ns)
        except OSError:
            return
        for old in files[: max(0, len(files) - KEEP_CORRUPT)]:
            try:
                old.unlink()
            except OSError:
                pass

    # -- writing ------------------------------------------------------------------------------------

    def put(self, key: str, value: dict) -> None:
        """Store ``value`` under ``key`` atomically (no-op when disabled or no longer writable), then
        evict least recently used entries if the cache is past its size limit.

        Raises ``TypeError`` (before touching the disk) if ``value`` holds something that cannot be
        stored without pickling. A write that fails with an ``OSError`` (read-only or full folder)
        does not raise: see :meth:`_stop_writing`.
        """
        path = self.path(key)
        if not self.enabled:
            self._keep_in_memory(key, _encode(key, value))
            return
        if not self.writable:
            return
        data = _encode(key, value)
        shard = path.parent
        tmp = shard / f".{key}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
        try:
            shard.mkdir(parents=True, exist_ok=True)
            self._remove_stale_tmp(shard, self.stale_tmp_s)
            try:
                with open(tmp, "xb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                try:
                    tmp.unlink()
                except OSError:
                    pass
                raise
        except OSError as e:
            self._stop_writing(e)
            return
        fsync_path(shard)
        if self.max_bytes is not None:
            self._account(len(data), keep=path)

    def _keep_in_memory(self, key: str, data: bytes) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_bytes -= len(old)
        if len(data) > RUN_MEMORY_BYTES // 4:
            return
        self._memory[key] = data
        self._memory_bytes += len(data)
        while self._memory_bytes > RUN_MEMORY_BYTES:
            _, dropped = self._memory.popitem(last=False)
            self._memory_bytes -= len(dropped)

    def _stop_writing(self, e: OSError) -> None:
        """A write failed: say so once, in one line, and go on without writing (reads still work)."""
        why = {errno.ENOSPC: "the disk is full", errno.EROFS: "the folder is read-only",
               errno.EACCES: "no permission to write there", errno.EPERM: "no permission to write there",
               errno.EFBIG: "a file size limit was reached"}.get(e.errno, e.strerror or type(e).__name__)
        if getattr(errno, "EDQUOT", None) == e.errno:
            why = "the disk quota is exhausted"
        self.writable = False
        self.degraded = f"cannot write to {self.root} ({why}); results are computed but not cached"
        log.warning("interpgram cache: %s", self.degraded)

    # -- size limit ---------------------------------------------------------------------------------

    def _account(self, nbytes: int, keep: Path) -> None:
        self._puts_since_scan += 1
        if self._estimate is None or self._puts_since_scan >= _RESCAN_EVERY:
            self._estimate = self.size()
            self._puts_since_scan = 0
        else:
            self._estimate += nbytes
        if self._estimate > self.max_bytes:
            self.evict(keep=keep)

    def _units(self) -> list[tuple[int, int, Path, str]]:
        """Every evictable unit: ``(mtime_ns, bytes, path, kind)``, kind ``entry`` or ``atlas``."""
        out: list[tuple[int, int, Path, str]] = []
        if not self.root.is_dir():
            return out
        try:
            tops = list(os.scandir(self.root))
        except OSError:
            return out
        for d in tops:
            if d.is_dir(follow_symlinks=False) and len(d.name) == 2:
                try:
                    for e in os.scandir(d.path):
                        if e.name.endswith(_SUFFIX) and e.is_file(follow_symlinks=False):
                            st = e.stat(follow_symlinks=False)
                            out.append((st.st_mtime_ns, st.st_size, Path(e.path), "entry"))
                except OSError:
                    continue  # a shard removed meanwhile
        atlas = self.root / _ATLAS_DIR
        if atlas.is_dir():
            for d in os.scandir(atlas):
                if not d.is_dir(follow_symlinks=False):
                    continue
                p = Path(d.path)
                try:  # recency: the manifest (rewritten per chunk, touched on every use), else the folder
                    mt = max(os.stat(p / "manifest.json").st_mtime_ns, d.stat().st_mtime_ns)
                except OSError:
                    mt = d.stat().st_mtime_ns
                out.append((mt, _tree_bytes(p), p, "atlas"))
        return out

    def size(self) -> int:
        """Bytes of every entry and atlas store (what the size limit counts)."""
        return sum(u[1] for u in self._units())

    def evict(self, keep: Optional[Path] = None, target: Optional[int] = None) -> int:
        """Delete least recently used entries and atlas stores until the cache holds at most ``target``
        bytes (default 90% of ``max_bytes``); returns how many went. Never removes ``keep`` or a
        pinned store. Serialised between processes by an advisory lock on ``root/.lock``."""
        if not self.enabled or not self.writable or not self.root.is_dir():
            return 0
        if target is None:
            if self.max_bytes is None:
                return 0
            target = int(self.max_bytes * _EVICT_TO)
        n = 0
        try:
            with exclusive_lock(self.root / _LOCK):
                shutil.rmtree(self.root / _TRASH_DIR, ignore_errors=True)  # stores an evictor died removing
                units = sorted(self._units())
                total = sum(u[1] for u in units)
                for _mtime, size, p, kind in units:
                    if total <= target:
                        break
                    if p == keep or p in self._pinned:
                        continue
                    if self._remove_unit(p, kind):
                        total -= size
                        n += 1
                self._estimate = total
                self._puts_since_scan = 0
        except OSError as e:  # the lock file cannot be made: a folder that turned read-only
            self._stop_writing(e)
            return n
        if n:
            self.evicted += n
            log.info("interpgram cache: evicted %d least recently used item(s) to stay under %s", n,
                     format_size(self.max_bytes))
        return n

    def _remove_unit(self, p: Path, kind: str) -> bool:
        if kind == "entry":
            try:
                p.unlink()
                return True
            except FileNotFoundError:
                return False  # another process evicted it
            except OSError:
                return False
        trash = self.root / _TRASH_DIR
        dest = trash / f"{p.name}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            trash.mkdir(exist_ok=True)
            os.rename(p, dest)  # atomic: the store is whole at its name, or gone
        except OSError:
            return False
        shutil.rmtree(dest, ignore_errors=True)
        return True

    def info(self) -> dict:
        """What ``interpgram cache info`` prints: location, entries, atlas stores, bytes, limit."""
        units = self._units()
        entries = [u for u in units if u[3] == "entry"]
        stores = [u for u in units if u[3] == "atlas"]

        def count(sub: str, pred) -> int:
            d = self.root / sub
            try:
                return sum(1 for _ in filter(pred, os.scandir(d))) if d.is_dir() else 0
            except OSError:
                return 0

        tmp = 0
        if self.root.is_dir():
            for d in os.scandir(self.root):
                if d.is_dir(follow_symlinks=False) and len(d.name) == 2:
                    tmp += count(d.name, lambda e: e.name.startswith(".") and e.name.endswith(_TMP_SUFFIX))
        return {"root": str(self.root), "exists": self.root.is_dir(), "entries": len(entries),
                "entry_bytes": sum(u[1] for u in entries), "atlas_stores": len(stores),
                "atlas_bytes": sum(u[1] for u in stores), "bytes": sum(u[1] for u in units),
                "max_bytes": self.max_bytes, "corrupt_kept": count(_CORRUPT_DIR, lambda e: e.name.endswith(_SUFFIX)),
                "tmp_files": tmp, "oldest_ns": min((u[0] for u in units), default=None),
                "newest_ns": max((u[0] for u in units), default=None)}

    def get_or_compute(self, key: str, fn: Callable[[], dict]) -> tuple[dict, bool]:
        """``(value, hit)``: the cached value, or ``fn()`` stored then returned as ``fn`` gave it."""
        value = self.get(key)
        if value is not None:
            return value, True
        value = fn()
        self.put(key, value)
        return value, False

    # -- maintenance --------------------------------------------------------------------------------

    @staticmethod
    def _remove_stale_tmp(directory: Path, older_than_s: float) -> int:
        now = time.time()
        removed = 0
        try:
            candidates = [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(_TMP_SUFFIX)]
        except OSError:
            return 0
        for p in candidates:
            try:
                if now - p.stat().st_mtime >= older_than_s:
                    p.unlink()
                    removed += 1
            except OSError:
                pass  # another process finished or removed it
        return removed

    def cleanup(self, older_than_s: float | None = None) -> int:
        """Delete leftover temporary files older than ``older_than_s`` (default ``stale_tmp_s``)
        everywhere under ``root``; returns how many were removed. Never touches entries."""
        if not self.enabled or not self.root.is_dir():
            return 0
        age = self.stale_tmp_s if older_than_s is None else float(older_than_s)
        return sum(self._remove_stale_tmp(d, age) for d in self.root.iterdir() if d.is_dir() and len(d.name) == 2)

    def clear(self, *, atlas: bool = True) -> int:
        """Delete every entry (and the corrupt and temporary files) and, with ``atlas``, every atlas
        store; returns how many entries and stores went."""
        if not self.enabled or not self.root.is_dir():
            return 0
        n = 0
        for d in self.root.iterdir():
            if not d.is_dir() or not (len(d.name) == 2 or d.name == _CORRUPT_DIR):
                continue
            for p in d.iterdir():
                if p.name.endswith(_SUFFIX) or (p.name.startswith(".") and p.name.endswith(_TMP_SUFFIX)):
                    try:
                        p.unlink()
                        n += d.name != _CORRUPT_DIR and p.name.endswith(_SUFFIX)
                    except OSError:
                        pass
        if atlas:
            with exclusive_lock(self.root / _LOCK):
                a = self.root / _ATLAS_DIR
                if a.is_dir():
                    for d in a.iterdir():
                        if d.is_dir() and not d.is_symlink():
                            n += self._remove_unit(d, "atlas")
                shutil.rmtree(self.root / _TRASH_DIR, ignore_errors=True)
        self._estimate = None
        return n
