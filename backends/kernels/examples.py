"""Dataset examples: for each atom, the data-set images (or patches) that activate it most.

The kernel of the plan's :class:`~interpgram.grammar.plan.Examples` op.

Scores, for a data-set image with activation A (C × H × W) at the op's layer (1-d layers are
treated as C × 1 × 1):

- channel c: max over positions of A[c]; the example's position is the argmax;
- neuron (x, y, c): A[c, y, x], at (x, y);
- spatial (x, y) of the input: the query is the input's activation vector v at (x, y); the score is
  the max over positions of cos(A[:, y', x'], v) = ⟨a, v⟩ / max(‖a‖·‖v‖, 1e-12);
- direction w, and NMF groups (their channel factor as w): max over positions of ⟨A[:, y, x], w⟩.

The examples are always ranked by activation, also when the atoms were picked by attribution.
One streaming pass per data set scores every atom that is not cached yet, of every layer: the data
set runs through the model in batches under ``torch.no_grad``, the forward pass stops once the
deepest of those layers has run, and a running top-k per atom (stable: ties go to the lower
data-set index) keeps memory bounded by atoms × top, never by the data set. Only the winners'
images are loaded again at the end.

Receptive fields. The box of input pixels behind a layer position is found from the model itself,
by NaN propagation: a NaN placed in input column j (rows: row i) reaches exactly the positions whose
value depends on that column, through every convolution, pooling, normalisation and nonlinearity
(NaN · 0 is NaN, max with a NaN is NaN). One forward pass over a batch of W inputs (column j NaN in
input j) and one over H inputs (rows) give the box of every position of the layer at once: its
columns and rows span [first, last + 1), already clamped to the image (padding is not pixels). The
pass runs with cuDNN, oneDNN and NNPACK off: their Winograd or FFT convolutions smear a NaN over a
whole tile (measured: NNPACK widens a 3×3 convolution's box to 12 columns). This
is the structural receptive field, which the input gradient's support at one input can only
underestimate (a max-pool passes gradient through one element of each window, a dead ReLU through
none). A position no NaN reaches (an op that swallows NaN) gets the whole image. The boxes are
cached per (model, layer, input size).

Patches are cropped to that box at the example's best position and letterboxed (aspect kept, white
bars) into a square of ``min(model input side, 96)`` px; with ``patch: false`` the whole image is
stored and the box is drawn on it. Each atom's examples are cached on their own under (model digest,
dtype, data set identity, layer, the atom — its vector's digest when it comes from the input —,
top, patch), so a second render, or another element asking for the same atom, computes nothing.
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from interpgram.grammar.plan import EXAMPLE_SIDE_MAX, Examples

from interpgram.backends.data.datasets import Dataset, open_dataset
from interpgram.backends.execute.cache import ResultCache, cache_key
from interpgram.backends.execute.context import Context, Values, kernel
from interpgram.backends.kernels.capture import capture_until
from interpgram.backends.execute.device import run_batched

PATCH_PX = EXAMPLE_SIDE_MAX  # largest side of a stored patch
_EPS = 1e-12


def forward_to(module: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The output of one ``layer`` (``output``: the logits), stopping the forward pass there."""
    return capture_until(module, x, [layer])[layer]


def _spatial(a: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) view of an activation; 1-d layers (B, C) become (B, C, 1, 1)."""
    if a.dim() == 4:
        return a
    if a.dim() == 2:
        return a[:, :, None, None]
    raise ValueError(f"examples need (B, C) or (B, C, H, W) activations, got shape {tuple(a.shape)}")


# ----------------------------------------------------------------------------- receptive fields
_RF_MEMO: dict[tuple, torch.Tensor] = {}


@contextmanager
def _plain_convolutions():
    """cuDNN, oneDNN and NNPACK off: convolutions run as im2col + matrix product, where each output
    sums exactly its own window. (NNPACK's Winograd tiles, measured here, smear a NaN over 12 columns
    of a 3×3 convolution; cuDNN may pick FFT or Winograd too.) The flag setters warn about TF32 on
    Intel GPUs, which is not news here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with torch.backends.cudnn.flags(enabled=False), torch.backends.mkldnn.flags(enabled=False), \
                torch.backends.nnpack.flags(enabled=False):
            yield


def receptive_fields(model, layer: str, *, device: torch.device | str = "cpu", cache: Optional[ResultCache] = None,
                     chunk: int = 32) -> torch.Tensor:
    """(H_l, W_l, 4) int64 boxes x0, y0, x1, y1 (end-exclusive, input pixels) of every position of
    ``layer``, by NaN propagation (see the module docstring)."""
    h_in, w_in = model.preprocess.size
    memo = (model.digest, layer, h_in, w_in)
    if memo in _RF_MEMO:
        return _RF_MEMO[memo]
    key = cache_key(model=model.digest, layer=layer, size=[h_in, w_in], what="receptive fields (NaN propagation)")
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        _RF_MEMO[memo] = hit["boxes"]
        return hit["boxes"]
    device = torch.device(device)
    module = model.on(device, torch.float32)

    def reach(length: int, axis: int) -> torch.Tensor:  # (length, H_l, W_l): NaN in line j reaches the position
        parts = []
        for a in range(0, length, chunk):
            k = min(chunk, length - a)
            x = torch.zeros(k, 3, h_in, w_in, device=device)
            for j in range(k):
                if axis == 3:
                    x[j, :, :, a + j] = float("nan")
                else:
                    x[j, :, a + j, :] = float("nan")
            with torch.no_grad(), _plain_convolutions():
                act = _spatial(forward_to(module, x, layer).float())
            parts.append(act.isnan().any(dim=1).cpu())
        return torch.cat(parts)

    if layer == "output":
        boxes = torch.tensor([[[0, 0, w_in, h_in]]], dtype=torch.int64)
    else:
        cols, rows = reach(w_in, 3), reach(h_in, 2)

        def span(dep: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.arange(dep.shape[0]).view(-1, 1, 1)
            any_ = dep.any(0)
            lo = torch.where(dep, idx, length).amin(0)
            hi = torch.where(dep, idx, -1).amax(0) + 1
            return torch.where(any_, lo, 0), torch.where(any_, hi, length)

        x0, x1 = span(cols, w_in)
        y0, y1 = span(rows, h_in)
        boxes = torch.stack([x0, y0, x1, y1], dim=-1).to(torch.int64)
    if cache is not None:
        cache.put(key, {"boxes": boxes})
    _RF_MEMO[memo] = boxes
    return boxes


# ----------------------------------------------------------------------------- atoms and queries
@dataclass(frozen=True)
class Query:
    """What one atom scores, for every data-set image."""

    kind: str  # channel | neuron | direction | cosine
    channel: Optional[int] = None
    at: Optional[tuple[int, int]] = None  # neuron: (x, y)
    vector: Optional[torch.Tensor] = None  # direction / cosine: (C,)

    def identity(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind}
        if self.channel is not None:
            d["channel"] = int(self.channel)
        if self.at is not None:
            d["at"] = [int(self.at[0]), int(self.at[1])]
        if self.vector is not None:
            d["vector"] = self.vector.detach().float().cpu().contiguous()
        return d


@dataclass
class TopK:
    scores: torch.Tensor  # (k,) float32, descending
    indices: torch.Tensor  # (k,) int64 data-set indices
    positions: torch.Tensor  # (k, 2) int64 (x, y) of the best position at the layer


def score_batch(acts: torch.Tensor, queries: Sequence[Query]) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (B, Q), flat best positions (B, Q)) of activations (B, C, H, W) for each query."""
    a = _spatial(acts).float()
    b, c, h, w = a.shape
    flat = a.reshape(b, c, h * w)
    scores = torch.empty(b, len(queries), dtype=torch.float32, device=a.device)
    where = torch.empty(b, len(queries), dtype=torch.int64, device=a.device)

    def put(cols: list[int], s: torch.Tensor, p: torch.Tensor) -> None:  # s, p: (B, q)
        if cols:
            idx = torch.tensor(cols, device=a.device)
            scores[:, idx] = s
            where[:, idx] = p

    ch = [j for j, q in enumerate(queries) if q.kind == "channel"]
    if ch:
        m = flat[:, [queries[j].channel for j in ch]].max(dim=2)
        put(ch, m.values, m.indices)
    ne = [j for j, q in enumerate(queries) if q.kind == "neuron"]
    if ne:
        pos = torch.tensor([queries[j].at[1] * w + queries[j].at[0] for j in ne], device=a.device)
        s = flat[:, [queries[j].channel for j in ne], :].gather(2, pos.view(1, -1, 1).expand(b, -1, 1))
        put(ne, s[..., 0], pos.expand(b, -1))
    di = [j for j, q in enumerate(queries) if q.kind == "direction"]
    if di:
        wmat = torch.stack([queries[j].vector.float() for j in di]).to(a.device)  # (q, C)
        m = torch.einsum("bcp,qc->bqp", flat, wmat).max(dim=2)
        put(di, m.values, m.indices)
    co = [j for j, q in enumerate(queries) if q.kind == "cosine"]
    if co:
        v = torch.stack([queries[j].vector.float() for j in co]).to(a.device)  # (q, C)
        dots = torch.einsum("bcp,qc->bqp", flat, v)
        norms = flat.norm(dim=1)[:, None, :] * v.norm(dim=1)[None, :, None]  # (B, q, P)
        m = (dots / norms.clamp_min(_EPS)).max(dim=2)
        put(co, m.values, m.indices)
    return scores, where


def merge_top(best: Optional[TopK], scores: torch.Tensor, indices: torch.Tensor, positions: torch.Tensor,
              k: int) -> TopK:
    """Running top-``k`` of one atom: the previous best (earlier, smaller indices) first, then the new
    batch in index order; a stable descending sort keeps the lower index first among equal scores."""
    if best is not None:
        scores = torch.cat([best.scores, scores])
        indices = torch.cat([best.indices, indices])
        positions = torch.cat([best.positions, positions])
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return TopK(scores[order], indices[order], positions[order])


def search(model, dataset: Dataset, layer: str, queries: Sequence[Query], *, top: int, batch_size: int,
           device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
           progress: Optional[Callable[[str, int, int], None]] = None, stage: str = "dataset examples",
           on_halve: Optional[Callable[[int], None]] = None) -> list[TopK]:
    """One streaming pass over ``dataset``: the top-``top`` images of each query of ``layer``."""
    return search_layers(model, dataset, {layer: list(queries)}, top=top, batch_size=batch_size, device=device,
                         dtype=dtype, progress=progress, stage=stage, on_halve=on_halve)[layer]


def search_layers(model, dataset: Dataset, queries: dict[str, list[Query]], *, top: int, batch_size: int,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  progress: Optional[Callable[[str, int, int], None]] = None, stage: str = "dataset examples",
                  on_halve: Optional[Callable[[int], None]] = None) -> dict[str, list[TopK]]:
    """One streaming pass over ``dataset`` for the queries of several layers (one forward pass per
    batch, stopped after the deepest of them): the top-``top`` images of each query."""
    device = torch.device(device)
    module = model.on(device, dtype)
    n = len(dataset)
    k = min(top, n)
    best: dict[str, list[Optional[TopK]]] = {l: [None] * len(qs) for l, qs in queries.items()}
    progress = progress or (lambda s, i, t: None)
    progress(stage, 0, n)

    def one_batch(start: int, stop: int) -> None:
        x01 = dataset.load(range(start, stop)).to(device)
        with torch.no_grad():
            acts = capture_until(module, model.preprocess(x01).to(dtype), list(queries))
        scored = {}  # everything that can run out of memory happens before the running top-k changes
        for layer, qs in queries.items():
            s, p = score_batch(acts[layer], qs)
            scored[layer] = (s.float().cpu(), p.cpu(), _spatial(acts[layer]).shape[-1])
        idx = torch.arange(start, stop, dtype=torch.int64)
        for layer, (s, p, w) in scored.items():
            for j in range(s.shape[1]):
                pos = torch.stack([p[:, j] % w, p[:, j] // w], dim=1)
                best[layer][j] = merge_top(best[layer][j], s[:, j], idx, pos, k)
        progress(stage, stop, n)

    run_batched(one_batch, n, batch_size, on_halve=on_halve)
    empty = TopK(torch.zeros(0), torch.zeros(0, dtype=torch.int64), torch.zeros(0, 2, dtype=torch.int64))
    return {l: [b if b is not None else empty for b in bs] for l, bs in best.items()}


def letterbox(img: torch.Tensor, side: int) -> torch.Tensor:
    """(3, h, w) in [0, 1] → (3, side, side): scaled to fit (aspect kept), white bars. Enlarged with
    nearest neighbour (pixels stay visible), reduced with antialiasing."""
    _, h, w = img.shape
    s = side / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        if s > 1:
            img = F.interpolate(img[None], size=(nh, nw), mode="nearest")[0]
        else:
            img = F.interpolate(img[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    out = torch.ones(3, side, side, dtype=img.dtype)
    y0, x0 = (side - nh) // 2, (side - nw) // 2
    out[:, y0:y0 + nh, x0:x0 + nw] = img.clamp(0, 1)
    return out


def examples_of(dataset: Dataset, best: TopK, boxes: torch.Tensor, *, patch: bool, side: int) -> dict:
    """The stored result of one atom: its winners' images (uint8), scores, indices, names, boxes."""
    if best.indices.numel() == 0:
        return {"scores": best.scores, "indices": best.indices, "positions": best.positions,
                "boxes": torch.zeros(0, 4, dtype=torch.int64), "images": torch.zeros(0, 3, side, side, dtype=torch.uint8),
                "names": []}
    imgs, names = dataset.load_named(best.indices.tolist())
    bx = torch.stack([boxes[int(y), int(x)] for x, y in best.positions.tolist()])
    out = []
    for img, (x0, y0, x1, y1) in zip(imgs, bx.tolist()):
        out.append(letterbox(img[:, y0:y1, x0:x1] if patch else img, side))
    images = (torch.stack(out) * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    return {"scores": best.scores.float(), "indices": best.indices, "positions": best.positions, "boxes": bx,
            "images": images, "names": list(names)}


# ----------------------------------------------------------------------------- the op
def select_atoms(op: Examples, values: dict, i: int) -> list[tuple[Any, str, Optional[float], Query]]:
    """(atom, label, content value, query) for input image ``i``."""
    layer = op.layer
    v = values[op.source]["value"][i] if op.source and op.source in values else None
    if op.atom == "channel":
        if op.atoms:
            chans = [int(c) for c in op.atoms]
            vals = ([float(x) for x in v] if v is not None and v.dim() == 1 and len(v) == len(chans) else
                    [float(v[c]) for c in chans] if v is not None and v.dim() == 1 else [None] * len(chans))
        else:
            vv = v if v.dim() == 1 else v.reshape(v.shape[0], -1).amax(1)
            chans = vv.topk(min(op.count, vv.numel())).indices.tolist()
            vals = [float(vv[c]) for c in chans]
        return [(c, f"{layer}:{c}", val, Query("channel", channel=c)) for c, val in zip(chans, vals)]
    if op.atom == "neuron":
        if op.atoms:
            x, y, c = (int(t) for t in op.atoms[0])
            val = float(v) if v is not None and v.dim() == 0 else None
            neurons = [((x, y, c), val)]
        elif v.dim() == 1:
            neurons = [((0, 0, c), float(v[c])) for c in v.topk(min(op.count, v.numel())).indices.tolist()]
        else:
            h, w = v.shape[1:]
            neurons = []
            for j in v.flatten().topk(min(op.count, v.numel())).indices.tolist():
                c, r = divmod(j, h * w)
                y, x = divmod(r, w)
                neurons.append(((x, y, c), float(v[c, y, x])))
        return [([x, y, c], f"{layer}:{c} at ({x}, {y})", val, Query("neuron", channel=c, at=(x, y)))
                for (x, y, c), val in neurons]
    if op.atom == "spatial":
        acts = values[op.vectors]["value"][i]  # (C, H, W)
        if op.atoms:
            positions = [tuple(int(t) for t in op.atoms[0])]
            vals = [float(v) if v is not None and v.dim() == 0 else None]
        else:
            w = v.shape[1]
            flat = v.flatten().topk(min(op.count, v.numel())).indices.tolist()
            positions = [(j % w, j // w) for j in flat]
            vals = [float(v[y, x]) for x, y in positions]
        return [([x, y], f"({x}, {y})", val, Query("cosine", vector=acts[:, y, x].float().clone()))
                for (x, y), val in zip(positions, vals)]
    if op.atom == "direction":
        vec = torch.tensor(op.atoms[0], dtype=torch.float32)
        val = float(v.max()) if v is not None and v.numel() else None
        return [("direction", "direction", val, Query("direction", vector=vec))]
    if op.atom == "group":
        channels = values[op.groups]["channels"][i]  # (k, C)
        vals = [float(v[g]) if v is not None and v.dim() == 1 and len(v) == channels.shape[0] else None
                for g in range(channels.shape[0])]
        return [(g, f"group {g + 1}", vals[g], Query("direction", vector=channels[g].float().clone()))
                for g in range(channels.shape[0])]
    raise ValueError(f"examples: unknown atom kind {op.atom!r}")


def patch_side(model) -> int:
    return int(min(max(model.preprocess.size), PATCH_PX))


def atom_key(ctx: Context, ds: Dataset, op: Examples, q: Query, side: int) -> str:
    """The cache key of one atom's examples."""
    return cache_key(model=ctx.model.digest, dtype=str(ctx.dtype), dataset=ds.identity, layer=op.layer,
                     atom=q.identity(), top=op.top, patch=op.patch, side=side, what="dataset examples")


@kernel(Examples, pieces="each atom's examples cached on its own")
def run_examples(ctx: Context, ops: list[Examples], values: Values) -> Values:
    """Per Examples op and input image: its atoms with their examples (each atom cached on its own,
    kind ``Examples``); one streaming pass per data set for every atom not cached yet."""
    n_images = ctx.inputs.images.shape[0]
    model = ctx.model
    side = patch_side(model)
    datasets: dict[tuple, Dataset] = {}
    chosen: dict[str, list[list[tuple]]] = {}  # op id -> per image: (atom, label, value, query, key)
    found: dict[str, dict] = {}  # cache key -> the stored examples of one atom
    todo: dict[tuple, dict[str, dict[str, tuple[Query, int, bool]]]] = {}  # (data set, batch) -> layer -> key -> ...
    for op in ops:
        dk = (op.dataset, op.n, op.split)
        if dk not in datasets:
            datasets[dk] = open_dataset(op.dataset, n=op.n, split=op.split, size=model.preprocess.fit,
                                        base_dir=ctx.base_dir, allow_code=ctx.allow_code)
        ds = datasets[dk]
        chosen[op.id] = [[(*sel, atom_key(ctx, ds, op, sel[3], side)) for sel in select_atoms(op, values, i)]
                         for i in range(n_images)]
        for per_image in chosen[op.id]:
            for *_, q, key in per_image:
                if key in found or any(key in t for by_layer in todo.values() for t in by_layer.values()):
                    continue
                hit = ctx.cache.get("Examples", key)
                if hit is not None:
                    found[key] = hit
                else:
                    todo.setdefault((dk, op.batch_size), {}).setdefault(op.layer, {})[key] = (q, op.top, op.patch)

    def halved(size: int) -> None:
        ctx.stats.batch_halvings += 1

    for (dk, batch_size), by_layer in todo.items():  # one streaming pass per data set, for every layer
        ds = datasets[dk]
        t = time.perf_counter()
        queries = {layer: [q for q, _, _ in items.values()] for layer, items in by_layer.items()}
        top = max(k for items in by_layer.values() for _, k, _ in items.values())
        n_atoms = sum(len(qs) for qs in queries.values())
        best = search_layers(model, ds, queries, top=top, batch_size=batch_size, device=ctx.device, dtype=ctx.dtype,
                             progress=ctx.progress,
                             stage=f"dataset examples · {', '.join(queries)} · {n_atoms} atom" + "s" * (n_atoms != 1),
                             on_halve=halved)
        ctx.stats.dataset_images += len(ds)
        for layer, items in by_layer.items():
            boxes = receptive_fields(model, layer, device=ctx.device, cache=ctx.cache.view("receptive fields"))
            for (key, (_query, k, patch)), b in zip(items.items(), best[layer]):
                b = TopK(b.scores[:k], b.indices[:k], b.positions[:k])
                found[key] = examples_of(ds, b, boxes, patch=patch, side=side)
                ctx.cache.put("Examples", key, found[key])
                ctx.stats.examples_computed += 1
        ctx.stats.add_time("dataset examples", time.perf_counter() - t)
    out: Values = {}
    for op in ops:
        ds = datasets[(op.dataset, op.n, op.split)]
        per_image = chosen[op.id]
        out[op.id] = {
            "atoms": [[sel[0] for sel in img] for img in per_image],
            "labels": [[sel[1] for sel in img] for img in per_image],
            "values": [[sel[2] for sel in img] for img in per_image],
            "examples": [[found[sel[4]] for sel in img] for img in per_image],
            "dataset": str(ds.root) if ds.kind == "folder" else ds.ref,  # a python: data set has no folder
            "size": len(ds),
        }
    return out
