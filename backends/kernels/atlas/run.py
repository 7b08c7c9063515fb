"""Kernels of the plan's atlas ops: Collect → Layout → Grid → AtlasIcons.

- **Collect** streams the data set once for every layer any atlas of the spec needs
  (:func:`.collect.collect`, a resumable chunked store in the cache folder). It is in the plan to
  run only when some layout or grid is not already in the result cache.
- **Layout** reads one layer's vectors, selects the samples (all; one class's; two classes'),
  whitens them and lays them out with UMAP (:mod:`.layout`). The whitening matrix S (of all the
  layer's samples) is kept with the layout for the icons.
- **Grid** bins the layout, averages each cell, and crops ``examples`` data-set patches per cell:
  the receptive fields of the members whose vectors are most similar (cosine) to the cell's mean.
- **AtlasIcons** renders one icon per cell, the whitened cosine-power direction objective of the
  cell's mean activation, in batches of ``batch`` icons: each batch is one task of the execution
  engine (in this process, or a Ray task) and each icon is cached on its own.

Layouts and grids are cached whole, like content ops, under keys made of the collection's identity
(model digest, data-set identity, collection settings) and the op's signature; the plan pruner
looks them up. Atlas icons are cached one by one (kind ``atlas icon``).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from interpgram.backends.data.datasets import open_dataset
from interpgram.backends.execute.cache import cache_key
from interpgram.backends.execute.context import Context, Values, kernel
from interpgram.backends.kernels.atlas import layout as L
from interpgram.backends.kernels.atlas.collect import (
    CollectSpec,
    collect,
    collection_digest,
    collection_meta,
    store_path,
)
from interpgram.backends.kernels.atlas.icons import render_atlas_icons
from interpgram.backends.kernels.atlas.store import StoreNotWritable
from interpgram.backends.kernels.examples import letterbox, receptive_fields
from interpgram.backends.kernels.optvis.render import Icon, IconSettings
from interpgram.grammar.plan import ATLAS_PATCH_PX, AtlasIcons, Collect, Grid, Layout

EXAMPLE_PX = ATLAS_PATCH_PX  # side of each example patch shown on hover
KEY_VERSION = 3  # of the layout and grid keys (3: made of the op's signature)


def _collect_spec(op: Collect):
    return CollectSpec(dataset=op.dataset, n=op.n, split=op.split, layers=tuple(op.layers), positions=op.positions,
                       seed=op.seed, chunk=op.chunk, batch_size=op.batch_size)


class AtlasRun:
    """State shared by the atlas ops of one execution: one collection (its data set, its store,
    opened at most once, and the layers read from it)."""

    def __init__(self, ctx: Context, collect: Optional[Collect] = None):
        self.ctx = ctx
        self.collect_op = collect if collect is not None else ctx.plan.of_type(Collect)[0]
        self._store = None
        self._dataset = None
        self._key: Optional[str] = None
        self._data: dict[str, dict[str, np.ndarray]] = {}

    @staticmethod
    def of(ctx: Context, collect_id: str) -> "AtlasRun":
        """The execution's session for the collection ``collect_id``."""
        runs = ctx.shared.setdefault("atlas", {})
        if collect_id not in runs:
            runs[collect_id] = AtlasRun(ctx, ctx.plan.ops[collect_id])
        return runs[collect_id]

    # ---------------------------------------------------------------- collection
    def dataset(self):
        if self._dataset is None:
            op = self.collect_op
            self._dataset = open_dataset(op.dataset, n=op.n, split=op.split, size=self.ctx.model.preprocess.fit,
                                         base_dir=self.ctx.base_dir, allow_code=self.ctx.allow_code)
        return self._dataset

    def collection_key(self) -> str:
        """The collection's identity: the digest naming its store (model, data set, collection settings)."""
        if self._key is None:
            self._key = collection_digest(collection_meta(self.ctx.model, _collect_spec(self.collect_op), self.dataset()))
        return self._key

    def store(self):
        if self._store is None:
            t = time.perf_counter()
            cache = self.ctx.cache.cache  # the result cache under the policy (its folder holds the store)
            spec = _collect_spec(self.collect_op)
            kw = dict(device=self.ctx.device, base_dir=self.ctx.base_dir, engine=self.ctx.engine,
                      allow_code=self.ctx.allow_code,
                      # the executor's progress callback: the CLI's bars, which -q silences
                      progress=self.ctx.progress)
            try:
                if not cache.enabled:  # (a read-only cache may still hold the complete collection)
                    raise StoreNotWritable("the result cache is off")
                root = cache.root / "atlas"
                cache.pin(store_path(self.ctx.model, spec, root, base_dir=kw["base_dir"], allow_code=kw["allow_code"]))
                self._store = collect(self.ctx.model, spec, root, **kw)
            except StoreNotWritable as e:
                # no (writable) result cache: the collection still goes to disk (bounded memory), in a
                # temporary folder
                if cache.enabled and cache.writable:
                    cache._stop_writing(e.__cause__ if isinstance(e.__cause__, OSError) else OSError(str(e)))
                self._store = collect(self.ctx.model, spec, Path(tempfile.gettempdir()) / "interpgram-atlas", **kw)
            self.ctx.stats.add_time("atlas collection", time.perf_counter() - t)
            self.ctx.stats.atlas_samples = self._store.n_images
        return self._store

    def layer_data(self, layer: str) -> dict[str, np.ndarray]:
        if layer not in self._data:
            st = self.store()
            acts = st.read(f"{layer}/act").astype(np.float32, copy=False)
            rows_per_image = st.rows_per_image[f"{layer}/act"]
            self._data[layer] = {
                "act": acts,
                "attr": st.read(f"{layer}/attr").astype(np.float32, copy=False),
                "xy": st.read(f"{layer}/xy").astype(np.int64),
                "image": st.read("image").astype(np.int64).repeat(rows_per_image),
            }
        return self._data[layer]

    # ---------------------------------------------------------------- ops
    def layout(self, op: Layout) -> dict[str, torch.Tensor]:
        d = self.layer_data(op.layer)
        acts, attr = d["act"], d["attr"]
        t = time.perf_counter()
        M = L.second_moment(acts)
        S = L.whitening_matrix(acts)
        if op.kind == "activation":
            idx = np.arange(acts.shape[0])
        elif op.kind == "class":
            idx = L.class_samples(attr, op.classes[0], winners=op.winners, top=op.top)
        else:
            idx = np.union1d(L.class_samples(attr, op.classes[0], winners=op.winners, top=op.top),
                             L.class_samples(attr, op.classes[1], winners=op.winners, top=op.top))
        if len(idx) < 4:
            raise AtlasError(f"the {op.kind} atlas of {op.layer} has {len(idx)} samples to lay out: collect more images "
                             "(dataset: n) or lower `top`/turn on `winners`")
        X = L.whiten_for_layout(acts[idx], M) if op.whiten else acts[idx]
        kw = dict(n_neighbors=min(op.n_neighbors, len(idx) - 1), min_dist=op.min_dist, metric=op.metric,
                  fit_sample=op.fit_sample, seed=op.seed)
        self.ctx.progress(f"atlas layout of {op.layer} ({len(idx)} vectors)", 0, 1)
        if op.kind == "compare":
            # the grammar's compare is a − b: a (classes[0]) on the right, b on the left
            xy = L.two_class_coords(X, attr[idx], op.classes[1], op.classes[0], **kw)
        else:
            xy = L.normalize_layout(L.layout(X, **kw))
        self.ctx.progress(f"atlas layout of {op.layer} ({len(idx)} vectors)", 1, 1)
        self.ctx.stats.add_time("atlas layout", time.perf_counter() - t)
        return {"xy": torch.from_numpy(np.ascontiguousarray(xy, dtype=np.float32)),
                "rows": torch.from_numpy(idx.astype(np.int64)), "S": torch.from_numpy(np.asarray(S, dtype=np.float32))}

    def grid(self, op: Grid, lay: Layout, layout_values: dict) -> dict[str, Any]:
        d = self.layer_data(lay.layer)
        rows = layout_values["rows"].numpy()
        xy = layout_values["xy"].numpy()
        g = L.grid(xy, op.n, d["act"][rows], d["attr"][rows], min_count=op.min_count)
        out = {"cells": torch.from_numpy(np.asarray(g.cells, dtype=np.int64)),
               "count": torch.from_numpy(np.asarray(g.count, dtype=np.int64)),
               "mean_act": torch.from_numpy(np.asarray(g.mean_act, dtype=np.float32)),
               "mean_attr": torch.from_numpy(np.asarray(g.mean_attr, dtype=np.float32)),
               "top_class": torch.from_numpy(np.asarray(g.top_class, dtype=np.int64)),
               "size": torch.from_numpy(np.asarray(g.size, dtype=np.float32))}
        # members, flattened: the data-set rows of each cell (for examples and for analysis)
        members = [rows[np.asarray(m, dtype=np.int64)] for m in g.members]
        out["member_rows"] = torch.from_numpy(np.concatenate(members) if members else np.zeros(0, np.int64))
        out["member_ptr"] = torch.from_numpy(np.cumsum([0] + [len(m) for m in members]).astype(np.int64))
        out["patches"] = self.patches(lay.layer, members, out["mean_act"].numpy(), op.examples)
        return out

    def patches(self, layer: str, members: list[np.ndarray], means: np.ndarray, k: int) -> torch.Tensor:
        """(M, k, 3, px, px) uint8: per cell, the receptive-field crops of the k members closest (cosine)
        to the cell's mean; white where a cell has fewer members."""
        m = len(members)
        out = torch.full((m, k, 3, EXAMPLE_PX, EXAMPLE_PX), 255, dtype=torch.uint8)
        if k == 0 or m == 0:
            return out
        d = self.layer_data(layer)
        boxes = receptive_fields(self.ctx.model, layer, device=self.ctx.device, cache=self.ctx.cache.view("receptive fields"))
        picks: list[tuple[int, int, int]] = []  # (cell, slot, row)
        for ci, rows in enumerate(members):
            a = d["act"][rows]
            v = means[ci]
            cos = (a @ v) / (np.linalg.norm(a, axis=1) * np.linalg.norm(v) + 1e-8)
            for slot, j in enumerate(np.argsort(-cos, kind="stable")[:k]):
                picks.append((ci, slot, int(rows[j])))
        ds = self.dataset()
        images = sorted({int(d["image"][r]) for _, _, r in picks})
        where = {img: i for i, img in enumerate(images)}
        for start in range(0, len(images), 256):
            chunk = images[start:start + 256]
            imgs = ds.load(chunk)
            for ci, slot, r in picks:
                i = where[int(d["image"][r])]
                if not start <= i < start + len(chunk):
                    continue
                x, y = (int(v) for v in d["xy"][r])
                x0, y0, x1, y1 = boxes[y, x].tolist()
                crop = letterbox(imgs[i - start][:, y0:y1, x0:x1], EXAMPLE_PX)
                out[ci, slot] = (crop * 255 + 0.5).clamp(0, 255).to(torch.uint8)
        return out

    def icons(self, op: AtlasIcons, grid_values: dict, S: torch.Tensor) -> dict[str, torch.Tensor]:
        means = grid_values["mean_act"].float()
        w = means @ S.float()  # v·S: the whitened direction of each cell
        icons = [Icon.from_vector(op.layer, "atlas", w[i], op.cossim_pow) for i in range(w.shape[0])]
        t = time.perf_counter()
        images, scores, rendered, cached = render_atlas_icons(
            self.ctx.model, icons, IconSettings(**dict(op.settings)), seed=op.seed, batch=op.batch,
            cache=self.ctx.cache.view("atlas icon"), device=self.ctx.device, engine=self.ctx.engine,
            progress=self.ctx.progress)
        self.ctx.stats.icons_rendered += rendered
        self.ctx.stats.add_time("atlas icons", time.perf_counter() - t)
        return {"images": images, "scores": scores}


class AtlasError(RuntimeError):
    """An atlas that cannot be made from what was collected; the message says what to change."""


def _session(ctx: Context, op) -> AtlasRun:
    lay = op if isinstance(op, Layout) else ctx.plan.ops[op.layout]
    return AtlasRun.of(ctx, lay.collect)


def layout_key(ctx: Context, op: Layout) -> str:
    return cache_key(collection=_session(ctx, op).collection_key(), what="atlas layout",
                     op=repr(ctx.plan.signature(op.id)), version=KEY_VERSION)


def grid_key(ctx: Context, op: Grid) -> str:
    return cache_key(collection=_session(ctx, op).collection_key(), what="atlas grid",
                     op=repr(ctx.plan.signature(op.id)), px=EXAMPLE_PX, version=KEY_VERSION)


@kernel(Collect)
def run_collect(ctx: Context, ops: list[Collect], values: Values) -> Values:
    """Collect (or resume, or open) each collection's store."""
    return {op.id: {"store": AtlasRun.of(ctx, op.id).store()} for op in ops}


@kernel(Layout, key=layout_key)
def run_layout(ctx: Context, ops: list[Layout], values: Values) -> Values:
    return {op.id: _session(ctx, op).layout(op) for op in ops}


@kernel(Grid, key=grid_key, stage="atlas grid")
def run_grid(ctx: Context, ops: list[Grid], values: Values) -> Values:
    return {op.id: _session(ctx, op).grid(op, ctx.plan.ops[op.layout], values[op.layout]) for op in ops}


@kernel(AtlasIcons, pieces="each icon cached on its own")
def run_atlas_icons(ctx: Context, ops: list[AtlasIcons], values: Values) -> Values:
    out: Values = {}
    for op in ops:
        grid = ctx.plan.ops[op.grid]
        out[op.id] = _session(ctx, grid).icons(op, values[op.grid], values[grid.layout]["S"])
    return out
