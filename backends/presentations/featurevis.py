"""The ``featurevis`` presentation."""
from __future__ import annotations

from typing import Any, Optional

import altair as alt
import numpy as np
from pydantic import Field

from interpgram.backends.render.charts import ICON_PX, icon_urls, link_param, need_keys, options_of, sig
from interpgram.backends.render.types import ElementView
from interpgram.backends.render.views import ViewContext
from interpgram.grammar.compile import Builder, Content
from interpgram.grammar.options import IconOptions
from interpgram.grammar.plan import FeatureVis, Present
from interpgram.grammar.presentation import Presentation, register_presentation


class FeatureVisOptions(IconOptions):
    top: int = Field(8, ge=1, le=512, description="icons for the strongest atoms when the atom names none")
    cossim_pow: float = Field(0.0, ge=0, le=16, description="cosine-similarity power of direction objectives")


@register_presentation
class FeatureVisPresentation(Presentation):
    name = "featurevis"
    Options = FeatureVisOptions
    atoms = ("channel", "neuron", "spatial", "group", "direction")
    feature_vis = True
    help = (
        "feature visualisation: an optimised image (icon) for each atom — channels, neurons, activation vectors "
    "at positions, NMF groups, directions"
    )

    def lower(self, b: Builder, c: Content, opts: dict, path: tuple) -> tuple[tuple[str, ...], Optional[str]]:
        """The FeatureVis op of a ``featurevis`` presentation of content ``c``."""
        settings, batch = b.icon_batch(c.layer, opts)
        atom = c.canon
        src = c.series[0].op if c.series else ""
        common = dict(layer=c.layer, settings=settings, seed=b.seed, batch=batch)
        if c.layer in ("input", "output"):
            b.fail(path, f"featurevis shows hidden layers; {c.layer!r} has no icons to optimise "
                            "(the output's class logits: use a layer before it)")
        if c.atom == "group":
            key = ("group", c.groups, settings)
            return (b.node("fv", key, lambda i: FeatureVis(i, source=c.groups, objective="group",
                                                              cossim_pow=opts["cossim_pow"], **common)),), None
        if c.atom == "channel":
            explicit = atom.channels if atom is not None and atom.channels else ()
            key = ("channel", src, explicit, opts["top"], settings)
            return (b.node("fv", key, lambda i: FeatureVis(i, source=src, objective="channel", atoms=explicit,
                                                              top=0 if explicit else opts["top"], **common)),), None
        if c.atom == "neuron":
            explicit = (atom.at[2],) if atom is not None and atom.at else ()
            key = ("neuron", src, explicit, opts["top"], settings)
            return (b.node("fv", key, lambda i: FeatureVis(i, source=src, objective="neuron", atoms=explicit,
                                                              top=0 if explicit else opts["top"], **common)),), None
        if c.atom == "spatial":
            if len(b.info.shape(c.layer)) != 3:
                b.fail(path, f"spatial icons need a layer with positions; {c.layer!r} has shape {b.info.shape(c.layer)}")
            vectors = b.neurons(c.layer)
            explicit = (tuple(atom.at[:2]),) if atom is not None and atom.at else ()
            key = ("spatial", src, vectors, explicit, opts["top"], opts["cossim_pow"], settings)
            return (b.node("fv", key, lambda i: FeatureVis(i, source=src, vectors=vectors, objective="direction_neuron",
                                                              atoms=explicit, top=0 if explicit else opts["top"],
                                                              cossim_pow=opts["cossim_pow"], **common)),), None
        if c.atom == "direction":
            vector = b.dense(atom, c.layer)
            key = ("direction", vector, opts["cossim_pow"], settings)
            return (b.node("fv", key, lambda i: FeatureVis(i, source=src, objective="direction", atoms=(vector,),
                                                              cossim_pow=opts["cossim_pow"], **common)),), None
        b.fail(path, f"featurevis has no icons for {c.atom} atoms")
        raise AssertionError("unreachable: b.fail raises")

    def shown_atoms(self, p: Present, results: Any) -> list[int]:
        """The icons' atoms (a link from a featurevis element selects what it drew)."""
        if not p.icons:
            return []
        out: list[int] = []
        for atoms in results.values[p.icons[0]]["atoms"]:
            out += [int(a) for a in atoms if isinstance(a, (int, np.integer)) or np.ndim(a) == 0]
        return list(dict.fromkeys(out))

    def views(self, c: ViewContext) -> list:
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
                # under each icon the channel number alone: the heading names the layer, and a long layer
                # name (_blocks.10:34) would run into the next caption
                "captions": [str(ch) for ch in atoms] if op.objective in ("channel", "neuron") else None,
                "atom_ids": [int(a) for a in atoms] if op.objective in ("channel", "neuron", "group") else None,
                "scores": c.results.values[op.id]["scores"][c.i].tolist(), "value_name": what,
                "heading": f"{kind} icons · {p.layer}",
                "subtitle": f"{st.get('size')} px, {st.get('steps')} steps; caption: {'channel' if op.objective in ('channel', 'neuron') else 'atom'} · {what}"}
        return [c.view(data)]

    def chart(self, view: ElementView) -> alt.TopLevelMixin:
        """A row of icons, one per atom, each captioned with its atom and value (activation or
        attribution for this input), with the objective each icon reached in the tooltip."""
        options_of(view, self.Options)
        need_keys(view, "icons", "labels")
        labels = [str(x) for x in view.data["labels"]]
        urls = icon_urls(view, view.data["icons"], len(labels))
        values = view.data.get("values")
        scores = view.data.get("scores")
        what = str(view.data.get("value_name", "value"))
        cols = max(1, min(len(urls), int(view.data.get("columns", 8))))
        rows = []
        for i, (lab, url) in enumerate(zip(labels, urls)):
            r = {"i": i, "col": i % cols, "row": i // cols, "url": url, "label": lab}
            if view.data.get("atom_ids") is not None:
                r["atom"] = int(view.data["atom_ids"][i])
            short = view.data.get("captions")
            cap = str(short[i]) if short is not None and i < len(short) else lab
            r["caption"] = cap + (f" · {sig(float(values[i])):.3g}" if values is not None else "")
            if values is not None:
                r["value"] = sig(float(values[i]))
            if scores is not None:
                r["objective"] = sig(float(scores[i]))
            rows.append(r)
        n_rows = (len(urls) + cols - 1) // cols
        xs = alt.Scale(domain=[0, cols], nice=False, zero=False)
        ys = alt.Scale(domain=[0, n_rows], nice=False, zero=False, reverse=True)
        tips = [alt.Tooltip("label:N", title="atom")]
        if values is not None:
            tips.append(alt.Tooltip("value:Q", title=what, format=".4g"))
        if scores is not None:
            tips.append(alt.Tooltip("objective:Q", title="objective reached", format=".4g"))
        base = alt.Chart({"values": rows}).transform_calculate(
            x0="datum.col + 0.04", x1="datum.col + 0.96", y0="datum.row + 0.02", y1="datum.row + 0.8", yt="datum.row + 0.9")
        img = base.mark_image(aspect=False).encode(
            x=alt.X("x0:Q", scale=xs, axis=None), x2="x1:Q", y=alt.Y("y0:Q", scale=ys, axis=None), y2="y1:Q",
            url="url:N", tooltip=tips)
        pick = link_param(view, ["atom"]) if view.data.get("atom_ids") is not None else None
        if pick is not None:
            img = img.add_params(pick)
        cell = ICON_PX + 14
        text = base.mark_text(fontSize=10, baseline="middle", color="#3c4043", limit=cell - 4).encode(
            x=alt.X("xc:Q", scale=xs, axis=None), y=alt.Y("yt:Q", scale=ys, axis=None), text="caption:N"
        ).transform_calculate(xc="datum.col + 0.5")
        return alt.layer(img, text).properties(width=cols * cell, height=n_rows * (cell + 14),
                                               title=alt.TitleParams(view.data.get("heading", "feature visualisation"),
                                                                     subtitle=view.data.get("subtitle", alt.Undefined)))
