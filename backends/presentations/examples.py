"""The ``examples`` presentation."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Optional

import altair as alt
import numpy as np
from pydantic import Field, field_validator

from interpgram.backends.render.charts import need_keys, options_of, png_data_url, sig, view_error
from interpgram.backends.render.types import ElementView
from interpgram.backends.render.views import ViewContext, hwc
from interpgram.grammar.compile import Builder, Content
from interpgram.grammar.options import OptionsModel, check_dataset_name
from interpgram.grammar.plan import Examples
from interpgram.grammar.presentation import Presentation, register_presentation

EXAMPLE_PX = 72  # display side of one example
GAP = 8  # px between examples
LABEL_PX = 118  # the atom label column
CAPTION_PX = 30  # two caption lines under each example
INK, MUTED, BOX = "#3c4043", "#5f6368", "#e8710a"


def short_name(name: str, limit: int = 18) -> str:
    """The caption under an example: the last part of its name (``10 (star)``, ``cat.png``), shortened."""
    name = name.rsplit("/", 1)[-1]
    return name if len(name) <= limit else name[:limit - 1] + "…"


class ExamplesOptions(OptionsModel):
    """Dataset examples: for each atom, the data-set images (or receptive-field patches) that activate it most."""

    dataset: str = Field("builtin:shapes", description="builtin:shapes, or a folder of images (relative to the spec's folder)")
    n: int = Field(2000, ge=1, le=10_000_000, description="how many data-set images are searched (the first n)")
    split: Literal["train", "test"] = Field("test", description="the split (a folder: its train/ or test/ subfolder when it has them)")
    top: int = Field(6, ge=1, le=64, description="examples shown per atom")
    atoms: int = Field(4, ge=1, le=32, description="how many atoms when the content names none: the strongest of this input")
    patch: bool = Field(True, description="crop each example to the receptive field of its best position (else the whole image)")
    batch_size: int = Field(256, ge=1, le=65536, description="data-set images per forward pass")

    _dataset = field_validator("dataset")(classmethod(lambda cls, v: check_dataset_name(
        v, "a data set is builtin:shapes, or a folder of images (a path, relative to the spec's folder)")))


@register_presentation
class ExamplesPresentation(Presentation):
    name = "examples"
    Options = ExamplesOptions
    atoms = ("channel", "neuron", "spatial", "direction", "group")
    help = (
        "dataset examples: for each atom, the data-set images (or receptive-field patches) that activate it most"
    )

    def lower(self, b: Builder, c: Content, opts: dict, path: tuple) -> tuple[tuple[str, ...], Optional[str]]:
        shape = b.info.shape(c.layer)
        if c.layer == "input" or len(shape) not in (1, 3):
            b.fail(path, f"examples rank data-set images by a hidden layer's (or the output's) activation; "
                            f"{c.layer!r} has shape {shape}")
        atom, kind = c.canon, c.atom
        vectors = ""
        explicit: tuple = ()
        if kind == "channel" and atom is not None and atom.channels:
            explicit = tuple(atom.channels)
        elif kind == "neuron" and atom is not None and atom.at:
            explicit = (tuple(atom.at),)
        elif kind == "spatial":
            vectors = b.neurons(c.layer)
            explicit = (tuple(atom.at[:2]),) if atom is not None and atom.at else ()
        elif kind == "direction":
            explicit = (b.dense(atom, c.layer),)
        src = c.series[0].op if c.series else ""
        groups = (c.groups or "") if kind == "group" else ""
        ds = opts["dataset"]
        if not ds.startswith(("builtin:", "python:")):  # a folder: relative to the spec's folder
            p = Path(os.path.expanduser(ds))
            # absolute: the examples kernel opens it with the spec's folder as base again, and a relative
            # spec folder (specs/imagenet) would be joined twice
            ds = str(p if p.is_absolute() else (b.loaded.base_dir / p).absolute())
        fields = dict(source=src, vectors=vectors, groups=groups, layer=c.layer, atom=kind, atoms=explicit,
                      top=opts["top"], count=opts["atoms"], dataset=ds, n=opts["n"], split=opts["split"],
                      patch=opts["patch"], batch_size=opts["batch_size"])
        return (), b.node("ex", tuple(fields.values()), lambda i: Examples(i, **fields))

    def views(self, c: ViewContext) -> list:
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

    def chart(self, view: ElementView) -> alt.TopLevelMixin:
        """Rows of dataset examples, one per atom; tooltips give the data-set index, the
        receptive-field box (input pixels, x0, y0 – x1, y1, end-exclusive) and the full image name."""
        options_of(view, self.Options)
        need_keys(view, "atoms")
        atoms = view.data["atoms"]
        if not isinstance(atoms, Sequence):
            raise view_error(view, "data 'atoms' must be a list of {label, images, scores, indices, names, boxes}")
        score_name = str(view.data.get("score_name", "score"))
        value_name = str(view.data.get("value_name", "value"))
        patch = bool(view.data.get("patch", True))
        in_h, in_w = (view.data.get("input_size") or (0, 0))
        top = max([len(a.get("images", [])) for a in atoms] + [1])
        row_h = EXAMPLE_PX + CAPTION_PX + GAP
        width = LABEL_PX + top * (EXAMPLE_PX + GAP)
        height = max(1, len(atoms)) * row_h

        images, boxes, labels = [], [], []
        for r, a in enumerate(atoms):
            if not isinstance(a, Mapping):
                raise view_error(view, f"atom {r} must be a mapping")
            n = len(a.get("images", []))
            for key in ("scores", "indices", "names", "boxes"):
                if len(a.get(key, [])) != n:
                    raise view_error(view, f"atom {r}: {len(a.get(key, []))} {key} for {n} images")
            y0 = r * row_h
            value = a.get("value")
            labels.append({"x": 0, "y": y0 + EXAMPLE_PX / 2 - 7, "text": str(a.get("label", r)), "weight": "bold"})
            if value is not None:
                labels.append({"x": 0, "y": y0 + EXAMPLE_PX / 2 + 8, "text": f"{value_name} {sig(float(value)):.3g}",
                               "weight": "normal"})
            for j in range(n):
                img = np.asarray(a["images"][j], dtype=np.float32)
                if img.ndim != 3 or img.shape[2] != 3:
                    raise view_error(view, f"atom {r}, example {j}: image must be (s, s, 3), got shape {img.shape}")
                side = img.shape[0]
                x0 = LABEL_PX + j * (EXAMPLE_PX + GAP)
                bx = [int(t) for t in a["boxes"][j]]
                name = str(a["names"][j])
                row = {"x0": x0, "x1": x0 + EXAMPLE_PX, "y0": y0, "y1": y0 + EXAMPLE_PX, "url": png_data_url(img),
                       "atom": str(a.get("label", r)), "rank": j + 1, "score": sig(float(a["scores"][j])),
                       "index": int(a["indices"][j]), "name": name, "short": short_name(name),
                       "box": f"{bx[0]}, {bx[1]} – {bx[2]}, {bx[3]}",
                       "caption": f"{sig(float(a['scores'][j])):.3g}", "yc1": y0 + EXAMPLE_PX + 10,
                       "yc2": y0 + EXAMPLE_PX + 22, "xc": x0 + EXAMPLE_PX / 2}
                images.append(row)
                if not patch and in_h and in_w:  # the receptive field drawn on the whole image (letterboxed like it)
                    s = side / max(in_h, in_w)
                    px, py = (side - round(in_w * s)) // 2, (side - round(in_h * s)) // 2
                    k = EXAMPLE_PX / side
                    boxes.append({"bx0": x0 + (px + bx[0] * s) * k, "bx1": x0 + (px + bx[2] * s) * k,
                                  "by0": y0 + (py + bx[1] * s) * k, "by1": y0 + (py + bx[3] * s) * k})

        xs = alt.Scale(domain=[0, width], nice=False, zero=False)
        ys = alt.Scale(domain=[0, height], nice=False, zero=False, reverse=True)
        tips = [alt.Tooltip("atom:N", title="atom"), alt.Tooltip("rank:Q", title="rank"),
                alt.Tooltip("score:Q", title=score_name, format=".4g"), alt.Tooltip("index:Q", title="data-set index"),
                alt.Tooltip("name:N", title="image"), alt.Tooltip("box:N", title="receptive field (px)")]
        base = alt.Chart({"values": images})
        layers = [
            base.mark_image(aspect=False).encode(x=alt.X("x0:Q", scale=xs, axis=None), x2="x1:Q",
                                                 y=alt.Y("y0:Q", scale=ys, axis=None), y2="y1:Q", url="url:N",
                                                 tooltip=tips),
            base.mark_text(fontSize=10, baseline="middle", color=INK).encode(
                x=alt.X("xc:Q", scale=xs, axis=None), y=alt.Y("yc1:Q", scale=ys, axis=None), text="caption:N",
                tooltip=tips),
            base.mark_text(fontSize=9, baseline="middle", color=MUTED, limit=EXAMPLE_PX + GAP - 2).encode(
                x=alt.X("xc:Q", scale=xs, axis=None), y=alt.Y("yc2:Q", scale=ys, axis=None), text="short:N",
                tooltip=tips),
        ]
        for weight, colour, size in (("bold", INK, 11), ("normal", MUTED, 10)):  # the atom, then its content value
            rows = [lab for lab in labels if lab["weight"] == weight]
            if rows:
                layers.append(alt.Chart({"values": rows}).mark_text(
                    align="left", baseline="middle", fontSize=size, fontWeight=weight, color=colour,
                    limit=LABEL_PX - 6).encode(x=alt.X("x:Q", scale=xs, axis=None), y=alt.Y("y:Q", scale=ys, axis=None),
                                               text="text:N"))
        if boxes:
            layers.append(alt.Chart({"values": boxes}).mark_rect(fill=None, stroke=BOX, strokeWidth=1.5).encode(
                x=alt.X("bx0:Q", scale=xs, axis=None), x2="bx1:Q", y=alt.Y("by0:Q", scale=ys, axis=None), y2="by1:Q"))
        if not atoms:
            layers = [alt.Chart({"values": [{"x": 0, "y": 10, "t": "no atoms to show"}]}).mark_text(
                align="left", color=MUTED).encode(x=alt.X("x:Q", scale=xs, axis=None), y=alt.Y("y:Q", scale=ys, axis=None),
                                                  text="t:N")]
        title = alt.TitleParams(view.data.get("heading", "dataset examples"), subtitle=view.data.get("subtitle", alt.Undefined))
        return alt.layer(*layers).properties(width=width, height=height, title=title)
