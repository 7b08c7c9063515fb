"""``torchvision:NAME``: a torchvision model with its published weights (needs the torchvision extra)."""
from __future__ import annotations

from interpgram.backends.models.base import (IMAGENET_MEAN, IMAGENET_STD, LoadedModel, ModelSourceError, Preprocess,
                                             SourceContext, finish, model_source)
from interpgram.grammar.spec.errors import did_you_mean

@model_source("torchvision", "torchvision:NAME, e.g. torchvision:resnet18 (needs the torchvision extra)")
def _torchvision(ctx: SourceContext) -> LoadedModel:
    try:
        import torchvision  # noqa: F401
        from torchvision import models as tvm
    except Exception as e:  # ImportError, or a binary mismatch with this torch build
        raise ModelSourceError(
            f"torchvision:{ctx.ref} needs torchvision, which cannot be imported here ({type(e).__name__}: {e}); "
            "install the extra that matches your torch build: pip install 'interpgram[torchvision]'") from None
    names = tvm.list_models()
    if ctx.ref not in names:
        raise ModelSourceError(f"unknown torchvision model {ctx.ref!r} {did_you_mean(ctx.ref, names, listing='models')}")
    try:
        weights = tvm.get_model_weights(ctx.ref).DEFAULT
        module = tvm.get_model(ctx.ref, weights=weights)
    except Exception as e:
        raise ModelSourceError(f"could not fetch the weights of torchvision:{ctx.ref}: {e}") from None
    classes = list(weights.meta.get("categories") or [f"class{i}" for i in range(1000)])
    return finish(f"torchvision:{ctx.ref}", module, Preprocess((224, 224), IMAGENET_MEAN, IMAGENET_STD), classes)
