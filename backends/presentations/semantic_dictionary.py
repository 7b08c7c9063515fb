"""The ``semantic_dictionary`` presentation."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import altair as alt
import numpy as np
from pydantic import Field

from interpgram.backends.render.charts import (
    ICON_PX,
    PANEL,
    as_array,
    as_image,
    cell_layer,
    cell_records,
    hover_ring,
    image_layer,
    link_param,
    need_keys,
    options_of,
    panel_px,
    png_data_url,
    ramp,
    sig,
    view_error,
)
from interpgram.backends.render.types import ElementView
from interpgram.backends.render.views import ViewContext
from interpgram.grammar.compile import Builder, Content
from interpgram.grammar.options import IconOptions, OptionsModel
from interpgram.grammar.plan import FeatureVis
from interpgram.grammar.presentation import Presentation, register_presentation


class SemanticDictionaryOptions(OptionsModel):
    top: int = Field(4, ge=1, le=16, description="channels shown at each position")
    icon: IconOptions = Field(default_factory=IconOptions, description="how the channel icons are rendered")


@register_presentation
class SemanticDictionary(Presentation):
    name = "semantic_dictionary"
    Options = SemanticDictionaryOptions
    atoms = ("spatial",)
    contents = ("activation",)
    draws_positions = True
    help = (
        "for each position of the input, the channels that fire most there, with their icons and magnitudes"
    )

    def lower(self, b: Builder, c: Content, opts: dict, path: tuple) -> tuple[tuple[str, ...], Optional[str]]:
        acts = b.neurons(c.layer)
        settings, batch = b.icon_batch(c.layer, opts["icon"])
        key = ("dictionary", acts, opts["top"], settings)
        fv = b.node("fv", key, lambda i: FeatureVis(i, source=acts, layer=c.layer, objective="channel",
                                                       per_position=opts["top"], settings=settings, seed=b.seed,
                                                       batch=batch))
        return (fv,), acts

    def views(self, c: ViewContext) -> list:
        atoms, icons = c.icons_of(c.p.icons[0])
        data = {"image": c.image, "layer": c.p.layer,
                "activations": c.results.values[c.p.detail]["value"][c.i].numpy().astype(np.float32),
                "icons": {int(ch): ic for ch, ic in zip(atoms, icons)}}
        return [c.view(data)]

    def chart(self, view: ElementView) -> alt.TopLevelMixin:
        """The input with its layer's positions; hovering a position shows the ``top`` channels that
        fire most there, each as its icon with a bar sized by its activation (the article's semantic
        dictionary). It opens on the position of the strongest activation."""
        top = int(options_of(view, self.Options)["top"])
        need_keys(view, "image", "activations", "icons", "layer")
        image = as_image(view, view.data["image"])
        acts = as_array(view, "activations", view.data["activations"], 3)  # (C, H, W)
        icons: Mapping = view.data["icons"]
        if not isinstance(icons, Mapping):
            raise view_error(view, "data 'icons' must map channel → (s, s, 3) image")
        layer = str(view.data["layer"])
        c, gh, gw = acts.shape
        k = min(top, c)
        order = np.argsort(-acts.reshape(c, -1), axis=0, kind="stable")[:k]  # (k, H*W)
        missing = sorted({int(ch) for ch in order.flatten()} - {int(x) for x in icons})
        if missing:
            raise view_error(view, f"no icon for channel(s) {missing[:5]}")
        urls = {int(ch): png_data_url(np.asarray(icons[ch], dtype=np.float32)) for ch in icons}
        mag = np.linalg.norm(acts, axis=0)
        start = int(mag.argmax())
        pw, ph = panel_px(image, PANEL)
        pos_rows = cell_records(mag, ramp(mag, 0, float(mag.max()) or 1.0, 0.0, 0.0))
        for r in pos_rows:
            r["pos"] = r["row"] * gw + r["col"]
        hover = alt.selection_point(name="position", fields=["pos"], on="pointerover", nearest=False,
                                    value=[{"pos": start}], clear=False)
        cells = cell_layer(pos_rows, gh, gw).encode(
            tooltip=[alt.Tooltip("col:Q", title="x"), alt.Tooltip("row:Q", title="y"),
                     alt.Tooltip("value:Q", title="‖activation‖", format=".4g")],
        ).mark_rect(fill="#000000", fillOpacity=0.0, stroke="#ffffff", strokeOpacity=0.25,
                    strokeWidth=1.5).add_params(hover)
        pick = link_param(view, ["col", "row"])
        if pick is not None:
            cells = cells.add_params(pick)
        left = alt.layer(image_layer(png_data_url(image, pw), gh, gw), cells,
                         hover_ring(pos_rows, gh, gw, hover)).properties(
            width=pw, height=ph, title=alt.TitleParams("input: hover a position", subtitle=f"{layer}: {gw}×{gh} positions"))

        rows = []
        for p in range(gh * gw):
            y, x = divmod(p, gw)
            for rank in range(k):
                ch = int(order[rank, p])
                rows.append({"pos": p, "rank": rank, "channel": ch, "label": f"{layer}:{ch}",
                             "value": sig(acts[ch, y, x])})
        lookup = alt.LookupData(data=alt.InlineData(values=[{"channel": ch, "url": u} for ch, u in urls.items()]),
                                key="channel", fields=["url"])
        vmax = float(acts.max()) or 1.0
        base = alt.Chart({"values": rows}).transform_filter(hover).transform_lookup(lookup="channel", from_=lookup)
        ys = alt.Scale(domain=[0, k], nice=False, zero=False, reverse=True)
        icon = base.transform_calculate(y0="datum.rank + 0.06", y1="datum.rank + 0.94").mark_image(aspect=True).encode(
            x=alt.X("x0:Q", scale=alt.Scale(domain=[0, 1]), axis=None), x2="x1:Q",
            y=alt.Y("y0:Q", scale=ys, axis=None), y2="y1:Q", url="url:N",
            tooltip=[alt.Tooltip("label:N", title="channel"), alt.Tooltip("value:Q", title="activation", format=".4g")],
        ).transform_calculate(x0="0", x1="1").properties(width=ICON_PX, height=k * (ICON_PX + 6))
        bar = base.transform_calculate(y0="datum.rank + 0.3", y1="datum.rank + 0.7").mark_rect(color="#e8710a").encode(
            x=alt.X("zero:Q", scale=alt.Scale(domain=[0, vmax]), title="activation"), x2="value:Q",
            y=alt.Y("y0:Q", scale=ys, axis=None), y2="y1:Q",
            tooltip=[alt.Tooltip("label:N", title="channel"), alt.Tooltip("value:Q", title="activation", format=".4g")],
        ).transform_calculate(zero="0")
        text = base.transform_calculate(yt="datum.rank + 0.5").mark_text(align="left", dx=4, fontSize=10).encode(
            x=alt.X("value:Q", scale=alt.Scale(domain=[0, vmax])), y=alt.Y("yt:Q", scale=ys, axis=None), text="label:N")
        right = alt.layer(bar, text).properties(width=170, height=k * (ICON_PX + 6))
        entry = alt.hconcat(icon, right, spacing=4).properties(
            title=alt.TitleParams(f"top {k} channels at the position", subtitle="icons: each channel's feature visualisation"))
        return alt.hconcat(left, entry, spacing=24)
