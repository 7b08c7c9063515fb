"""The ``groups`` presentation."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import altair as alt
import numpy as np
from pydantic import Field

from interpgram.backends.render.charts import (
    ALPHA,
    PANEL,
    SMALL,
    as_array,
    as_image,
    as_labels,
    cell_layer,
    cell_records,
    count_option,
    group_colours,
    group_name,
    image_layer,
    link_param,
    need_keys,
    non_negative,
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


class GroupsOptions(OptionsModel):
    top_channels: int = Field(5, ge=1, le=64, description="strongest channels listed per group")
    icons: bool = Field(True, description="a feature visualisation of each group's channel direction")
    icon: IconOptions = Field(default_factory=IconOptions, description="how the icons are rendered")


@register_presentation
class Groups(Presentation):
    name = "groups"
    Options = GroupsOptions
    atoms = ("group",)
    help = (
        "NMF neuron groups: a spatial map and channel direction per group, and each group's attribution"
    )

    #: the width the group columns wrap to: the report's content on a 1280 px page (1184 px) less a margin
    ROW_PX = 1170

    def lower(self, b: Builder, c: Content, opts: dict, path: tuple) -> tuple[tuple[str, ...], Optional[str]]:
        if not opts.get("icons"):
            return (), None
        settings, batch = b.icon_batch(c.layer, opts["icon"])
        return (b.node("fv", ("group", c.groups, settings),
                          lambda i: FeatureVis(i, source=c.groups, layer=c.layer, objective="group",
                                               settings=settings, seed=b.seed, batch=batch)),), None

    def views(self, c: ViewContext) -> list:
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

    def chart(self, view: ElementView) -> alt.TopLevelMixin:
        """NMF neuron groups.

        A group's share of the activation at a position is ``spatial[g, p] · ‖channels[g]‖`` (NMF
        leaves the scale between the two factors free; this product does not depend on it), so all
        maps share one scale:

        * a combined map where every position takes the colour of its strongest group and its
          transparency follows that group's share (Building Blocks' "neuron groups" view);
        * each group's attribution to each listed class, as grouped bars (when classes are given);
        * per group, a column: its share over the image in the group's colour, then the strongest
          channels of its direction (weights of the unit-length direction).
        """
        top_n = count_option(view, "top_channels", options_of(view, self.Options)["top_channels"])
        need_keys(view, "image", "spatial", "channels", "channel_labels")
        image = as_image(view, view.data["image"])
        spatial = non_negative(view, "spatial", as_array(view, "spatial", view.data["spatial"], 3))
        channels = as_array(view, "channels", view.data["channels"], 2)  # signed (H+ − H−) for a signed layer
        k, gh, gw = spatial.shape
        if channels.shape[0] != k:
            raise view_error(view, f"channels has {channels.shape[0]} groups, spatial has {k}")
        labels = as_labels(view, "channel_labels", view.data["channel_labels"], channels.shape[1])
        attribution = view.data.get("attribution") or {}
        if not isinstance(attribution, Mapping):
            raise view_error(view, f"data 'attribution' must be a dict class → (k,) array, got {type(attribution).__name__}")
        attr = {}
        for cls, v in attribution.items():
            a = as_array(view, f"attribution[{cls!r}]", v, 1)
            if a.shape[0] != k:
                raise view_error(view, f"attribution[{cls!r}] has {a.shape[0]} values for {k} groups")
            attr[str(cls)] = a

        names = [group_name(i) for i in range(k)]
        colours = group_colours(k)
        group_colour = alt.Scale(domain=names, range=colours)
        norms = np.linalg.norm(channels, axis=1)
        share = spatial * norms[:, None, None]
        direction = channels / np.maximum(norms, 1e-30)[:, None]
        peak = float(share.max()) or 1.0
        where = [alt.Tooltip("row:Q"), alt.Tooltip("col:Q", title="column")]

        cw, ch = panel_px(image, PANEL)
        winner, strength = share.argmax(0), share.max(0)
        rows = cell_records(strength, ramp(strength, 0, peak, 0, 0.85))
        focus = view.data.get("focus")
        for r in rows:
            r["gid"] = int(winner[r["row"], r["col"]])
            r["group"] = names[r["gid"]]
        if focus is not None:  # a link selected one group: the map shows that group's share alone
            focus = int(focus)
            if not 0 <= focus < k:
                raise view_error(view, f"focus group {focus} is outside 0..{k - 1}")
            rows = cell_records(share[focus], ramp(share[focus], 0, peak, 0, 0.85), group=names[focus], gid=focus)
        cells = cell_layer(rows, gh, gw).encode(
            color=alt.Color("group:N", scale=group_colour, legend=alt.Legend(title=None, orient="left")),
            opacity=ALPHA,
            tooltip=[*where, alt.Tooltip("group:N", title="strongest"), alt.Tooltip("value:Q", title="share", format=".4g")])
        pick = link_param(view, ["gid"])
        if pick is not None:
            cells = cells.add_params(pick)
        combined = alt.layer(image_layer(png_data_url(image, cw), gh, gw), cells).properties(
            width=cw, height=ch, title=(f"{names[focus]} (selected)" if focus is not None
                                        else f"{k} neuron groups: the strongest at each position"))
        first_row: list[alt.TopLevelMixin] = [combined]
        if attr:
            arows = [{"group": names[g], "class": cls, "value": sig(a[g])} for cls, a in attr.items() for g in range(k)]
            bars_ = alt.Chart({"values": arows}).mark_bar().encode(
                x=alt.X("class:N", sort=list(attr), title=None, axis=alt.Axis(labelAngle=0, labelFontSize=11)),
                xOffset=alt.XOffset("group:N", sort=names),
                y=alt.Y("value:Q", title="attribution"),
                color=alt.Color("group:N", scale=group_colour, legend=None),
                tooltip=[alt.Tooltip("group:N"), alt.Tooltip("class:N"), alt.Tooltip("value:Q", format=".4g")],
            )
            zero = alt.Chart({"values": [{"zero": 0}]}).mark_rule(color="#777777").encode(y="zero:Q")
            first_row.append(alt.layer(bars_, zero).properties(
                width=alt.Step(max(6, min(18, 240 // k))), height=ch - 40, title="each group's attribution to each class"))

        icons = view.data.get("icons")
        if icons is not None and len(icons) != k:
            raise view_error(view, f"{len(icons)} icons for {k} groups")
        magnitude = np.abs(direction)  # a signed layer's directions list their strongest channels of either sign
        w_max = max(float(np.sort(magnitude[g])[-top_n:].max()) for g in range(k)) or 1.0
        w_min = -w_max if bool((direction < 0).any()) else 0.0
        sw, sh = panel_px(image, SMALL)
        small_url = png_data_url(image, sw)
        columns, shown = [], []
        for g in range(k):
            own = alt.layer(
                image_layer(small_url, gh, gw),
                cell_layer(cell_records(share[g], ramp(share[g], 0, peak, 0, 0.85), group=names[g]), gh, gw).encode(
                    color=alt.Color("group:N", scale=group_colour, legend=None), opacity=ALPHA,
                    tooltip=[*where, alt.Tooltip("group:N"), alt.Tooltip("value:Q", title="share", format=".4g")]),
            ).properties(width=sw, height=sh, title=alt.TitleParams(names[g], color=colours[g]))
            order = np.argsort(-magnitude[g], kind="stable")[:top_n]
            shown += [labels[c] for c in order]
            crows = [{"group": names[g], "channel": labels[c], "weight": sig(direction[g, c])} for c in order]
            strongest = alt.Chart({"values": crows}).mark_bar().encode(
                y=alt.Y("channel:N", sort=alt.EncodingSortField("weight", order="descending"), title=None),
                x=alt.X("weight:Q", title="weight in direction", scale=alt.Scale(domain=[w_min, w_max], nice=False),
                        axis=alt.Axis(tickCount=2, format=".2~f")),
                color=alt.Color("group:N", scale=group_colour, legend=None),
                tooltip=[alt.Tooltip("group:N"), alt.Tooltip("channel:N"), alt.Tooltip("weight:Q", format=".3f")],
            ).properties(width=sw - 50, height=alt.Step(14))
            parts = [own, strongest]
            if icons is not None:
                url = png_data_url(np.asarray(icons[g], dtype=np.float32))
                pic = alt.Chart({"values": [{"url": url, "group": names[g], "x": 0, "x2": 1, "y": 0, "y2": 1}]}).mark_image(
                    aspect=False).encode(x=alt.X("x:Q", axis=None, scale=alt.Scale(domain=[0, 1])), x2="x2:Q",
                                         y=alt.Y("y:Q", axis=None, scale=alt.Scale(domain=[0, 1])), y2="y2:Q", url="url:N",
                                         tooltip=[alt.Tooltip("group:N", title="feature visualisation of")]
                                         ).properties(width=sw, height=sw, title=alt.TitleParams(names[g], color=colours[g]))
                own = own.properties(title="")
                parts = [pic, own, strongest]
            columns.append(alt.vconcat(*parts, spacing=6))
        # one colour scale for every panel; only the combined map shows its legend
        # the groups' columns wrap so that every group stays on a 1280 px page: a column is its map (its
        # plot area lines up with the bars') plus the channel labels left of the bars (~5.5 px a character)
        column_px = sw + 5.5 * max(map(len, shown)) + 12
        fit = max(1, min(k, int((self.ROW_PX + 14) // (column_px + 14))))
        per_row = -(-k // -(-k // fit))  # rows as even as they can be: six groups that fit five a row go 3 + 3
        return (alt.vconcat(alt.hconcat(*first_row, spacing=40).resolve_legend(color="independent"),
                            alt.concat(*columns, columns=per_row, spacing=14), spacing=28)
                .resolve_legend(color="independent"))
