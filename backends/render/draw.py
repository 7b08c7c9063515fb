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


def _theme() -> alt.Config:
    muted, ink, rule = "#5f6368", "#1f1f1f", "#d0d0d0"
    return alt.Config(
        font=FONT, background="white",
        view=alt.ViewConfig(stroke=None),
        title=alt.TitleConfig(anchor="start", fontSize=12, fontWeight="bold", color=ink, subtitleColor=muted,
                              subtitleFontSize=11, offset=6),
        axis=alt.AxisConfig(labelColor=muted, titleColor=ink, labelFontSize=10, titleFontSize=11,
                            titleFontWeight="normal", domainColor=rule, tickColor=rule, gridColor="#eeeeee"),
        legend=alt.LegendConfig(labelColor=muted, titleColor=ink, titleFontWeight="normal", labelFontSize=10,
                                titleFontSize=11),
        header=alt.HeaderConfig(labelColor=ink, titleColor=ink))


def _themed(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """The report's chart typography, unless the presentation configured its chart itself.

    Set on the chart the presentation just built, in place: each ``configure_*`` call would deep-copy the
    whole chart with its data (six copies; 40% of a cached report's time with 64 link variants)."""
    if chart.config is not alt.Undefined:
        return chart
    chart.config = _theme()
    return chart


def chart_for(view: ElementView) -> alt.TopLevelMixin:
    """The Altair chart of one element, drawn by its registered presentation."""
    if view.presentation not in PRESENTATIONS:
        raise UnknownPresentationError(view.presentation)
    chart = PRESENTATIONS[view.presentation].chart(view)
    if not isinstance(chart, alt.TopLevelMixin):
        raise TypeError(f"presentation {view.presentation!r} returned {type(chart).__name__}, "
                        "not an Altair top-level chart")
    return _themed(chart)


def spec_for(view: ElementView, *, validate: bool = True) -> dict[str, Any]:
    """The Vega-Lite spec (JSON-able dict) of one element, checked against Vega-Lite's JSON Schema unless
    ``validate`` is false (a link selection's variant: the same presentation code as the element's own
    chart, which was checked, on other numbers; the check is a third of a variant's cost)."""
    return chart_for(view).to_dict(validate=validate)


def vegalite_version() -> str:
    """``major.minor`` of the Vega-Lite altair emits, as vl-convert names its bundles (``"6.4"``)."""
    import vl_convert

    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    v = f"{major}.{minor}"
    if v not in vl_convert.get_vegalite_versions():
        raise RuntimeError(f"altair emits Vega-Lite {alt.SCHEMA_VERSION} but vl-convert-python bundles only "
                           f"{', '.join(vl_convert.get_vegalite_versions())}: upgrade vl-convert-python")
    return v
