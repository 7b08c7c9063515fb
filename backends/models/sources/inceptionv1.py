"""``inceptionv1``: the articles' GoogLeNet (Lucid's graph, 1008 logits)."""
from __future__ import annotations

from interpgram.backends.models.base import (
    LoadedModel,
    ModelSourceError,
    Preprocess,
    SourceContext,
    check_regular_file,
    finish,
    model_source,
)
from interpgram.backends.models.inceptionv1 import (INPUT_RANGE, INPUT_SIZE, InceptionV1WeightsError, load_inceptionv1,
                                                    load_labels)


@model_source("inceptionv1", "inceptionv1, the articles' GoogLeNet (Lucid's graph, 1008 logits)", bare=True)
def _inceptionv1(ctx: SourceContext) -> LoadedModel:
    if ctx.labels:
        check_regular_file(ctx.path(ctx.labels), "labels file")
    try:
        labels = load_labels(str(ctx.path(ctx.labels)) if ctx.labels else None)
    except (OSError, ValueError) as e:  # FileNotFoundError, not UTF-8 (UnicodeDecodeError), not 1008 or 1001 lines
        raise ModelSourceError(f"model.labels: {e}") from None
    try:  # after the labels: a bad labels file fails before a download
        module = load_inceptionv1(str(ctx.path(ctx.weights)) if ctx.weights else None)
    except InceptionV1WeightsError as e:  # unavailable, not a state_dict, truncated, keys or shapes that differ
        raise ModelSourceError(str(e)) from None
    notes = []
    pre = Preprocess((INPUT_SIZE, INPUT_SIZE), value_range=tuple(INPUT_RANGE))
    return finish("inceptionv1", module, pre, labels, notes)
