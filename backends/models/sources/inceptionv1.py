"""``inceptionv1``: the articles' GoogLeNet (Lucid's graph, 1008 logits)."""
from __future__ import annotations

from interpgram.backends.models.base import (LoadedModel, ModelSourceError, Preprocess, SourceContext, finish,
                                             model_source)

@model_source("inceptionv1", "inceptionv1, the articles' GoogLeNet (Lucid's graph, 1008 logits)", bare=True)
def _inceptionv1(ctx: SourceContext) -> LoadedModel:
    from interpgram.backends.models.inceptionv1 import INPUT_RANGE, INPUT_SIZE, WeightsUnavailable, load_inceptionv1, load_labels
    try:
        module = load_inceptionv1(str(ctx.path(ctx.weights)) if ctx.weights else None)
    except WeightsUnavailable as e:
        raise ModelSourceError(str(e)) from None
    labels = load_labels(str(ctx.path(ctx.labels)) if ctx.labels else None)
    notes = [] if ctx.labels else ["class names are generic (class0000…); give model.labels for the real ones"]
    pre = Preprocess((INPUT_SIZE, INPUT_SIZE), value_range=tuple(INPUT_RANGE))
    return finish("inceptionv1", module, pre, labels, notes)
