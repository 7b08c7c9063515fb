"""The network kernel: a plan's Capture, run as written, with the Gradients, path-integrated
gradients and Reduces that read it.

For each batch of inputs: one forward pass recording exactly ``Capture.layers`` (with an autograd
graph when ``Capture.needs_grad``); one backward pass per Gradient, from its ``target`` to its
``wrt`` layers; the batched path integral of each PathGradient; then every Reduce of the batch.
Activations and gradients live for one batch only: only the Reduces' results are kept.
"""
from __future__ import annotations

import time

import torch

from interpgram.grammar.attribution import ATTRIBUTION_METHODS
from interpgram.grammar.plan import Capture, Gradient, PathGradient, Reduce

from interpgram.backends.execute.context import Context, Values, content_key, fused, kernel
from interpgram.backends.execute.device import run_batched
from interpgram.backends.kernels import attribution as A
from interpgram.backends.kernels.capture import run_capture


def _network(ctx: Context, cap: Capture, grads: list[Gradient], paths: list[PathGradient],
             reduces: list[Reduce]) -> Values:
    module = ctx.model.on(ctx.device, ctx.dtype)
    n = ctx.inputs.images.shape[0]
    total_steps = 1 + len(grads) + len(paths)
    stats = ctx.stats

    def one_batch(start: int, stop: int) -> dict[str, torch.Tensor]:
        x01 = ctx.inputs.images[start:stop].to(ctx.device)
        x = ctx.model.preprocess(x01).to(ctx.dtype)
        t = time.perf_counter()
        acts, logits = run_capture(module, x, list(cap.layers), grad=cap.needs_grad)
        stats.forward_passes += 1
        stats.add_time("forward", time.perf_counter() - t)
        ctx.progress("forward pass", 1, total_steps)
        predicted = logits.detach().argmax(1)
        ranked = logits.detach().argsort(dim=1, descending=True)  # for top-k class targets
        grad_vals: dict[str, dict[str, torch.Tensor]] = {}
        given: dict[str, bool] = {}  # the method gave the attribution itself, not a gradient
        for i, g in enumerate(grads):
            t = time.perf_counter()
            tg = g.target
            vals = A.target_values(tg.kind, logits, acts, cls=tg.cls, layer=tg.layer, at=tg.at,
                                   predicted=ranked[:, tg.rank] if tg.rank else predicted, channel=tg.channel)
            last = i == len(grads) - 1
            gs = A.gradients(vals, [acts[layer] for layer in g.wrt], retain=not last or bool(paths))
            grad_vals[g.id] = dict(zip(g.wrt, gs))
            stats.backward_passes += 1
            stats.add_time("backward", time.perf_counter() - t)
            ctx.progress(f"backward {i + 1}/{len(grads)}", i + 2, total_steps)
        for j, p in enumerate(paths):
            t = time.perf_counter()
            tg = p.target
            pos = A.strongest_position(acts[tg.layer]) if tg.kind == "norm" and tg.at is None else None
            method = ATTRIBUTION_METHODS[p.method]
            g = method.layer_values(module, x, p.layer, acts[p.layer].detach(), target=tg,
                                    predicted=pos if pos is not None else (ranked[:, tg.rank] if tg.rank else predicted),
                                    steps=p.steps)
            if tuple(g.shape) != tuple(acts[p.layer].shape):
                raise ValueError(f"attribution method {p.method!r} returned shape {tuple(g.shape)} at {p.layer}, "
                                 f"expected the layer's {tuple(acts[p.layer].shape)}")
            grad_vals[p.id] = {p.layer: g}
            if method.gives == "attribution":  # summed as it is: the Reduce multiplies by ones
                given[p.id] = True
            stats.forward_passes += 1
            stats.backward_passes += 1
            stats.add_time("path gradients", time.perf_counter() - t)
            ctx.progress(f"path-integrated {j + 1}/{len(paths)}", len(grads) + j + 2, total_steps)
        t = time.perf_counter()
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for r in reduces:
                g = grad_vals[r.gradient][r.layer] if r.gradient else None
                a = acts[r.layer].detach()
                out[r.id] = A.reduce(torch.ones_like(a) if given.get(r.gradient) else a, g, r.atom, at=r.at,
                                     channels=r.channels, vector=r.vector).float().cpu()
        stats.add_time("reduce", time.perf_counter() - t)
        return out

    def halved(size: int) -> None:
        stats.batch_halvings += 1

    parts = run_batched(one_batch, n, ctx.batch_size, on_halve=halved)
    return {r.id: {"value": torch.cat([p[r.id] for p in parts])} for r in reduces}


@kernel(Capture, transient=True)
def run_network(ctx: Context, ops: list, values: Values) -> Values:
    """``ops``: Captures with the Gradients, PathGradients and Reduces fused into them."""
    out: Values = {}
    for cap in (op for op in ops if isinstance(op, Capture)):
        mine = [op for op in ops if getattr(op, "capture", None) == cap.id]
        out.update(_network(ctx, cap, [op for op in mine if isinstance(op, Gradient)],
                            [op for op in mine if isinstance(op, PathGradient)],
                            [op for op in mine if isinstance(op, Reduce)]))
    return out


fused(Gradient, "capture", transient=True)
fused(PathGradient, "capture", transient=True)
fused(Reduce, "capture", key=content_key)
