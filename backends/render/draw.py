"""Draw one element: its presentation unit's chart (``Presentation.chart``), in the report's theme.

Charts are methods of the presentation units (``backends/presentations/<name>.py``), found through
the grammar's registry of presentations; nothing here names one.
"""
from __future__ import annotations

from typing import Any

import altair as alt

from interpgram.backends.render.types import ElementView
from interpgram.grammar.presentation import PRESENTATIONS

FONT = '"Helvetica Neue", Helvetica, Arial, "Liberation Sans", "DejaVu Sans", sans-serif'


class UnknownPresentationError(KeyError):
    """An ElementView names a presentation that nothing registered."""

    def __init__(self, key: str):
        self.key = key
        self.known = registered()
        super().__init__(key)

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        listed = ", ".join(self.known) or "(none)"
        return f"no chart for presentation {self.key!r} (registered: {listed})"


def registered() -> tuple[str, ...]:
    """The registered presentations' names, sorted."""
    return tuple(sorted(PRESENTATIONS.names()))


def _themed(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """The report's chart typography, unless the presentation configured its chart itself."""
    if chart.config is not alt.Undefined:
        return chart
    muted, ink, rule = "#5f6368", "#1f1f1f", "#d0d0d0"
    return (
        chart.configure(font=FONT, background="white")
        .configure_view(stroke=None)
        .configure_title(anchor="start", fontSize=12, fontWeight="bold", color=ink, subtitleColor=muted,
                         subtitleFontSize=11, offset=6)
        .configure_axis(labelColor=muted, titleColor=ink, labelFontSize=10, titleFontSize=11,
                        titleFontWeight="normal", domainColor=rule, tickColor=rule, gridColor="#eeeeee")
        .configure_legend(labelColor=muted, titleColor=ink, titleFontWeight="normal", labelFontSize=10,
                          titleFontSize=11)
        .configure_header(labelColor=ink, titleColor=ink)
    )


def chart_for(view: ElementView) -> alt.TopLevelMixin:
    """The Altair chart of one element, drawn by its registered presentation."""
    if view.presentation not in PRESENTATIONS:
        raise UnknownPresentationError(view.presentation)
    chart = PRESENTATIONS[view.presentation].chart(view)
    if not isinstance(chart, alt.TopLevelMixin):
        raise TypeError(f"presentation {view.presentation!r} returned {type(chart).__name__}, "
                        "not an Altair top-level chart")
    return _themed(chart)


def spec_for(view: ElementView) -> dict[str, Any]:
    """The validated Vega-Lite spec (JSON-able dict) of one element."""
    return chart_for(view).to_dict()


def vegalite_version() -> str:
    """``major.minor`` of the Vega-Lite altair emits, as vl-convert names its bundles (``"6.4"``)."""
    import vl_convert

    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    v = f"{major}.{minor}"
    if v not in vl_convert.get_vegalite_versions():
        raise RuntimeError(f"altair emits Vega-Lite {alt.SCHEMA_VERSION} but vl-convert-python bundles only "
                           f"{', '.join(vl_convert.get_vegalite_versions())}: upgrade vl-convert-python")
    return v
