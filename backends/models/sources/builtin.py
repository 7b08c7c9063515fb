"""``builtin:shapes-cnn``: the bundled CNN trained on the built-in shapes data set."""
from __future__ import annotations

from interpgram.backends.data.shapes import CLASSES, IMAGE_SIZE
from interpgram.backends.models.base import (
    LoadedModel,
    ModelSourceError,
    Preprocess,
    SourceContext,
    finish,
    fit_state_dict,
    load_weights_file,
    model_source,
)
from interpgram.backends.models.shapes_cnn import MEAN, STD, WEIGHTS, ShapesCNN
from interpgram.grammar.spec.errors import did_you_mean

BUILTINS = ("shapes-cnn",)


@model_source("builtin", "builtin:shapes-cnn, the bundled CNN trained on builtin:shapes")
def _builtin(ctx: SourceContext) -> LoadedModel:
    if ctx.ref != "shapes-cnn":
        raise ModelSourceError(f"unknown built-in model {ctx.ref!r} {did_you_mean(ctx.ref, BUILTINS, listing='built-in models')}")
    path = ctx.path(ctx.weights) if ctx.weights else WEIGHTS
    what = "the weights of builtin:shapes-cnn" + ("" if ctx.weights else
                                                    " (committed; rebuild them with python -m "
                                                    "interpgram.backends.models.train_shapes_cnn)")
    module = ShapesCNN()
    fit_state_dict(module, load_weights_file(path, "weights file"), path, what)
    return finish("builtin:shapes-cnn", module, Preprocess((IMAGE_SIZE, IMAGE_SIZE), tuple(MEAN), tuple(STD)), CLASSES)
