"""The ``heatmap`` presentation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import re
from typing import Literal, Optional

import altair as alt
import numpy as np
from pydantic import Field, field_validator

from interpgram.backends.render.charts import (
    ALPHA,
    CLASS_COLOURS,
    PANEL,
    as_array,
    as_image,
    cell_layer,
    cell_records,
    distinct_colours,
    flag_value,
    group_colours,
    group_name,
    image_layer,
    link_param,
    need_keys,
    options_of,
    panel_px,
    pick_layer,
    png_data_url,
    sig,
    unit_option,
    view_error,
)
from interpgram.backends.render.types import ElementView
from interpgram.backends.render.views import ViewContext
from interpgram.grammar.compile import Builder, Content
from interpgram.grammar.options import OptionsModel
from interpgram.grammar.presentation import Presentation, register_presentation
from interpgram.grammar.spec.errors import did_you_mean


def muted(image: np.ndarray) -> np.ndarray:
    """The photo as a light grey picture (luminance mapped to [0.55, 1]): its shapes stay legible while
    any overlay colour reads on it, also on red or orange photos where a red or orange map would vanish."""
    grey = image @ np.array([0.299, 0.587, 0.114], dtype=image.dtype)
    return np.repeat((0.55 + 0.45 * grey)[..., None], 3, axis=2)


def strength_alpha(v: np.ndarray, peak: float, opacity: float, gamma: float) -> np.ndarray:
    """Opacity of each cell: ``opacity · (v / peak) ** gamma`` (0 where v ≤ 0). Attributions are heavy-tailed, so a
    linear ramp leaves all but the few strongest cells invisible; the square root shows where the mass is."""
    if peak <= 0:
        return np.zeros_like(v)
    return opacity * np.clip(v / peak, 0, 1) ** gamma


#: Vega colour schemes a single map may use (sequential for magnitudes, diverging for signed maps)
SCHEMES = ("viridis", "magma", "inferno", "plasma", "turbo", "greys", "blues", "reds", "oranges", "greens", "purples",
           "redblue", "blueorange", "purplegreen", "redyellowblue", "brownbluegreen", "pinkyellowgreen")
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


class HeatmapOptions(OptionsModel):
    opacity: float = Field(0.85, ge=0.0, le=1.0, description="opacity of the strongest cell")
    clip_negative: Optional[bool] = Field(None, description="default: true for attributions of two classes")
    background: Literal["muted", "photo"] = Field(
        "muted", description="the image under the maps: muted (grey and light, so that any colour reads on any photo) "
                             "or photo (as it is)")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="opacity follows (value / peak) ** gamma: 0.5 (square root) "
                                                          "shows the middle of the range, 1 is linear")
    scheme: Optional[str] = Field(None, description="colour scheme of a single map (default: viridis for magnitudes, "
                                                    "redblue for signed maps; a map of NMF groups takes its groups' colours)")
    colours: Optional[list[str]] = Field(None, description="one #rrggbb colour per class map (default: orange, blue, …; "
                                                                "NMF groups have their own colours)")

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v):
        if v is not None and v not in SCHEMES:
            raise ValueError(f"unknown colour scheme {v!r} {did_you_mean(v, SCHEMES, listing='schemes')}")
        return v

    @field_validator("colours")
    @classmethod
    def _colours(cls, v):
        bad = [c for c in v or [] if not isinstance(c, str) or not _HEX.match(c)]
        if bad:
            raise ValueError(f"colours are #rrggbb strings, got {bad[0]!r}")
        return v


def strongest_layer(pos: np.ndarray, labels: list[str], colours: list[str], top: float, opacity: float, gamma: float,
                    where: list, *, field: str, nothing: str, tips: tuple[str, str], columns=alt.Undefined) -> alt.Chart:
    """One overlay of several non-negative maps ``pos`` (n, h, w): each cell in the colour of the map that is
    strongest there (``field`` names it in the data and tooltip), its opacity following that strength on the
    scale ``top``; cells where every map is 0 are ``nothing`` and drawn fully transparent."""
    while nothing in labels:
        nothing += "*"
    winner, strength = pos.argmax(0), pos.max(0)
    gh, gw = strength.shape
    rows = cell_records(strength, strength_alpha(strength, top, opacity, gamma))
    for r in rows:
        i, j = r["row"], r["col"]
        r[field] = labels[int(winner[i, j])] if strength[i, j] > 0 else nothing
        r["values"] = " · ".join(f"{lab} {sig(pos[n, i, j]):.4g}" for n, lab in enumerate(labels))
    return cell_layer(rows, gh, gw).encode(
        color=alt.Color(f"{field}:N", scale=alt.Scale(domain=labels + [nothing], range=colours + ["#ffffff"]),
                        legend=alt.Legend(title=None, orient="bottom", values=labels, columns=columns)),
        opacity=ALPHA,
        tooltip=[*where, alt.Tooltip(f"{field}:N", title=tips[0]), alt.Tooltip("values:N", title=tips[1])])


@register_presentation
class Heatmap(Presentation):
    name = "heatmap"
    Options = HeatmapOptions
    atoms = ("spatial", "direction", "group")
    draws_positions = True
    help = (
        "a map over the input image: spatial activation magnitude or spatial attribution, one or two classes"
    )

    def lower(self, b: Builder, c: Content, opts: dict, path: tuple) -> tuple[tuple[str, ...], Optional[str]]:
        if c.atom == "group":  # a group has the colour the groups presentation gives it, on every chart
            for key in ("colours", "scheme"):
                if opts.get(key) is not None:
                    b.fail(path + ("heatmap", key), f"a heatmap of NMF groups draws each group in its own colour, the "
                                                    f"one every chart of these groups gives it; option {key!r} is for "
                                                    "maps of classes or of one activation")
        return (), None

    def views(self, c: ViewContext) -> list:
        p = c.p
        if p.atom == "group":  # NMF groups: each group's share of the activation (one group when a link selects it)
            g = c.results.values[p.groups]
            spatial, channels = g["spatial"][c.i].float(), g["channels"][c.i].float()
            share = spatial * channels.norm(dim=1)[:, None, None]
            k = share.shape[0]
            which = [p.focus] if p.focus is not None else list(range(k))
            maps = [{"label": group_name(g), "values": share[g].numpy().astype(np.float32)} for g in which]
            return [c.view({"image": c.image, "signed": False, "maps": maps, "groups": {"ids": which, "k": k}})]
        data = {"image": c.image, "signed": p.content_kind != "activation",
                "maps": [{"label": s.label, "values": v[c.i].numpy().astype(np.float32)} for s, v in zip(p.series, c.vals)]}
        opts = c.opts
        if opts.get("clip_negative") is None:
            opts = {**opts, "clip_negative": len(p.series) == 2 and p.content_kind != "activation"}
        return [c.view(data, opts=opts)]

    def chart(self, view: ElementView) -> alt.TopLevelMixin:
        """Maps over the input image, beside the plain input.

        One map: a colour scale over the image — sequential (magnitude) or diverging red/blue centred
        on zero when ``signed`` — whose transparency follows the magnitude, so the image shows through
        where the map is weak. Two or more maps (one per class): each class in its own colour, clipped
        at zero (positive evidence only), one panel per class, then an overlay in which every position
        takes the colour of the class it supports most.
        """
        opts = options_of(view, self.Options)
        opacity = unit_option(view, "opacity", opts["opacity"])
        gamma = float(opts["gamma"])
        clip = False if opts["clip_negative"] is None else flag_value(view, "option 'clip_negative'", opts["clip_negative"])
        need_keys(view, "image", "maps")
        image = as_image(view, view.data["image"])
        signed = flag_value(view, "data 'signed'", view.data.get("signed", False))
        raw = view.data["maps"]
        if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)) or not raw:
            raise view_error(view, "data 'maps' must be a non-empty list of {'label', 'values'} dicts")
        labels, maps = [], []
        for i, m in enumerate(raw):
            if not isinstance(m, Mapping) or "label" not in m or "values" not in m:
                raise view_error(view, f"maps[{i}] must be a dict with 'label' and 'values'")
            labels.append(str(m["label"]))
            maps.append(as_array(view, f"maps[{i}].values", m["values"], 2))
        if len({m.shape for m in maps}) != 1:
            raise view_error(view, f"the maps differ in shape: {[m.shape for m in maps]}")
        if len(set(labels)) != len(labels):
            raise view_error(view, f"map labels must be distinct, got {labels}")
        gh, gw = maps[0].shape
        pw, ph = panel_px(image, PANEL)
        url = png_data_url(image, pw)
        under = url if opts["background"] == "photo" else png_data_url(muted(image), pw)

        def panel(layers: list[alt.Chart], title: str | alt.TitleParams, base: str | None = None) -> alt.LayerChart:
            return alt.layer(image_layer(base or under, gh, gw), *layers).properties(width=pw, height=ph, title=title)

        where = [alt.Tooltip("row:Q", title="row"), alt.Tooltip("col:Q", title="column")]
        panels = [panel([], "input", url)]
        if view.data.get("groups") is not None:
            return self._groups(view, labels, maps, panel, panels, where, opacity, gamma)

        if len(maps) == 1:
            v = np.maximum(maps[0], 0) if clip else maps[0]
            legend = alt.Legend(title=None, orient="right", gradientLength=max(60, ph - 40))
            if signed and not clip:
                m = float(np.abs(v).max()) or 1.0
                rows = cell_records(v, strength_alpha(np.abs(v), m, opacity, gamma))
                scheme = opts["scheme"] or "redblue"
                colour = alt.Color("value:Q", legend=legend, scale=alt.Scale(
                    scheme=scheme, reverse=scheme == "redblue", domain=[-m, m], domainMid=0))
            else:
                lo, hi = float(v.min()), float(v.max())
                hi = hi if hi > lo else lo + 1.0
                rows = cell_records(v, 0.15 * opacity + strength_alpha(v - lo, hi - lo, 0.85 * opacity, gamma))
                colour = alt.Color("value:Q", legend=legend,
                                   scale=alt.Scale(scheme=opts["scheme"] or "viridis", domain=[lo, hi]))
            layer = cell_layer(rows, gh, gw).encode(
                color=colour, opacity=ALPHA, tooltip=[*where, alt.Tooltip("value:Q", title=labels[0], format=".4g")])
            pick = link_param(view, ["col", "row"])
            panels.append(panel([layer] + ([pick_layer(view, gh, gw, pick)] if pick is not None else []), labels[0]))
            return alt.hconcat(*panels, spacing=18)

        # several classes: positive evidence only, one colour per class. Each class's panel is scaled to its
        # own peak (named under its title), so a class with weaker evidence still shows where that evidence
        # is; the overlay compares the classes on one scale.
        given = list(opts["colours"] or [])
        colours = (given + distinct_colours(len(maps), CLASS_COLOURS)[len(given):])[:len(maps)]
        pos = np.stack([np.maximum(m, 0) for m in maps])
        top = float(pos.max()) or 1.0
        pick = link_param(view, ["col", "row"])
        for k, label in enumerate(labels):
            peak = float(pos[k].max())
            layer = cell_layer(cell_records(pos[k], strength_alpha(pos[k], peak, opacity, gamma)), gh, gw).encode(
                color=alt.value(colours[k]), opacity=ALPHA,
                tooltip=[*where, alt.Tooltip("value:Q", title=label, format=".4g")])
            extra = [pick_layer(view, gh, gw, pick)] if pick is not None and k == 0 else []
            sub = f"peak {sig(peak):.3g}" if peak > 0 else "no positive evidence"
            panels.append(panel([layer] + extra, alt.TitleParams(label, color=colours[k], subtitle=sub)))
        combined = strongest_layer(pos, labels, colours, top, opacity, gamma, where, field="class",
                                   nothing="(no positive evidence)", tips=("supports most", "evidence"))
        panels.append(panel([combined], "which class each position supports"))
        return alt.hconcat(*panels, spacing=18)

    #: panels of a heatmap of groups per row: four 220 px panels fit a 1280 px page (the report's margins included)
    GROUP_COLUMNS = 4

    def _groups(self, view: ElementView, labels: list[str], maps: list[np.ndarray], panel, panels: list, where,
                opacity: float, gamma: float) -> alt.TopLevelMixin:
        """NMF groups: the input, then each group's share of the activation in the group's own colour (the
        colour :func:`group_colours` gives it in every chart of these groups) scaled to its own peak, then,
        for several groups, the strongest group at each position; the panels wrap, four to a row."""
        spec = view.data["groups"]
        if not isinstance(spec, Mapping) or "ids" not in spec or "k" not in spec:
            raise view_error(view, "data 'groups' must be a dict with 'ids' (the group of each map) and 'k' (how many groups)")
        k = spec["k"]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise view_error(view, f"data 'groups.k' must be a positive number of groups, got {k!r}")
        ids = [int(g) for g in spec["ids"]]
        if len(ids) != len(maps) or not all(0 <= g < k for g in ids) or len(set(ids)) != len(ids):
            raise view_error(view, f"data 'groups.ids' must name one distinct group in 0..{k - 1} per map, got {ids}")
        every = group_colours(int(k))
        colours = [every[g] for g in ids]
        pos = np.stack([np.maximum(m, 0) for m in maps])
        gh, gw = pos.shape[1:]
        pick = link_param(view, ["col", "row"])
        if len(maps) > 1:
            combined = strongest_layer(pos, labels, colours, float(pos.max()) or 1.0, opacity, gamma, where,
                                       field="group", nothing="(no group)", tips=("strongest", "share"), columns=3)
            panels.append(panel([combined], f"the strongest of {len(maps)} groups at each position"))
        for n, label in enumerate(labels):
            peak = float(pos[n].max())
            layer = cell_layer(cell_records(pos[n], strength_alpha(pos[n], peak, opacity, gamma)), gh, gw).encode(
                color=alt.value(colours[n]), opacity=ALPHA,
                tooltip=[*where, alt.Tooltip("value:Q", title=f"{label} share", format=".4g")])
            extra = [pick_layer(view, gh, gw, pick)] if pick is not None and n == 0 else []
            sub = f"peak {sig(peak):.3g}" if peak > 0 else "absent from this image"
            panels.append(panel([layer] + extra, alt.TitleParams(label, color=colours[n], subtitle=sub)))
        return (alt.concat(*panels, columns=min(len(panels), self.GROUP_COLUMNS), spacing=18)
                .resolve_legend(color="independent"))  # the legend stays beside the map of the strongest group
