"""The spec: the articles' grammar as pydantic models.

```
Atom      = Neuron | Spatial | Channel | Group | Whole
Layer     = Input | Hidden <name> | Output
Substrate = Network Layer Atom | Dataset <id> | Parameters <id>
Content   = Activation Substrate | Attribution Substrate Substrate | Transform Content Content?
Element   = InfoVis Content | FeatureVis Content
Interface = [Element] + links between elements
```

Every model forbids unknown keys; shorthand forms (``atom: spatial``, ``presentation: heatmap``,
``model: builtin:shapes-cnn``) are part of the schema, so editors autocomplete them too. The
``canonical`` helpers give the compiler one normalised form to work with.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from interpgram.grammar.options import check_dataset_name
from interpgram.grammar.attribution import ATTRIBUTION_METHODS
from interpgram.grammar.presentation import PRESENTATIONS

SPEC_VERSION = 1

# a number a spec accepts: finite (NaN and infinity would pass every comparison-free check and crash later)
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class Node(BaseModel):
    """Base of every spec node: unknown keys are errors that name the nearest valid key."""

    # allow_inf_nan: NaN and infinity are refused by every float field (a spec built in Python too)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            valid = []
            for name, f in cls.model_fields.items():
                valid.append(f.alias or name)
            unknown = [k for k in data if k not in valid and k not in cls.model_fields]
            if unknown:
                raise PydanticCustomError(
                    "unknown_key", "unknown key", {"keys": [str(k) for k in unknown], "choices": valid}
                )
        return data


# --------------------------------------------------------------------------- atoms
AtomName = Literal["neuron", "spatial", "channel", "group", "whole"]  # a direction always needs its weights
ATOM_KINDS = ("spatial", "channel", "neuron", "group", "whole", "direction")


class AtomSpec(Node):
    """An atom with parameters: ``{spatial: [x, y]}``, ``{channel: 17}``, ``{neuron: [x, y, c]}``,
    ``{group: nmf, k: 6}``, ``{whole: true}``, and a direction in activation space:
    ``{direction: [w_0, …, w_C-1]}`` or sparse ``{direction: {12: 1.0, 40: -0.5}}`` (channel: weight)."""

    spatial: Optional[tuple[int, int]] = Field(None, description="one position [x, y] (column, row)")
    channel: Optional[Union[int, list[int]]] = Field(None, description="one channel index or a list")
    neuron: Optional[tuple[int, int, int]] = Field(None, description="one neuron [x, y, channel]")
    group: Optional[Literal["nmf"]] = Field(None, description="neuron groups by matrix factorisation")
    whole: Optional[bool] = None
    direction: Optional[Union[list[FiniteFloat], dict[int, FiniteFloat]]] = Field(
        None, description="a direction in the layer's activation space: one weight per channel, or {channel: weight}")
    k: Optional[int] = Field(None, ge=1, le=64, description="number of groups (group atoms)")
    of: Optional[Literal["activation", "attribution"]] = Field(None, description="what the groups factorise")
    sign: Optional[Literal["positive", "negative", "abs", "split"]] = Field(
        None, description="how negative values are made non-negative for NMF: positive (clip at 0), negative, abs, or "
                          "split (factorise the positive and negative parts side by side; signed channel directions). "
                          "Default: positive for attributions; for activations split where the layer has negative "
                          "values (after BatchNorm or a linear bottleneck), none after a ReLU"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> "AtomSpec":
        kinds = [n for n in ATOM_KINDS if getattr(self, n) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "an atom mapping names exactly one of spatial, channel, neuron, group, whole, direction"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        if kinds[0] == "direction" and not self.direction:
            raise ValueError("a direction needs at least one weight")
        if kinds[0] != "group" and (self.k is not None or self.of is not None or self.sign is not None):
            raise ValueError("k, of and sign apply only to group atoms ({group: nmf, k: 6})")
        return self

    @property
    def kind(self) -> str:
        for n in ATOM_KINDS:
            if getattr(self, n) is not None:
                return n
        raise AssertionError("validated above")


def _atom_tag(v: Any) -> str:
    return "name" if isinstance(v, str) else "spec"


Atom = Annotated[
    Union[Annotated[AtomName, Tag("name")], Annotated[AtomSpec, Tag("spec")]],
    Discriminator(_atom_tag),
]


class CanonicalAtom(BaseModel):
    """The compiler's normalised view of an atom."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["neuron", "spatial", "channel", "group", "whole", "direction"]
    at: Optional[tuple[int, ...]] = None  # spatial (x, y) / neuron (x, y, c)
    channels: Optional[tuple[int, ...]] = None
    k: int = 6
    of: Literal["activation", "attribution"] = "activation"
    sign: Optional[Literal["positive", "negative", "abs", "split"]] = None
    direction: Optional[tuple] = None  # dense weights, or ((channel, weight), ...) when sparse
    sparse: bool = False


def canonical_atom(atom: Union[str, AtomSpec, None], default: str = "spatial") -> CanonicalAtom:
    if atom is None:
        return CanonicalAtom(kind=default)
    if isinstance(atom, str):
        return CanonicalAtom(kind=atom)
    kind = atom.kind
    if kind == "spatial":
        return CanonicalAtom(kind="spatial", at=tuple(atom.spatial))
    if kind == "neuron":
        return CanonicalAtom(kind="neuron", at=tuple(atom.neuron))
    if kind == "channel":
        ch = atom.channel
        return CanonicalAtom(kind="channel", channels=(ch,) if isinstance(ch, int) else tuple(ch))
    if kind == "group":
        return CanonicalAtom(kind="group", k=atom.k or 6, of=atom.of or "activation", sign=atom.sign)
    if kind == "direction":
        d = atom.direction
        if isinstance(d, dict):
            return CanonicalAtom(kind="direction", direction=tuple(sorted(d.items())), sparse=True)
        return CanonicalAtom(kind="direction", direction=tuple(float(x) for x in d))
    return CanonicalAtom(kind="whole")


# --------------------------------------------------------------------------- substrates
class NetworkSubstrate(Node):
    """``Network Layer Atom``: a layer of the model cut into atoms.

    ``layer`` is ``input``, ``output`` or a module path of the model (``conv3``, ``mixed4d``).
    On the output layer ``select`` names classes (names or indices); with none, each input's
    top-1 prediction is used.
    """

    layer: str = Field(..., description="'input', 'output', or a module path such as conv3 / mixed4d")
    atom: Optional[Atom] = Field(None, description="neuron | spatial | channel | group | whole")
    select: Optional[list[Union[str, int]]] = Field(
        None, description="output layer: the classes (names, indices, or top1, top2, … for each input's most "
                          "likely classes); default: the predicted class"
    )

    @field_validator("select")
    @classmethod
    def _non_empty(cls, v):
        if v is not None and len(v) == 0:
            raise ValueError("select needs at least one class")
        return v

    @model_validator(mode="after")
    def _select_only_output(self) -> "NetworkSubstrate":
        if self.select is not None and self.layer != "output":
            raise ValueError("select (classes) applies only to layer: output")
        return self


class DatasetSubstrate(Node):
    """``Dataset <id>``: a data set, e.g. ``builtin:shapes``."""

    dataset: str
    n: int = Field(256, ge=1, description="how many samples")
    split: Literal["train", "test"] = "test"


class ParametersSubstrate(Node):
    """``Parameters <id>``: a parameter tensor of the model, e.g. ``conv1.0.weight``."""

    parameters: str


def _substrate_tag(v: Any) -> str:
    if isinstance(v, dict):
        if "dataset" in v:
            return "dataset"
        if "parameters" in v:
            return "parameters"
    return "network"


Substrate = Annotated[
    Union[
        Annotated[NetworkSubstrate, Tag("network")],
        Annotated[DatasetSubstrate, Tag("dataset")],
        Annotated[ParametersSubstrate, Tag("parameters")],
    ],
    Discriminator(_substrate_tag),
]


# --------------------------------------------------------------------------- content
class Attribution(Node):
    """``Attribution Substrate Substrate``: how much ``from`` contributes to ``to``.

    The default method is gradient × activation (the articles' linear approximation);
    ``integrated`` is the path-integrated variant with ``steps`` points.
    """

    from_: Substrate = Field(..., alias="from")
    to: Substrate
    method: str = Field("grad_x_act", description="an attribution method: grad_x_act, integrated, or a plug-in's")
    steps: int = Field(50, ge=2, le=1024, description="path points for method: integrated")

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in ATTRIBUTION_METHODS:
            raise PydanticCustomError("unknown_choice", "unknown attribution method",
                                      {"value": v, "choices": list(ATTRIBUTION_METHODS)})
        return v


class ActivationContent(Node):
    activation: Substrate


class AttributionContent(Node):
    attribution: Attribution


class Transform(Node):
    """``Transform Content Content?``.

    - ``compare``: ``a − b`` of two contents (two-class views: the logit difference);
    - ``top_k``: keep the ``k`` largest atoms of ``of`` (by value; ``by: abs`` for magnitude);
    - ``select``: keep the listed atoms (channel indices) of ``of``;
    - ``filter``: keep the atoms of ``of`` where ``by`` is above ``threshold``.
    """

    op: Literal["compare", "top_k", "select", "filter"]
    of: Optional["Content"] = None
    a: Optional["Content"] = None
    b: Optional["Content"] = None
    by: Optional[Union[Literal["value", "abs"], "Content"]] = None
    k: Optional[int] = Field(None, ge=1)
    atoms: Optional[list[int]] = None
    threshold: FiniteFloat = 0.0

    @model_validator(mode="after")
    def _operands(self) -> "Transform":
        need = {
            "compare": ("a", "b"),
            "top_k": ("of", "k"),
            "select": ("of", "atoms"),
            "filter": ("of", "by"),
        }[self.op]
        missing = [n for n in need if getattr(self, n) is None]
        if missing:
            raise ValueError(f"transform {self.op} needs {' and '.join(need)} (missing {', '.join(missing)})")
        allowed = set(need) | ({"by"} if self.op == "top_k" else set()) | ({"threshold"} if self.op == "filter" else set())
        extra = [n for n in ("of", "a", "b", "by", "k", "atoms") if n not in allowed and getattr(self, n) is not None]
        if extra:
            raise ValueError(f"transform {self.op} does not take {', '.join(extra)} (it takes {', '.join(sorted(allowed))})")
        if self.op == "filter" and isinstance(self.by, str):
            raise ValueError("transform filter needs `by:` to be a content (e.g. an attribution)")
        return self


class TransformContent(Node):
    transform: Transform


def _content_tag(v: Any) -> str:
    if isinstance(v, dict):
        for k in ("activation", "attribution", "transform"):
            if k in v:
                return k
    return "activation"


Content = Annotated[
    Union[
        Annotated[ActivationContent, Tag("activation")],
        Annotated[AttributionContent, Tag("attribution")],
        Annotated[TransformContent, Tag("transform")],
    ],
    Discriminator(_content_tag),
]
Transform.model_rebuild()


# --------------------------------------------------------------------------- presentation
def _known_presentation(name: str) -> str:
    if name not in PRESENTATIONS:
        raise PydanticCustomError("unknown_choice", "unknown presentation", {"value": name, "choices": list(PRESENTATIONS)})
    return name


# A plain string checked against the registry at validation time, so that presentations
# registered later (feature visualisation, atlases) are accepted without touching this file.
PresentationName = Annotated[str, AfterValidator(_known_presentation)]


class PresentationSpec(BaseModel):
    """``{heatmap: {opacity: 0.5}}``: one presentation with options."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _one(cls, data: Any) -> Any:
        if not isinstance(data, dict) or len(data) != 1:
            raise PydanticCustomError(
                "presentation_shape",
                "a presentation is a name ({choices}) or a one-key mapping such as {{heatmap: {{opacity: 0.5}}}}",
                {"choices": ", ".join(PRESENTATIONS)},
            )
        (name, opts), = data.items()
        if name not in PRESENTATIONS:
            raise PydanticCustomError("unknown_choice", "unknown presentation", {"value": str(name), "choices": list(PRESENTATIONS)})
        if opts is None:
            opts = {}
        if not isinstance(opts, dict):
            raise PydanticCustomError("presentation_options", "the options of a presentation are a mapping", {})
        return data


def _presentation_tag(v: Any) -> str:
    return "name" if isinstance(v, str) else "spec"


OnePresentation = Annotated[
    Union[Annotated[PresentationName, Tag("name")], Annotated[PresentationSpec, Tag("spec")]],
    Discriminator(_presentation_tag),
]


def _presentations_tag(v: Any) -> str:
    return "many" if isinstance(v, list) else "one"


Presentation = Annotated[
    Union[Annotated[OnePresentation, Tag("one")], Annotated[list[OnePresentation], Tag("many")]],
    Discriminator(_presentations_tag),
]


def canonical_presentations(p: Any) -> list[tuple[str, dict]]:
    items = p if isinstance(p, list) else [p]
    out = []
    for it in items:
        if isinstance(it, str):
            out.append((it, {}))
        else:
            (name, opts), = it.model_dump().items()
            out.append((name, dict(opts or {})))
    return out


class Vary(Node):
    """Comparison: the same element side by side for several classes, layers or models.

    - ``class: [star, crescent]``: the element once per class (its attribution targets that class);
    - ``layer: [conv3, conv4]``: once per layer (the content's layer is replaced);
    - ``model: [file:other.safetensors, ...]``: the spec's model first, then each of these models.
    """

    class_: Optional[list[Union[str, int]]] = Field(None, alias="class", description="classes, one view each")
    layer: Optional[list[str]] = Field(None, description="layers, one view each")
    model: Optional[list[Union[str, "ModelSpec"]]] = Field(
        None, description="other models shown after the spec's own (sources, or mappings like the spec's model)")

    @model_validator(mode="after")
    def _one(self) -> "Vary":
        given = [n for n, v in (("class", self.class_), ("layer", self.layer), ("model", self.model)) if v is not None]
        if len(given) != 1:
            raise ValueError("vary names exactly one of class, layer, model" + (f" (got {', '.join(given)})" if given else ""))
        values = self.class_ or self.layer or self.model
        least = 1 if self.model is not None else 2
        if len(values) < least:
            raise ValueError(f"vary {given[0]} needs at least {least} value{'s' if least > 1 else ''} to compare")
        if len(values) > 8:
            raise ValueError(f"vary {given[0]} compares at most 8 side by side, got {len(values)}")
        return self

    @property
    def kind(self) -> str:
        return "class" if self.class_ is not None else "layer" if self.layer is not None else "model"

    @property
    def values(self) -> list:
        return list(self.class_ or self.layer or self.model)


class Element(Node):
    """``InfoVis Content`` or ``FeatureVis Content``: content shown through a presentation."""

    content: Content
    presentation: Presentation
    title: Optional[str] = None
    vary: Optional[Vary] = Field(None, description="compare: the same element for several classes, layers or models side by side")


# --------------------------------------------------------------------------- interface
LINK_EVENTS = ("hover", "click", "select")
LINK_TARGETS = ("from", "to", "class", "group", "position", "channel")


class Link(Node):
    """``from: grid.hover`` → ``to: attr.from``: an interaction in one element drives another."""

    from_: str = Field(..., alias="from", description="<element>.<event>: hover | click | select")
    to: str = Field(..., description="<element>.<target>: from | to | class | group | position | channel")
    precompute: int = Field(64, ge=0, le=4096, description="selections precomputed for the static report "
                            "(positions beyond it are subsampled evenly); every selection is computed live in `interpgram serve`")

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str) -> str:
        el, _, ev = v.partition(".")
        if not el or ev not in LINK_EVENTS:
            raise ValueError(f"a link source is <element>.<event> with event one of {', '.join(LINK_EVENTS)}")
        return v

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        el, _, t = v.partition(".")
        if not el or t not in LINK_TARGETS:
            raise ValueError(f"a link target is <element>.<target> with target one of {', '.join(LINK_TARGETS)}")
        return v


PixelSide = Annotated[int, Field(ge=1, le=16384)]
RESIZE_CHOICES = ("shorter", "stretch", "pad")
CROP_CHOICES = ("center", "none")
CROP_OF_RESIZE = {"shorter": "center", "stretch": "none", "pad": "none"}


class ModelSpec(Node):
    """Where the model comes from, and how an image becomes its input. The string shorthand
    ``model: builtin:shapes-cnn`` sets ``source``; ``size``, ``mean``, ``std``, ``resize`` and ``crop``
    override what the source states (a ``python:`` factory's ``(module, {size, mean, std, classes})``,
    a zoo model's configuration; a model that states nothing gets 224 px, raw [0, 1] pixels, a centre crop)."""

    source: str = Field(..., description="builtin:NAME | inceptionv1 | torchvision:NAME | timm:NAME | hf:PATH | "
                                          "hf:ORG/NAME | file:PATH | python:MODULE:CALLABLE")
    weights: Optional[str] = Field(None, description="weights file (state_dict .pt/.pth or .safetensors)")
    factory: Optional[str] = Field(None, description="python:MODULE:CALLABLE building the architecture for a state_dict file")
    labels: Optional[str] = Field(None, description="text file with one class name per line")
    size: Optional[Union[PixelSide, Annotated[list[PixelSide], Field(min_length=2, max_length=2)]]] = Field(
        None, description="the input's size in pixels: one number (square) or [height, width] (default: the source's)")
    mean: Optional[Annotated[list[FiniteFloat], Field(min_length=3, max_length=3)]] = Field(
        None, description="per-channel mean (R, G, B) subtracted from pixels in [0, 1] (default: the source's, else 0)")
    std: Optional[Annotated[list[FiniteFloat], Field(min_length=3, max_length=3)]] = Field(
        None, description="per-channel standard deviation (R, G, B) pixels are divided by (default: the source's, else 1)")
    resize: Optional[Literal["shorter", "stretch", "pad"]] = Field(
        None, description="how an image is brought to size: shorter (scale to cover the size, a square model: its "
                          "shorter side, then crop the centre; the default), stretch (each side to the size, the "
                          "aspect ratio changes), pad (fit the whole image, fill the rest with the mean colour)")
    crop: Optional[Literal["center", "none"]] = Field(
        None, description="center (what resize: shorter does) or none (keep the whole image: resize stretch or pad; "
                          "crop: none alone means pad)")

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v):
        if v is None:
            return v
        sides = v if isinstance(v, list) else [v]
        if isinstance(v, list) and len(v) != 2:
            raise ValueError(f"[height, width] is two whole numbers; got {len(v)} value(s)")
        if not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 16384 for x in sides):
            raise ValueError(f"one whole number of pixels (a square input) or [height, width], each 1…16384; got {v!r}")
        return v

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _triple(cls, v, info):
        if v is not None and (not isinstance(v, list) or len(v) != 3):
            raise ValueError("three numbers, one per channel (R, G, B), e.g. "
                             + ("[0.485, 0.456, 0.406]" if info.field_name == "mean" else "[0.229, 0.224, 0.225]"))
        return v

    @field_validator("std")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(x <= 0 for x in v):
            raise ValueError(f"every value is positive (pixels are divided by them); got {v}")
        return v

    @field_validator("crop")
    @classmethod
    def _crop(cls, v, info):
        resize = info.data.get("resize")
        if v is not None and resize is not None and CROP_OF_RESIZE[resize] != v:
            raise ValueError(f"{v} does not go with resize: {resize}, which "
                             + ("cuts the centre (crop: center)" if resize == "shorter" else
                                "keeps the whole image (crop: none)")
                             + "; leave crop out, or pick " + ("resize: stretch or pad" if v == "none"
                                                              else "resize: shorter"))
        return v

    def preprocessing(self) -> dict:
        """The preprocessing keys this spec sets (what ``load_model(preprocess=...)`` takes)."""
        return {k: getattr(self, k) for k in ("size", "mean", "std", "resize", "crop") if getattr(self, k) is not None}


class AtlasDataset(Node):
    """The data set an atlas streams through the model (``dataset:`` at the top of a spec).

    One collection serves every atlas element of the spec: each sample stores the activation vector
    at every layer an atlas asks for, and its attribution to every class."""

    source: str = Field("builtin:shapes", description="builtin:shapes, a folder of images (relative to the spec's folder), "
                                                      "or python:MODULE:CALLABLE returning a torch Dataset (needs --allow-code)")
    n: int = Field(10000, ge=1, le=100_000_000, description="images streamed (the first n of the split)")
    split: Literal["train", "test"] = "train"
    positions: Literal["random", "centre", "all"] = Field(
        "random", description="activation vectors taken per image: one random position (the article), the centre, or all")
    seed: Optional[int] = Field(None, description="seed of the random positions (default: execution.seed)")
    chunk: int = Field(2048, ge=1, le=1_000_000, description="images per chunk of the on-disk store (the unit of resuming)")
    batch_size: int = Field(256, ge=1, le=65536, description="images per forward pass")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return check_dataset_name(v, "a data set is builtin:shapes, a folder of images, or python:MODULE:CALLABLE")


class Execution(Node):
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    cache: Union[bool, str] = Field(True, description="true (default folder), false, or a folder")
    seed: int = 0
    batch_size: Optional[int] = Field(None, ge=1, description="images per forward pass (default: all, halved on out-of-memory)")
    engine: Literal["local", "ray"] = Field("local", description="where atlas collection and icon rendering run: "
                                                                 "this process, or Ray tasks (pip install 'interpgram[ray]')")
    address: Optional[str] = Field(None, description="engine: ray — an existing cluster (ray://host:10001, host:6379, auto); "
                                                     "default: a local Ray instance")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"device {v!r} is not one of auto, cpu, cuda, cuda:N, mps")
        return v


Vary.model_rebuild()
Element.model_rebuild()


class Spec(Node):
    """An interpgram interface: elements over one model and its inputs."""

    interpgram: Literal[1] = Field(..., description="spec format version")
    title: Optional[str] = None
    model: Annotated[
        Union[Annotated[str, Tag("ref")], Annotated[ModelSpec, Tag("spec")]],
        Discriminator(lambda v: "spec" if isinstance(v, (dict, ModelSpec)) else "ref"),
    ] = Field(..., description="builtin:shapes-cnn, inceptionv1, torchvision:NAME, timm:NAME, hf:PATH, file:PATH, python:MOD:FN, or a mapping")
    input: Optional[Annotated[
        Union[Annotated[str, Tag("one")], Annotated[list[str], Tag("many")]],
        Discriminator(lambda v: "many" if isinstance(v, list) else "one"),
    ]] = Field(None, description="builtin:shapes/7, an image path, or a list of them (not needed when every element is an atlas)")
    dataset: Optional[AtlasDataset] = Field(None, description="the data set atlases are collected from (default: builtin:shapes, n 10000)")
    elements: dict[str, Element]
    links: list[Link] = Field(default_factory=list)
    layout: Optional[list[list[str]]] = None
    execution: Execution = Field(default_factory=Execution)

    @field_validator("elements")
    @classmethod
    def _elements(cls, v: dict) -> dict:
        if not v:
            raise ValueError("a spec needs at least one element")
        bad = [k for k in v if not ID_RE.match(str(k))]
        if bad:
            raise ValueError(f"element ids are names (letters, digits, _ and -): {', '.join(map(str, bad))}")
        return v

    @field_validator("input")
    @classmethod
    def _input(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("input needs at least one image")
        return v

    @property
    def model_spec(self) -> ModelSpec:
        return self.model if isinstance(self.model, ModelSpec) else ModelSpec(source=self.model)

    @property
    def inputs(self) -> list[str]:
        if self.input is None:
            return []
        return [self.input] if isinstance(self.input, str) else list(self.input)
