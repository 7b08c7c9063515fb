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
        spatial, channels, errs, minima, split = [], [], [], [], []
        for i in range(src.shape[0]):
            res = neuron_groups(src[i].to(ctx.device), op.k, seed=op.seed, of=op.of, sign=op.sign)
            spatial.append(res.spatial.float().cpu())
            channels.append(res.channels.float().cpu())
            errs.append(res.reconstruction_error)
            minima.append(res.minimum)
            split.append(res.sign == "split")
            ctx.progress(f"NMF k={op.k}", i + 1, src.shape[0])
        # minimum and split (per input) let the report say how a signed activation was factorised
        out[op.id] = {"spatial": torch.stack(spatial), "channels": torch.stack(channels),
                      "error": torch.tensor(errs, dtype=torch.float32),
                      "minimum": torch.tensor(minima, dtype=torch.float32), "split": torch.tensor(split, dtype=torch.bool)}
    return out


def factorize_notes(plan, values: Values) -> list[str]:
    """One sentence per layer whose groups split a signed activation by default, e.g. "conv4.1 is
    signed (min -4.81): its neuron groups (k = 4, 3) factorise its positive and negative parts (NMF of
    [A+, A−]), …"; nothing for non-negative layers or an explicit ``sign`` (the spec says it). Reads
    the ops' values, which come from the cache too, so a report from the cache says it as well."""
    layers: dict[str, dict] = {}
    for op in plan.of_type(Factorize):
        v = values.get(op.id) or {}
        split = v.get("split")
        if op.sign is not None or split is None or not bool(split.any()):
            continue
        layer = getattr(plan.ops.get(op.source), "layer", op.source)
        seen = layers.setdefault(layer, {"k": [], "low": 0.0, "split": 0, "n": len(split)})
        seen["k"].append(op.k)
        seen["low"] = min(seen["low"], float(v["minimum"][split].min()))
        seen["split"] = max(seen["split"], int(split.sum()))
    notes = []
    for layer, s in layers.items():
        where = "" if s["split"] == s["n"] else f" in {s['split']} of {s['n']} inputs"
        ks = ", ".join(map(str, sorted(set(s["k"]), reverse=True)))
        notes.append(f"{layer} is signed (min {s['low']:.3g}{where}): its neuron groups (k = {ks}) factorise its "
                     "positive and negative parts (NMF of [A+, A−]), so each group's channel direction is signed "
                     "(H+ − H−); sign: positive in the group atom clips at 0 instead")
    return notes


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
