"""Forward hooks that record layer outputs; always removed, also when the forward pass fails."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Sequence

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


class _Stop(Exception):
    """Raised by a forward hook once every needed layer has run (the rest of the pass is not needed)."""


def capture_until(module: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` for model input ``x`` (already preprocessed); the forward pass stops
    once every one of them has run (``output``, the logits, needs the whole pass). The caller
    chooses grad mode and any autocast. A module that runs more than once keeps its first output.
    Used where only some layers are needed: feature visualisation steps, dataset examples."""
    hidden = [l for l in dict.fromkeys(layers) if l not in ("input", "output")]
    need_output = "output" in layers
    store: dict[str, torch.Tensor] = {}

    def make(name: str):
        def hook(_m, _i, out):
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(out).__name__}, not a tensor; address one of its submodules")
            store.setdefault(name, out)
            if not need_output and all(h in store for h in hidden):
                raise _Stop
        return hook

    handles = [resolve_module(module, name).register_forward_hook(make(name)) for name in hidden]
    try:
        out = module(x)
        if need_output:
            store["output"] = out if isinstance(out, torch.Tensor) else out.logits
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [l for l in hidden if l not in store]
    if missing:
        raise RuntimeError(f"layer(s) {', '.join(map(repr, missing))} did not run in the model's forward pass")
    return store
