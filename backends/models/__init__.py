"""Model sources: one small registered loader per kind of reference.

``builtin:NAME`` · ``inceptionv1`` · ``torchvision:NAME`` · ``timm:NAME`` · ``file:PATH`` ·
``python:MODULE:CALLABLE``. Each returns a :class:`LoadedModel` with its preprocessing, class names,
and a digest of its weights (used in cache keys). Checkpoints load with ``weights_only=True`` or
safetensors; ``python:`` sources run user code and need ``allow_code=True``.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

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


def register_source(prefix: str, help: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        SOURCES[prefix] = (fn, help)
        return fn
    return deco


def _finish(name: str, module: nn.Module, pre: Preprocess, classes: list[str], notes=None) -> LoadedModel:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(name, module, pre, list(classes), state_digest(module), list(notes or []))


# ------------------------------------------------------------------------------ builtin
BUILTINS = ("shapes-cnn",)


@register_source("builtin", "builtin:shapes-cnn, the bundled CNN trained on builtin:shapes")
def _builtin(ctx: SourceContext) -> LoadedModel:
    if ctx.ref != "shapes-cnn":
        from interpgram.grammar import did_you_mean
        raise ModelSourceError(f"unknown built-in model {ctx.ref!r} {did_you_mean(ctx.ref, BUILTINS, listing='built-in models')}")
    from ..data.shapes import CLASSES, IMAGE_SIZE
    from .shapes_cnn import MEAN, STD, load_shapes_cnn
    module = load_shapes_cnn(ctx.path(ctx.weights) if ctx.weights else None)
    return _finish("builtin:shapes-cnn", module, Preprocess((IMAGE_SIZE, IMAGE_SIZE), tuple(MEAN), tuple(STD)), CLASSES)


# ------------------------------------------------------------------------------ inceptionv1
@register_source("inceptionv1", "inceptionv1, the articles' GoogLeNet (Lucid's graph, 1008 logits)")
def _inceptionv1(ctx: SourceContext) -> LoadedModel:
    from .inceptionv1 import INPUT_RANGE, INPUT_SIZE, WeightsUnavailable, load_inceptionv1, load_labels
    try:
        module = load_inceptionv1(str(ctx.path(ctx.weights)) if ctx.weights else None)
    except WeightsUnavailable as e:
        raise ModelSourceError(str(e)) from None
    labels = load_labels(str(ctx.path(ctx.labels)) if ctx.labels else None)
    notes = [] if ctx.labels else ["class names are generic (class0000…); give model.labels for the real ones"]
    pre = Preprocess((INPUT_SIZE, INPUT_SIZE), value_range=tuple(INPUT_RANGE))
    return _finish("inceptionv1", module, pre, labels, notes)


# ------------------------------------------------------------------------------ torchvision / timm
@register_source("torchvision", "torchvision:NAME, e.g. torchvision:resnet18 (needs the torchvision extra)")
def _torchvision(ctx: SourceContext) -> LoadedModel:
    try:
        import torchvision  # noqa: F401
        from torchvision import models as tvm
    except Exception as e:  # ImportError, or a binary mismatch with this torch build
        raise ModelSourceError(
            f"torchvision:{ctx.ref} needs torchvision, which cannot be imported here ({type(e).__name__}: {e}); "
            "install the extra that matches your torch build: pip install 'interpgram[torchvision]'") from None
    names = tvm.list_models()
    if ctx.ref not in names:
        from interpgram.grammar import did_you_mean
        raise ModelSourceError(f"unknown torchvision model {ctx.ref!r} {did_you_mean(ctx.ref, names, listing='models')}")
    try:
        weights = tvm.get_model_weights(ctx.ref).DEFAULT
        module = tvm.get_model(ctx.ref, weights=weights)
    except Exception as e:
        raise ModelSourceError(f"could not fetch the weights of torchvision:{ctx.ref}: {e}") from None
    classes = list(weights.meta.get("categories") or [f"class{i}" for i in range(1000)])
    return _finish(f"torchvision:{ctx.ref}", module, Preprocess((224, 224), IMAGENET_MEAN, IMAGENET_STD), classes)


@register_source("timm", "timm:NAME, e.g. timm:resnet18 (needs the timm extra)")
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
    return _finish(f"timm:{ctx.ref}", module, Preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"])),
                   [f"class{i}" for i in range(n)], ["class names are indices; give model.labels for names"])


# ------------------------------------------------------------------------------ file / python
def _import_callable(ref: str, ctx: SourceContext, what: str):
    if not ctx.allow_code:
        raise ModelSourceError(
            f"{what} runs Python code from {ref!r}; run it only if you trust it, by passing --allow-code "
            "(or allow_code=True from Python)")
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise ModelSourceError(f"{what}: expected MODULE:CALLABLE, e.g. python:mypkg.models:build, got {ref!r}")
    added = str(ctx.base_dir)
    sys.path.insert(0, added)
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:
        raise ModelSourceError(f"{what}: cannot import {mod_name!r}: {type(e).__name__}: {e}") from None
    finally:
        if sys.path and sys.path[0] == added:
            sys.path.pop(0)
    if not hasattr(module, attr):
        from interpgram.grammar import did_you_mean
        public = [n for n in dir(module) if not n.startswith("_")]
        raise ModelSourceError(f"{what}: {mod_name!r} has no {attr!r} {did_you_mean(attr, public, listing='names')}")
    return getattr(module, attr)


def _from_callable_result(name: str, out, ctx: SourceContext) -> LoadedModel:
    meta = {}
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
        out, meta = out
    if not isinstance(out, nn.Module):
        raise ModelSourceError(f"{name}: the factory returned {type(out).__name__}, not a torch.nn.Module")
    return out, meta


def _meta_model(name: str, module: nn.Module, meta: dict, ctx: SourceContext) -> LoadedModel:
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
    return _finish(name, module, pre, classes)


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


@register_source("file", "file:PATH — TorchScript (.pt), or a state_dict/.safetensors with model.factory")
def _file(ctx: SourceContext) -> LoadedModel:
    path = ctx.path(ctx.ref)
    if not path.exists():
        raise ModelSourceError(f"model file not found: {path}")
    if ctx.factory:
        build = _import_callable(ctx.factory.removeprefix("python:"), ctx, "model.factory")
        module, meta = _from_callable_result(f"file:{ctx.ref}", build(), ctx)
        sd = load_weights_file(path)
        try:
            module.load_state_dict(sd)
        except RuntimeError as e:
            raise ModelSourceError(f"{path} does not fit the factory's model: {str(e).splitlines()[0]} …") from None
        return _meta_model(f"file:{ctx.ref}", module, meta, ctx)
    if path.suffix == ".safetensors":
        raise ModelSourceError(f"{path} holds weights only; name the architecture with model.factory: python:MODULE:CALLABLE")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception:
        raise ModelSourceError(
            f"{path} is not a TorchScript archive; for a state_dict give model.factory: python:MODULE:CALLABLE "
            "(whole pickled models are refused: they run arbitrary code on load)") from None
    return _meta_model(f"file:{ctx.ref}", module, {}, ctx)


@register_source("python", "python:MODULE:CALLABLE — your own code builds the model (needs --allow-code)")
def _python(ctx: SourceContext) -> LoadedModel:
    build = _import_callable(ctx.ref, ctx, f"model python:{ctx.ref}")
    module, meta = _from_callable_result(f"python:{ctx.ref}", build(), ctx)
    if ctx.weights:
        module.load_state_dict(load_weights_file(ctx.path(ctx.weights)))
    return _meta_model(f"python:{ctx.ref}", module, meta, ctx)


def parse_source(source: str) -> tuple[str, str]:
    if source == "inceptionv1":
        return "inceptionv1", ""
    prefix, sep, ref = source.partition(":")
    if not sep or prefix not in SOURCES:
        from interpgram.grammar import did_you_mean
        choices = [f"{p}:" if p != "inceptionv1" else p for p in SOURCES]
        raise ModelSourceError(f"unknown model source {source!r} {did_you_mean(prefix, choices, listing='sources')}")
    return prefix, ref


_CACHE: dict[tuple, LoadedModel] = {}


def load_model(source: str, *, weights: str | None = None, factory: str | None = None, labels: str | None = None,
               allow_code: bool = False, base_dir: str | Path | None = None) -> LoadedModel:
    """Load a model by reference (memoised per process)."""
    prefix, ref = parse_source(source)
    base = Path(base_dir) if base_dir else Path.cwd()
    key = (prefix, ref, weights, factory, labels, allow_code, str(base))
    if key not in _CACHE:
        ctx = SourceContext(ref, weights, factory, labels, allow_code, base)
        _CACHE[key] = SOURCES[prefix][0](ctx)
    return _CACHE[key]


__all__ = ["LoadedModel", "ModelSourceError", "Preprocess", "SOURCES", "load_model", "load_weights_file",
           "parse_source", "probe_layers", "register_source", "state_digest"]
