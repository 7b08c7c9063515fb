"""Device choice and out-of-memory handling."""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

T = TypeVar("T")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda when present, else mps, else cpu. An explicit device that is missing is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"execution.device is {name!r} but this machine has no CUDA device; use device: auto or cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"execution.device is {name!r} but MPS is not available here; use device: auto or cpu")
    return dev


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:  # no /proc (not Linux): no flags, so no native bfloat16 is assumed
        return frozenset()
    return frozenset()  # no "flags" line (not x86: ARM lists "Features")


def native_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 arithmetic is native on ``device`` (so a bfloat16 model runs faster than a float32
    one): any cuda device, or a CPU with AMX or AVX512-BF16 (read from /proc/cpuinfo; elsewhere no).
    ``python benchmarks/featurevis_autocast.py`` measured icons 1.93× faster under bfloat16 autocast
    on a Xeon with AMX, at the same float32-scored objective, and 0.12× on an AMD EPYC without either."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def run_batched(fn: Callable[[int, int], T], n: int, batch_size: int | None, *,
                on_halve: Callable[[int], None] | None = None) -> list[T]:
    """Call ``fn(start, stop)`` over ``range(n)`` in batches; an out-of-memory halves the batch and
    retries the same slice (down to one item, then the error is raised)."""
    size = max(1, min(batch_size or n, n))
    out: list[T] = []
    start = 0
    while start < n:
        stop = min(start + size, n)
        try:
            out.append(fn(start, stop))
        except Exception as e:  # noqa: BLE001 - filtered by is_oom
            if not is_oom(e) or size == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(1, size // 2)
            if on_halve:
                on_halve(size)
            continue
        start = stop
    return out
