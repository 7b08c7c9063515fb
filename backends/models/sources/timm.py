"""``timm:NAME``: a timm model with its pretrained weights (needs the timm extra)."""
from __future__ import annotations

from interpgram.backends.models.base import (LoadedModel, ModelSourceError, Preprocess, SourceContext, finish,
                                             model_source)

@model_source("timm", "timm:NAME, e.g. timm:resnet18 (needs the timm extra)")
def _timm(ctx: SourceContext) -> LoadedModel:
    try:
        import timm
    except Exception as e:
        raise ModelSourceError(f"timm:{ctx.ref} needs timm ({type(e).__name__}: {e}); "
                               "install the extra: pip install 'interpgram[timm]'") from None
    try:
        module = timm.create_model(ctx.ref, pretrained=True)
    except Exception as e:
        raise ModelSourceError(f"could not create timm:{ctx.ref}: {e}") from None
    cfg = timm.data.resolve_data_config({}, model=module)
    size = tuple(cfg["input_size"][1:])
    n = getattr(module, "num_classes", 1000)
    return finish(f"timm:{ctx.ref}", module, Preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"])),
                   [f"class{i}" for i in range(n)], ["class names are indices; give model.labels for names"])
