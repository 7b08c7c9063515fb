"""Activation-atlas geometry: whitening, the UMAP layout, the grid of averaged cells, and the
sample selections of the class and two-class atlases. numpy in, numpy out (torch tensors are
accepted and converted; torch is never imported here).

The steps, as in the Activation Atlas article's pipeline (its notebooks, lucid ``misc/atlas``):

1. :func:`second_moment` / :func:`whitening_matrix` — the uncentred second moment ``M = AᵀA/N``
   and the article's ``S = inv(M)`` (regularised), which the icon objective uses as ``v·S``.
2. :func:`whiten_for_layout` — ``A @ M^{-1/2}``, the vectors the layout sees when whitening is on.
3. :func:`layout` (UMAP, fit on a sample and ``transform`` the rest when N is large), then
   :func:`normalize_layout` into [0, 1]².
4. :func:`grid` — bin into n×n cells, keep the dense ones, average the raw activations (the
   icon directions) and attributions (the cell's label) of each.
5. :func:`class_samples` / :func:`two_class_coords` — the samples and coordinates of the class
   atlas and of the two-class comparison.

No GPU layout: cuML's UMAP is not installed here and could not be tested, so it is left out
(umap-learn on the CPU with fit-on-sample + transform keeps 100k-sample layouts to minutes; see
``benchmarks/atlas_layout.py``).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AtlasGrid", "class_samples", "grid", "layout", "layout_1d", "normalize_layout", "second_moment",
           "two_class_coords", "two_class_x", "whiten_for_layout", "whitening_matrix"]

Progress = Callable[[str, int, int], Any]

TRANSFORM_BATCH = 10_000  # rows per umap ``transform`` call (≤ 10,000 keeps umap's 100 transform epochs)


# ----------------------------------------------------------------------------- conversion
def _np(x: Any, dtype: Any = None) -> np.ndarray:
    """A numpy array of ``x``: numpy arrays as they are, torch tensors detached and moved to the
    CPU (bfloat16/float16 through float32, which numpy lacks or computes slowly)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        t = x.detach().cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        x = t.numpy()
    a = np.asarray(x)
    return a.astype(dtype, copy=False) if dtype is not None else a


def _chunks(a: Any) -> Iterable[np.ndarray]:
    """Rows of ``a`` in chunks: an array or tensor (N, C) is cut into row blocks; anything else is
    taken as an iterable of (n_i, C) chunks."""
    if hasattr(a, "shape") and hasattr(a, "__getitem__"):
        arr = a
        if arr.ndim != 2:
            raise ValueError(f"activations must be (N, C), got shape {tuple(arr.shape)}")
        step = 8192
        for i in range(0, arr.shape[0], step):
            yield _np(arr[i:i + step])
        return
    for c in a:
        c = _np(c)
        if c.ndim != 2:
            raise ValueError(f"each chunk must be (n, C), got shape {c.shape}")
        yield c


# ----------------------------------------------------------------------------- whitening
def second_moment(A: Any) -> np.ndarray:
    """The uncentred second moment ``M = AᵀA / N`` (C, C) in float64.

    ``A`` is an (N, C) array or tensor, or an iterable of (n_i, C) chunks (a stream from disk):
    each chunk is accumulated in float64, so the result does not depend on the chunking beyond
    rounding and memory stays at one chunk.
    """
    m = None
    n = 0
    for c in _chunks(A):
        c = c.astype(np.float64, copy=False)
        if m is None:
            m = np.zeros((c.shape[1], c.shape[1]), dtype=np.float64)
        elif c.shape[1] != m.shape[0]:
            raise ValueError(f"chunks disagree on the number of channels: {c.shape[1]} vs {m.shape[0]}")
        m += c.T @ c
        n += c.shape[0]
    if m is None or n == 0:
        raise ValueError("no activations to take the second moment of")
    return m / n


def _regularised(M: np.ndarray, eps: float) -> np.ndarray:
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"a second moment is a square (C, C) matrix, got shape {M.shape}")
    return M + eps * float(np.mean(np.diag(M))) * np.eye(M.shape[0])


def whitening_matrix(A: Any = None, eps: float = 1e-6, *, moment: np.ndarray | None = None) -> np.ndarray:
    """The article's whitening ``S = inv(M + eps·mean(diag M)·I)`` with ``M`` the uncentred
    second moment of ``A`` (or ``moment`` when given, e.g. from a streamed :func:`second_moment`).

    This is the matrix the whitened icon objective uses as ``v·S`` (``direction_cossim_S``); it is
    the same computation as ``interpgram.backends.kernels.optvis.objectives.whitening`` (float64,
    returned as float32 like it). The small ridge ``eps`` keeps channels that never fire (a zero
    row and column in ``M``) from making the inverse singular.
    """
    if moment is None:
        if A is None:
            raise ValueError("give the activations A or their second moment")
        moment = second_moment(A)
    return np.linalg.inv(_regularised(moment, eps)).astype(np.float32)


def whiten_for_layout(A: Any, M: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``A @ M^{-1/2}`` (float32), the vectors the layout sees when the atlas whitens.

    ``M^{-1/2}`` is the symmetric inverse square root of the regularised second moment (the same
    ridge as :func:`whitening_matrix`), from ``eigh``: the whitened vectors have identity second
    moment (up to the ridge), and being symmetric it is the whitening that rotates the space the
    least (ZCA, uncentred), so a whitened vector stays closest to the original one.

    Why not ``A @ S`` with the article's ``S = M^{-1}``: its second moment is ``S M S = M^{-1}``,
    not the identity — it over-corrects, blowing up the directions that hardly vary. ``S`` is right
    for the icon objective (``v·S`` measures a direction against the data's covariance);
    for the cosine distances UMAP computes, ``M^{-1/2}`` is the one that equalises every direction.
    The REFERENCE records the published configs' ``whiten=true`` but not the matrix the layout used.
    """
    w, V = np.linalg.eigh(_regularised(M, eps))
    w = np.maximum(w, np.finfo(np.float64).tiny)
    inv_sqrt = (V / np.sqrt(w)) @ V.T
    a = _np(A)
    if a.ndim != 2 or a.shape[1] != inv_sqrt.shape[0]:
        raise ValueError(f"activations must be (N, {inv_sqrt.shape[0]}), got shape {a.shape}")
    out = np.empty((a.shape[0], inv_sqrt.shape[0]), dtype=np.float32)
    for i in range(0, a.shape[0], 8192):
        out[i:i + 8192] = a[i:i + 8192].astype(np.float64) @ inv_sqrt
    return out


# ----------------------------------------------------------------------------- layout
def _reporter(progress: Progress | bool | None) -> tuple[Progress | None, Callable[[], None]]:
    """``progress`` as a callback ``(stage, done, total)``: a callable as it is, ``True`` a tqdm bar."""
    if progress is None or progress is False:
        return None, lambda: None
    if progress is True:
        from tqdm.auto import tqdm

        bars: dict[str, Any] = {}

        def cb(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=total, desc=f"umap {stage}", unit="rows" if stage == "transform" else "fit")
            bar.update(done - bar.n)

        def close() -> None:
            for bar in bars.values():
                bar.close()
        return cb, close
    if not callable(progress):
        raise TypeError(f"progress must be a callable (stage, done, total), True or None, got {progress!r}")
    return progress, lambda: None


def layout(X: Any, *, n_components: int = 2, n_neighbors: int = 20, min_dist: float = 0.01, metric: str = "cosine",
           fit_sample: int = 20_000, seed: int | None = 0, progress: Progress | bool | None = None,
           transform_batch: int = TRANSFORM_BATCH) -> np.ndarray:
    """UMAP coordinates (N, n_components) float32 of the rows of ``X``, not yet normalised
    (pass them to :func:`normalize_layout`).

    Defaults are the article's simple notebook (20 neighbours, min_dist 0.01, cosine); its recipe
    used 50/0.05/cosine. With N ≤ ``fit_sample`` UMAP is fitted on every row. Above that it is
    fitted on ``fit_sample`` rows drawn without replacement by ``seed`` and the other rows are
    placed with ``transform`` in batches of ``transform_batch`` (umap-learn places each new point
    among its nearest fitted neighbours and optimises only the new points, so the batches are
    independent and the fitted map does not move). The article laid out 100k samples; on 100k × 256
    synthetic vectors (``benchmarks/atlas_layout.py``, 2 shared CPU cores) fitting all took 179 s,
    a 20k fit + transform 104 s (62 + 41), with the same trustworthiness (0.989 vs 0.988); the
    saving grows with N, since every further row costs only its transform.

    Deterministic for an integer ``seed`` (umap's ``random_state`` and ``transform_seed``; umap then
    runs single-threaded). ``seed=None`` lets umap use every core and gives a different layout each
    run. ``progress``: a callback ``progress(stage, done, total)`` called with ``"fit"`` (0/1, 1/1)
    and ``"transform"`` (rows placed so far), or ``True`` for tqdm bars.
    """
    from interpgram.backends.kernels.atlas.umap_cache import import_umap

    umap = import_umap()  # a slow import (numba), only when a layout is made; compiled code cached on disk
    from interpgram.backends.kernels.atlas import umap_small

    x = _np(X, np.float32)
    if x.ndim != 2:
        raise ValueError(f"X must be (N, C), got shape {x.shape}")
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"{n} sample(s) are too few to lay out (UMAP needs at least 4)")
    if not np.isfinite(x).all():
        raise ValueError("X has NaN or infinite values")
    if fit_sample < 4:
        raise ValueError(f"fit_sample must be at least 4, got {fit_sample}")
    report, close = _reporter(progress)
    if n > fit_sample:
        rng = np.random.default_rng(seed)
        fit_idx = np.sort(rng.choice(n, size=fit_sample, replace=False))
    else:
        fit_idx = np.arange(n)
    kwargs: dict[str, Any] = dict(n_components=n_components, n_neighbors=min(n_neighbors, len(fit_idx) - 1),
                                  min_dist=min_dist, metric=metric)
    if seed is not None:
        kwargs.update(random_state=int(seed), transform_seed=int(seed), n_jobs=1)
    fit_x = x[fit_idx]
    exact = len(fit_idx) == n and umap_small.applies(metric, n)
    if exact:  # umap-learn's own matrix of every distance, without its Python loop over the pairs
        kwargs.update(metric="precomputed", disconnection_distance=umap_small.disconnection_distance(metric))
    reducer = umap.UMAP(**kwargs)
    try:
        if report:
            report("fit", 0, 1)
        if exact:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="using precomputed metric")
                emb = np.asarray(reducer.fit_transform(umap_small.distance_matrix(fit_x, metric)), dtype=np.float32)
        else:
            emb = np.asarray(reducer.fit_transform(fit_x), dtype=np.float32)
        if report:
            report("fit", 1, 1)
        if len(fit_idx) == n:
            return emb
        out = np.empty((n, n_components), dtype=np.float32)
        out[fit_idx] = emb
        rest = np.setdiff1d(np.arange(n), fit_idx, assume_unique=True)
        if report:
            report("transform", 0, len(rest))
        for i in range(0, len(rest), transform_batch):
            idx = rest[i:i + transform_batch]
            out[idx] = reducer.transform(x[idx])
            if report:
                report("transform", min(i + transform_batch, len(rest)), len(rest))
        return out
    finally:
        close()


def layout_1d(X: Any, **kwargs: Any) -> np.ndarray:
    """A 1-D UMAP layout (N,) float32 (the two-class atlas's y axis).

    The article's comparison used a 1-D t-SNE; we use 1-D UMAP because it has ``transform``, so a
    large selection is laid out the same way as the 2-D atlas (fit on a sample, place the rest),
    and it shares the 2-D layout's metric, seeds and normalisation (scikit-learn's t-SNE can only
    embed the points it was fitted on and costs more per point). Keywords as :func:`layout`.
    """
    kwargs.pop("n_components", None)
    return layout(X, n_components=1, **kwargs)[:, 0]


def normalize_layout(xy: Any, lo: float = 1, hi: float = 99, margin: float = 0.1) -> np.ndarray:
    """Each axis clipped to its ``lo``–``hi`` percentile range widened by ``margin`` × that range
    on both sides, then rescaled so the clipped values span exactly [0, 1] (float32, same shape).

    This is lucid's ``normalize_layout``: outliers beyond the widened percentiles are pulled onto
    the edge instead of squeezing the bulk of the layout into a corner. (lucid widens the upper
    bound after the lower one, so its upper margin comes out at 11 % of the range; here both are
    10 %.) An axis with no spread maps to 0.5. 1-D input is one axis.
    """
    a = _np(xy, np.float64)
    one_d = a.ndim == 1
    if one_d:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"a layout is (N, d) or (N,), got shape {np.shape(xy)}")
    p_lo = np.percentile(a, lo, axis=0)
    p_hi = np.percentile(a, hi, axis=0)
    span = p_hi - p_lo
    clipped = np.clip(a, p_lo - margin * span, p_hi + margin * span)
    mn, mx = clipped.min(axis=0), clipped.max(axis=0)
    rng = mx - mn
    out = np.where(rng > 0, (clipped - mn) / np.where(rng > 0, rng, 1.0), 0.5).astype(np.float32)
    return out[:, 0] if one_d else out


# ----------------------------------------------------------------------------- grid
@dataclass
class AtlasGrid:
    """The kept cells of an n×n grid over a normalised layout (M cells, in row-major order of
    ``row·n + col``; row 0 is the bottom of the layout, y = 0, as the article draws it with y up).

    ``mean_act`` is the mean of the raw activations of the cell's samples (the icon's direction);
    ``mean_attr`` the mean of their attribution vectors (``None`` without attributions) and
    ``top_class`` its argmax (-1 without). ``size = log(count)/log(max count)`` sizes the icons of
    a density-sized atlas (1 for every cell when the largest count is 1).
    """
    n: int
    cells: np.ndarray  # (M, 2) int64: col, row
    count: np.ndarray  # (M,) int64
    mean_act: np.ndarray  # (M, C) float32
    mean_attr: np.ndarray | None  # (M, K) float32
    top_class: np.ndarray  # (M,) int64
    members: list[np.ndarray]  # M arrays of row indices into the laid-out samples
    size: np.ndarray  # (M,) float64
    centre: np.ndarray  # (M, 2) float64, in [0, 1]

    def __len__(self) -> int:
        return int(self.cells.shape[0])

    def to_dict(self) -> dict[str, np.ndarray]:
        """numpy arrays only, none 0-d (``n`` as a 1-element array, ``members`` as offsets + flat
        indices, no ``mean_attr`` key without attributions), e.g. for a safetensors cache."""
        offsets = np.zeros(len(self.members) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(m) for m in self.members])
        flat = (np.concatenate(self.members).astype(np.int64) if self.members else np.zeros(0, dtype=np.int64))
        d = {"n": np.array([self.n], dtype=np.int64), "cells": self.cells, "count": self.count,
             "mean_act": self.mean_act, "top_class": self.top_class, "members_offsets": offsets,
             "members_flat": flat, "size": self.size, "centre": self.centre}
        if self.mean_attr is not None:
            d["mean_attr"] = self.mean_attr
        return {k: np.ascontiguousarray(v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AtlasGrid":
        off = np.asarray(d["members_offsets"], dtype=np.int64)
        flat = np.asarray(d["members_flat"], dtype=np.int64)
        attr = d.get("mean_attr")
        return cls(n=int(np.asarray(d["n"]).reshape(-1)[0]), cells=np.asarray(d["cells"], dtype=np.int64),
                   count=np.asarray(d["count"], dtype=np.int64), mean_act=np.asarray(d["mean_act"], dtype=np.float32),
                   mean_attr=None if attr is None else np.asarray(attr, dtype=np.float32),
                   top_class=np.asarray(d["top_class"], dtype=np.int64),
                   members=[flat[off[i]:off[i + 1]] for i in range(len(off) - 1)],
                   size=np.asarray(d["size"], dtype=np.float64), centre=np.asarray(d["centre"], dtype=np.float64))


def _cell_means(values: np.ndarray, kept_of_point: np.ndarray, m: int, count: np.ndarray) -> np.ndarray:
    """Mean of ``values`` rows per kept cell (``kept_of_point`` = cell index or -1), float64 sums."""
    import scipy.sparse as sp

    sel = np.flatnonzero(kept_of_point >= 0)
    onehot = sp.csr_matrix((np.ones(len(sel)), (kept_of_point[sel], sel)), shape=(m, values.shape[0]))
    out = np.empty((m, values.shape[1]), dtype=np.float32)
    for j in range(0, values.shape[1], 256):  # column blocks: float64 sums without a float64 copy of everything
        out[:, j:j + 256] = np.asarray(onehot @ values[:, j:j + 256].astype(np.float64)) / count[:, None]
    return out


def grid(xy: Any, n: int, acts: Any, attrs: Any = None, *, min_count: int = 5) -> AtlasGrid:
    """Bin a normalised layout ``xy`` (N, 2) in [0, 1]² into n×n cells and keep the cells holding
    at least ``min_count`` samples.

    Column ``floor(x·n)``, row ``floor(y·n)``, with the top edge inclusive (a point at 1.0 falls in
    cell n−1). A cell is kept when ``count ≥ min_count`` (the count needed, as the name says); the
    article's recipe keeps ``count > threshold`` with threshold 5, i.e. ``min_count=6``, and its
    notebooks use ``min_density`` 10 (20×20) and 4 (class atlas). ``acts`` (N, C) are the raw, not
    whitened, activations averaged per cell; ``attrs`` (N, K) the attribution vectors, whose cell
    mean's argmax labels the cell.
    """
    p = _np(xy, np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"xy must be (N, 2), got shape {p.shape}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the grid size must be a positive integer, got {n!r}")
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    if p.size and (not np.isfinite(p).all() or p.min() < -1e-6 or p.max() > 1 + 1e-6):
        raise ValueError("xy must lie in [0, 1]² (pass the layout through normalize_layout)")
    a = _np(acts)
    if a.ndim != 2 or a.shape[0] != p.shape[0]:
        raise ValueError(f"acts must be (N={p.shape[0]}, C), got shape {a.shape}")
    t = None
    if attrs is not None:
        t = _np(attrs)
        if t.ndim != 2 or t.shape[0] != p.shape[0]:
            raise ValueError(f"attrs must be (N={p.shape[0]}, K), got shape {t.shape}")
    n = int(n)
    col = np.clip(np.floor(p[:, 0] * n), 0, n - 1).astype(np.int64)
    row = np.clip(np.floor(p[:, 1] * n), 0, n - 1).astype(np.int64)
    flat = row * n + col
    counts = np.bincount(flat, minlength=n * n)
    kept = np.flatnonzero(counts >= min_count)  # ascending row·n + col
    m = len(kept)
    slot = np.full(n * n, -1, dtype=np.int64)
    slot[kept] = np.arange(m)
    kept_of_point = slot[flat]
    count = counts[kept].astype(np.int64)
    order = np.argsort(kept_of_point, kind="stable")
    sorted_slots = kept_of_point[order]
    starts = np.searchsorted(sorted_slots, np.arange(m))
    members = [order[s:s + c].astype(np.int64) for s, c in zip(starts, count)]  # stable: ascending indices
    mean_act = _cell_means(a, kept_of_point, m, count) if m else np.zeros((0, a.shape[1]), np.float32)
    mean_attr = None
    top = np.full(m, -1, dtype=np.int64)
    if t is not None:
        mean_attr = _cell_means(t, kept_of_point, m, count) if m else np.zeros((0, t.shape[1]), np.float32)
        if m:
            top = mean_attr.argmax(axis=1).astype(np.int64)
    cmax = int(count.max()) if m else 0
    size = np.log(count) / math.log(cmax) if cmax > 1 else np.ones(m)
    cells = np.stack([kept % n, kept // n], axis=1).astype(np.int64) if m else np.zeros((0, 2), np.int64)
    centre = (cells + 0.5) / n
    return AtlasGrid(n=n, cells=cells, count=count, mean_act=mean_act, mean_attr=mean_attr, top_class=top,
                     members=members, size=size.astype(np.float64), centre=centre.astype(np.float64))


# ----------------------------------------------------------------------------- class atlases
def class_samples(attr: Any, cls: int, *, winners: bool = True, top: int = 2000) -> np.ndarray:
    """The samples of a class atlas (sorted unique row indices): those whose largest attribution
    goes to ``cls`` (when ``winners``) together with the ``top`` samples by attribution to ``cls``,
    among those with a positive attribution (the article's class-atlas notebook; it used 2000–3000)."""
    t = _np(attr)
    if t.ndim != 2:
        raise ValueError(f"attr must be (N, K), got shape {t.shape}")
    if not 0 <= int(cls) < t.shape[1]:
        raise ValueError(f"class {cls} out of range for {t.shape[1]} classes")
    col = t[:, int(cls)]
    parts = []
    if winners:
        parts.append(np.flatnonzero(t.argmax(axis=1) == int(cls)))
    if top > 0:
        pos = np.flatnonzero(col > 0)
        if len(pos) > top:
            pos = pos[np.argsort(-col[pos], kind="stable")[:top]]
        parts.append(pos)
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(parts)).astype(np.int64)


def two_class_x(attr: Any, a: int, b: int) -> np.ndarray:
    """The two-class atlas's x (N,) float64 in [0, 1]: ``attr[:, b] − attr[:, a]`` divided by the
    99th percentile of its absolute value, clipped to ±1 and mapped to [0, 1], so **0 is the
    ``a`` side (left), 1 the ``b`` side (right)** and 0.5 no preference (the article's
    ``attr[right] − attr[left]``). All-zero differences map to 0.5."""
    t = _np(attr, np.float64)
    if t.ndim != 2:
        raise ValueError(f"attr must be (N, K), got shape {t.shape}")
    for c in (a, b):
        if not 0 <= int(c) < t.shape[1]:
            raise ValueError(f"class {c} out of range for {t.shape[1]} classes")
    d = t[:, int(b)] - t[:, int(a)]
    if len(d) == 0:
        return d
    scale = float(np.percentile(np.abs(d), 99))
    if scale <= 0:  # 99 % of the differences are zero: scale by the largest instead
        scale = float(np.abs(d).max()) or 1.0
    return (np.clip(d / scale, -1.0, 1.0) + 1.0) / 2.0


def two_class_coords(X: Any, attr: Any, a: int, b: int, *, seed: int | None = 0, n_neighbors: int = 20,
                     min_dist: float = 0.01, metric: str = "cosine", fit_sample: int = 20_000,
                     progress: Progress | bool | None = None) -> np.ndarray:
    """Coordinates (N, 2) float32 in [0, 1]² of the two-class comparison atlas of classes ``a`` and
    ``b`` for already selected samples (the caller takes the union of both classes' samples).

    x: :func:`two_class_x` — **x = 0 is the ``a`` side (left), x = 1 the ``b`` side (right)**.
    y: :func:`normalize_layout` of a 1-D UMAP (:func:`layout_1d`) of ``X``, so similar activations
    sit at similar heights.
    """
    x = _np(X)
    t = _np(attr)
    if t.ndim != 2 or x.ndim != 2 or t.shape[0] != x.shape[0]:
        raise ValueError(f"X (N, C) and attr (N, K) must have the same rows, got {x.shape} and {t.shape}")
    xs = two_class_x(t, a, b)
    ys = normalize_layout(layout_1d(x, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                                    fit_sample=fit_sample, progress=progress))
    return np.stack([xs, ys], axis=1).astype(np.float32)
