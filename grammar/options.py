"""Option models and checks shared by several presentations (icon settings, transforms, data-set names).

Each presentation's own options model lives in its unit file (``backends/presentations/<name>.py``):
that model is the only place its defaults are written.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from interpgram.grammar.spec.errors import did_you_mean


class OptionsModel(BaseModel):
    """The base of every presentation's options: unknown keys are errors, values are frozen."""

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
        raise ValueError(f"unknown built-in data set {v!r} {did_you_mean(v, ['builtin:shapes'], listing='built-in data sets')}; "
                         f"{forms}")
    return v


class IconOptions(OptionsModel):
    """How icons are optimised (lucid's render_vis settings)."""

    size: Optional[int] = Field(None, ge=8, le=1024, description="icon side in px (default: the model's input size, at most 128)")
    steps: int = Field(256, ge=1, le=20000, description="optimisation steps")
    lr: float = Field(0.05, gt=0, le=10, description="Adam learning rate")
    attempts: int = Field(1, ge=1, le=16, description="independent attempts; the best per icon is kept")
    param: Literal["fourier", "pixels"] = Field("fourier", description="image parameterisation")
    decorrelate: bool = Field(True, description="decorrelated (ImageNet) colour")
    transforms: Union[str, list] = Field("standard", description="standard | none | [{pad: 12}, {jitter: 8}, {scale: [..]}, {rotate: [..]}, ...]")
    relu_redirect: int = Field(16, ge=0, description="first steps with lucid's redirected ReLU gradient")
    race: float = Field(1.0, ge=0, le=1, description="with several attempts: at this fraction of the steps each icon "
                        "keeps its leading attempt and drops the others (1, the default: run every attempt to the end)")
    autocast: Literal["auto", "bfloat16", "off"] = Field(
        "auto", description="run the model in bfloat16 while optimising: auto (where bfloat16 is native: cuda, a CPU "
                       "with AMX or AVX512-BF16), bfloat16 (any device), off")

    _transforms = field_validator("transforms")(classmethod(lambda cls, v: check_transforms(v)))
