"""What every model source produces, and the registry of sources.

A model source turns a reference (``builtin:shapes-cnn``, ``file:net.pt``, ...) into a
:class:`LoadedModel`: the module in eval mode, its preprocessing, its class names and a digest of its
weights (used in cache keys). Each source is one file in ``backends/models/sources/``, registered
with :func:`model_source`; other packages add sources through the ``interpgram.model_sources``
entry-point group. Checkpoints load with ``weights_only=True`` or safetensors; sources that run
code need ``allow_code=True``.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from interpgram.backends.code import CodeError
from interpgram.backends.code import import_callable as _import_callable
from interpgram.backends.data.images import CROP_MODES, CROP_OF, RESIZE_MODES, Fit
from interpgram.backends.files import describe_path_problem
from interpgram.backends.models.outputs import logits_of
from interpgram.grammar.registry import Registry
from interpgram.grammar.spec.errors import did_you_mean

_SHOW = 5  # offending keys listed in an error message
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelSourceError(Exception):
    """A model reference that cannot be loaded; the message says what to do."""


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image in [0, 1] becomes the model's input: brought to ``size`` = (H, W) by ``resize``
    (``shorter``: cover the size, then a centre crop; ``stretch``; ``pad``: letterbox, see
    :mod:`interpgram.backends.data.images`), mapped to ``value_range``, then ``(x − mean) / std``."""

    size: tuple[int, int] = (224, 224)  # H, W
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    value_range: tuple[float, float] = (0.0, 1.0)
    resize: str = "shorter"

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        lo, hi = self.value_range
        x = x01 * (hi - lo) + lo
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    @property
    def crop(self) -> str:
        return CROP_OF[self.resize]

    @property
    def fill(self) -> tuple[float, float, float]:
        """The RGB colour in [0, 1] that becomes 0 after normalisation (the model's mean), which ``pad`` fills with."""
        lo, hi = self.value_range
        return tuple(min(1.0, max(0.0, (m - lo) / (hi - lo))) if hi != lo else 0.0 for m in self.mean)

    @property
    def fit(self) -> Fit:
        """How inputs are brought to :attr:`size` (what :func:`~interpgram.backends.data.inputs.load_inputs` takes)."""
        return Fit(self.size, self.resize, self.fill)

    def describe(self) -> str:
        """The preprocessing in one line (``interpgram layers``, the report header)."""
        h, w = self.size
        num = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
        lo, hi = self.value_range
        rng = "" if (lo, hi) == (0.0, 1.0) else f", pixels mapped to [{lo:g}, {hi:g}]"
        return (f"{w}×{h} px, resize: {self.resize}, crop: {self.crop}{rng}, (x − mean) / std with mean "
                f"{num(self.mean)}, std {num(self.std)}")


#: the preprocessing keys a spec's ``model:`` (and a factory's metadata) may set
PREPROCESS_KEYS = ("size", "mean", "std", "resize", "crop")
#: the keys of a factory's metadata, the second item of its ``(module, {...})`` return
META_KEYS = ("size", "mean", "std", "value_range", "resize", "crop", "classes")


def _triple(v, what: str, where: str) -> tuple[float, float, float]:
    try:
        t = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        t = ()
    if len(t) != 3 or any(x != x or x in (float("inf"), float("-inf")) for x in t):
        raise ModelSourceError(f"{where}: {what} is three finite numbers, one per RGB channel; got {v!r}")
    if what == "std" and any(x <= 0 for x in t):
        raise ModelSourceError(f"{where}: std values are positive; got {v!r}")
    return t


def _size(v, where: str) -> tuple[int, int]:
    hw = (v, v) if isinstance(v, int) and not isinstance(v, bool) else v
    ok = isinstance(hw, (tuple, list)) and len(hw) == 2 and all(
        isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 16384 for x in hw)
    if not ok:
        raise ModelSourceError(f"{where}: size is one whole number of pixels or [height, width] (1…16384); got {v!r}")
    return (int(hw[0]), int(hw[1]))


def make_preprocess(base: Preprocess, settings: Mapping, where: str) -> Preprocess:
    """``base`` with ``settings`` (some of size, mean, std, value_range, resize, crop; None = keep) applied,
    each checked (a :class:`ModelSourceError` naming ``where`` and the nearest valid choice)."""
    upd: dict = {}
    if settings.get("size") is not None:
        upd["size"] = _size(settings["size"], where)
    for k in ("mean", "std"):
        if settings.get(k) is not None:
            upd[k] = _triple(settings[k], k, where)
    if settings.get("value_range") is not None:
        vr = settings["value_range"]
        try:
            lo, hi = (float(x) for x in vr)
        except (TypeError, ValueError):
            raise ModelSourceError(f"{where}: value_range is [low, high]; got {vr!r}") from None
        if not lo < hi:
            raise ModelSourceError(f"{where}: value_range is [low, high] with low < high; got {vr!r}")
        upd["value_range"] = (lo, hi)
    resize, crop = settings.get("resize"), settings.get("crop")
    if resize is not None and resize not in RESIZE_MODES:
        raise ModelSourceError(f"{where}: resize {resize!r} is not one of {', '.join(RESIZE_MODES)} "
                               f"{did_you_mean(resize, RESIZE_MODES)}")
    if crop is not None and crop not in CROP_MODES:  # crop alone: none keeps the whole image undistorted (pad)
        raise ModelSourceError(f"{where}: crop {crop!r} is not one of {', '.join(CROP_MODES)} {did_you_mean(crop, CROP_MODES)}")
    if resize is None and crop is not None:
        resize = base.resize if CROP_OF[base.resize] == crop else ("shorter" if crop == "center" else "pad")
    if resize is not None:
        if crop is not None and CROP_OF[resize] != crop:
            raise ModelSourceError(f"{where}: resize: {resize} goes with crop: {CROP_OF[resize]}, not {crop} "
                                   "(shorter cuts the centre; stretch and pad keep the whole image)")
        upd["resize"] = resize
    return replace(base, **upd) if upd else base


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
        a converted copy, so one run in bfloat16 never changes the model another run sees.
        Always in eval mode (set on every call): a module its user put back in train mode after
        loading still runs without dropout and with BatchNorm's running statistics."""
        if dtype == torch.float32:
            return self.module.to(device).eval()
        key = (str(device), dtype)
        copies = self.__dict__.setdefault("_copies", {})
        if key not in copies:
            copies[key] = copy.deepcopy(self.module).to(device=device, dtype=dtype)
        return copies[key].eval()

    def layers(self) -> dict[str, tuple[int, ...]]:
        """Every addressable layer with its per-sample output shape, in execution order: a module path,
        or ``PATH@N`` for the N-th call of a module the forward pass calls more than once."""
        if self._layers is None:
            self._layers = probe_layers(self.module, (3, *self.preprocess.size))
        return self._layers


def model_logits(out) -> torch.Tensor:
    """The logits in a model's output (:func:`~interpgram.backends.models.outputs.logits_of`), or a
    :class:`ModelSourceError` naming what the forward returned."""
    try:
        return logits_of(out)
    except TypeError as e:
        raise ModelSourceError(str(e)) from None


def probe_layers(module: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """One forward pass of a zero image in eval mode: {layer: per-sample output shape} for every
    module that returns a tensor, in the order the calls finish. A module called once is its path; a
    module called k > 1 times is listed once per call, ``PATH@1`` … ``PATH@k``. The output must hold
    logits (:func:`model_logits`)."""
    calls: list[tuple[str, Optional[tuple[int, ...]]]] = []  # (module path, shape or None) per call, in order

    def hook(name):
        def fn(_m, _i, out):
            calls.append((name, tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None))
        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in module.named_modules() if name]
    try:
        p = next(module.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        with torch.no_grad():
            model_logits(module.eval()(torch.zeros(1, *input_shape, device=device)))
    finally:
        for h in handles:
            h.remove()
    total: dict[str, int] = {}
    for name, _ in calls:
        total[name] = total.get(name, 0) + 1
    shapes: dict[str, tuple[int, ...]] = {}
    seen: dict[str, int] = {}
    for name, shape in calls:
        seen[name] = seen.get(name, 0) + 1
        if shape is not None:
            shapes[name if total[name] == 1 else f"{name}@{seen[name]}"] = shape
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
    preprocess: Mapping = field(default_factory=dict)  # the spec's size/mean/std/resize/crop: override the source's

    def path(self, p: str) -> Path:
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else self.base_dir / q


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


def with_preprocess_digest(model: LoadedModel) -> LoadedModel:
    """Fold ``model.preprocess`` into its digest (the result cache's key): preprocessing set by a user
    (a spec's keys, a factory's metadata, the Python API) changes every number, so it changes the key."""
    p = model.preprocess
    h = hashlib.sha256(f"{model.digest}|{p.size}|{p.mean}|{p.std}|{p.value_range}|{p.resize}".encode())
    model.digest = h.hexdigest()[:32]
    return model


def from_module(module: nn.Module, *, name: Optional[str] = None, size: int | tuple[int, int] = 224,
                mean: tuple[float, ...] = (0.0, 0.0, 0.0), std: tuple[float, ...] = (1.0, 1.0, 1.0),
                value_range: tuple[float, float] = (0.0, 1.0), classes: Optional[list[str]] = None,
                resize: Optional[str] = None, crop: Optional[str] = None) -> LoadedModel:
    """A :class:`LoadedModel` of a module already in memory (the Python API).

    ``size``, ``mean``, ``std``, ``resize`` (``shorter`` | ``stretch`` | ``pad``) and ``crop`` (``center`` |
    ``none``) are a spec's ``model:`` keys of the same names. Like every loaded model, ``module`` is
    put in eval mode and its parameters stop requiring gradients. Without ``classes`` the output's
    width gives ``class0 … classN``. The digest (the result cache's key) covers the weights, the
    preprocessing, the class's qualified name and, where Python can read it, the source of its
    ``forward``: editing the class in a notebook does not hit stale results. A setting that is not
    valid raises :class:`ModelSourceError` saying what is."""

    pre = make_preprocess(Preprocess(), {"size": size, "mean": mean, "std": std, "value_range": value_range,
                                         "resize": resize, "crop": crop}, "Model")
    if classes is None:
        classes = [f"class{i}" for i in range(_output_width(module, pre.size))]
    cls = type(module)
    model = finish(name or f"memory:{cls.__name__}", module, pre, list(classes))
    try:
        code = inspect.getsource(cls)
    except (OSError, TypeError):  # defined where Python keeps no source (an exec'd string)
        code = ""
    h = hashlib.sha256(f"{model.digest}|{cls.__module__}.{cls.__qualname__}|{code}".encode())
    model.digest = h.hexdigest()[:32]
    return with_preprocess_digest(model)


def _output_width(module: nn.Module, size: tuple[int, int]) -> int:
    """The number of outputs of ``module`` on one zero image of ``size`` (its class count)."""
    with torch.no_grad():
        p = next(module.parameters(), None)
        x = torch.zeros(1, 3, *size, device=p.device if p is not None else "cpu")
        return model_logits(module.eval()(x)).shape[-1]


def import_callable(ref: str, ctx: SourceContext, what: str):
    """``MODULE:CALLABLE`` of a model source or factory (only with ``ctx.allow_code``)."""
    try:
        return _import_callable(ref, base_dir=ctx.base_dir, allow_code=ctx.allow_code, what=what)
    except CodeError as e:
        raise ModelSourceError(str(e)) from None


def from_callable_result(name: str, out, ctx: SourceContext) -> tuple[nn.Module, dict]:
    """A factory's (or ``python:`` callable's) return value as (module, metadata): an ``nn.Module``, or a
    pair ``(module, {...})`` whose dict may hold :data:`META_KEYS` — ``size`` (an int or (H, W)),
    ``mean`` and ``std`` (three numbers each), ``value_range`` ((low, high), the range pixels are
    mapped to before the normalisation), ``resize`` / ``crop`` (as in a spec) and ``classes`` (one
    name per output). An unknown key is an error naming the nearest valid one."""
    meta = {}
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping):
        out, meta = out
    if not isinstance(out, nn.Module):
        raise ModelSourceError(f"{name}: the factory returned {type(out).__name__}, not a torch.nn.Module")
    unknown = [str(k) for k in meta if k not in META_KEYS]
    if unknown:
        raise ModelSourceError(f"{name}: the factory's metadata has the unknown key {unknown[0]!r} "
                               f"{did_you_mean(unknown[0], META_KEYS, listing='keys')}")
    return out, dict(meta)


def meta_model(name: str, module: nn.Module, meta: dict, ctx: SourceContext) -> LoadedModel:
    """The :class:`LoadedModel` of a factory's module: its metadata (see :func:`from_callable_result`; a
    model that states nothing gets 224 px, raw [0, 1] pixels, a centre crop, and says so in its notes),
    then the spec's preprocessing keys over it, then its class names (``labels:`` first)."""
    pre = make_preprocess(Preprocess(), meta, f"{name}: the factory's metadata")
    notes = []
    stated = [k for k in PREPROCESS_KEYS if meta.get(k) is not None or ctx.preprocess.get(k) is not None]
    if not any(k in stated for k in ("size", "mean", "std")):
        notes.append(f"{name} states no preprocessing: inputs are {pre.size[1]}×{pre.size[0]} px, raw [0, 1] pixels; "
                     "set model: {size, mean, std} in the spec (or return them from the factory)")
    pre = make_preprocess(pre, ctx.preprocess, "model")
    classes = meta.get("classes")
    if ctx.labels:
        classes = read_labels(ctx.path(ctx.labels))
    if classes is None:
        try:
            classes = [f"class{i}" for i in range(_output_width(module, pre.size))]
        except RuntimeError as e:  # a shape mismatch: the model takes another input size
            said = "the spec's model.size" if ctx.preprocess.get("size") is not None else (
                "the factory's size" if meta.get("size") is not None else "the default size, as nothing states one")
            raise ModelSourceError(
                f"{name} fails on a {pre.size[1]}×{pre.size[0]} input ({said}): {str(e).splitlines()[0]}; "
                "set model: {size: N} (or [height, width]) in the spec to the size it takes") from None
    return with_preprocess_digest(finish(name, module, pre, list(classes), notes))


def check_regular_file(path: Path, what: str) -> None:
    """Raise :class:`ModelSourceError` unless ``path`` is a readable regular file: not found, a symlink
    loop, a folder, a named pipe or device (which would block or never end), each said as such."""
    problem = describe_path_problem(path)
    if problem:
        raise ModelSourceError(f"{what} {path} {problem}")


#: what ``torch.load`` and safetensors raise on a damaged or foreign file (torch.load's error surface
#: is wide: a truncated zip is an OSError, a random file a KeyError or UnpicklingError)
LOAD_ERRORS: tuple[type[BaseException], ...] = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError,
                                                 ValueError, TypeError, IndexError, AttributeError, zipfile.BadZipFile,
                                                 SafetensorError)  # safetensors' own error (not an Exception subclass)


def sniff_tensor_file(path: Path) -> tuple[str, str | None]:
    """(kind, problem) of a weights file from its bytes, without unpickling anything.

    kind: ``"zip"`` (torch.save since 1.6), ``"pickle"`` (legacy torch.save), ``"safetensors"`` or
    ``"unknown"``; problem: why it cannot be a complete file of that kind (``None`` if it may be)."""
    size = path.stat().st_size
    if size == 0:
        return "unknown", "is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return "zip", (f"is truncated: a torch.save checkpoint whose end (the zip directory) is missing "
                           f"({size:,} bytes on disk); copy or download it again")
        return "zip", None
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle", None
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= 100_000_000 and head[8:9] == b"{":
            if size < 8 + n:
                return "safetensors", (f"is truncated: a safetensors file whose header alone needs {8 + n:,} bytes "
                                       f"but the file has {size:,}")
            try:
                with open(path, "rb") as f:
                    f.seek(8)
                    header = json.loads(f.read(n))
                end = max((int(v["data_offsets"][1]) for k, v in header.items()
                           if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
            except (ValueError, KeyError, TypeError, IndexError):
                return "safetensors", "is a damaged safetensors file (its JSON header cannot be read)"
            if size < 8 + n + end:
                return "safetensors", (f"is truncated: its safetensors header describes {8 + n + end:,} bytes but "
                                       f"the file has {size:,}; copy or download it again")
            return "safetensors", None
    return "unknown", (f"is not a PyTorch checkpoint or safetensors file (it begins with {head[:16]!r}); save "
                       "model.state_dict() with torch.save or safetensors")


def load_weights_file(path: Path, what: str = "weights file") -> dict[str, torch.Tensor]:
    """A state_dict from a safetensors file or a torch.save checkpoint (chosen by the file's bytes, not
    its name), never unpickling arbitrary objects (``torch.load(weights_only=True)``). A missing,
    truncated, foreign or non-state_dict file raises :class:`ModelSourceError` naming it and what is wrong."""
    path = Path(path)
    check_regular_file(path, what)
    try:
        kind, problem = sniff_tensor_file(path)
    except OSError as e:
        raise ModelSourceError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    if problem:
        raise ModelSourceError(f"{what} {path} {problem}")
    try:
        if kind == "safetensors":
            sd = load_file(str(path), device="cpu")
        else:
            with open(path, "rb") as fh:  # a file object: torch.load would otherwise go by the name's suffix
                sd = torch.load(fh, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if isinstance(e, pickle.UnpicklingError) and "weights only" in str(e).lower():
            raise ModelSourceError(
                f"{what} {path} is not a plain state_dict (loading with weights_only=True refused it: {first}); "
                "save model.state_dict() or use safetensors") from None
        raise ModelSourceError(f"{what} {path} is damaged or truncated ({kind} file; {type(e).__name__}: {first}); "
                               "copy or download it again") from None
    if not isinstance(sd, Mapping):
        raise ModelSourceError(f"{what} {path} holds a {type(sd).__name__}, not a state_dict "
                               "(save model.state_dict())")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        nested = [k for k in bad if isinstance(sd[k], Mapping)]
        hint = (f"; it looks like a training checkpoint: save checkpoint[{nested[0]!r}] on its own"
                if nested else "")
        raise ModelSourceError(f"{what} {path} is not a flat state_dict (name -> tensor): {len(bad)} entries are "
                               f"not tensors, e.g. {[str(k) for k in bad[:_SHOW]]}{hint}")
    return dict(sd)


def fit_state_dict(module: nn.Module, sd: Mapping[str, torch.Tensor], path: Path, what: str) -> None:
    """Load ``sd`` into ``module`` strictly, or raise :class:`ModelSourceError` listing the missing and
    unexpected keys and every shape mismatch as ``key: expected (..) vs found (..)`` (the first few)."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: expected {tuple(own[k].shape)} vs found {tuple(sd[k].shape)}"
              for k in own if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys {missing[:_SHOW]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys {unexpected[:_SHOW]}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: " + "; ".join(shapes[:_SHOW])
                        + ("; …" if len(shapes) > _SHOW else ""))
    if problems:
        hint = ""
        for pre in ("module.", "model.", "_orig_mod."):
            if unexpected and all(k.startswith(pre) for k in unexpected) and \
                    {k[len(pre):] for k in unexpected} >= set(missing):
                hint = f" (every key has the prefix {pre!r}: save the inner model's state_dict, without it)"
                break
        raise ModelSourceError(f"{path} does not fit {what}: " + "; ".join(problems) + hint)
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # what the key/shape checks above cannot see (a module's own load hook)
        raise ModelSourceError(f"{path} does not fit {what}: {str(e).splitlines()[0]}") from None


def zoo_weights_and_labels(ctx: SourceContext, module: nn.Module, classes: list[str], what: str) -> list[str]:
    """A model zoo's module (torchvision, timm) with the spec's ``weights:`` file loaded into it (checked
    key by key) and its ``labels:`` file read (one name per output). Returns the class names."""
    if ctx.weights:
        path = ctx.path(ctx.weights)
        fit_state_dict(module, load_weights_file(path), path, what)
    if ctx.labels:
        names = read_labels(ctx.path(ctx.labels))
        if len(names) != len(classes):
            raise ModelSourceError(f"labels file {ctx.path(ctx.labels)} has {len(names)} names, but {what} has "
                                   f"{len(classes)} outputs")
        classes = names
    return classes


def read_labels(path: Path) -> list[str]:
    """Class names from a text file, one per line (blank lines skipped); a missing, binary or empty
    file raises :class:`ModelSourceError` naming it."""
    check_regular_file(path, "labels file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ModelSourceError(f"labels file {path} is not UTF-8 text (byte {e.start}: {e.reason}); "
                               "give one class name per line") from None
    except OSError as e:
        raise ModelSourceError(f"labels file {path} cannot be read: {e.strerror or e}") from None
    names = [l.strip() for l in text.splitlines() if l.strip()]
    if not names:
        raise ModelSourceError(f"labels file {path} holds no class names (one name per line)")
    return names


def parse_source(source: str) -> tuple[str, str]:
    prefix, sep, ref = source.partition(":")
    if prefix in MODEL_SOURCES and (sep or MODEL_SOURCES.get(prefix).bare):
        return prefix, ref
    choices = [p if MODEL_SOURCES.get(p).bare else f"{p}:" for p in MODEL_SOURCES.names()]
    raise ModelSourceError(f"unknown model source {source!r} {did_you_mean(prefix, choices, listing='sources')}")


_CACHE: dict[tuple, LoadedModel] = {}


def _signature(p: Path) -> tuple:
    try:
        st = os.stat(p)
    except OSError as e:
        return (str(p), e.errno)
    return (str(p), st.st_size, st.st_mtime_ns, st.st_ino)


def _changes(old: Preprocess, new: Preprocess) -> str:
    """``size 32×32 (the source's 64×64), resize pad (the source's shorter)``: what a spec changed."""
    show = {"size": lambda v: f"{v[1]}×{v[0]}", "mean": lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")",
            "std": lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")", "resize": str}
    return ", ".join(f"{k} {f(getattr(new, k))} (the source's {f(getattr(old, k))})" for k, f in show.items()
                     if getattr(new, k) != getattr(old, k))


def load_model(source: str, *, weights: str | None = None, factory: str | None = None, labels: str | None = None,
               allow_code: bool = False, base_dir: str | Path | None = None,
               preprocess: Optional[Mapping] = None) -> LoadedModel:
    """Load a model by reference (memoised per process).

    ``preprocess``: a spec's ``size``, ``mean``, ``std``, ``resize``, ``crop`` (None or absent: what the
    source states), applied over the source's own preprocessing; a value that is not valid raises
    :class:`ModelSourceError` saying what is."""
    prefix, ref = parse_source(source)
    base = Path(base_dir) if base_dir else Path.cwd()
    settings = {k: v for k, v in (preprocess or {}).items() if v is not None}
    unknown = [k for k in settings if k not in PREPROCESS_KEYS]
    if unknown:
        raise ModelSourceError(f"unknown preprocessing key {unknown[0]!r} {did_you_mean(unknown[0], PREPROCESS_KEYS)}")
    ctx = SourceContext(ref, weights, factory, labels, allow_code, base, settings)
    # the files' sizes and modification times are part of the key: a file replaced (or damaged) since
    # is loaded again, never served from memory
    files = [ctx.path(ref)] if prefix == "file" else []
    files += [ctx.path(x) for x in (weights, labels) if x]
    key = (prefix, ref, weights, factory, labels, allow_code, str(base), tuple(_signature(f) for f in files),
           repr(sorted(settings.items())))
    if key not in _CACHE:
        model = MODEL_SOURCES.get(prefix).load(ctx)
        if settings:  # a source that does not read ctx.preprocess (builtin, zoo): the spec's keys over its own
            pre = make_preprocess(model.preprocess, settings, "model")
            if pre != model.preprocess:
                model = replace(model, preprocess=pre, _layers=None,
                                notes=model.notes + [f"preprocessing set by the spec: {_changes(model.preprocess, pre)}"])
            model = with_preprocess_digest(model)
        model.layers()  # the probe, now: a forward whose output holds no logits is a ModelSourceError callers report
        _CACHE[key] = model
    return _CACHE[key]
