"""``python:MODULE:CALLABLE``: your own code builds the model (needs ``allow_code``)."""
from __future__ import annotations

from interpgram.backends.models.base import (LoadedModel, SourceContext, from_callable_result, import_callable,
                                             fit_state_dict, load_weights_file, meta_model, model_source)

@model_source("python", "python:MODULE:CALLABLE — your own code builds the model (needs --allow-code)")
def _python(ctx: SourceContext) -> LoadedModel:
    build = import_callable(ctx.ref, ctx, f"model python:{ctx.ref}")
    module, meta = from_callable_result(f"python:{ctx.ref}", build(), ctx)
    if ctx.weights:
        path = ctx.path(ctx.weights)
        fit_state_dict(module, load_weights_file(path), path, f"the model python:{ctx.ref} builds")
    return meta_model(f"python:{ctx.ref}", module, meta, ctx)
