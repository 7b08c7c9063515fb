"""Kernels of the plan's FeatureVis and ActivationGrid ops.

FeatureVis: each op picks its icons per image from the content results (explicit atoms, the top
atoms, the top channels per position, or NMF groups); then every icon of every op with the same
settings is rendered by one :func:`~.optvis.render.render_icons` call, which batches them by layer
and objective kind and caches each icon on its own. ActivationGrid: one grid per image, cached by
the image's activation digest. Both cache through the execution's cache policy (kinds ``icon`` and
``ActivationGrid``).
"""
from __future__ import annotations

from typing import Any

import torch

from interpgram.grammar.plan import ActivationGrid, FeatureVis

from interpgram.backends.execute.cache import cache_key, tensor_digest
from interpgram.backends.execute.context import Context, Values, kernel
from interpgram.backends.kernels.optvis.grid import activation_grid
from interpgram.backends.kernels.optvis.render import Icon, IconSettings, IconStats, render_icons


def select(op: FeatureVis, values: dict, i: int) -> list[tuple[Any, Icon]]:
    """(atom label, icon) for image ``i``: which icons op ``op`` shows for that image."""
    layer, kind = op.layer, op.objective
    if op.objective == "group":
        channels = values[op.source]["channels"][i]
        return [(g, Icon.from_vector(layer, "direction", channels[g], op.cossim_pow)) for g in range(channels.shape[0])]
    if op.objective == "direction":
        return [("direction", Icon.from_vector(layer, "direction", torch.tensor(op.atoms[0]), op.cossim_pow))]
    if op.objective == "direction_neuron":
        acts = values[op.vectors]["value"][i]  # (C, H, W)
        if op.atoms:
            positions = [tuple(a) for a in op.atoms]
        else:
            v = values[op.source]["value"][i]  # (H, W)
            k = min(op.top, v.numel())
            flat = v.flatten().topk(k).indices.tolist()
            positions = [(j % v.shape[1], j // v.shape[1]) for j in flat]
        return [((x, y), Icon.from_vector(layer, "direction_neuron", acts[:, y, x], op.cossim_pow)) for x, y in positions]
    # channel and neuron icons
    if op.atoms:
        return [(c, Icon(layer, kind, index=int(c))) for c in op.atoms]
    v = values[op.source]["value"][i]
    if op.per_position:
        c = v.shape[0]
        top = v.reshape(c, -1).topk(min(op.per_position, c), dim=0).indices.flatten().tolist()
        chans = sorted(set(top))
    elif v.dim() == 1:
        k = min(op.top, v.numel())
        if op.both_signs:
            pos = [c for c in v.argsort(descending=True).tolist()[:k] if v[c] > 0]
            neg = [c for c in v.argsort().tolist()[:k] if v[c] < 0]
            chans = pos + neg
        else:
            chans = v.topk(k).indices.tolist()
    else:  # neuron values (C, H, W): channels of the strongest neurons
        order = v.reshape(v.shape[0], -1).max(1).values.argsort(descending=True).tolist()
        chans = order[:op.top]
    return [(c, Icon(layer, kind, index=int(c))) for c in chans]


@kernel(FeatureVis, stage="feature visualisation", pieces="each icon cached on its own")
def run_featurevis(ctx: Context, ops: list[FeatureVis], values: Values) -> Values:
    n = ctx.inputs.images.shape[0]
    chosen = {op.id: [select(op, values, i) for i in range(n)] for op in ops}
    by_settings: dict[tuple, list[Icon]] = {}
    for op in ops:
        by_settings.setdefault((op.settings, op.seed), []).extend(ic for img in chosen[op.id] for _, ic in img)
    rendered: dict[tuple, Any] = {}
    for (settings, seed), icons in by_settings.items():
        stats = IconStats()
        results = render_icons(ctx.model, icons, IconSettings(**dict(settings)), seed=seed, cache=ctx.cache.view("icon"),
                               device=ctx.device, progress=ctx.progress, stats=stats)
        ctx.stats.icons_rendered += stats.rendered
        ctx.stats.batch_halvings += stats.halvings
        for ic, r in zip(icons, results):
            rendered[ic.identity()] = r
    out: Values = {}
    for op in ops:
        per_image = chosen[op.id]
        out[op.id] = {
            "atoms": [[a for a, _ in img] for img in per_image],
            "images": [torch.cat([rendered[ic.identity()].images for _, ic in img]) if img else torch.zeros(0)
                       for img in per_image],
            "scores": [torch.cat([rendered[ic.identity()].scores for _, ic in img]) if img else torch.zeros(0)
                       for img in per_image],
        }
    return out


@kernel(ActivationGrid, stage="activation grids", pieces="each image's grid cached on its own")
def run_grids(ctx: Context, ops: list[ActivationGrid], values: Values) -> Values:
    out: Values = {}
    for op in ops:
        st = dict(op.settings)
        acts = values[op.source]["value"]
        icons, mags, scores = [], [], []
        for i in range(acts.shape[0]):
            key = cache_key(model=ctx.model.digest, act=tensor_digest(acts[i]), layer=op.layer, settings=repr(op.settings),
                            seed=op.seed, what="activation grid")
            hit = ctx.cache.get("ActivationGrid", key)
            if hit is None:
                r = activation_grid(ctx.model, acts[i], op.layer, seed=op.seed, device=ctx.device, progress=ctx.progress,
                                    **{k: (list(v) if k == "transforms" and isinstance(v, tuple) else v)
                                       for k, v in st.items()})
                hit = {"icons": r.icons, "magnitude": r.magnitude, "scores": r.scores}
                ctx.cache.put("ActivationGrid", key, hit)
                ctx.stats.grids_rendered += 1
            icons.append(hit["icons"])
            mags.append(hit["magnitude"])
            scores.append(hit["scores"])
        out[op.id] = {"icons": icons, "magnitude": mags, "scores": scores}
    return out
