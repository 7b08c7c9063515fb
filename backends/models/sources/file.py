"""``file:PATH``: a state_dict / safetensors file with ``model.factory`` building the architecture (or TorchScript).

A TorchScript archive is a program (its serialized code runs on load and on every forward pass; see
PyTorch's security notes), so it loads only with the same consent as ``python:`` code: ``--allow-code``
(``allow_code=True`` from Python). Once loaded it is refused with a clear message: PyTorch does not
support forward hooks on TorchScript modules, and every layer interpgram reads is read through one. A state_dict is read with ``weights_only=True`` and needs no consent
beyond the factory's.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from interpgram.backends.models.base import (LoadedModel, ModelSourceError, SourceContext, check_regular_file,
                                             fit_state_dict, from_callable_result, import_callable, load_weights_file,
                                             meta_model, model_source)


def is_torchscript_archive(path: Path) -> bool:
    """True when ``path`` is a zip archive laid out as TorchScript writes it (``<root>/constants.pkl``
    beside its ``code/``), the test ``torch.load`` itself uses; read without running anything."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n.count("/") == 1 and n.endswith("/constants.pkl") for n in names)


@model_source("file", "file:PATH — a state_dict/.safetensors with model.factory (TorchScript needs --allow-code)")
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
    if not is_torchscript_archive(path):
        raise ModelSourceError(
            f"{path} is not a TorchScript archive; for a state_dict give model.factory: python:MODULE:CALLABLE "
            "(whole pickled models are refused: they run arbitrary code on load)")
    if not ctx.allow_code:
        raise ModelSourceError(
            f"file:{ctx.ref} is a TorchScript archive, which is a program: its code runs when it loads and on every "
            "forward pass; load it only if you trust it, by passing --allow-code (or allow_code=True from Python)")
    try:
        torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as e:
        raise ModelSourceError(f"{path}: the TorchScript archive does not load: {str(e).splitlines()[0]}") from None
    # interpgram reads every layer through forward hooks (layer listing, capture, attribution), and PyTorch
    # refuses them on ScriptModules ("register_forward_hook is not supported on ScriptModules"): say so here
    # instead of a traceback at the first layer probe
    raise ModelSourceError(
        f"file:{ctx.ref} loaded as TorchScript, but interpgram reads layers through forward hooks, which PyTorch "
        "does not support on TorchScript modules; give the weights as a state_dict or .safetensors file with "
        "model.factory: python:MODULE:CALLABLE building the architecture, or the model as python:MODULE:CALLABLE")
