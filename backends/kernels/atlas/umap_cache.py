"""umap-learn with every compiled function kept on disk, so that only a machine's first layout compiles.

umap-learn and pynndescent compile their numba functions on first use in each process; only some of
them are declared ``cache=True``, so every new process (each ``interpgram render`` of an atlas spec)
spent 20-30 s of its layout compiling the rest again. :func:`import_umap` imports umap and turns on
numba's own on-disk cache for every module-level numba function of the umap and pynndescent modules
that are loaded. numba keys each cached function by its source file's timestamp and size, its
signature and the CPU, so an upgraded package or another machine compiles afresh; the compiled code
is the same as without the cache, so layouts are unchanged.

Where the files go is numba's choice: the package's ``__pycache__`` when it is writable, otherwise
numba's user-wide cache folder, or ``NUMBA_CACHE_DIR`` when that is set. Measured (2,000 × 128
vectors, the class atlas's UMAP settings, 2 cores): the fit took 22.9 s in a fresh process without
this and 7.9 s with a warm cache, with the same coordinates (``benchmarks/umap_cache.py``).
"""
from __future__ import annotations

import sys
from types import ModuleType

PACKAGES = ("umap", "pynndescent")


def enable_disk_cache(packages=PACKAGES) -> int:
    """Turn on numba's disk cache for the module-level numba functions of the loaded ``packages``;
    returns how many were turned on now (those already cached, or where numba finds no writable cache
    folder, are left as they are)."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    turned = 0
    for name, mod in list(sys.modules.items()):
        if not isinstance(mod, ModuleType) or name.split(".")[0] not in packages:
            continue
        for value in list(vars(mod).values()):
            if isinstance(value, Dispatcher) and isinstance(value._cache, NullCache):
                try:
                    value.enable_caching()
                except RuntimeError:  # numba: "cannot cache function ...: no locator available"
                    continue
                turned += 1
    return turned


_done = False


def import_umap():
    """``import umap``, with the disk cache of its numba functions on (once per process)."""
    global _done
    import umap

    if not _done:
        enable_disk_cache()
        _done = True
    return umap
