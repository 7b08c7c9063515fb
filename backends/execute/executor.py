"""Run a plan: prune it against the result cache, then run exactly the ops left, each by its kernel.

1. :func:`~.prune.prune` looks up every op cached whole (content ops, atlas layouts and grids) and
   returns the plan to run — the ops the cache does not spare, a Capture narrowed to the layers they
   read, a Gradient to the layers they need — and the cached values.
2. The ops of that plan run in dependency order, each by the kernel registered for its type
   (:data:`~.context.KERNELS`); the ready ops of one kernel run in one call, so every icon of the
   plan is one batched optimisation and every data-set search one streaming pass. Ops fused into
   another (a Reduce, a Gradient: into their Capture's forward pass) run in that op's call.
3. What a kernel returns for an op cached whole is written to the cache.

Kernels get a :class:`~.context.Context` (model, inputs, device, dtype, cache policy, stats,
progress, engine, the spec's folder, whether user code may run); the compiled plan is never changed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from interpgram.grammar.plan import Plan

from interpgram.backends.execute.cache import ResultCache
from interpgram.backends.execute.context import Context, Kernel, Stats, Values, kernel_for, whole_kinds
from interpgram.backends.execute.device import DTYPES, pick_device
from interpgram.backends.execute.policy import CachePolicy
from interpgram.backends.execute.prune import prune, status

__all__ = ["Executor", "Results", "Stats", "execute", "preview", "run_plan"]


@dataclass
class Results:
    values: dict[str, dict[str, torch.Tensor]]  # op id -> named tensors (batch first, on CPU)
    stats: Stats
    device: str


@dataclass
class _Unit:
    """An op and the ops fused into it: one piece of a kernel call."""

    kernel: Kernel
    ops: list
    needs: set[str]  # ops outside the unit whose values it reads


def _units(plan: Plan) -> list[_Unit]:
    roots: dict[str, _Unit] = {}
    fused = []
    for op in plan.topological():
        k = kernel_for(op)
        if k.fused_into:
            fused.append(op)
        else:
            roots[op.id] = _Unit(k, [op], set())
    for op in fused:
        root = getattr(op, kernel_for(op).fused_into)
        if root not in roots:
            raise RuntimeError(f"plan op {op.id} runs inside {root}, which the plan to run does not hold")
        roots[root].ops.append(op)
    for u in roots.values():
        ids = {op.id for op in u.ops}
        u.needs = {d for op in u.ops for d in plan.requires(op.id)} - ids
    return list(roots.values())


def run_plan(plan: Plan, ctx: Context, values: Optional[Values] = None) -> Values:
    """Run every op of ``plan`` (and only those) by its kernel; ``values``: results it may read
    (the cached ones). Returns those and the new ones."""
    values = dict(values or {})
    pending = _units(plan)
    done: set[str] = set()
    while pending:
        ready = [u for u in pending if u.needs <= done]
        if not ready:
            raise RuntimeError("the plan to run has a cycle: " + ", ".join(u.ops[0].id for u in pending))
        by_kernel: dict[str, list[_Unit]] = {}
        for u in ready:
            by_kernel.setdefault(u.kernel.op, []).append(u)
        # run a kernel all of whose pending ops are ready (one call for all of them); else the first ready
        complete = [k for k, us in by_kernel.items() if len(us) == sum(1 for u in pending if u.kernel.op == k)]
        name = complete[0] if complete else next(iter(by_kernel))
        units = by_kernel[name]
        k = units[0].kernel
        ops = [op for u in units for op in u.ops]
        t = time.perf_counter()
        out = k.run(ctx, ops, values)
        if k.stage:
            ctx.stats.add_time(k.stage, time.perf_counter() - t)
        missing = [op.id for op in ops if op.id not in out and not kernel_for(op).transient]
        if missing:
            raise RuntimeError(f"the {name} kernel returned no value for {', '.join(missing)}")
        values.update(out)
        t = time.perf_counter()
        for op in ops:
            key = ctx.key(op.id) if kernel_for(op).key is not None else None
            if key is not None:
                ctx.cache.put(type(op).__name__, key, out[op.id])
        ctx.stats.add_time("cache write", time.perf_counter() - t)
        done.update(op.id for op in ops)
        pending = [u for u in pending if u not in units]
    return values


class Executor:
    """Runs one compiled plan (see the module docstring); :attr:`context` is what its kernels get."""

    def __init__(self, plan: Plan, model, inputs, *, cache: ResultCache, batch_size: Optional[int] = None,
                 progress: Optional[Callable[[str, int, int], None]] = None, engine=None, base_dir=None,
                 allow_code: bool = False):
        self.plan = plan
        self.context = Context(plan=plan, model=model, inputs=inputs, cache=CachePolicy(cache), stats=Stats(),
                               device=pick_device(plan.device), dtype=DTYPES[plan.dtype],
                               progress=progress or (lambda stage, i, n: None), batch_size=batch_size,
                               engine=engine, base_dir=base_dir, allow_code=allow_code)

    def prune(self) -> tuple[Plan, Values]:
        """(the plan to run, the cached values) against this execution's cache."""
        return prune(self.plan, self.context.cache, self.context.key)

    def run(self) -> Results:
        ctx = self.context
        t = time.perf_counter()
        to_run, cached = self.prune()
        ctx.stats.add_time("cache lookup", time.perf_counter() - t)
        values = run_plan(to_run, ctx, cached)
        ctx.stats.absorb(ctx.cache, whole_kinds())
        return Results(values, ctx.stats, str(ctx.device))


def preview(plan: Plan, model, inputs, *, cache: ResultCache, base_dir=None,
            allow_code: bool = False) -> tuple[Plan, dict[str, str]]:
    """What running ``plan`` against ``cache`` would do, without reading any result: (the plan to
    run, op id -> "cached" | "runs" | "skipped")."""
    ex = Executor(plan, model, inputs, cache=cache, base_dir=base_dir, allow_code=allow_code)
    to_run, cached = prune(plan, ex.context.cache, ex.context.key, load=False)
    marks = status(plan, to_run, cached)
    for op_id, mark in marks.items():
        pieces = kernel_for(plan.ops[op_id]).pieces
        if mark == "runs" and pieces:
            marks[op_id] = f"runs ({pieces})"
    return to_run, marks


def execute(plan: Plan, model, inputs, *, cache: ResultCache, batch_size: Optional[int] = None,
            progress=None, engine=None, base_dir=None, allow_code: bool = False) -> Results:
    return Executor(plan, model, inputs, cache=cache, batch_size=batch_size, progress=progress, engine=engine,
                    base_dir=base_dir, allow_code=allow_code).run()
