"""Skipping cached work is a pass over the plan.

:func:`prune` walks the plan from its elements down. An op cached whole (its kernel declares a
key) that the cache holds is a hit: its value is taken and nothing below it is visited, so the
ops only it needed are dropped. What is left is narrowed to what the remaining ops read: a
Capture records only the layers they read (and keeps its autograd graph only when a backward
pass remains), a Gradient reaches only the layers they read. The result is a new plan holding
exactly the ops to run (no elements); the input plan is not changed.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Protocol

from interpgram.grammar.plan import Capture, Gradient, Plan, Present


class PlanError(RuntimeError):
    """A plan whose ops do not fit together (an op reading a layer its capture does not record)."""


class Lookup(Protocol):
    def get(self, kind: str, key: str) -> Optional[dict]: ...

    def contains(self, key: str) -> bool: ...


def prune(plan: Plan, cache: Lookup, key: Callable[[str], Optional[str]], *,
          load: bool = True) -> tuple[Plan, dict[str, dict]]:
    """(the plan to run, the cached values). ``key(op_id)`` is an op's cache key or None (not
    cached whole). ``load=False`` only checks that entries exist (for ``interpgram plan``): the
    cached values are then the keys, not the results."""
    cached: dict[str, dict] = {}
    keep: set[str] = set()
    seen: set[str] = set()

    def visit(op_id: str) -> None:
        if op_id in seen:
            return
        seen.add(op_id)
        op = plan.ops[op_id]
        if not isinstance(op, Present):
            k = key(op_id)
            if k is not None:
                kind = type(op).__name__
                hit = cache.get(kind, k) if load else ({"key": k} if cache.contains(k) else None)
                if hit is not None:
                    cached[op_id] = hit
                    return
            keep.add(op_id)
        for d in plan.requires(op_id):
            visit(d)

    for p in plan.elements:
        visit(p.id)

    # narrow from the consumers up: a Gradient first loses the layers no remaining op reads, then
    # its Capture records only what the remaining ops (narrowed Gradients included) read
    reads: dict[str, set[str]] = {}
    graph: set[str] = set()
    narrowed = {}
    for op in reversed([op for op in plan.topological() if op.id in keep]):
        op = _narrow(op, reads.get(op.id, set()), op.id in graph)
        narrowed[op.id] = op
        for dep, layers in op.reads(plan).items():
            reads.setdefault(dep, set()).update(layers)
        if op.NEEDS_GRAPH:
            graph.update(d for d in op.deps if isinstance(plan.ops.get(d), Capture))
    ops = {i: narrowed[i] for i in plan.ops if i in keep}
    return replace(plan, ops=ops), cached


def _narrow(op, read: set[str], graph: bool):
    if isinstance(op, Capture):
        missing = read - set(op.layers)
        if missing:
            raise PlanError(f"plan op {op.id} does not capture {', '.join(sorted(missing))}, which ops of the plan read")
        return replace(op, layers=tuple(layer for layer in op.layers if layer in read), needs_grad=graph)
    if isinstance(op, Gradient):
        missing = read - set(op.wrt)
        if missing:
            raise PlanError(f"plan op {op.id} does not reach {', '.join(sorted(missing))}, which ops of the plan read")
        return replace(op, wrt=tuple(layer for layer in op.wrt if layer in read))
    return op


def status(plan: Plan, to_run: Plan, cached: dict) -> dict[str, str]:
    """op id -> "cached" | "runs" | "skipped" (needed only by cached ops, or by nothing)."""
    return {i: "cached" if i in cached else "runs" if i in to_run.ops else "skipped"
            for i, op in plan.ops.items() if not isinstance(op, Present)}
