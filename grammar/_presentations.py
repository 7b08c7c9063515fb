"""What each presentation accepts, as the grammar sees it.

A presentation is registered twice, as one small unit each time: here (its options and which
content it can show, so that ``check`` catches a mismatch with a position) and in
``interpgram.backends.render`` (the chart). Later presentations (featurevis, semantic dictionary,
atlas, ...) register the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TRANSFORM_KINDS = ("pad", "jitter", "scale", "rotate", "crop_or_pad")


def check_transforms(v: Any) -> Any:
    """``standard`` | ``none`` | a list of one-key steps ({pad: 12}, {jitter: 8}, {scale: [..]}, {rotate: [..]},
    {crop_or_pad: 64})."""
    if isinstance(v, str):
        if v not in ("standard", "none"):
            raise ValueError(f"transforms {v!r}: use standard, none, or a list of steps such as [{{pad: 4}}, {{jitter: 2}}]")
        return v
    if not isinstance(v, list):
        raise ValueError("transforms is standard, none, or a list of steps such as [{pad: 4}, {jitter: 2}]")
    for i, step in enumerate(v):
        if not isinstance(step, dict) or len(step) != 1:
            raise ValueError(f"transform step {i} must be a one-key mapping such as {{jitter: 4}}")
        (kind, value), = step.items()
        if kind not in TRANSFORM_KINDS:
            from interpgram.grammar.spec.errors import did_you_mean
            raise ValueError(f"transform step {i}: unknown kind {kind!r} {did_you_mean(str(kind), TRANSFORM_KINDS, listing='kinds')}")
        if kind in ("pad", "jitter", "crop_or_pad"):
            least = 1 if kind == "crop_or_pad" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"transform step {i}: {kind} takes a whole number of pixels ≥ {least}, got {value!r}")
        else:
            vals = value if isinstance(value, list) else [value]
            if not vals or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in vals):
                raise ValueError(f"transform step {i}: {kind} takes a number or a list of numbers, got {value!r}")
            if kind == "scale" and any(x <= 0 for x in vals):
                raise ValueError(f"transform step {i}: scale factors must be > 0")
    return v


def check_dataset_name(v: str, forms: str) -> str:
    """A data-set reference's form (not its existence): not empty, and a ``builtin:`` name that exists."""
    if not v.strip():
        raise ValueError(f"the data set is empty; {forms}")
    if v.startswith("builtin:") and v != "builtin:shapes":
        from interpgram.grammar.spec.errors import did_you_mean
        raise ValueError(f"unknown built-in data set {v!r} {did_you_mean(v, ['builtin:shapes'], listing='built-in data sets')}; "
                         f"{forms}")
    return v


class IconOptions(_Options):
    """How icons are optimised (lucid's render_vis settings)."""

    size: Optional[int] = Field(None, ge=8, le=1024, description="icon side in px (default: the model's input size, at most 128)")
    steps: int = Field(256, ge=1, le=20000, description="optimisation steps")
    lr: float = Field(0.05, gt=0, le=10, description="Adam learning rate")
    attempts: int = Field(1, ge=1, le=16, description="independent attempts; the best per icon is kept")
    param: Literal["fourier", "pixels"] = Field("fourier", description="image parameterisation")
    decorrelate: bool = Field(True, description="decorrelated (ImageNet) colour")
    transforms: Union[str, list] = Field("standard", description="standard | none | [{pad: 12}, {jitter: 8}, {scale: [..]}, {rotate: [..]}, ...]")
    relu_redirect: int = Field(16, ge=0, description="first steps with lucid's redirected ReLU gradient")
    autocast: Literal["auto", "bfloat16", "off"] = Field(
        "auto", description="run the model in bfloat16 while optimising: auto (on cuda), bfloat16 (any device), off")

    _transforms = field_validator("transforms")(classmethod(lambda cls, v: check_transforms(v)))


class HeatmapOptions(_Options):
    opacity: float = Field(0.6, ge=0.0, le=1.0)
    clip_negative: Optional[bool] = Field(None, description="default: true for attributions of two classes")


class BarsOptions(_Options):
    top: int = Field(8, ge=1, le=256, description="channels shown on each side (positive, negative)")
    icons: bool = Field(False, description="show each channel's feature visualisation next to its bar")
    icon: IconOptions = Field(default_factory=IconOptions, description="how the icons are rendered")


class GroupsOptions(_Options):
    top_channels: int = Field(5, ge=1, le=64, description="strongest channels listed per group")
    icons: bool = Field(True, description="a feature visualisation of each group's channel direction")
    icon: IconOptions = Field(default_factory=IconOptions, description="how the icons are rendered")


class FeatureVisOptions(IconOptions):
    top: int = Field(8, ge=1, le=512, description="icons for the strongest atoms when the atom names none")
    cossim_pow: float = Field(0.0, ge=0, le=16, description="cosine-similarity power of direction objectives")


class SemanticDictionaryOptions(_Options):
    top: int = Field(4, ge=1, le=16, description="channels shown at each position")
    icon: IconOptions = Field(default_factory=IconOptions, description="how the channel icons are rendered")


class ActivationGridOptions(_Options):
    cell_size: Optional[int] = Field(None, ge=8, le=256, description="icon side in px (default: half the model's input, at most 48)")
    steps: int = Field(256, ge=1, le=20000)
    lr: float = Field(0.05, gt=0, le=10)
    groups: int = Field(6, ge=1, le=64, description="NMF groups whose images the cells share")
    sample: int = Field(64, ge=1, le=4096, description="cells optimised per step (drawn with replacement)")
    transforms: Union[str, list] = Field("standard")
    decorrelate: bool = True
    cossim_pow: float = Field(1.0, ge=0, le=16, description="cosine-similarity power of each cell's direction objective")
    crop: int = Field(2, ge=0, le=32, description="px cropped from each icon's border")
    autocast: Literal["auto", "bfloat16", "off"] = Field("auto", description="bfloat16 model: auto (on cuda), bfloat16, off")

    _transforms = field_validator("transforms")(classmethod(lambda cls, v: check_transforms(v)))


@dataclass(frozen=True)
class PresentationKind:
    name: str
    options: type[_Options]
    atoms: tuple[str, ...]  # atoms of the content it can show
    help: str
    contents: tuple[str, ...] = ("activation", "attribution", "transform")  # content kinds it can show
    per_input: bool = True  # False: one view for the whole spec (atlases show a data set, not an input)


PRESENTATIONS: dict[str, PresentationKind] = {}


def register_presentation(kind: PresentationKind) -> PresentationKind:
    if kind.name in PRESENTATIONS:
        raise ValueError(f"presentation {kind.name!r} is registered twice")
    PRESENTATIONS[kind.name] = kind
    return kind


register_presentation(PresentationKind(
    "heatmap", HeatmapOptions, ("spatial", "direction", "group"),
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
register_presentation(PresentationKind(
    "featurevis", FeatureVisOptions, ("channel", "neuron", "spatial", "group", "direction"),
    "feature visualisation: an optimised image (icon) for each atom — channels, neurons, activation vectors "
    "at positions, NMF groups, directions",
))
register_presentation(PresentationKind(
    "semantic_dictionary", SemanticDictionaryOptions, ("spatial",),
    "for each position of the input, the channels that fire most there, with their icons and magnitudes",
    contents=("activation",),
))
register_presentation(PresentationKind(
    "activation_grid", ActivationGridOptions, ("spatial",),
    "one icon per position of a layer, each cell sized by the activation's magnitude",
    contents=("activation",),
))


class ExamplesOptions(_Options):
    """Dataset examples: for each atom, the data-set images (or receptive-field patches) that activate it most."""

    dataset: str = Field("builtin:shapes", description="builtin:shapes, or a folder of images (relative to the spec's folder)")
    n: int = Field(2000, ge=1, le=10_000_000, description="how many data-set images are searched (the first n)")
    split: Literal["train", "test"] = Field("test", description="the split (a folder: its train/ or test/ subfolder when it has them)")
    top: int = Field(6, ge=1, le=64, description="examples shown per atom")
    atoms: int = Field(4, ge=1, le=32, description="how many atoms when the content names none: the strongest of this input")
    patch: bool = Field(True, description="crop each example to the receptive field of its best position (else the whole image)")
    batch_size: int = Field(256, ge=1, le=65536, description="data-set images per forward pass")

    _dataset = field_validator("dataset")(classmethod(lambda cls, v: check_dataset_name(
        v, "a data set is builtin:shapes, or a folder of images (a path, relative to the spec's folder)")))


register_presentation(PresentationKind(
    "examples", ExamplesOptions, ("channel", "neuron", "spatial", "direction", "group"),
    "dataset examples: for each atom, the data-set images (or receptive-field patches) that activate it most",
))


class AtlasLayoutOptions(_Options):
    """UMAP of the (whitened) activation vectors (REFERENCE.md §3.3)."""

    n_neighbors: int = Field(20, ge=2, le=1000, description="UMAP n_neighbors (the article's class atlas: 20; full atlases: 50)")
    min_dist: float = Field(0.01, ge=0.0, le=1.0, description="UMAP min_dist")
    metric: Literal["cosine", "euclidean"] = Field("cosine", description="UMAP metric")
    fit_sample: int = Field(20000, ge=100, le=10_000_000, description="UMAP is fitted on this many samples; the rest are transformed")


class AtlasIconOptions(IconOptions):
    """Feature inversion of each cell's mean activation (the whitened cosine-power direction objective)."""

    steps: int = Field(256, ge=1, le=20000, description="optimisation steps (the article: 1024)")
    attempts: int = Field(2, ge=1, le=16, description="independent attempts per icon; the best final objective is kept")
    cossim_pow: float = Field(4.0, ge=0, le=16, description="cosine-similarity power (lucid's notebooks: 4, recipe: 2)")
    batch: int = Field(64, ge=1, le=4096, description="icons per batched optimisation (and per Ray task)")


class PatchTestOptions(_Options):
    """The article's adversarial-patch check, for every cell of a class atlas: paste the cell's icon onto
    data-set images the model does not already call the class, and count how often it then does."""

    size: Optional[int] = Field(None, ge=2, le=1024, description="patch side in px (default: a seventh of the model's input)")
    crop: Literal["centre", "whole"] = Field("centre", description="the icon's centre size × size px (its native scale), "
                                                                   "or the whole icon scaled down to size")
    n: int = Field(500, ge=10, le=100000, description="images the patch is pasted onto (one random place each)")
    split: Literal["train", "test"] = Field("test", description="the data set's split the images come from")


class AtlasOptions(_Options):
    """An activation atlas: the data set's activation vectors laid out in 2-D, gridded, one icon per cell."""

    grid: int = Field(20, ge=2, le=400, description="cells per side")
    min_count: int = Field(5, ge=1, le=100000, description="cells with fewer samples are left empty")
    whiten: bool = Field(True, description="lay out whitened vectors (the uncentred second moment); icons always use "
                                           "the whitened objective v·S")
    layout: AtlasLayoutOptions = Field(default_factory=AtlasLayoutOptions)
    icon: AtlasIconOptions = Field(default_factory=AtlasIconOptions)
    sized: bool = Field(False, description="size each icon by its cell's density (log count / log max)")
    winners: bool = Field(True, description="class atlas: keep samples whose strongest attribution is the class")
    top: int = Field(2000, ge=0, le=10_000_000, description="class atlas: and the top samples by attribution to the class")
    examples: int = Field(4, ge=0, le=16, description="data-set patches shown per cell when hovering")
    patch_test: Optional[PatchTestOptions] = Field(None, description="class atlas: how often each cell's icon, pasted "
                                                                     "as a patch, turns other images into the class")


register_presentation(PresentationKind(
    "atlas", AtlasOptions, ("spatial",),
    "activation atlas: the activation vectors of a data set at one layer laid out by UMAP, averaged per grid cell and "
    "drawn by feature inversion; an attribution to a class makes a class atlas, a compare of two a two-class atlas",
    per_input=False,
))
