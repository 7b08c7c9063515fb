"""What each presentation accepts, as the grammar sees it.

A presentation is registered twice, as one small unit each time: here (its options and which
content it can show, so that ``check`` catches a mismatch with a position) and in
``interpgram.backends.view`` (the chart). Later presentations (featurevis, semantic dictionary,
atlas, ...) register the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeatmapOptions(_Options):
    opacity: float = Field(0.6, ge=0.0, le=1.0)
    clip_negative: Optional[bool] = Field(None, description="default: true for attributions of two classes")


class BarsOptions(_Options):
    top: int = Field(8, ge=1, le=256, description="channels shown on each side (positive, negative)")


class GroupsOptions(_Options):
    top_channels: int = Field(5, ge=1, le=64, description="strongest channels listed per group")


@dataclass(frozen=True)
class PresentationKind:
    name: str
    options: type[_Options]
    atoms: tuple[str, ...]  # atoms of the content it can show
    help: str


PRESENTATIONS: dict[str, PresentationKind] = {}


def register_presentation(kind: PresentationKind) -> PresentationKind:
    if kind.name in PRESENTATIONS:
        raise ValueError(f"presentation {kind.name!r} is registered twice")
    PRESENTATIONS[kind.name] = kind
    return kind


register_presentation(PresentationKind(
    "heatmap", HeatmapOptions, ("spatial",),
    "a map over the input image: spatial activation magnitude or spatial attribution, one or two classes",
))
register_presentation(PresentationKind(
    "bars", BarsOptions, ("channel",),
    "channel attribution (or activation) as bars: the strongest positive and negative channels",
))
register_presentation(PresentationKind(
    "groups", GroupsOptions, ("group",),
    "NMF neuron groups: a spatial map and channel direction per group, and each group's attribution",
))
