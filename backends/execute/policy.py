"""One cache policy for every kind of result an execution reads or writes.

:class:`CachePolicy` sits on a :class:`~.cache.ResultCache` (which stores, checks and evicts
entries) and is the only way kernels and the plan pruner reach it: every lookup and write names its
*kind* — an op type for results cached whole (``Reduce``, ``Factorize``, ``GroupAttribution``,
``Combine``, ``Layout``, ``Grid``), or a piece of an op's work cached on its own (``icon``, ``atlas
icon``, ``ActivationGrid`` per image, ``Examples`` per atom, ``PatchTest``, ``receptive fields``) —
and the policy counts hits, misses and writes per kind. Code that takes a plain result cache (icon
rendering, receptive fields) gets a :meth:`CachePolicy.view` bound to one kind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from interpgram.backends.execute.cache import ResultCache, cache_key

__all__ = ["CachePolicy", "CacheView", "KindStats", "cache_key"]


@dataclass
class KindStats:
    hits: int = 0
    misses: int = 0
    writes: int = 0


class CachePolicy:
    """Lookups and writes of one execution, counted by kind (see the module docstring)."""

    def __init__(self, cache: ResultCache):
        self.cache = cache
        self.kinds: dict[str, KindStats] = {}

    def __repr__(self) -> str:
        return f"CachePolicy({self.cache!r}, {self.summary() or 'no lookups'})"

    @property
    def enabled(self) -> bool:
        return self.cache.enabled

    @property
    def root(self):
        return self.cache.root

    def _kind(self, kind: str) -> KindStats:
        if kind not in self.kinds:
            self.kinds[kind] = KindStats()
        return self.kinds[kind]

    def get(self, kind: str, key: str) -> Optional[dict[str, Any]]:
        """The stored value, or None (a miss: absent, disabled, or a corrupt entry the cache set aside)."""
        hit = self.cache.get(key)
        st = self._kind(kind)
        if hit is None:
            st.misses += 1
        else:
            st.hits += 1
        return hit

    def contains(self, key: str) -> bool:
        """Whether an entry exists, without reading it or counting a lookup (``interpgram plan``)."""
        return key in self.cache

    def put(self, kind: str, key: str, value: dict) -> None:
        self.cache.put(key, value)
        if self.cache.enabled:
            self._kind(kind).writes += 1

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], dict]) -> tuple[dict, bool]:
        """(value, whether it came from the cache); a computed value is written."""
        hit = self.get(kind, key)
        if hit is not None:
            return hit, True
        value = compute()
        self.put(kind, key, value)
        return value, False

    def view(self, kind: str) -> "CacheView":
        return CacheView(self, kind)

    # ------------------------------------------------------------------ statistics
    def hits(self, *kinds: str) -> int:
        return sum(self.kinds[k].hits for k in kinds if k in self.kinds)

    def misses(self, *kinds: str) -> int:
        return sum(self.kinds[k].misses for k in kinds if k in self.kinds)

    def summary(self) -> str:
        """``kind hits/misses`` for every kind looked up, e.g. ``Reduce 3/0 · icon 12/1``."""
        return " · ".join(f"{k} {s.hits}/{s.misses}" for k, s in self.kinds.items())


class CacheView:
    """A :class:`CachePolicy` bound to one kind, with the ``get``/``put`` of a result cache."""

    def __init__(self, policy: CachePolicy, kind: str):
        self.policy, self.kind = policy, kind

    @property
    def enabled(self) -> bool:
        return self.policy.enabled

    @property
    def root(self):
        return self.policy.root

    def get(self, key: str) -> Optional[dict[str, Any]]:
        return self.policy.get(self.kind, key)

    def put(self, key: str, value: dict) -> None:
        self.policy.put(self.kind, key, value)

    def __contains__(self, key: str) -> bool:
        return self.policy.contains(key)
