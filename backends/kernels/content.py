"""Kernels of the content ops computed from other contents: NMF groups, group attribution and the
transforms (compare, top_k, select, filter). Each result is cached whole."""
from __future__ import annotations

from typing import Optional

import torch

from interpgram.grammar.plan import Combine, Factorize, GroupAttribution

from interpgram.backends.execute.context import Context, Values, content_key, kernel
from interpgram.backends.kernels.factorize import NMFResult, group_attribution, neuron_groups


@kernel(Factorize, key=content_key, stage="factorize")
def run_factorize(ctx: Context, ops: list[Factorize], values: Values) -> Values:
    out: Values = {}
    for op in ops:
        src = values[op.source]["value"]
        spatial, channels, errs = [], [], []
        for i in range(src.shape[0]):
            res = neuron_groups(src[i].to(ctx.device), op.k, seed=op.seed, of=op.of, sign=op.sign)
            spatial.append(res.spatial.float().cpu())
            channels.append(res.channels.float().cpu())
            errs.append(res.reconstruction_error)
            ctx.progress(f"NMF k={op.k}", i + 1, src.shape[0])
        out[op.id] = {"spatial": torch.stack(spatial), "channels": torch.stack(channels),
                      "error": torch.tensor(errs, dtype=torch.float32)}
    return out


@kernel(GroupAttribution, key=content_key, stage="group attribution")
def run_group_attribution(ctx: Context, ops: list[GroupAttribution], values: Values) -> Values:
    out: Values = {}
    for op in ops:
        g = values[op.groups]
        grad = values[op.gradient]["value"]
        per = [group_attribution(NMFResult(g["spatial"][i], g["channels"][i], 0.0, 0), grad[i])
               for i in range(grad.shape[0])]
        out[op.id] = {"value": torch.stack(per)}
    return out


def combine(op: Combine, vals: list[torch.Tensor], by: Optional[torch.Tensor]) -> torch.Tensor:
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
    raise ValueError(f"unknown transform {op.op!r}")


@kernel(Combine, key=content_key, stage="transform")
def run_combine(ctx: Context, ops: list[Combine], values: Values) -> Values:
    out: Values = {}
    for op in ops:  # in dependency order: a transform of a transform sees its input
        have = {**values, **out}
        by = have[op.by]["value"] if op.op == "filter" else None
        out[op.id] = {"value": combine(op, [have[i]["value"] for i in op.inputs], by)}
    return out
