"""Feature visualisation (lucid's optvis in torch): four small modules.

* :mod:`.param` — image parameterisations (Fourier with decorrelated colour, pixels);
* :mod:`.transforms` — robustness transforms (pad, jitter, scale, rotate), the standard set;
* :mod:`.objectives` — composable objectives (channel, neuron, direction, cosine-power and
  whitened directions, group directions, diversity);
* :mod:`.render` — the optimisation loop (:func:`render_vis`) and batched, cached icons
  (:func:`render_icons`); :mod:`.grid` — the activation grid with shared parameters.
"""
from interpgram.backends.kernels.optvis import objectives
from interpgram.backends.kernels.optvis.param import ImageParam
from interpgram.backends.kernels.optvis.render import Icon, IconSettings, IconStats, RenderResult, render_icons, render_vis

__all__ = ["Icon", "IconSettings", "IconStats", "ImageParam", "RenderResult", "objectives", "render_icons",
           "render_vis"]
