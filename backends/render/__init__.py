"""interpgram.backends.render: presentations (Altair charts in a registry) and the static report.

* :class:`ElementView` — what the executor hands over for one element;
* :func:`register` — ``@register("key")`` on a function ``ElementView -> Altair chart`` adds a
  presentation; :func:`chart_for` / :func:`spec_for` draw one element through it;
* :func:`write_report` — one self-contained ``index.html`` (Vega inlined, images as data URLs),
  written atomically; :func:`to_png` / :func:`to_svg` export one element offline.
"""
from interpgram.backends.render.types import ElementView
from interpgram.backends.render.registry import (REGISTRY, Presentation, UnknownPresentationError, chart_for, register,
                                                 registered, spec_for, unregister)
from interpgram.backends.render import atlas_register, charts, examples_chart, featurevis_charts  # noqa: F401  (register the built-in presentations)
from interpgram.backends.render.charts import png_data_url
from interpgram.backends.render.report import ElementRenderError, render_html, to_png, to_svg, write_report

__all__ = ["ElementRenderError", "ElementView", "Presentation", "REGISTRY", "UnknownPresentationError", "chart_for",
           "png_data_url", "register", "registered", "render_html", "spec_for", "to_png", "to_svg", "unregister",
           "write_report"]
