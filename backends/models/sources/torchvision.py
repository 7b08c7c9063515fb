"""``torchvision:NAME``: a torchvision model with its published weights (needs the torchvision extra).

``weights:`` is either a weights file (a state_dict / safetensors of that architecture, loaded key by
key) or the name of one of the model's published weight sets (``IMAGENET1K_V2``); ``labels:`` a text
file with one class name per output.
"""
from __future__ import annotations

from interpgram.backends.models.base import (IMAGENET_MEAN, IMAGENET_STD, LoadedModel, ModelSourceError, Preprocess,
                                             SourceContext, finish, model_source, zoo_weights_and_labels)
from interpgram.grammar.spec.errors import did_you_mean

WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


@model_source("torchvision", "torchvision:NAME, e.g. torchvision:resnet18 (needs the torchvision extra)")
def _torchvision(ctx: SourceContext) -> LoadedModel:
    try:
        import torchvision  # noqa: F401
        from torchvision import models as tvm
    except Exception as e:  # noqa: BLE001 - ImportError, or any binary mismatch with this torch build
        raise ModelSourceError(
            f"torchvision:{ctx.ref} needs torchvision, which cannot be imported here ({type(e).__name__}: {e}); "
            "install the extra that matches your torch build: pip install 'interpgram[torchvision]'") from None
    names = tvm.list_models()
    if ctx.ref not in names:
        raise ModelSourceError(f"unknown torchvision model {ctx.ref!r} {did_you_mean(ctx.ref, names, listing='models')}")
    sets = tvm.get_model_weights(ctx.ref)
    from_file = bool(ctx.weights) and (ctx.weights.endswith(WEIGHT_FILE_SUFFIXES) or ctx.path(ctx.weights).exists())
    if ctx.weights and not from_file:  # a published weight set by name
        known = [w.name for w in sets]
        if ctx.weights not in known:
            raise ModelSourceError(f"torchvision:{ctx.ref} has no weights {ctx.weights!r} "
                                   f"{did_you_mean(ctx.weights, known, listing='weight sets')} (or give a weights file)")
        weights = sets[ctx.weights]
    else:
        weights = sets.DEFAULT
    try:
        module = tvm.get_model(ctx.ref, weights=None if from_file else weights)
    except (OSError, RuntimeError, ValueError) as e:  # a download that failed, a damaged file in torch's hub cache
        raise ModelSourceError(f"could not fetch the weights of torchvision:{ctx.ref}: {e}") from None
    classes = list(weights.meta.get("categories") or [f"class{i}" for i in range(1000)])
    classes = zoo_weights_and_labels(ctx if from_file else _no_weights(ctx), module, classes, f"torchvision:{ctx.ref}")
    return finish(f"torchvision:{ctx.ref}", module, Preprocess((224, 224), IMAGENET_MEAN, IMAGENET_STD), classes)


def _no_weights(ctx: SourceContext) -> SourceContext:
    from dataclasses import replace
    return replace(ctx, weights=None)
