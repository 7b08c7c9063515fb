from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ElementView:
    """What a presentation draws: built by the pipeline from a plan's results."""

    id: str  # unique within a report, e.g. "attr" or "attr-1" (element, input image)
    presentation: str  # registry key: heatmap | bars | groups
    title: str
    grammar: str  # the grammar sentence, e.g. InfoVis(Attribution(Network conv3 Spatial, Output star))
    options: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    image: int = 0  # which input image
    # links: a view that is the source of a link carries {"event": hover|click|select, "kind": ...};
    # its chart then defines a selection parameter named "link" over the atoms it shows
    link_source: dict | None = None
    # a link's variant of an element: the base view it replaces, the link's index and the selection key
    base: str = ""
    link: int = -1
    key: str = ""
