"""The ``bars`` presentation."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import altair as alt
import numpy as np
from pydantic import Field

from interpgram.backends.render.charts import (
    BAR_ICON_PX,
    NEGATIVE,
    POSITIVE,
    as_array,
    as_labels,
    count_option,
    link_param,
    need_keys,
    options_of,
    png_data_url,
    sig,
    top_channels,
    view_error,
)
from interpgram.backends.render.types import ElementView
from interpgram.backends.render.views import ViewContext
from interpgram.grammar.compile import Builder, Content
from interpgram.grammar.options import IconOptions, OptionsModel
from interpgram.grammar.plan import FeatureVis, Present
from interpgram.grammar.presentation import Presentation, register_presentation


class BarsOptions(OptionsModel):
    top: int = Field(8, ge=1, le=256, description="channels shown on each side (positive, negative)")
    icons: bool = Field(False, description="show each channel's feature visualisation next to its bar")
    icon: IconOptions = Field(default_factory=IconOptions, description="how the icons are rendered")


@register_presentation
class Bars(Presentation):
    name = "bars"
    Options = BarsOptions
    atoms = ("channel",)
    help = (
        "channel attribution (or activation) as bars: the strongest positive and negative channels"
    )

    def lower(self, b: Builder, c: Content, opts: dict, path: tuple) -> tuple[tuple[str, ...], Optional[str]]:
        if not opts.get("icons"):
            return (), None
        if c.layer in ("input", "output"):
            b.fail(path, f"bars icons are feature visualisations of a hidden layer's channels; {c.layer!r} has none "
                            "(set icons: false)")
        settings, batch = b.icon_batch(c.layer, opts["icon"])
        out = []
        for s in c.series:
            out.append(b.node("fv", ("channel", s.op, (), opts["top"], True, settings),
                                 lambda i, s=s: FeatureVis(i, source=s.op, layer=c.layer, objective="channel",
                                                           top=opts["top"], both_signs=True, settings=settings,
                                                           seed=b.seed, batch=batch)))
        return tuple(out), None

    def shown_atoms(self, p: Present, results: Any) -> Optional[list[int]]:
        """The bars drawn: the top positive and negative channels of every input, in that order."""
        if not p.series:
            return []
        v = results.values[p.series[0].op]["value"].float().numpy()
        if v.ndim != 2:
            return []
        top = int(p.option_dict["top"])
        out: list[int] = []
        for row in v:
            pos, neg = top_channels(row, top)
            out += [int(i) for i in pos] + [int(i) for i in neg]
        return list(dict.fromkeys(out))

    def views(self, c: ViewContext) -> list:
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

    def chart(self, view: ElementView) -> alt.TopLevelMixin:
        """The ``top`` strongest positive and the ``top`` strongest negative channels as horizontal
        bars sorted by value, red for positive and blue for negative, tooltip with label and value."""
        top = count_option(view, "top", options_of(view, self.Options)["top"])
        need_keys(view, "labels", "values", "target")
        values = as_array(view, "values", view.data["values"], 1)
        labels = as_labels(view, "labels", view.data["labels"], values.shape[0])
        target = str(view.data["target"])
        pos, neg = top_channels(values, top)
        rows = ([{"channel": labels[i], "atom": int(i), "value": sig(values[i]), "sign": "positive"} for i in pos]
                + [{"channel": labels[i], "atom": int(i), "value": sig(values[i]), "sign": "negative"} for i in neg])
        icons = view.data.get("icons")
        if icons is not None:
            if not isinstance(icons, Mapping):
                raise view_error(view, "data 'icons' must map a channel label to its (s, s, 3) icon")
            missing = [r["channel"] for r in rows if r["channel"] not in icons]
            if missing:
                raise view_error(view, f"no icon for {', '.join(missing[:5])}")
            for r in rows:
                r["url"] = png_data_url(np.asarray(icons[r["channel"]], dtype=np.float32))
        m = max((abs(r["value"]) for r in rows), default=0.0) or 1.0
        n_pos, n_neg = int((values > 0).sum()), int((values < 0).sum())
        bar = alt.Chart({"values": rows}).mark_bar(height={"band": 0.8}).encode(
            y=alt.Y("channel:N", sort=alt.EncodingSortField("value", order="descending"), title=None),
            x=alt.X("value:Q", title=str(view.data.get("axis", f"attribution to {target}")), scale=alt.Scale(domain=[-m, m])),
            color=alt.Color("sign:N", scale=alt.Scale(domain=["positive", "negative"], range=[POSITIVE, NEGATIVE]),
                            legend=alt.Legend(title=None, orient="bottom")),
            tooltip=[alt.Tooltip("channel:N"), alt.Tooltip("value:Q", format=".4g")],
        )
        pick = link_param(view, ["atom"])
        if pick is not None:  # a link source: the selected bar is outlined
            bar = bar.encode(stroke=alt.condition(pick, alt.value("#e8710a"), alt.value(None), empty=False),
                             strokeWidth=alt.condition(pick, alt.value(2), alt.value(0), empty=False)).add_params(pick)
        zero = alt.Chart({"values": [{"zero": 0}]}).mark_rule(color="#777777").encode(x="zero:Q")
        title = alt.TitleParams(
            str(view.data.get("heading", f"strongest channels for {target}")),
            subtitle=f"top {len(pos)} of {n_pos} positive, top {len(neg)} of {n_neg} negative ({values.shape[0]} channels)")
        if icons is None:
            return alt.layer(bar, zero).properties(width=360, height=alt.Step(17), title=title)
        step = alt.Step(BAR_ICON_PX + 4)
        pics = alt.Chart({"values": rows}).mark_image(width=BAR_ICON_PX, height=BAR_ICON_PX).encode(
            y=alt.Y("channel:N", sort=alt.EncodingSortField("value", order="descending"), axis=None),
            x=alt.value(BAR_ICON_PX / 2), url="url:N",
            tooltip=[alt.Tooltip("channel:N"), alt.Tooltip("value:Q", format=".4g")],
        ).properties(width=BAR_ICON_PX, height=step)
        return alt.hconcat(pics, alt.layer(bar, zero).properties(width=360, height=step), spacing=2).properties(title=title)
