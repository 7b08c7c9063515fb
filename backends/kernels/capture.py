"""Forward hooks that record layer outputs; always removed, also when the forward pass fails.

A layer is a module path (``layer3.0.conv1``); a module the forward pass calls more than once is
addressed one call at a time as ``NAME@N`` (the N-th call, from 1: ``relu@2``), and its bare name is
refused, so two calls are never mixed. A hook keeps the tensor the module returned and hands the
rest of the network a copy: an in-place operation after the layer (``ReLU(inplace=True)`` after a
BatchNorm, a residual ``out += identity``) changes the copy, never what was recorded, and gradients
with respect to the recorded tensor are the true ones (the copy is an identity in the graph).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import contextmanager, suppress
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from interpgram.backends.models.outputs import logits_of  # noqa: F401 - the one reading of a forward's output

_CALL = re.compile(r"(.+)@([0-9]+)")


class LayerCallError(ValueError):
    """A layer that cannot be recorded as asked: a bare name of a module called more than once, a call
    that did not happen, or an output changed in place through an alias the capture cannot separate."""


def parse_layer(layer: str) -> tuple[str, Optional[int]]:
    """``"NAME@N"`` -> (``NAME``, N); ``"NAME"`` -> (``NAME``, None)."""
    m = _CALL.fullmatch(layer)
    return (m.group(1), int(m.group(2))) if m else (layer, None)


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The module of a layer path (the ``@N`` call suffix, if any, is not part of it)."""
    name, _ = parse_layer(path)
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise KeyError(path) from None


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


class _Recorder:
    """The hooks of one forward pass: which call of which module to record (or replace), what was
    recorded, and how often each hooked module ran."""

    def __init__(self, model: nn.Module, layers: Sequence[str],
                 replace: Mapping[str, Callable[[torch.Tensor], torch.Tensor]], stop: Optional[Sequence[str]]):
        self.store: dict[str, torch.Tensor] = {}
        self.replace = dict(replace)
        self.counts: dict[str, int] = {}
        self.versions: dict[str, int] = {}
        self.stop = list(stop) if stop is not None else None
        self.calls: dict[str, dict[Optional[int], str]] = {}  # module path -> {call index or None: layer}
        for layer in dict.fromkeys(list(layers) + list(self.replace)):
            name, call = parse_layer(layer)
            self.calls.setdefault(name, {})[call] = layer
        self.handles = []
        try:
            for name in self.calls:
                self.handles.append(resolve_module(model, name).register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise

    def _hook(self, name: str):
        calls = self.calls[name]

        def fn(_m, _inp, out):
            k = self.counts[name] = self.counts.get(name, 0) + 1
            if None in calls and k > 1:
                raise LayerCallError(f"layer {name!r} is called more than once in the forward pass; address one "
                                     f"call as {name}@1, {name}@2, …")
            layer = calls.get(None, calls.get(k))
            if layer is None:
                return None
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"layer {layer!r} returns {type(out).__name__}, not a tensor; address one of its submodules")
            if layer in self.replace:
                out = self.replace[layer](out)
            self.store[layer] = out
            try:
                self.versions[layer] = out._version
            except RuntimeError:  # an inference-mode tensor has no version counter (and cannot change in place)
                pass
            if self.stop is not None and all(s in self.store for s in self.stop):
                raise _Stop
            return out.clone()  # the rest of the network gets a copy: its in-place ops leave ``out`` as it was

        return fn

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def check(self, wanted: Sequence[str]) -> None:
        """After the pass: every wanted layer ran, and nothing changed a recorded tensor afterwards."""
        missing = [l for l in wanted if l not in self.store]
        if missing:
            why = []
            for l in missing:
                name, call = parse_layer(l)
                n = self.counts.get(name, 0)
                why.append(f"{l!r} (the module ran {_times(n)})" if call is not None and n else repr(l))
            raise LayerCallError(f"layer(s) {', '.join(why)} did not run in the model's forward pass")
        changed = [l for l, v in self.versions.items() if self.store[l]._version != v]
        if changed:
            raise LayerCallError(
                f"the output of layer(s) {', '.join(map(repr, changed))} was changed in place after the layer ran, "
                "through a tensor that shares its memory (e.g. the module returns a view of its input, which the "
                "network then modifies in place); address the module that produces the values instead")


@contextmanager
def hooks(model: nn.Module, layers: list[str],
          replace: Optional[dict[str, Callable[[torch.Tensor], torch.Tensor]]] = None) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of each layer in ``layers`` (``NAME`` or ``NAME@N``) into the yielded dict.

    ``replace`` maps a layer to a function applied to its output, whose result flows on through
    the network (used for path-integrated gradients); only that call is replaced. Hooks are removed
    on exit, error or not. After the forward pass, a wanted layer that did not run is an error.
    """
    rec = _Recorder(model, layers, replace or {}, None)
    try:
        yield rec.store
    finally:
        rec.remove()
    rec.check(list(dict.fromkeys(list(layers) + list(replace or {}))))


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
        logits = logits_of(model(x))
    acts = dict(store)
    acts["input"] = x
    acts["output"] = logits
    return acts, logits


class _Stop(Exception):
    """Raised by a forward hook once every needed layer has run (the rest of the pass is not needed)."""


def capture_until(module: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` for model input ``x`` (already preprocessed); the forward pass stops
    once every one of them has run (``output``, the logits, needs the whole pass). The caller
    chooses grad mode and any autocast. Used where only some layers are needed: feature
    visualisation steps, dataset examples."""
    hidden = [l for l in dict.fromkeys(layers) if l not in ("input", "output")]
    need_output = "output" in layers
    rec = _Recorder(module, hidden, {}, None if need_output or not hidden else hidden)
    try:
        out = module(x)
        if need_output:
            rec.store["output"] = logits_of(out)
    except _Stop:
        pass
    finally:
        rec.remove()
    rec.check(hidden)
    return rec.store


def capture_input(module: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """What the module of ``layer`` (a plain path, called once) receives as its first argument for model
    input ``x``; the forward pass stops there. The caller chooses grad mode and any autocast."""
    got: dict[str, torch.Tensor] = {}

    def pre(_m, args):
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError(f"layer {layer!r} is not called with a tensor as its first argument")
        got["in"] = args[0]
        raise _Stop

    handle = resolve_module(module, layer).register_forward_pre_hook(pre)
    try:
        with suppress(_Stop):
            module(x)
    finally:
        handle.remove()
    if "in" not in got:
        raise LayerCallError(f"layer {layer!r} did not run in the model's forward pass")
    return got["in"]
