"""Collect: stream a data set through a model into a resumable :class:`~.store.AtlasStore`.

For every image of the data set and every requested layer this stores, at the image's sampled
position(s) of the layer's grid (REFERENCE §3.1):

- ``<layer>/act`` (C,) float32: the activation vector h there;
- ``<layer>/xy`` (2,) int16: the position (x, y) in the layer's grid;
- ``<layer>/attr`` (K,) float32: the attribution of that vector to every logit,
  ``attr_k = Σ_c h_c · ∂logit_k/∂h_c`` (activation × gradient) — with ``attribution=True``;

and per image ``image`` (int64, the data-set index), ``label`` (int64, -1 when unknown) and
``logits`` (K,) float32. Rows of a layer field are image-major: with ``positions: all`` image i owns
rows ``i·H·W … (i+1)·H·W − 1`` in raster order (row ``i·H·W + y·W + x``).

Positions
  ``random``: one (u, v) uniform in [0, 1)² per image, a pure function of (seed, image index)
  (:func:`sample_uv`: SplitMix64 of the seed and index, not a global RNG stream), mapped to each
  layer's grid as ``x = floor(u·W_l)``, ``y = floor(v·H_l)``: the samples of different layers are at
  the same place in the image (layer comparison). ``centre``: (W//2, H//2). ``all``: every position.
  A layer with a 1-d output (C,) has the single position (0, 0).

Attribution to all K classes at once (never one backward pass per class per position)
  Forward mode, as the article's notebook does: the layer's output h is made a dual tensor by a
  forward hook, with tangent t = zeros except h at each image's sampled position; one forward pass
  then carries J_{logits←h}·t = (Σ_c h_c ∂logit_k/∂h_c)_k to the logits' tangent: all K attributions
  of every image of the batch in one extra pass per layer. With ``positions: all`` a layer has P = H·W
  positions per image and the rule is, per layer: **P < K → P forward-mode passes** (one per
  position, for the whole batch); **P ≥ K → K reverse passes**, shared by every such layer: one
  ``autograd.grad`` of Σ_batch logit_k per class reaches all of them, and attr[p, k] = Σ_c
  A[c, p]·∂logit_k/∂A[c, p] at every position at once. (With one position per image forward mode
  always wins unless K = 1.) Forward-mode AD was checked for the built-in model (conv, eval-mode
  BatchNorm, ReLU, max-pool, average pool, linear) and InceptionV1 (SAME padding, local response
  norm, concatenation) against reverse-mode gradients: both work, no fallback is needed there.
  A model with an op that has no forward-mode derivative falls back to the reverse rule for that
  layer, with a warning that says so.

Work, resume and memory
  The images are split into chunks of ``spec.chunk``; :func:`_collect_chunk` computes one chunk from
  ``shared`` alone (a module-level pure function, so an engine can run it elsewhere) and the driver
  writes each chunk to the store as it arrives. The store lives in ``root/<digest>``, the digest being
  a sha256 over the model's weight digest, the data set's identity, the spec (all fields but
  ``batch_size``, an execution setting like the device) and :data:`CODE_VERSION`. A complete store
  is returned at once; otherwise only the missing chunks are computed. Every number depends only on
  the chunk's images (positions from (seed, index), batches start at the chunk's first image), so a
  resumed collection gives the same arrays as an uninterrupted one. At most one chunk's arrays are
  held by the default (in-order, in-process) engine, so memory does not grow with ``n``. A Ctrl-C or
  crash leaves the done chunks valid and the interrupted one unmarked: running again resumes.
"""
from __future__ import annotations

import hashlib
import json
import sys
import warnings
from dataclasses import KW_ONLY, asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from tqdm import tqdm

from interpgram.backends.data.datasets import Dataset, open_dataset
from interpgram.backends.execute.device import pick_device, run_batched
from interpgram.backends.execute.engines import LocalEngine
from interpgram.backends.kernels.atlas.store import MANIFEST, AtlasStore, StoreError
from interpgram.backends.kernels.capture import hooks, logits_of
from interpgram.backends.kernels.frozen import channels_last, frozen_copy
from interpgram.grammar import did_you_mean

CODE_VERSION = "atlas-collect-1"
POSITIONS = ("random", "centre", "all")
PER_IMAGE_FIELDS = ("image", "label", "logits")
CHUNK_WARN_BYTES = 4 << 30  # a chunk whose arrays exceed this gets a warning to lower `chunk`

__all__ = ["CODE_VERSION", "CollectSpec", "POSITIONS", "attribution_rule", "collect", "collection_digest",
           "collection_meta", "grid_xy", "sample_uv", "store_path"]

Progress = Union[bool, None, Callable[[str, int, int], None]]


# ------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class CollectSpec:
    """What to collect. ``dataset`` and ``n`` may be given by position, everything else by name."""

    dataset: str
    n: int
    _: KW_ONLY
    split: str = "train"
    layers: tuple[str, ...]
    positions: str = "random"  # random | centre | all
    seed: int = 0
    chunk: int = 2048
    batch_size: int = 256
    attribution: bool = True

    def __post_init__(self):
        if isinstance(self.layers, str):
            object.__setattr__(self, "layers", (self.layers,))
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers or not all(isinstance(l, str) and l for l in self.layers):
            raise ValueError(f"layers must be a non-empty list of layer names, got {self.layers!r}")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers has duplicates: {list(self.layers)}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        for name in ("n", "chunk", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a whole number ≥ 1, got {v!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got {self.seed!r}")


# ------------------------------------------------------------------------------ positions
_M64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (wrapping uint64 arithmetic), elementwise."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_uv(seed: int, indices: Iterable[int]) -> np.ndarray:
    """(N, 2) float64 in [0, 1): each image's (u, v), a pure function of (seed, image index)."""
    idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices, dtype=np.uint64)
    s = _splitmix64(np.array([int(seed) & _M64], dtype=np.uint64))
    with np.errstate(over="ignore"):
        base = s + idx * np.uint64(2)
        hu = _splitmix64(base)
        hv = _splitmix64(base + np.uint64(1))
    scale = 2.0 ** -53
    return np.stack([(hu >> np.uint64(11)).astype(np.float64) * scale,
                     (hv >> np.uint64(11)).astype(np.float64) * scale], axis=1)


def grid_xy(uv: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) int64 arrays: ``x = floor(u·W)``, ``y = floor(v·H)`` (clipped into the grid)."""
    x = np.minimum(np.floor(uv[:, 0] * w).astype(np.int64), w - 1)
    y = np.minimum(np.floor(uv[:, 1] * h).astype(np.int64), h - 1)
    return x, y


# ------------------------------------------------------------------------------ per-layer plan
@dataclass(frozen=True)
class _Layer:
    name: str
    c: int
    h: int
    w: int
    flat: bool  # the module returns (B, C), not (B, C, H, W)
    p: int  # positions per image
    mode: Optional[str]  # "jvp" | "reverse" | None (no attribution)


def attribution_rule(p: int, k: int) -> str:
    """How a layer with ``p`` positions per image gets its attribution to ``k`` logits: ``jvp`` (p
    forward-mode passes) when p < k, else ``reverse`` (k backward passes, shared between layers)."""
    return "jvp" if p < k else "reverse"


def _plan(model, spec: CollectSpec) -> list[_Layer]:
    shapes = model.layers()
    k = len(model.classes)
    out = []
    for name in spec.layers:
        if name not in shapes:
            raise ValueError(f"the model {model.name} has no layer {name!r} {did_you_mean(name, list(shapes), listing='layers')}")
        s = tuple(shapes[name])
        if len(s) == 3:
            c, h, w, flat = s[0], s[1], s[2], False
        elif len(s) == 1:
            c, h, w, flat = s[0], 1, 1, True
        else:
            raise ValueError(f"layer {name!r} has per-sample shape {s}; atlases need (C, H, W) or (C,) outputs")
        if max(h, w) > 32767:
            raise ValueError(f"layer {name!r} is {h}×{w}: positions are stored as int16")
        p = h * w if spec.positions == "all" else 1
        mode = attribution_rule(p, k) if spec.attribution else None
        out.append(_Layer(name, c, h, w, flat, p, mode))
    return out


def _fields(plan: list[_Layer], k: int, attribution: bool) -> tuple[dict, dict]:
    fields: dict[str, tuple[tuple[int, ...], str]] = {"image": ((), "int64"), "label": ((), "int64"),
                                                      "logits": ((k,), "float32")}
    rows: dict[str, int] = {"image": 1, "label": 1, "logits": 1}
    for l in plan:
        fields[f"{l.name}/act"] = ((l.c,), "float32")
        fields[f"{l.name}/xy"] = ((2,), "int16")
        rows[f"{l.name}/act"] = rows[f"{l.name}/xy"] = l.p
        if attribution:
            fields[f"{l.name}/attr"] = ((k,), "float32")
            rows[f"{l.name}/attr"] = l.p
    return {f: (tuple(s), d) for f, (s, d) in fields.items()}, rows


# ------------------------------------------------------------------------------ identity
def collection_meta(model, spec: CollectSpec, dataset: Dataset) -> dict:
    """What the stored arrays depend on (the store's ``meta``; :func:`collection_digest` hashes it)."""
    s = asdict(spec)
    s.pop("batch_size")  # an execution setting (like the device), not part of what is collected
    s["layers"] = list(spec.layers)
    pre = model.preprocess
    return {"kind": "atlas collection", "code_version": CODE_VERSION, "model_digest": model.digest,
            "n_classes": len(model.classes),
            "preprocess": {"size": list(pre.size), "mean": list(pre.mean), "std": list(pre.std),
                           "value_range": list(pre.value_range)},
            "dataset": dataset.identity, "spec": s}


def collection_digest(meta: dict) -> str:
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def store_path(model, spec: CollectSpec, root: str | Path, *, base_dir=None, allow_code: bool = False) -> Path:
    """The folder :func:`collect` uses for this model, spec and data set (computes nothing)."""
    ds = open_dataset(spec.dataset, n=spec.n, split=spec.split, size=model.preprocess.fit, base_dir=base_dir,
                      allow_code=allow_code)
    return Path(root) / collection_digest(collection_meta(model, spec, ds))


# ------------------------------------------------------------------------------ one chunk
_logits = logits_of  # the one reading of a forward's output (tensor, .logits, ['logits'], a tuple's first tensor)


def _as4d(t: torch.Tensor) -> torch.Tensor:
    return t[:, :, None, None] if t.dim() == 2 else t


def _primal(t: torch.Tensor) -> torch.Tensor:
    return fwAD.unpack_dual(t).primal


class _NoForwardAD(RuntimeError):
    pass


def _positions(l: _Layer, spec: CollectSpec, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) per image for random/centre (arrays of length B)."""
    b = uv.shape[0]
    if spec.positions == "random":
        return grid_xy(uv, l.h, l.w)
    return np.full(b, l.w // 2, np.int64), np.full(b, l.h // 2, np.int64)


def _batch(module, preprocess, x01: torch.Tensor, index: np.ndarray, plan: list[_Layer], spec: CollectSpec,
           k: int, fallback: set) -> dict[str, np.ndarray]:
    """The arrays of one batch (rows of every field for images ``index``)."""
    dev = next((p.device for p in module.parameters()), x01.device)
    x = channels_last(preprocess(x01.to(dev)))
    b = x.shape[0]
    ar = torch.arange(b, device=dev)
    uv = sample_uv(spec.seed, index) if spec.positions == "random" else np.zeros((b, 2))
    pos = {l.name: _positions(l, spec, uv) for l in plan if spec.positions != "all"}
    names = [l.name for l in plan]
    rev = [l for l in plan if l.mode == "reverse" or (l.mode == "jvp" and l.name in fallback)]
    jvp = [l for l in plan if l.mode == "jvp" and l.name not in fallback]

    def tangent_at(l: _Layer, p: Optional[int]):
        """The hook that makes layer ``l``'s output dual: tangent = h at each image's position (p: the
        flat position for all images; None: each image's sampled position)."""
        def make(out: torch.Tensor) -> torch.Tensor:
            if out.dim() == 2:
                t = out.detach().clone()
            else:
                t = torch.zeros_like(out)
                if p is None:
                    xs, ys = (torch.as_tensor(v, device=out.device) for v in pos[l.name])
                    t[ar, :, ys, xs] = out.detach()[ar, :, ys, xs]
                else:
                    y, xx = divmod(p, l.w)
                    t[:, :, y, xx] = out.detach()[:, :, y, xx]
            return fwAD.make_dual(out, t)
        return make

    acts: Optional[dict[str, torch.Tensor]] = None
    logits: Optional[torch.Tensor] = None
    attr: dict[str, torch.Tensor] = {}

    # reverse-mode layers (and the capture): one forward with the graph, K backward passes for all of them
    if rev:
        xin = x.detach().requires_grad_(True)
        with torch.enable_grad(), hooks(module, names) as store:
            out = _logits(module(xin))
        acts, logits = dict(store), out
        graph = [acts[l.name] for l in rev]
        maps = [torch.empty(b, l.h * l.w, k, device=dev) for l in rev]
        for j in range(k):
            grads = torch.autograd.grad(out[:, j].sum(), graph, retain_graph=j < k - 1, allow_unused=True)
            for m, a, g in zip(maps, graph, grads):
                if g is None:
                    m[:, :, j] = 0
                else:
                    m[:, :, j] = (_as4d(a.detach()) * _as4d(g)).sum(1).flatten(1)
        for l, m in zip(rev, maps):
            if spec.positions == "all":
                attr[l.name] = m.reshape(b * l.p, k)
            else:
                xs, ys = (torch.as_tensor(v, device=dev) for v in pos[l.name])
                attr[l.name] = m[ar, ys * l.w + xs]
        acts = {n: a.detach() for n, a in acts.items()}
        logits = logits.detach()

    # forward-mode layers: one dual pass per (layer, position set); the first pass also captures
    for l in jvp:
        tangents = []
        for p in (range(l.p) if spec.positions == "all" else [None]):
            capture = names if acts is None else []
            try:
                with torch.no_grad(), fwAD.dual_level(), hooks(module, capture, {l.name: tangent_at(l, p)}) as store:
                    out = _logits(module(x))
                    t = fwAD.unpack_dual(out).tangent
                    if acts is None:
                        acts = {n: _primal(a).detach().clone() for n, a in store.items()}
                        logits = _primal(out).detach().clone()
                    t = torch.zeros(b, k, device=dev) if t is None else t.detach().clone()
            except (NotImplementedError, RuntimeError) as e:
                msg = str(e).lower()
                if not any(s in msg for s in ("forward ad", "forward mode", "forward-mode", "jvp", "dual")):
                    raise
                raise _NoForwardAD(f"{l.name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
            tangents.append(t)
        attr[l.name] = tangents[0] if len(tangents) == 1 else torch.stack(tangents, 1).reshape(b * l.p, k)

    if acts is None:  # no attribution: one plain forward
        with torch.no_grad(), hooks(module, names) as store:
            out = _logits(module(x))
        acts, logits = {n: a.detach() for n, a in store.items()}, out.detach()

    if logits.dim() != 2 or logits.shape[1] != k:
        raise RuntimeError(f"the model returns logits of shape {tuple(logits.shape)}, but it has {k} classes")
    res: dict[str, np.ndarray] = {"logits": logits.float().cpu().numpy()}
    for l in plan:
        a = _as4d(acts[l.name])
        if spec.positions == "all":
            rows = a.flatten(2).transpose(1, 2).reshape(b * l.p, l.c)
            gy, gx = np.divmod(np.arange(l.p), l.w)
            xy = np.tile(np.stack([gx, gy], 1), (b, 1))
        else:
            xs, ys = pos[l.name]
            rows = a[ar, :, torch.as_tensor(ys, device=dev), torch.as_tensor(xs, device=dev)]
            xy = np.stack([xs, ys], 1)
        res[f"{l.name}/act"] = rows.float().cpu().numpy()
        res[f"{l.name}/xy"] = xy.astype(np.int16)
        if l.name in attr:
            res[f"{l.name}/attr"] = attr[l.name].float().cpu().numpy()
    return res


def _collect_chunk(shared: dict, chunk_index: int) -> dict[str, np.ndarray]:
    """Every field's rows of chunk ``chunk_index``. Pure: depends only on ``shared`` (model, spec,
    dataset, device, plan) and the index, so an engine may run it in another process or machine."""
    model, spec, ds, plan = shared["model"], shared["spec"], shared["dataset"], shared["plan"]
    dev = pick_device(shared.get("device", "auto"))
    # the frozen, BatchNorm-folded, channels-last copy (the same activations and gradients to ~1e-6)
    module = frozen_copy(model, dev, [l.name for l in plan])
    k = len(model.classes)
    fallback: set = set(shared.get("fallback", ()))
    first = chunk_index * spec.chunk
    images = range(first, min(first + spec.chunk, len(ds)))
    m = len(images)
    if m <= 0:
        raise IndexError(f"chunk {chunk_index} is outside the data set of {len(ds)} images")
    fields, rows = _fields(plan, k, spec.attribution)
    out = {f: np.empty((m * rows[f], *s), dtype=d) for f, (s, d) in fields.items()}

    def run(start: int, stop: int) -> None:
        idx = np.arange(images.start + start, images.start + stop, dtype=np.int64)
        x01, labels = ds.load_labeled(idx.tolist())
        while True:
            try:
                res = _batch(module, model.preprocess, x01, idx, plan, spec, k, fallback)
                break
            except _NoForwardAD as e:
                name = str(e).split(":", 1)[0]
                warnings.warn(f"atlas collection: forward-mode AD fails in the model after layer {name} ({e}); "
                              "its attribution falls back to the reverse rule (one backward pass per class)",
                              RuntimeWarning, stacklevel=2)
                fallback.add(name)
                shared.setdefault("fallback", set()).add(name)
        out["image"][start:stop] = idx
        out["label"][start:stop] = labels.numpy()
        out["logits"][start:stop] = res["logits"]
        for l in plan:
            for f in ("act", "xy", "attr"):
                key = f"{l.name}/{f}"
                if key in out:
                    out[key][start * l.p: stop * l.p] = res[key]
        on_batch = shared.get("on_batch")
        if on_batch is not None:
            on_batch(stop - start)

    run_batched(run, m, spec.batch_size)
    return out


# ------------------------------------------------------------------------------ the driver
class _Reporter:
    """Progress: a tqdm bar on stderr (``progress=True``; it also moves per batch when the chunks run in
    this process), a callable ``progress(stage, done, total)`` called with the images *stored* so far
    (at the start and after each chunk), or nothing."""

    def __init__(self, progress: Progress, total: int, initial: int, desc: str):
        self.fn = progress if callable(progress) else None
        self.desc, self.total, self.done, self.shown = desc, total, initial, initial
        self.bar = None
        if self.fn is not None:
            self.fn(desc, initial, total)
        elif progress:
            self.bar = tqdm(total=total, initial=initial, unit="img", desc=desc, file=sys.stderr, dynamic_ncols=True,
                            smoothing=0.1)

    def batch(self, k: int) -> None:
        """``k`` more images computed (not stored yet): moves the bar only."""
        if self.bar is not None and self.shown + k <= self.total:
            self.bar.update(k)
            self.shown += k

    def stored(self, done: int) -> None:
        self.done = done
        if self.fn is not None:
            self.fn(self.desc, done, self.total)
        if self.bar is not None:
            if done != self.shown:
                self.bar.update(done - self.shown)
            self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def collect(model, spec: CollectSpec, root: str | Path, *, device: str = "auto", base_dir=None,
            progress: Progress = True, engine=None, allow_code: bool = False) -> AtlasStore:
    """Collect ``spec`` for ``model`` into ``root/<digest>`` (see the module docstring) and return the
    complete store. Resumes a partial store; a complete one is returned without running the model."""
    ds = open_dataset(spec.dataset, n=spec.n, split=spec.split, size=model.preprocess.fit, base_dir=base_dir,
                      allow_code=allow_code)
    meta = collection_meta(model, spec, ds)
    path = Path(root) / collection_digest(meta)
    if (path / MANIFEST).exists():
        try:
            existing = AtlasStore.load(path)
        except StoreError:
            existing = None  # AtlasStore.open below says what is wrong
        if existing is not None and existing.complete and existing.meta == json.loads(json.dumps(meta)):
            return existing
    plan = _plan(model, spec)
    k = len(model.classes)
    fields, rows = _fields(plan, k, spec.attribution)
    per_image = sum(rows[f] * int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for f, (s, d) in fields.items())
    if per_image * spec.chunk > CHUNK_WARN_BYTES:
        warnings.warn(f"one chunk of {spec.chunk} images holds {per_image * spec.chunk / 2**30:.1f} GiB of arrays "
                      f"({per_image / 2**20:.2f} MiB per image), and a chunk is built in memory before it is "
                      f"written: lower chunk (e.g. {max(1, CHUNK_WARN_BYTES // 4 // per_image)})", RuntimeWarning,
                      stacklevel=2)
    store = AtlasStore.open(path, meta=meta, fields=fields, rows_per_image=rows, n_images=len(ds), chunk=spec.chunk)
    missing = store.missing_chunks()
    if not missing:
        return store
    dev = pick_device(device)
    shared = {"model": model, "spec": spec, "dataset": ds, "device": device, "plan": plan}
    engine = engine or LocalEngine()
    total = store.n_images
    done = total - sum(len(store.chunk_images(i)) for i in missing)
    report = _Reporter(progress, total, done, "atlas collection")
    if report.bar is not None and getattr(engine, "name", None) == "local":
        shared["on_batch"] = report.batch  # only where the chunks run in this process
    results = engine.map(_collect_chunk, missing, shared=shared, gpus=1.0 if dev.type == "cuda" else 0.0)
    try:
        for i, arrays in zip(missing, results):
            store.write_chunk(i, arrays)
            del arrays
            done += len(store.chunk_images(i))
            report.stored(done)
    except KeyboardInterrupt:
        report.close()
        print(f"\natlas collection interrupted: {len(store.done_chunks)} of {store.n_chunks} chunks are stored in "
              f"{path}; run it again to resume", file=sys.stderr)
        raise
    finally:
        closer = getattr(results, "close", None)
        if closer is not None:
            closer()
        report.close()
    if not store.complete:
        raise StoreError(f"the engine returned {len(store.done_chunks)} of {store.n_chunks} chunks for {path}; "
                         "run the collection again to finish it")
    return store
