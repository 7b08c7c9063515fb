"""Results → ElementViews: one small registered builder per presentation.

A builder turns one element's results for one input image into the data its chart draws
(``backends/view``). Adding a presentation is three registered units: its options in
``grammar/_presentations.py``, its builder here (``@view_builder("name")``), its chart in
``backends/view``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from interpgram.grammar import Plan
from interpgram.grammar.plan import Present


@dataclass
class ViewContext:
    """One element (``p``) for one input image (``i``), with what every builder needs."""

    plan: Plan
    p: Present
    results: Any
    i: int
    vid: str
    title: str
    image: Optional[np.ndarray]  # (H, W, 3) in [0, 1]; None for presentations of a data set (atlases)
    opts: dict
    vals: list[torch.Tensor]  # the element's series, batch first

    def view(self, data: dict, *, vid: str | None = None, title: str | None = None, opts: dict | None = None):
        from interpgram.backends.render import ElementView
        return ElementView(vid or self.vid, self.p.presentation, title or self.title, self.p.grammar,
                           self.opts if opts is None else opts, data)

    def icons_of(self, op_id: str) -> tuple[list, list[np.ndarray]]:
        """(atoms, icons as (s, s, 3) arrays) of a FeatureVis op for this image."""
        fv = self.results.values[op_id]
        return list(fv["atoms"][self.i]), [hwc(img) for img in fv["images"][self.i]]


Builder = Callable[[ViewContext], list]
BUILDERS: dict[str, Builder] = {}


def view_builder(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        if name in BUILDERS:
            raise ValueError(f"a view builder for {name!r} is registered twice")
        BUILDERS[name] = fn
        return fn
    return deco


def hwc(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).contiguous().numpy().astype(np.float32)


def build_views(plan: Plan, inputs, results) -> dict[str, list]:
    """Results → the ElementViews of every element, per input image, keyed by element id."""
    views: dict[str, list] = {}
    n = inputs.images.shape[0]
    for p in plan.elements:
        if p.presentation not in BUILDERS:
            raise ValueError(f"no view builder for presentation {p.presentation!r} (registered: {', '.join(BUILDERS)})")
        vals = [results.values[s.op]["value"] for s in p.series]
        from interpgram.grammar import PRESENTATIONS
        if not PRESENTATIONS[p.presentation].per_input:  # one view for the spec (an atlas shows a data set)
            vid = p.element + (f"-{_safe(p.side)}" if p.side else "")
            ctx = ViewContext(plan, p, results, 0, vid, p.title, None, p.option_dict, vals)
            views.setdefault(p.element, []).extend(BUILDERS[p.presentation](ctx))
            continue
        for i in range(n):
            vid = p.element if n == 1 else f"{p.element}-{i}"
            base_id = p.id.split("@", 1)[0]  # a link variant's id is the element's + "@link:key"
            if base_id.count(":") == 2:
                vid += f"-{base_id.rsplit(':', 1)[1]}"
            if p.side:  # one side of a comparison (vary)
                vid += f"-{_safe(p.side)}"
            ctx = ViewContext(plan, p, results, i, vid, p.title + (f" · {inputs.names[i]}" if n > 1 else ""),
                              hwc(inputs.images[i]), p.option_dict, vals)
            built = BUILDERS[p.presentation](ctx)
            for j, v in enumerate(built):
                v.image = i
                if p.link >= 0:  # a link's variant: named after the view it stands in for
                    v.base, v.link, v.key = v.id, p.link, p.variant
                    v.id = f"{v.id}~{p.link}~{_safe(p.variant)}"
            views.setdefault(p.element, []).extend(built)
    return views


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_," else "_" for ch in key)


# ----------------------------------------------------------------------------- information visualisation
@view_builder("heatmap")
def _heatmap(c: ViewContext) -> list:
    p = c.p
    if p.atom == "group":  # NMF groups: each group's share of the activation (one group when a link selects it)
        g = c.results.values[p.groups]
        spatial, channels = g["spatial"][c.i].float(), g["channels"][c.i].float()
        share = spatial * channels.norm(dim=1)[:, None, None]
        which = [p.focus] if p.focus is not None else range(share.shape[0])
        maps = [{"label": f"group {k + 1}", "values": share[k].numpy().astype(np.float32)} for k in which]
        return [c.view({"image": c.image, "signed": False, "maps": maps})]
    data = {"image": c.image, "signed": p.content_kind != "activation",
            "maps": [{"label": s.label, "values": v[c.i].numpy().astype(np.float32)} for s, v in zip(p.series, c.vals)]}
    opts = c.opts
    if opts.get("clip_negative") is None:
        opts = {**opts, "clip_negative": len(p.series) == 2 and p.content_kind != "activation"}
    return [c.view(data, opts=opts)]


@view_builder("bars")
def _bars(c: ViewContext) -> list:
    p, out = c.p, []
    for j, (s, v) in enumerate(zip(p.series, c.vals)):
        labels = list(c.plan.classes) if p.layer == "output" else [f"{p.layer}:{ch}" for ch in range(v.shape[1])]
        data = {"labels": labels, "values": v[c.i].numpy().astype(np.float32), "target": s.label,
                "axis": "activation" if p.content_kind == "activation" else f"attribution to {s.label}"}
        if p.content_kind == "activation":
            data["heading"] = "logits: the most and least likely classes" if p.layer == "output" else \
                f"{p.layer}: the most active channels"
        if p.icons:
            atoms, icons = c.icons_of(p.icons[j])
            data["icons"] = {labels[int(ch)]: ic for ch, ic in zip(atoms, icons)}
        many = len(p.series) > 1
        out.append(c.view(data, vid=f"{c.vid}-{j}" if many else c.vid,
                          title=c.title + (f" ({s.label})" if many else "")))
    return out


@view_builder("groups")
def _groups(c: ViewContext) -> list:
    p = c.p
    g = c.results.values[p.groups]
    layer_shape = c.plan.layer_shapes.get(p.layer, ())
    channels = layer_shape[0] if layer_shape else g["channels"].shape[-1]
    data = {"image": c.image, "spatial": g["spatial"][c.i].numpy(), "channels": g["channels"][c.i].numpy(),
            "channel_labels": [f"{p.layer}:{k}" for k in range(channels)],
            "attribution": {s.label: v[c.i].numpy().astype(np.float32) for s, v in zip(p.series, c.vals)}}
    if p.icons:
        data["icons"] = c.icons_of(p.icons[0])[1]
    if p.focus is not None:
        data["focus"] = p.focus
    return [c.view(data)]


# ----------------------------------------------------------------------------- feature visualisation
@view_builder("featurevis")
def _featurevis(c: ViewContext) -> list:
    p = c.p
    op = c.plan.ops[p.icons[0]]
    atoms, icons = c.icons_of(op.id)
    v = c.vals[0][c.i] if c.vals else None
    what = "attribution" if p.content_kind != "activation" else "activation"
    values = None
    if op.objective == "group":
        labels = [f"group {g + 1}" for g in atoms]
        if v is not None:  # each group's attribution (k,) to the first series' target
            values = [float(v[g]) for g in atoms]
    elif op.objective == "direction":
        labels = ["direction"]
        values = [float(v.max())] if v is not None else None
        what = "max projection"
    elif op.objective == "direction_neuron":
        labels = [f"({x}, {y})" for x, y in atoms]
        if v is not None and v.dim() == 2:
            values = [float(v[y, x]) for x, y in atoms]
    else:
        labels = [f"{p.layer}:{ch}" for ch in atoms]
        if v is not None:
            if op.atoms and v.dim() == 1 and len(v) == len(op.atoms):  # explicit channels: values in that order
                values = [float(x) for x in v]
            elif v.dim() == 1:
                values = [float(v[ch]) for ch in atoms]
            elif v.dim() == 3:
                values = [float(v[ch].max()) for ch in atoms]
                what = "max " + what
            elif v.dim() == 0:
                values = [float(v)] * len(atoms)
    kind = {"channel": "channel", "neuron": "neuron", "group": "NMF group", "direction": "direction",
            "direction_neuron": "activation vector"}[op.objective]
    st = op.setting_dict
    data = {"icons": icons, "labels": labels, "values": values,
            "atom_ids": [int(a) for a in atoms] if op.objective in ("channel", "neuron", "group") else None,
            "scores": c.results.values[op.id]["scores"][c.i].tolist(), "value_name": what,
            "heading": f"{kind} icons · {p.layer}",
            "subtitle": f"{st.get('size')} px, {st.get('steps')} steps; caption: atom · {what}"}
    return [c.view(data)]


@view_builder("semantic_dictionary")
def _semantic_dictionary(c: ViewContext) -> list:
    atoms, icons = c.icons_of(c.p.icons[0])
    data = {"image": c.image, "layer": c.p.layer,
            "activations": c.results.values[c.p.detail]["value"][c.i].numpy().astype(np.float32),
            "icons": {int(ch): ic for ch, ic in zip(atoms, icons)}}
    return [c.view(data)]


@view_builder("activation_grid")
def _activation_grid(c: ViewContext) -> list:
    g = c.results.values[c.p.icons[0]]
    data = {"image": c.image, "icons": g["icons"][c.i].numpy(), "magnitude": g["magnitude"][c.i].numpy(),
            "layer": c.p.layer}
    return [c.view(data)]


# ----------------------------------------------------------------------------- dataset examples
@view_builder("examples")
def _examples(c: ViewContext) -> list:
    """Per atom of this image: its label, content value and the top data-set examples (patches or
    whole images as (s, s, 3) arrays, scores, data-set indices and names, receptive-field boxes)."""
    p = c.p
    op = c.plan.ops[p.detail]
    r = c.results.values[op.id]
    what = {"activation": "activation", "attribution": "attribution"}.get(p.content_kind, "value")
    score = {"channel": "max activation", "neuron": "activation", "spatial": "max cosine similarity",
             "direction": "max projection", "group": "max projection on the group's direction"}[op.atom]
    atoms = []
    for atom, label, value, ex in zip(r["atoms"][c.i], r["labels"][c.i], r["values"][c.i], r["examples"][c.i]):
        if p.layer == "output" and op.atom == "channel" and int(atom) < len(c.plan.classes):
            label = c.plan.classes[int(atom)]  # the output's channels are its classes
        atoms.append({"label": label, "value": value,
                      "images": [hwc(im.float() / 255.0) for im in ex["images"]],
                      "scores": [float(s) for s in ex["scores"]], "indices": [int(i) for i in ex["indices"]],
                      "names": list(ex["names"]), "boxes": [[int(b) for b in box] for box in ex["boxes"]],
                      "positions": [[int(t) for t in xy] for xy in ex["positions"]]})
    h, w = c.image.shape[:2]
    by = (f"attribution to {p.series[0].label}" if p.content_kind == "attribution" and p.series else
          p.series[0].label if p.content_kind == "transform" and p.series else what)
    picked = "" if op.atoms or op.atom == "group" else f" (the {op.count} strongest by {by} in this input)"
    source = f"{op.dataset} ({op.split})" if op.dataset.startswith("builtin:") else c.opts.get("dataset", r["dataset"])
    shown = "each crop is the receptive field of the best position" if op.patch else \
        "box: the receptive field of the best position"
    data = {"atoms": atoms, "layer": p.layer, "atom": op.atom, "value_name": what, "score_name": score,
            "patch": op.patch, "input_size": [h, w], "dataset": r["dataset"], "n": int(r["size"]),
            "heading": f"dataset examples · {p.layer}",
            "subtitle": f"top {op.top} of {int(r['size'])} images of {source} per atom{picked}, ranked by {score}; {shown}"}
    return [c.view(data)]


# ----------------------------------------------------------------------------- atlases
@view_builder("atlas")
def _atlas(c: ViewContext) -> list:
    """One view: every kept cell with its icon, count, top class, mean attribution and example patches."""
    from interpgram.backends.render.charts import png_data_url

    p = c.p
    grid = c.results.values[p.detail]
    icons = c.results.values[p.icons[0]]
    cells = grid["cells"].numpy()
    patches = grid["patches"]
    classes = list(c.plan.classes)
    out = []
    for j in range(cells.shape[0]):
        strip = None
        if patches.shape[1] and int(grid["count"][j]) > 0:
            k = min(int(patches.shape[1]), int(grid["count"][j]))
            row = patches[j, :k].permute(0, 2, 3, 1).numpy()  # (k, s, s, 3) uint8
            gap = np.full((row.shape[1], 2, 3), 255, dtype=np.uint8)
            strip = png_data_url(np.concatenate([np.concatenate([r, gap], axis=1) for r in row], axis=1)[:, :-2]
                                 .astype(np.float32) / 255.0)
        out.append({"col": int(cells[j, 0]), "row": int(cells[j, 1]), "count": int(grid["count"][j]),
                    "top_class": int(grid["top_class"][j]), "icon": png_data_url(hwc(icons["images"][j])),
                    "patches": strip, "attribution": [float(x) for x in grid["mean_attr"][j].tolist()],
                    "size": float(grid["size"][j])})
    patch = None
    if len(p.icons) > 1:  # the patch test of a class atlas
        pt_op = c.plan.ops[p.icons[1]]
        pt = c.results.values[pt_op.id]
        for j, cell in enumerate(out):
            cell["flip"] = float(pt["flip"][j])
        patch = {"class": classes[pt_op.cls], "noise": float(pt["noise"][0]), "n": int(pt["n"][0]),
                 "size": int(pt["size"][0]), "crop": pt_op.crop}
    opts = dict(c.opts)
    n = int(opts.get("grid", 20))
    lay = c.plan.ops[c.plan.ops[p.detail].layout]
    return [c.view({"cells": out, "classes": classes, "grid": n, "kind": p.content_kind, "patch_test": patch,
                    "atlas_classes": [classes[k] for k in lay.classes],
                    "layer": p.layer, "samples": int(grid["member_ptr"][-1]) if grid["member_ptr"].numel() else 0})]
