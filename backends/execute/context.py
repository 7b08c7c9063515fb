"""What a kernel gets: the execution's :class:`Context`, its :class:`Stats`, and the registry of
kernels, one per op type.

A kernel is registered for an op type (by the type's name) with :func:`kernel`; it receives the
context, the ops of its type that are ready (their inputs computed or cached), and the values so far,
and returns the value of each op it ran. A kernel may declare

- ``key``: the op's cache key (the op is then cached whole: the plan pruner looks it up and drops it,
  and everything only it needs, on a hit; the executor writes what the kernel returns);
- ``fused_into``: the field naming the op whose kernel computes this one along with it (a Reduce or
  a Gradient is computed inside its Capture's forward pass, batch by batch), so it has no ``run``;
- ``transient``: the op has no value of its own (a Capture, a Gradient: consumed by its Reduces).

Kernels read what they need from the context (model, inputs, device, dtype, cache policy, stats,
progress, engine, the spec's folder, whether user code may run), never from the executor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from interpgram.grammar.plan import Op, Plan
from interpgram.grammar.registry import Registry

from interpgram.backends.execute.policy import CachePolicy, cache_key

Values = dict[str, dict[str, Any]]  # op id -> named results (tensors batch first, on CPU)
Progress = Callable[[str, int, int], None]


@dataclass
class Stats:
    forward_passes: int = 0
    backward_passes: int = 0
    cache_hits: int = 0  # ops cached whole (content ops, atlas layouts and grids) found in the cache
    cache_misses: int = 0
    batch_halvings: int = 0
    icons_rendered: int = 0
    icons_cached: int = 0
    grids_rendered: int = 0
    grids_cached: int = 0
    examples_computed: int = 0  # atoms whose dataset examples were searched for
    examples_cached: int = 0  # atoms whose dataset examples came from the cache
    dataset_images: int = 0  # data-set images streamed through the model for them
    atlas_samples: int = 0  # images in the atlas collection (0: every atlas came from the cache)
    seconds: dict[str, float] = field(default_factory=dict)
    cache: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (hits, misses), every kind

    def add_time(self, stage: str, t: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + t

    def absorb(self, policy: CachePolicy, whole: tuple[str, ...]) -> None:
        """The cache counters, from the policy: ``whole`` names the op kinds cached whole."""
        self.cache_hits, self.cache_misses = policy.hits(*whole), policy.misses(*whole)
        self.icons_cached = policy.hits("icon", "atlas icon")
        self.grids_cached = policy.hits("ActivationGrid")
        self.examples_cached = policy.hits("Examples")
        self.cache = {k: (s.hits, s.misses) for k, s in policy.kinds.items()}


@dataclass
class Context:
    """Everything a kernel may use. ``plan`` is the compiled plan (op definitions, never mutated);
    the executor runs a pruned copy of it."""

    plan: Plan
    model: Any
    inputs: Any
    cache: CachePolicy
    stats: Stats
    device: torch.device
    dtype: torch.dtype
    progress: Progress
    batch_size: Optional[int] = None
    engine: Any = None  # where atlas collection and icons run (None: this process)
    base_dir: Optional[Path] = None  # the spec's folder (data-set folders are relative to it)
    allow_code: bool = False  # python: data sets
    shared: dict[str, Any] = field(default_factory=dict)  # state the kernels of one execution share
    _keys: dict[str, Optional[str]] = field(default_factory=dict, repr=False)

    def op(self, op_id: str) -> Op:
        return self.plan.ops[op_id]

    def key(self, op_id: str) -> Optional[str]:
        """The cache key of an op cached whole, None for the others (memoised)."""
        if op_id not in self._keys:
            k = kernel_for(self.plan.ops[op_id])
            self._keys[op_id] = k.key(self, self.plan.ops[op_id]) if k.key is not None else None
        return self._keys[op_id]


@dataclass(frozen=True)
class Kernel:
    op: str  # the op type's name
    run: Optional[Callable[[Context, list, Values], Values]] = None
    key: Optional[Callable[[Context, Any], str]] = None
    fused_into: str = ""
    transient: bool = False
    stage: str = ""  # the name its run time is counted under in Stats.seconds ("": the kernel counts its own)
    pieces: str = ""  # what the kernel caches inside the op, for `interpgram plan` ("each icon cached on its own")


KERNELS: Registry[Kernel] = Registry("op kernel", group="interpgram.kernels",
                                     builtin="interpgram.backends.kernels.builtin")


def kernel(op_type: type, *, key: Optional[Callable] = None, stage: str = "", transient: bool = False,
           pieces: str = ""):
    """Register the decorated function as the kernel of ``op_type``."""
    def register(fn):
        KERNELS.register(op_type.__name__, Kernel(op_type.__name__, fn, key, stage=stage, transient=transient,
                                                  pieces=pieces), replace=True)
        return fn
    return register


def fused(op_type: type, into: str, *, key: Optional[Callable] = None, transient: bool = False) -> None:
    """Declare that ``op_type`` is computed by the kernel of the op its field ``into`` names."""
    KERNELS.register(op_type.__name__, Kernel(op_type.__name__, None, key, fused_into=into, transient=transient),
                     replace=True)


def kernel_for(op: Op) -> Kernel:
    return KERNELS.get(type(op).__name__)


def whole_kinds() -> tuple[str, ...]:
    """The op kinds cached whole (their kernels declare a key)."""
    return tuple(name for name, k in KERNELS.items() if k.key is not None)


def content_key(ctx: Context, op: Op) -> str:
    """The key of a content result: model, inputs, the op's structural signature, dtype."""
    return cache_key(model=ctx.model.digest, inputs=ctx.inputs.digest, op=repr(ctx.plan.signature(op.id)),
                     dtype=ctx.plan.dtype)
