"""``file:PATH``: TorchScript, or a state_dict / safetensors file with ``model.factory`` building the architecture."""
from __future__ import annotations

import torch

from interpgram.backends.models.base import (LoadedModel, ModelSourceError, SourceContext, check_regular_file,
                                             fit_state_dict, from_callable_result, import_callable, load_weights_file,
                                             meta_model, model_source)

@model_source("file", "file:PATH — TorchScript (.pt), or a state_dict/.safetensors with model.factory")
def _file(ctx: SourceContext) -> LoadedModel:
    path = ctx.path(ctx.ref)
    check_regular_file(path, "model file")
    if ctx.factory:
        build = import_callable(ctx.factory.removeprefix("python:"), ctx, "model.factory")
        module, meta = from_callable_result(f"file:{ctx.ref}", build(), ctx)
        fit_state_dict(module, load_weights_file(path), path, f"the factory's model ({ctx.factory})")
        return meta_model(f"file:{ctx.ref}", module, meta, ctx)
    if path.suffix == ".safetensors":
        raise ModelSourceError(f"{path} holds weights only; name the architecture with model.factory: python:MODULE:CALLABLE")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception:
        raise ModelSourceError(
            f"{path} is not a TorchScript archive; for a state_dict give model.factory: python:MODULE:CALLABLE "
            "(whole pickled models are refused: they run arbitrary code on load)") from None
    return meta_model(f"file:{ctx.ref}", module, {}, ctx)
