"""Lower a plan to torch and run it.

Every content op's result is cached under a content address (model digest, input digest, the op's
structural signature, seed, code version). Only what is missing is computed: the forward pass
captures just the layers the missing ops read, and only their gradient targets are backpropagated.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from interpgram.grammar.plan import (
    ActivationGrid,
    AtlasIcons,
    Capture,
    FeatureVis,
    Combine,
    Examples,
    Factorize,
    Gradient,
    GroupAttribution,
    PathGradient,
    Plan,
    Reduce,
)

from interpgram.backends.kernels import attribution as A
from interpgram.backends.execute.cache import ResultCache, cache_key
from interpgram.backends.kernels.capture import run_capture
from interpgram.backends.execute.device import DTYPES, pick_device, run_batched
from interpgram.backends.kernels.factorize import NMFResult, group_attribution, neuron_groups


@dataclass
class Stats:
    forward_passes: int = 0
    backward_passes: int = 0
    cache_hits: int = 0
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

    def add_time(self, stage: str, t: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + t


@dataclass
class Results:
    values: dict[str, dict[str, torch.Tensor]]  # op id -> named tensors (batch first, on CPU)
    stats: Stats
    device: str


def signature(plan: Plan, op_id: str) -> tuple:
    """A structural description of an op and everything it depends on, free of op ids."""
    op = plan.ops[op_id]
    if isinstance(op, Capture):
        return ("Capture",)
    if isinstance(op, Gradient):
        return ("Gradient", op.target)
    if isinstance(op, PathGradient):
        return ("PathGradient", op.target, op.layer, op.steps)
    if isinstance(op, Reduce):
        return ("Reduce", op.layer, op.atom, op.at, op.channels,
                signature(plan, op.gradient) if op.gradient else None) + ((op.vector,) if op.vector else ())
    if isinstance(op, Factorize):
        return ("Factorize", op.k, op.of, op.sign, op.seed, signature(plan, op.source))
    if isinstance(op, GroupAttribution):
        return ("GroupAttribution", signature(plan, op.groups), signature(plan, op.gradient))
    if isinstance(op, Combine):
        by = signature(plan, op.by) if op.by and op.by in plan.ops else op.by
        return ("Combine", op.op, tuple(signature(plan, i) for i in op.inputs), op.k, by, op.atoms, op.threshold)
    raise TypeError(type(op))


def _combine(op: Combine, vals: list[torch.Tensor], by: Optional[torch.Tensor]) -> torch.Tensor:
    x = vals[0]
    if op.op == "compare":
        return vals[0] - vals[1]
    if op.op == "select":
        keep = torch.zeros(x.shape[1], dtype=torch.bool)
        keep[list(op.atoms)] = True
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.where(keep.view(shape), x, torch.zeros((), dtype=x.dtype))
    if op.op == "top_k":
        flat = x.flatten(1)
        score = flat.abs() if op.by == "abs" else flat
        k = min(op.k, flat.shape[1])
        idx = score.topk(k, dim=1).indices
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)
        return torch.where(mask, flat, torch.zeros((), dtype=x.dtype)).view_as(x)
    if op.op == "filter":
        return torch.where(by > op.threshold, x, torch.zeros((), dtype=x.dtype))
    raise ValueError(op.op)


class Executor:
    def __init__(self, plan: Plan, model, inputs, *, cache: ResultCache, batch_size: Optional[int] = None,
                 progress: Optional[Callable[[str, int, int], None]] = None, engine=None, base_dir=None,
                 allow_code: bool = False):
        self.plan = plan
        self.engine = engine  # where atlas collection and icons run (None: this process)
        self.base_dir = base_dir  # the spec's folder (data-set folders are relative to it)
        self.allow_code = allow_code  # python: data sets
        self.model = model
        self.inputs = inputs
        self.cache = cache
        self.batch_size = batch_size
        self.progress = progress or (lambda stage, i, n: None)
        self.device = pick_device(plan.device)
        self.dtype = DTYPES[plan.dtype]
        self.stats = Stats()

    # ------------------------------------------------------------------ keys
    def key(self, op_id: str) -> str:
        return cache_key(model=self.model.digest, inputs=self.inputs.digest, op=repr(signature(self.plan, op_id)),
                         dtype=self.plan.dtype)

    # ------------------------------------------------------------------ run
    def run(self) -> Results:
        plan = self.plan
        content_ops = [op for op in plan.topological() if isinstance(op, (Reduce, Factorize, GroupAttribution, Combine))]
        values: dict[str, dict[str, torch.Tensor]] = {}
        keys = {op.id: self.key(op.id) for op in content_ops}
        t0 = time.perf_counter()
        needed = set()
        for p in plan.elements:
            needed |= plan.dependencies(p.id)
        # What is already cached? Only look up ops some element needs; their inputs are not needed
        # when they hit.
        missing: set[str] = set()

        def need(op_id: str) -> None:
            op = plan.ops[op_id]
            if isinstance(op, (FeatureVis, ActivationGrid, Examples)):
                for d in op.deps:
                    need(d)
                return
            if not isinstance(op, (Reduce, Factorize, GroupAttribution, Combine)) or op_id in values or op_id in missing:
                return
            hit = self.cache.get(keys[op_id])
            if hit is not None:
                values[op_id] = hit
                self.stats.cache_hits += 1
                return
            self.stats.cache_misses += 1
            missing.add(op_id)
            for d in op.deps:
                need(d)

        for p in plan.elements:
            for d in p.deps:
                need(d)
        self.stats.add_time("cache lookup", time.perf_counter() - t0)

        reduces = [plan.ops[i] for i in missing if isinstance(plan.ops[i], Reduce)]
        if reduces:
            self._run_network(reduces, values)
        for op in plan.topological():
            if op.id not in missing or isinstance(op, Reduce):
                continue
            t = time.perf_counter()
            if isinstance(op, Factorize):
                values[op.id] = self._factorize(op, values)
                stage = "factorize"
            elif isinstance(op, GroupAttribution):
                g = values[op.groups]
                grad = values[op.gradient]["value"]
                out = []
                for i in range(grad.shape[0]):
                    res = NMFResult(g["spatial"][i], g["channels"][i], 0.0, 0)
                    out.append(group_attribution(res, grad[i]))
                values[op.id] = {"value": torch.stack(out)}
                stage = "group attribution"
            else:
                by = values[op.by]["value"] if op.by and op.by in values else None
                values[op.id] = {"value": _combine(op, [values[i]["value"] for i in op.inputs], by)}
                stage = "transform"
            self.stats.add_time(stage, time.perf_counter() - t)
        t = time.perf_counter()
        for op_id in missing:
            self.cache.put(keys[op_id], values[op_id])
        self.stats.add_time("cache write", time.perf_counter() - t)
        fvs = [op for op in plan.topological() if isinstance(op, FeatureVis)]
        if fvs:
            t = time.perf_counter()
            from interpgram.backends.kernels.featurevis import run_featurevis
            run_featurevis(self, fvs, values)
            self.stats.add_time("feature visualisation", time.perf_counter() - t)
        grids = [op for op in plan.topological() if isinstance(op, ActivationGrid)]
        if grids:
            t = time.perf_counter()
            from interpgram.backends.kernels.featurevis import run_grids
            run_grids(self, grids, values)
            self.stats.add_time("activation grids", time.perf_counter() - t)
        examples = [op for op in plan.topological() if isinstance(op, Examples)]
        if examples:
            from interpgram.backends.kernels.examples import run_examples
            run_examples(self, examples, values)
        if any(isinstance(op, AtlasIcons) for op in plan.ops.values()):
            from interpgram.backends.kernels.atlas.run import run_atlas
            run_atlas(self, values, engine=self.engine)
        return Results(values, self.stats, str(self.device))

    # ------------------------------------------------------------------ network
    def _run_network(self, reduces: list[Reduce], values: dict) -> None:
        plan = self.plan
        grad_ids = {r.gradient for r in reduces if r.gradient}
        grads = [plan.ops[g] for g in grad_ids if isinstance(plan.ops[g], Gradient)]
        paths = [plan.ops[g] for g in grad_ids if isinstance(plan.ops[g], PathGradient)]
        layers = {r.layer for r in reduces}
        for g in grads:
            layers |= {r.layer for r in reduces if r.gradient == g.id}
            if g.target.kind in ("norm", "channel"):
                layers.add(g.target.layer)
        for p in paths:
            if p.target.kind == "norm":
                layers.add(p.target.layer)
        layers = sorted(layers, key=lambda l: list(plan.layer_shapes).index(l) if l in plan.layer_shapes else -1)
        grad_wrt = {g.id: sorted({r.layer for r in reduces if r.gradient == g.id}) for g in grads}
        need_graph = bool(grads) or bool(paths)
        module = self.model.on(self.device, self.dtype)
        n = self.inputs.images.shape[0]
        total_steps = 1 + len(grads) + len(paths)

        def one_batch(start: int, stop: int) -> dict[str, torch.Tensor]:
            x01 = self.inputs.images[start:stop].to(self.device)
            x = self.model.preprocess(x01).to(self.dtype)
            t = time.perf_counter()
            acts, logits = run_capture(module, x, [l for l in layers], grad=need_graph)
            self.stats.forward_passes += 1
            self.stats.add_time("forward", time.perf_counter() - t)
            self.progress("forward pass", 1, total_steps)
            predicted = logits.detach().argmax(1)
            ranked = logits.detach().argsort(dim=1, descending=True)  # for top-k class targets
            out: dict[str, torch.Tensor] = {}
            grad_vals: dict[str, dict[str, torch.Tensor]] = {}
            for i, g in enumerate(grads):
                t = time.perf_counter()
                tg = g.target
                vals = A.target_values(tg.kind, logits, acts, cls=tg.cls, layer=tg.layer, at=tg.at,
                                       predicted=ranked[:, tg.rank] if tg.rank else predicted,
                                       channel=tg.channel)
                wrt = grad_wrt[g.id]
                last = i == len(grads) - 1
                gs = A.gradients(vals, [acts[l] for l in wrt], retain=not last or bool(paths))
                grad_vals[g.id] = dict(zip(wrt, gs))
                self.stats.backward_passes += 1
                self.stats.add_time("backward", time.perf_counter() - t)
                self.progress(f"backward {i + 1}/{len(grads)}", i + 2, total_steps)
            for j, p in enumerate(paths):
                t = time.perf_counter()
                tg = p.target
                pos = A.strongest_position(acts[tg.layer]) if tg.kind == "norm" and tg.at is None else None
                g = A.path_gradient(module, x, p.layer, acts[p.layer].detach(), kind=tg.kind, cls=tg.cls,
                                    target_layer=tg.layer, at=tg.at,
                                    predicted=pos if pos is not None else (ranked[:, tg.rank] if tg.rank else predicted),
                                    steps=p.steps)
                grad_vals[p.id] = {p.layer: g}
                self.stats.forward_passes += 1
                self.stats.backward_passes += 1
                self.stats.add_time("path gradients", time.perf_counter() - t)
                self.progress(f"path-integrated {j + 1}/{len(paths)}", len(grads) + j + 2, total_steps)
            t = time.perf_counter()
            with torch.no_grad():
                for r in reduces:
                    g = grad_vals[r.gradient][r.layer] if r.gradient else None
                    out[r.id] = A.reduce(acts[r.layer].detach(), g, r.atom, at=r.at, channels=r.channels,
                                         vector=r.vector).float().cpu()
            self.stats.add_time("reduce", time.perf_counter() - t)
            return out

        def halved(size: int) -> None:
            self.stats.batch_halvings += 1

        parts = run_batched(one_batch, n, self.batch_size, on_halve=halved)
        for r in reduces:
            values[r.id] = {"value": torch.cat([p[r.id] for p in parts])}

    def _factorize(self, op: Factorize, values: dict) -> dict[str, torch.Tensor]:
        src = values[op.source]["value"]
        spatial, channels, errs = [], [], []
        for i in range(src.shape[0]):
            res = neuron_groups(src[i].to(self.device), op.k, seed=op.seed, of=op.of, sign=op.sign)
            spatial.append(res.spatial.float().cpu())
            channels.append(res.channels.float().cpu())
            errs.append(res.reconstruction_error)
            self.progress(f"NMF k={op.k}", i + 1, src.shape[0])
        return {"spatial": torch.stack(spatial), "channels": torch.stack(channels),
                "error": torch.tensor(errs, dtype=torch.float32)}


def execute(plan: Plan, model, inputs, *, cache: ResultCache, batch_size: Optional[int] = None,
            progress=None, engine=None, base_dir=None, allow_code: bool = False) -> Results:
    return Executor(plan, model, inputs, cache=cache, batch_size=batch_size, progress=progress, engine=engine,
                    base_dir=base_dir, allow_code=allow_code).run()
