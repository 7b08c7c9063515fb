"""``timm:NAME``: a timm model with its pretrained weights (needs the timm extra).

``weights:`` a weights file of that architecture (a state_dict / safetensors, loaded key by key,
instead of downloading the pretrained ones); ``labels:`` a text file with one class name per output.
A weights file with ``labels:`` builds the architecture with one output per label (a network
fine-tuned on your own classes). A 1,000-output model without ``labels:`` gets the ImageNet-1k
class names (bundled). Size, mean and std are the model's pretrained config's.
"""
from __future__ import annotations

from interpgram.backends.models.base import (LoadedModel, ModelSourceError, Preprocess, SourceContext, finish,
                                             model_source, read_labels, zoo_weights_and_labels)
from interpgram.backends.models.efficientnet_lite import imagenet_classes


@model_source("timm", "timm:NAME, e.g. timm:resnet18 (needs the timm extra)")
def _timm(ctx: SourceContext) -> LoadedModel:
    try:
        import timm
    except Exception as e:  # noqa: BLE001 - ImportError, or torchvision (a timm dependency) built for another torch
        raise ModelSourceError(f"timm:{ctx.ref} needs timm ({type(e).__name__}: {e}); "
                               "install the extra: pip install 'interpgram[timm]'") from None
    kw = {}
    if ctx.weights and ctx.labels:  # your own classes: the architecture with one output per name
        kw["num_classes"] = len(read_labels(ctx.path(ctx.labels)))
    try:
        module = timm.create_model(ctx.ref, pretrained=not ctx.weights, **kw)
    except (OSError, RuntimeError, ValueError) as e:  # unknown name, a failed download
        raise ModelSourceError(f"could not create timm:{ctx.ref}: {e}") from None
    cfg = timm.data.resolve_data_config({}, model=module)
    size = tuple(cfg["input_size"][1:])
    n = getattr(module, "num_classes", 1000)
    default = imagenet_classes() if n == 1000 else [f"class{i}" for i in range(n)]
    classes = zoo_weights_and_labels(ctx, module, default, f"timm:{ctx.ref}")
    notes = [] if ctx.labels or n == 1000 else ["class names are indices; give model.labels for names"]
    return finish(f"timm:{ctx.ref}", module, Preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"])), classes, notes)
