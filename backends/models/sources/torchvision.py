"""``torchvision:NAME``: a torchvision model with its published weights (needs the torchvision extra).

``weights:`` is either a weights file (a state_dict / safetensors of that architecture, loaded key by
key, nothing downloaded) or the name of one of the model's published weight sets (``IMAGENET1K_V2``);
``labels:`` a text file with one class name per output. A weights file with ``labels:`` builds the
architecture with one output per label (a network fine-tuned on your own classes); without ``labels:``
it has the published set's outputs and class names. The input size, mean and std are the weight
set's own (``weights.transforms()``: 299 px for ``inception_v3``).
"""
from __future__ import annotations

from interpgram.backends.models.base import (IMAGENET_MEAN, IMAGENET_STD, LoadedModel, ModelSourceError, Preprocess,
                                             SourceContext, finish, model_source, read_labels,
                                             zoo_weights_and_labels)
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
    classes = list(weights.meta.get("categories") or [f"class{i}" for i in range(1000)])
    kw = {}
    if from_file and ctx.labels:  # your own classes: the architecture with one output per name
        classes = read_labels(ctx.path(ctx.labels))
        kw["num_classes"] = len(classes)
    try:
        module = tvm.get_model(ctx.ref, weights=None if from_file else weights, **kw)
    except (OSError, RuntimeError, ValueError) as e:  # a download that failed, a damaged file in torch's hub cache
        raise ModelSourceError(f"could not fetch the weights of torchvision:{ctx.ref}: {e}") from None
    classes = zoo_weights_and_labels(ctx if from_file else _no_weights(ctx), module, classes, f"torchvision:{ctx.ref}")
    return finish(f"torchvision:{ctx.ref}", module, _preprocess(weights), classes)


def _preprocess(weights) -> Preprocess:
    """The weight set's input size, mean and std (its ``transforms()``: resize, centre crop, normalise)."""
    try:
        t = weights.transforms()
        crop = t.crop_size
        size = (crop[0], crop[-1]) if isinstance(crop, (list, tuple)) else (int(crop), int(crop))
        return Preprocess(size, tuple(t.mean), tuple(t.std))
    except (AttributeError, TypeError, ValueError, IndexError):  # a weight set whose transforms say no size
        return Preprocess((224, 224), IMAGENET_MEAN, IMAGENET_STD)


def _no_weights(ctx: SourceContext) -> SourceContext:
    from dataclasses import replace
    return replace(ctx, weights=None)
