"""The ``atlas`` presentation."""
from __future__ import annotations

from typing import Any, Literal, Optional

import altair as alt
import numpy as np
from pydantic import Field, ValidationError

from interpgram.backends.render.atlas_chart import atlas_chart
from interpgram.backends.render.charts import png_data_url
from interpgram.backends.render.types import ElementView
from interpgram.backends.render.views import ViewContext, hwc
from interpgram.grammar.compile import COLLECT_ID, Builder, Invalid, freeze, option_error, top_rank
from interpgram.grammar.options import IconOptions, OptionsModel
from interpgram.grammar.plan import AtlasIcons, Grid, Layout, PatchTest, Present
from interpgram.grammar.presentation import Presentation, register_presentation
from interpgram.grammar.spec.errors import did_you_mean
from interpgram.grammar.spec.nodes import (
    ActivationContent,
    AttributionContent,
    TransformContent,
    canonical_presentations,
)


class AtlasLayoutOptions(OptionsModel):
    """UMAP of the (whitened) activation vectors: fitted on a sample, the rest transformed, then normalised
    into [0, 1]² (the article's layout step)."""

    n_neighbors: int = Field(20, ge=2, le=1000, description="UMAP n_neighbors (the article's class atlas: 20; full atlases: 50)")
    min_dist: float = Field(0.01, ge=0.0, le=1.0, description="UMAP min_dist")
    metric: Literal["cosine", "euclidean"] = Field("cosine", description="UMAP metric")
    fit_sample: int = Field(20000, ge=100, le=10_000_000, description="UMAP is fitted on this many samples; the rest are transformed")


class AtlasIconOptions(IconOptions):
    """Feature inversion of each cell's mean activation (the whitened cosine-power direction objective)."""

    steps: int = Field(256, ge=1, le=20000, description="optimisation steps (the article: 1024)")
    attempts: int = Field(2, ge=1, le=16, description="independent attempts per icon; the best final objective is kept")
    cossim_pow: float = Field(4.0, ge=0, le=16, description="cosine-similarity power (lucid's notebooks: 4, recipe: 2)")
    batch: int = Field(64, ge=1, le=4096, description="icons per batched optimisation (and per Ray task)")


class PatchTestOptions(OptionsModel):
    """The article's adversarial-patch check, for every cell of a class atlas: paste the cell's icon onto
    data-set images the model does not already call the class, and count how often it then does."""

    size: Optional[int] = Field(None, ge=2, le=1024, description="patch side in px (default: a seventh of the model's input)")
    crop: Literal["centre", "whole"] = Field("centre", description="the icon's centre size × size px (its native scale), "
                                                                   "or the whole icon scaled down to size")
    n: int = Field(500, ge=10, le=100000, description="images the patch is pasted onto (one random place each)")
    split: Literal["train", "test"] = Field("test", description="the data set's split the images come from")


class AtlasOptions(OptionsModel):
    """An activation atlas: the data set's activation vectors laid out in 2-D, gridded, one icon per cell."""

    grid: int = Field(20, ge=2, le=400, description="cells per side")
    min_count: int = Field(5, ge=1, le=100000, description="cells with fewer samples are left empty")
    whiten: bool = Field(True, description="lay out whitened vectors (the uncentred second moment); icons always use "
                                           "the whitened objective v·S")
    layout: AtlasLayoutOptions = Field(default_factory=AtlasLayoutOptions)
    icon: AtlasIconOptions = Field(default_factory=AtlasIconOptions)
    sized: bool = Field(False, description="size each icon by its cell's density (log count / log max)")
    winners: bool = Field(True, description="class atlas: keep samples whose strongest attribution is the class")
    top: int = Field(2000, ge=0, le=10_000_000, description="class atlas: and the top samples by attribution to the class")
    examples: int = Field(4, ge=0, le=16, description="data-set patches shown per cell when hovering")
    patch_test: Optional[PatchTestOptions] = Field(None, description="class atlas: how often each cell's icon, pasted "
                                                                     "as a patch, turns other images into the class")


def atlas_source(b: Builder, c, path: tuple) -> tuple[str, Optional[int], str]:
    """An atlas's content → (layer, class or None, sentence). Activation: the layer's vectors;
    attribution to one class: that class's atlas."""
    if isinstance(c, ActivationContent):
        sub = b.network(c.activation, path + ("activation",), "activation")
        layer, atom, apath = sub.layer, sub.atom, path + ("activation",)
    elif isinstance(c, AttributionContent):
        a = c.attribution
        apath = path + ("attribution",)
        frm = b.network(a.from_, apath + ("from",), "from")
        to = b.network(a.to, apath + ("to",), "to")
        layer, atom = frm.layer, frm.atom
        apath = apath + ("from",)
        if to.layer != "output":
            b.fail(path + ("attribution", "to", "layer"), "a class atlas attributes to the output: "
                                                         "to: {layer: output, select: [<class>]}")
        if a.method != "grad_x_act":
            b.fail(path + ("attribution", "method"), "an atlas stores gradient × activation attributions (the article's); "
                                                     "method: integrated is not available for atlases")
        if b.sel is not None and b.sel.kind == "class" and b.sel.target == "class":
            cls = int(b.sel.value) if not isinstance(b.sel.value, str) else None
            if cls is None:
                b.sel_problem = "an atlas has no input whose top classes it could use; name a class"
                raise Invalid
            b.sel_used = True
        else:
            sel = to.select or []
            if len(sel) != 1:
                b.fail(path + ("attribution", "to", "select"), f"a class atlas shows one class: select: [<class>] "
                                                               f"(got {len(sel)}); compare two with a transform compare")
            if top_rank(sel[0], b.info.classes) is not None:
                b.fail(path + ("attribution", "to", "select", 0), f"{sel[0]!r} picks an input's likely classes, but an atlas "
                                                                  "shows a data set: name a class "
                                                                  f"{did_you_mean(str(sel[0]), b.info.classes, listing='classes')}")
            cls = b.class_index(sel[0], path + ("attribution", "to", "select", 0))
        return layer, cls, check_atlas_layer(b, layer, atom, apath)
    else:
        b.fail(path, "an atlas shows an activation, an attribution to one class (class atlas) "
                     "or a compare of two such attributions (two-class atlas)")
    return layer, None, check_atlas_layer(b, layer, atom, apath)


def check_atlas_layer(b: Builder, layer: str, atom, path: tuple) -> str:
    if layer in ("input", "output"):
        b.fail(path + ("layer",), f"an atlas lays out a hidden layer's activation vectors, not {layer!r}")
    b.check_layer(layer, path + ("layer",))
    if len(b.info.shape(layer)) != 3:
        b.fail(path + ("layer",), f"an atlas needs a spatial layer (C, H, W); {layer} has shape {b.info.shape(layer)}")
    if atom is not None and atom != "spatial":
        b.fail(path + ("atom",), "an atlas shows activation vectors at positions: atom: spatial (or leave atom out)")
    return layer


@register_presentation
class AtlasPresentation(Presentation):
    name = "atlas"
    Options = AtlasOptions
    atoms = ("spatial",)
    per_input = False
    whole_element = True
    uses_dataset = True
    help = (
        "activation atlas: the activation vectors of a data set at one layer laid out by UMAP, averaged per grid cell and "
    "drawn by feature inversion; an attribution to a class makes a class atlas, a compare of two a two-class atlas"
    )

    def lower_element(self, b: Builder, el_id: str, el: Any, *, side: str = "") -> tuple[list[Present], Optional[set]]:
        """An atlas element: the spec's data-set collection (one for every atlas) → Layout → Grid → icons."""
        epath = ("elements", el_id)
        pres = canonical_presentations(el.presentation)
        if len(pres) != 1:
            b.diags.append(b.loaded.error(epath + ("presentation",), "an atlas is an element of its own: give the other "
                                                                      "presentations their own element"))
            return [], None
        name, opts = pres[0]
        ppath = epath + ("presentation",)
        options = None
        try:
            options = self.Options.model_validate(opts)
        except ValidationError as err:  # every problem is reported (the content is still checked below)
            for e in err.errors():
                b.diags.append(option_error(b.loaded, ppath, name, self.Options, opts, e))
        c = el.content
        cpath = epath + ("content",)
        try:
            if isinstance(c, TransformContent):
                t = c.transform
                if t.op != "compare" or not all(isinstance(x, AttributionContent) for x in (t.a, t.b)):
                    b.fail(cpath + ("transform",), "a two-class atlas compares two attributions to one class each: "
                                                   "{transform: {op: compare, a: {attribution: ...}, b: {attribution: ...}}}")
                la, ca, _ = atlas_source(b, t.a, cpath + ("transform", "a"))
                lb, cb, _ = atlas_source(b, t.b, cpath + ("transform", "b"))
                if la != lb:
                    b.fail(cpath + ("transform", "b"), f"a two-class atlas compares attributions of one layer ({la} vs {lb})")
                if ca == cb:
                    b.fail(cpath + ("transform", "b"), f"a two-class atlas needs two different classes (both are {b.info.classes[ca]})")
                layer, kind, classes = la, "compare", (ca, cb)
            else:
                layer, cls, _ = atlas_source(b, c, cpath)
                kind, classes = ("activation", ()) if cls is None else ("class", (cls,))
        except Invalid:
            return [], None
        if options is None:
            return [], None
        o = options.model_dump()
        ds = b.loaded.spec.dataset
        seed = b.seed if ds is None or ds.seed is None else ds.seed
        if layer not in b.atlas_layers:
            b.atlas_layers.append(layer)
        lo = o["layout"]
        lay = b.node("layout", (layer, kind, classes, o["whiten"], lo["n_neighbors"], lo["min_dist"], lo["metric"],
                                lo["fit_sample"], o["winners"] if kind != "activation" else True,
                                o["top"] if kind != "activation" else 0, seed),
                     lambda i: Layout(i, collect=COLLECT_ID, layer=layer, kind=kind, classes=classes, whiten=o["whiten"],
                                      n_neighbors=lo["n_neighbors"], min_dist=lo["min_dist"], metric=lo["metric"],
                                      fit_sample=lo["fit_sample"], winners=o["winners"] if kind != "activation" else True,
                                      top=o["top"] if kind != "activation" else 0, seed=seed))
        grid = b.node("grid", (lay, o["grid"], o["min_count"], o["examples"]),
                      lambda i: Grid(i, layout=lay, n=o["grid"], min_count=o["min_count"], examples=o["examples"]))
        io = o["icon"]
        settings = b.icon_settings(io)
        icons = b.node("aicons", (grid, settings, io["cossim_pow"], io["batch"], b.seed),
                       lambda i: AtlasIcons(i, grid=grid, layer=layer, settings=settings, cossim_pow=io["cossim_pow"],
                                            batch=io["batch"], seed=b.seed))
        src = (ds.source if ds is not None else "builtin:shapes")
        deps = (icons,)
        if o.get("patch_test") is not None:
            pt = o["patch_test"]
            if kind != "class":
                b.diags.append(b.loaded.error(ppath + ("atlas", "patch_test"), "patch_test applies to a class atlas "
                                              "(an attribution to one class): it counts how often a cell's icon turns "
                                              "other images into that class"))
                return [], None
            size = pt["size"] or max(2, round(int(b.info.input_shape[-1]) / 7))
            test = b.node("ptest", (icons, classes[0], size, pt["crop"], pt["n"], src, pt["split"], seed),
                          lambda i: PatchTest(i, icons=icons, cls=classes[0], size=size, crop=pt["crop"], n=pt["n"],
                                              dataset=src, split=pt["split"], seed=seed))
            deps = (icons, test)
        cname = [b.info.classes[x] for x in classes]
        what = {"activation": f"Activation(Dataset {src}, Network {layer} Spatial)",
                "class": f"Attribution(Dataset {src}, Network {layer} Spatial, Output {cname[0] if cname else ''})",
                "compare": f"Transform(compare, Attribution(… Output {cname[0] if cname else ''}), "
                           f"Attribution(… Output {cname[-1] if cname else ''}))"}[kind]
        default_title = {"activation": f"{el_id}: activation atlas of {layer}",
                         "class": f"{el_id}: class atlas of {layer} → {cname[0] if cname else ''}",
                         "compare": f"{el_id}: {layer}, {' vs '.join(cname)}"}[kind]
        title = (el.title or default_title) + (f" · {side}" if side else "")
        variant = ""
        p = Present(f"el:{el_id}" + (f"@side:{side}" if side else ""), element=el_id, presentation=name,
                    options=tuple(sorted((k, freeze(v)) for k, v in o.items())), atom="spatial", layer=layer,
                    content_kind={"activation": "activation", "class": "attribution", "compare": "transform"}[kind],
                    series=(), title=title, icons=deps, detail=grid,
                    grammar=f"FeatureVis({what}) on a UMAP grid", variant=variant, side=side)
        return [p], set()

    def views(self, c: ViewContext) -> list:
        """One view: every kept cell with its icon, count, top class, mean attribution and example patches."""
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

    def chart(self, view: ElementView) -> alt.TopLevelMixin:
        d = view.data
        opts = view.options or {}
        kind = d.get("kind", "activation")
        cells = d["cells"]
        total = sum(c["count"] for c in cells)
        subtitle = (f"{len(cells)} cells of {d['grid']}×{d['grid']} with ≥{opts.get('min_count', 5)} samples; "
                    f"{total} of {d.get('samples', total)} {d['layer']} vectors · scroll to zoom, drag to pan, "
                    "hover a cell for its examples, click for its attribution to classes")
        x_title = y_title = None
        if kind == "transform":  # two-class atlas: x is the attribution difference (a on the right)
            a, b = d["atlas_classes"]
            x_title = f"← more {b} · attribution difference · more {a} →"
            y_title = "1-D layout of the activations"
        pt = d.get("patch_test")
        if pt is not None:
            best = max(cells, key=lambda c: c.get("flip", 0.0))
            subtitle += (f" · patch test: the best cell's icon ({pt['size']} px) turns {100 * best['flip']:.1f}% of "
                         f"{pt['n']} images into {pt['class']}, a noise patch {100 * pt['noise']:.1f}%")
        return atlas_chart(cells, d["classes"], title=view.title, grid=int(d["grid"]), sized=bool(opts.get("sized", False)),
                           patch_test=pt,
                           subtitle=subtitle, x_title=x_title, y_title=y_title)
