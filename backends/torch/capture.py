"""Forward hooks that record layer outputs; always removed, also when the forward pass fails."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
from torch import nn


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise KeyError(path) from None


@contextmanager
def hooks(model: nn.Module, layers: list[str],
          replace: Optional[dict[str, Callable[[torch.Tensor], torch.Tensor]]] = None) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of each module path in ``layers`` into the yielded dict.

    ``replace`` maps a layer to a function applied to its output, whose result flows on through
    the network (used for path-integrated gradients). Hooks are removed on exit, error or not.
    A module called more than once keeps its first output.
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    replace = replace or {}

    def make(name: str):
        def fn(_m, _inp, out):
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(out).__name__}, not a tensor; address one of its submodules")
            if name in replace:
                out = replace[name](out)
            if name not in store:
                store[name] = out
            return out if name in replace else None
        return fn

    try:
        for name in dict.fromkeys(list(layers) + list(replace)):
            handles.append(resolve_module(model, name).register_forward_hook(make(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


def run_capture(model: nn.Module, x: torch.Tensor, layers: list[str], *, grad: bool,
                replace=None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward pass; returns ({layer: output}, logits). ``input`` and ``output`` are pseudo-layers.

    With ``grad`` the input requires grad, so that every captured activation is part of one graph
    and a single ``torch.autograd.grad`` call reaches all of them (no parameter gradients).
    """
    hidden = [l for l in layers if l not in ("input", "output")]
    if grad:
        x = x.detach().requires_grad_(True)
    with torch.set_grad_enabled(grad), hooks(model, hidden, replace) as store:
        logits = model(x)
    if not isinstance(logits, torch.Tensor):
        logits = getattr(logits, "logits", None)
        if logits is None:
            raise TypeError("the model's forward must return a tensor of logits (or an object with .logits)")
    acts = dict(store)
    acts["input"] = x
    acts["output"] = logits
    return acts, logits
