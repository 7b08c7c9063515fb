"""interpgram.backends.render: draw elements (their presentation units' charts) and the static report.

* :class:`ElementView` — what the pipeline hands over for one element (``render/views.py`` builds
  them through each presentation's ``views``);
* :func:`chart_for` / :func:`spec_for` — one element drawn by its presentation's ``chart``;
* :func:`write_report` — one self-contained ``index.html`` (Vega inlined, images as data URLs),
  written atomically; :func:`to_png` / :func:`to_svg` export one element offline.

A new presentation is one file: see ``interpgram.grammar.presentation``.
"""
from interpgram.backends.render.types import ElementView
from interpgram.backends.render.draw import UnknownPresentationError, chart_for, registered, spec_for
from interpgram.backends.render.charts import png_data_url
from interpgram.backends.render.report import ElementRenderError, render_html, to_png, to_svg, write_report

__all__ = ["ElementRenderError", "ElementView", "UnknownPresentationError", "chart_for", "png_data_url", "registered",
           "render_html", "spec_for", "to_png", "to_svg", "write_report"]
