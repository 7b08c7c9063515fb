"""The ``activation_grid`` presentation."""
from __future__ import annotations

from typing import Literal, Optional, Union

import altair as alt
import numpy as np
from pydantic import Field, field_validator

from interpgram.backends.render.charts import (
    PANEL,
    as_array,
    as_image,
    image_layer,
    link_param,
    need_keys,
    options_of,
    panel_px,
    pick_layer,
    png_data_url,
    sig,
    view_error,
)
from interpgram.backends.render.types import ElementView
from interpgram.backends.render.views import ViewContext
from interpgram.grammar.compile import Builder, Content, freeze
from interpgram.grammar.options import OptionsModel, check_transforms
from interpgram.grammar.plan import ActivationGrid
from interpgram.grammar.presentation import Presentation, register_presentation


class ActivationGridOptions(OptionsModel):
    cell_size: Optional[int] = Field(None, ge=8, le=256, description="icon side in px (default: half the model's input, at most 48)")
    steps: int = Field(256, ge=1, le=20000)
    lr: float = Field(0.05, gt=0, le=10)
    groups: int = Field(6, ge=1, le=64, description="NMF groups whose images the cells share")
    sample: int = Field(64, ge=1, le=4096, description="cells optimised per step (drawn with replacement)")
    transforms: Union[str, list] = Field("standard")
    decorrelate: bool = True
    cossim_pow: float = Field(1.0, ge=0, le=16, description="cosine-similarity power of each cell's direction objective")
    crop: int = Field(2, ge=0, le=32, description="px cropped from each icon's border")
    autocast: Literal["auto", "bfloat16", "off"] = Field("auto", description="bfloat16 model: auto (where bfloat16 is native), bfloat16, off")

    _transforms = field_validator("transforms")(classmethod(lambda cls, v: check_transforms(v)))


@register_presentation
class ActivationGridPresentation(Presentation):
    name = "activation_grid"
    Options = ActivationGridOptions
    atoms = ("spatial",)
    contents = ("activation",)
    draws_positions = True
    feature_vis = True
    help = (
        "one icon per position of a layer, each cell sized by the activation's magnitude"
    )

    def lower(self, b: Builder, c: Content, opts: dict, path: tuple) -> tuple[tuple[str, ...], Optional[str]]:
        acts = b.neurons(c.layer)
        settings = dict(opts)
        if b.options.icon_steps is not None:  # a draft (--icon-steps)
            settings["steps"] = b.options.icon_steps
        if settings.get("cell_size") is None:
            settings["cell_size"] = max(8, min(48, int(b.info.input_shape[-1]) // 2))
        settings["transforms"] = freeze(settings["transforms"])
        frozen = tuple(sorted(settings.items()))
        return (b.node("grid", (acts, frozen), lambda i: ActivationGrid(i, source=acts, layer=c.layer,
                                                                           settings=frozen, seed=b.seed)),), None

    def views(self, c: ViewContext) -> list:
        g = c.results.values[c.p.icons[0]]
        data = {"image": c.image, "icons": g["icons"][c.i].numpy(), "magnitude": g["magnitude"][c.i].numpy(),
                "layer": c.p.layer}
        return [c.view(data)]

    def chart(self, view: ElementView) -> alt.TopLevelMixin:
        """The input beside a grid of icons, one per position of the layer; each icon is scaled by the
        magnitude of the activation vector it visualises (the strongest fills its cell)."""
        options_of(view, self.Options)
        need_keys(view, "image", "icons", "magnitude", "layer")
        image = as_image(view, view.data["image"])
        mag = as_array(view, "magnitude", view.data["magnitude"], 2)
        gh, gw = mag.shape
        icons = np.asarray(view.data["icons"], dtype=np.float32)
        if icons.shape[:2] != (gh, gw) or icons.ndim != 5:
            raise view_error(view, f"icons must be (H, W, 3, s, s) matching magnitude {mag.shape}, got {icons.shape}")
        pw, ph = panel_px(image, PANEL)
        top = float(mag.max()) or 1.0
        side_px = max(2 * PANEL, min(720, gw * 56))
        rows = []
        for y in range(gh):
            for x in range(gw):
                s = float(np.sqrt(max(mag[y, x], 0) / top))  # area ∝ magnitude
                half = 0.48 * max(s, 0.08)
                rows.append({"col": x, "row": y, "x0": x + 0.5 - half, "x1": x + 0.5 + half, "y0": y + 0.5 - half,
                             "y1": y + 0.5 + half, "value": sig(mag[y, x]),
                             "url": png_data_url(icons[y, x].transpose(1, 2, 0), max(16, side_px // gw))})
        xs = alt.Scale(domain=[0, gw], nice=False, zero=False)
        ys = alt.Scale(domain=[0, gh], nice=False, zero=False, reverse=True)
        grid = alt.Chart({"values": rows}).mark_image(aspect=False).encode(
            x=alt.X("x0:Q", scale=xs, axis=None), x2="x1:Q", y=alt.Y("y0:Q", scale=ys, axis=None), y2="y1:Q", url="url:N",
            tooltip=[alt.Tooltip("col:Q", title="x"), alt.Tooltip("row:Q", title="y"),
                     alt.Tooltip("value:Q", title="‖activation‖", format=".4g")],
        )
        pick = link_param(view, ["col", "row"])
        if pick is not None:
            grid = alt.layer(grid, pick_layer(view, gh, gw, pick))
        grid = grid.properties(width=side_px, height=round(side_px * gh / gw),
                     title=alt.TitleParams(f"activation grid of {view.data['layer']}",
                                           subtitle="one icon per position, area ∝ activation magnitude"))
        left = image_layer(png_data_url(image, pw), gh, gw).properties(width=pw, height=ph, title="input")
        return alt.hconcat(left, grid, spacing=24)
