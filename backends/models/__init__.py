"""Models: the registry of model sources and what they load.

``builtin:NAME`` · ``inceptionv1`` · ``torchvision:NAME`` · ``timm:NAME`` · ``file:PATH`` ·
``python:MODULE:CALLABLE`` — each one file of ``sources/`` (see :mod:`.base` for the contract).
"""
from interpgram.backends.models.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_SOURCES,
    LoadedModel,
    ModelSource,
    ModelSourceError,
    Preprocess,
    SourceContext,
    load_model,
    load_weights_file,
    model_source,
    parse_source,
    probe_layers,
    state_digest,
)
from interpgram.backends.models import sources  # noqa: F401  (registers the built-in sources)

SOURCES = MODEL_SOURCES

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LoadedModel", "MODEL_SOURCES", "ModelSource", "ModelSourceError",
           "Preprocess", "SOURCES", "SourceContext", "load_model", "load_weights_file", "model_source", "parse_source",
           "probe_layers", "state_digest"]
