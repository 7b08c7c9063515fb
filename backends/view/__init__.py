"""interpgram.backends.view: presentations (Altair charts in a registry) and the static report."""
from ._charts import REGISTRY, chart_for, png_data_url, register
from ._report import render_html, to_png, to_svg, write_report
from ._types import ElementView

__all__ = ["ElementView", "REGISTRY", "chart_for", "png_data_url", "register", "render_html", "to_png", "to_svg",
           "write_report"]
