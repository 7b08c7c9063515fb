"""What every model source produces, and the registry of sources.

A model source turns a reference (``builtin:shapes-cnn``, ``file:net.pt``, ...) into a
:class:`LoadedModel`: the module in eval mode, its preprocessing, its class names and a digest of its
weights (used in cache keys). Each source is one file in ``backends/models/sources/``, registered
with :func:`model_source`; other packages add sources through the ``interpgram.model_sources``
entry-point group. Checkpoints load with ``weights_only=True`` or safetensors; sources that run
code need ``allow_code=True``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from interpgram.backends.code import CodeError
from interpgram.backends.code import import_callable as _import_callable
from interpgram.grammar.registry import Registry
from interpgram.grammar.spec.errors import did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelSourceError(Exception):
    """A model reference that cannot be loaded; the message says what to do."""


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image in [0, 1] becomes the model's input."""

    size: tuple[int, int] = (224, 224)  # H, W
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    value_range: tuple[float, float] = (0.0, 1.0)

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        lo, hi = self.value_range
        x = x01 * (hi - lo) + lo
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass
class LoadedModel:
    name: str
    module: nn.Module
    preprocess: Preprocess
    classes: list[str]
    digest: str
    notes: list[str] = field(default_factory=list)
    _layers: Optional[dict[str, tuple[int, ...]]] = None

    def on(self, device: torch.device, dtype: torch.dtype) -> nn.Module:
        """The module on ``device`` in ``dtype``. float32 moves the module itself; other dtypes get
        a converted copy, so one run in bfloat16 never changes the model another run sees."""
        if dtype == torch.float32:
            return self.module.to(device)
        key = (str(device), dtype)
        copies = self.__dict__.setdefault("_copies", {})
        if key not in copies:
            import copy
            copies[key] = copy.deepcopy(self.module).to(device=device, dtype=dtype)
        return copies[key]

    def layers(self) -> dict[str, tuple[int, ...]]:
        """Every addressable module path with its per-sample output shape, in execution order."""
        if self._layers is None:
            self._layers = probe_layers(self.module, (3, *self.preprocess.size))
        return self._layers


def probe_layers(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def hook(name):
        def fn(_m, _i, out):
            if isinstance(out, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(out.shape[1:])
        return fn

    for name, m in module.named_modules():
        if name:
            handles.append(m.register_forward_hook(hook(name)))
    try:
        p = next(module.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        with torch.no_grad():
            module(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    return shapes


def state_digest(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]



@dataclass
class SourceContext:
    ref: str  # what follows the prefix ("shapes-cnn", "resnet18", a path, ...)
    weights: Optional[str] = None
    factory: Optional[str] = None
    labels: Optional[str] = None
    allow_code: bool = False
    base_dir: Path = field(default_factory=Path.cwd)

    def path(self, p: str) -> Path:
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else self.base_dir / q


Loader = Callable[[SourceContext], LoadedModel]
SOURCES: dict[str, tuple[Loader, str]] = {}



Loader = Callable[[SourceContext], "LoadedModel"]


@dataclass(frozen=True)
class ModelSource:
    """One kind of model reference: ``prefix:REF`` (or the bare ``prefix``), how to load it, and a
    line of help for error messages and ``interpgram layers``."""

    prefix: str
    help: str
    load: Loader
    bare: bool = False  # the reference is the prefix alone (``inceptionv1``)


MODEL_SOURCES: Registry[ModelSource] = Registry("model source", group="interpgram.model_sources")


def model_source(prefix: str, help: str, *, bare: bool = False) -> Callable[[Loader], Loader]:
    """Decorator: register ``fn(ctx) -> LoadedModel`` as the loader of ``prefix:`` references."""
    def deco(fn: Loader) -> Loader:
        MODEL_SOURCES.register(prefix, ModelSource(prefix, help, fn, bare))
        return fn
    return deco


def finish(name: str, module: nn.Module, pre: Preprocess, classes: list[str], notes=None) -> LoadedModel:
    """The :class:`LoadedModel` of ``module``: eval mode, no parameter gradients, its digest."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(name, module, pre, list(classes), state_digest(module), list(notes or []))


def from_module(module: nn.Module, *, name: Optional[str] = None, size: int | tuple[int, int] = 224,
                mean: tuple[float, ...] = (0.0, 0.0, 0.0), std: tuple[float, ...] = (1.0, 1.0, 1.0),
                value_range: tuple[float, float] = (0.0, 1.0), classes: Optional[list[str]] = None) -> LoadedModel:
    """A :class:`LoadedModel` of a module already in memory (the Python API).

    Like every loaded model, ``module`` is put in eval mode and its parameters stop requiring
    gradients. Without ``classes`` the output's width gives ``class0 … classN``. The digest (the
    result cache's key) covers the weights, the class's qualified name and, where Python can read
    it, the source of its ``forward``: editing the class in a notebook does not hit stale results."""
    import inspect

    hw = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    pre = Preprocess(hw, tuple(float(m) for m in mean), tuple(float(s) for s in std),
                     tuple(float(v) for v in value_range))
    if classes is None:
        with torch.no_grad():
            p = next(module.parameters(), None)
            n = module.eval()(torch.zeros(1, 3, *hw, device=p.device if p is not None else "cpu")).shape[-1]
        classes = [f"class{i}" for i in range(n)]
    cls = type(module)
    model = finish(name or f"memory:{cls.__name__}", module, pre, list(classes))
    try:
        code = inspect.getsource(cls)
    except (OSError, TypeError):  # defined where Python keeps no source (an exec'd string)
        code = ""
    h = hashlib.sha256(f"{model.digest}|{cls.__module__}.{cls.__qualname__}|{code}".encode())
    model.digest = h.hexdigest()[:32]
    return model


def import_callable(ref: str, ctx: SourceContext, what: str):
    """``MODULE:CALLABLE`` of a model source or factory (only with ``ctx.allow_code``)."""
    try:
        return _import_callable(ref, base_dir=ctx.base_dir, allow_code=ctx.allow_code, what=what)
    except CodeError as e:
        raise ModelSourceError(str(e)) from None


def from_callable_result(name: str, out, ctx: SourceContext) -> LoadedModel:
    meta = {}
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
        out, meta = out
    if not isinstance(out, nn.Module):
        raise ModelSourceError(f"{name}: the factory returned {type(out).__name__}, not a torch.nn.Module")
    return out, meta


def meta_model(name: str, module: nn.Module, meta: dict, ctx: SourceContext) -> LoadedModel:
    size = meta.get("size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    pre = Preprocess(size, tuple(meta.get("mean", (0.0, 0.0, 0.0))), tuple(meta.get("std", (1.0, 1.0, 1.0))),
                     tuple(meta.get("value_range", (0.0, 1.0))))
    classes = meta.get("classes")
    if ctx.labels:
        classes = [l.strip() for l in ctx.path(ctx.labels).read_text().splitlines() if l.strip()]
    if classes is None:
        with torch.no_grad():
            p = next(module.parameters(), None)
            n = module.eval()(torch.zeros(1, 3, *size, device=p.device if p is not None else "cpu")).shape[-1]
        classes = [f"class{i}" for i in range(n)]
    return finish(name, module, pre, classes)


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from .safetensors or .pt/.pth, never unpickling arbitrary objects."""
    if not path.exists():
        raise ModelSourceError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelSourceError(
            f"{path} is not a plain state_dict (loading with weights_only=True refused it: {str(e).splitlines()[0]}); "
            "save model.state_dict() or use safetensors") from None
    if not isinstance(sd, dict):
        raise ModelSourceError(f"{path} holds a {type(sd).__name__}, not a state_dict")
    return sd



def parse_source(source: str) -> tuple[str, str]:
    prefix, sep, ref = source.partition(":")
    if prefix in MODEL_SOURCES and (sep or MODEL_SOURCES.get(prefix).bare):
        return prefix, ref
    choices = [p if MODEL_SOURCES.get(p).bare else f"{p}:" for p in MODEL_SOURCES.names()]
    raise ModelSourceError(f"unknown model source {source!r} {did_you_mean(prefix, choices, listing='sources')}")


_CACHE: dict[tuple, LoadedModel] = {}


def load_model(source: str, *, weights: str | None = None, factory: str | None = None, labels: str | None = None,
               allow_code: bool = False, base_dir: str | Path | None = None) -> LoadedModel:
    """Load a model by reference (memoised per process)."""
    prefix, ref = parse_source(source)
    base = Path(base_dir) if base_dir else Path.cwd()
    key = (prefix, ref, weights, factory, labels, allow_code, str(base))
    if key not in _CACHE:
        ctx = SourceContext(ref, weights, factory, labels, allow_code, base)
        _CACHE[key] = MODEL_SOURCES.get(prefix).load(ctx)
    return _CACHE[key]
