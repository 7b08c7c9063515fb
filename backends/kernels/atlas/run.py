"""Lowering of the plan's atlas ops (called by the executor): Collect → Layout → Grid → AtlasIcons.

- **Collect** streams the data set once for every layer any atlas of the spec needs
  (:func:`.collect.collect`, a resumable chunked store in the cache folder). It runs only when some
  layout is not already in the result cache.
- **Layout** reads one layer's vectors, selects the samples (all; one class's; two classes'),
  whitens them and lays them out with UMAP (:mod:`.layout`). The whitening matrix S (of all the
  layer's samples) is kept with the layout for the icons.
- **Grid** bins the layout, averages each cell, and crops ``examples`` data-set patches per cell:
  the receptive fields of the members whose vectors are most similar (cosine) to the cell's mean.
- **AtlasIcons** renders one icon per cell, the whitened cosine-power direction objective of the
  cell's mean activation, in batches of ``batch`` icons: each batch is one task of the execution
  engine (in this process, or a Ray task) and each icon is cached on its own.

Layouts and grids are cached like every other result, under keys made of the collection's identity
(model digest, data-set identity, collection settings) and the op's parameters.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch

from interpgram.grammar.plan import AtlasIcons, Collect, Grid, Layout, PatchTest

from interpgram.backends.execute.cache import cache_key

EXAMPLE_PX = 40  # side of each example patch shown on hover


def _collect_spec(op: Collect):
    from interpgram.backends.kernels.atlas.collect import CollectSpec
    return CollectSpec(dataset=op.dataset, n=op.n, split=op.split, layers=tuple(op.layers), positions=op.positions,
                       seed=op.seed, chunk=op.chunk, batch_size=op.batch_size)


class AtlasRun:
    """State shared by the atlas ops of one execution (the collection is opened at most once)."""

    def __init__(self, ex, engine=None):
        self.ex = ex
        self.plan = ex.plan
        self.engine = engine
        self._store = None
        self._dataset = None
        self._identity: Optional[dict] = None
        self._data: dict[str, dict[str, np.ndarray]] = {}

    # ---------------------------------------------------------------- collection
    @property
    def collect_op(self) -> Collect:
        return self.plan.of_type(Collect)[0]

    def dataset(self):
        if self._dataset is None:
            from interpgram.backends.data.datasets import open_dataset
            op = self.collect_op
            self._dataset = open_dataset(op.dataset, n=op.n, split=op.split, size=tuple(self.ex.model.preprocess.size),
                                         base_dir=getattr(self.ex, "base_dir", None),
                                         **({"allow_code": True} if getattr(self.ex, "allow_code", False) else {}))
        return self._dataset

    def open_split(self, split: str, n: int):
        """``n`` images (or fewer) of the atlas data set's ``split`` (the patch test's images)."""
        from interpgram.backends.data.datasets import open_dataset
        op = self.collect_op
        return open_dataset(op.dataset, n=n, split=split, size=tuple(self.ex.model.preprocess.size),
                            base_dir=getattr(self.ex, "base_dir", None),
                            **({"allow_code": True} if getattr(self.ex, "allow_code", False) else {}))

    def collection_key(self) -> str:
        """The collection's identity: the digest naming its store (model, data set, collection settings)."""
        from interpgram.backends.kernels.atlas.collect import collection_digest, collection_meta
        return collection_digest(collection_meta(self.ex.model, _collect_spec(self.collect_op), self.dataset()))

    def store(self):
        if self._store is None:
            from interpgram.backends.kernels.atlas.collect import collect, store_path
            from interpgram.backends.kernels.atlas.store import StoreNotWritable
            t = time.perf_counter()
            cache = self.ex.cache
            spec = _collect_spec(self.collect_op)
            kw = dict(device=self.ex.device, base_dir=getattr(self.ex, "base_dir", None), engine=self.engine,
                      allow_code=getattr(self.ex, "allow_code", False),
                      # the executor's progress callback: the CLI's bars, which -q silences
                      progress=self.ex.progress)
            try:
                if not cache.enabled:  # (a read-only cache may still hold the complete collection)
                    raise StoreNotWritable("the result cache is off")
                root = cache.root / "atlas"
                cache.pin(store_path(self.ex.model, spec, root, base_dir=kw["base_dir"], allow_code=kw["allow_code"]))
                self._store = collect(self.ex.model, spec, root, **kw)
            except StoreNotWritable as e:
                # no (writable) result cache: the collection still goes to disk (bounded memory), in a
                # temporary folder
                import tempfile
                from pathlib import Path
                if cache.enabled and cache.writable:
                    cache._stop_writing(e.__cause__ if isinstance(e.__cause__, OSError) else OSError(str(e)))
                self._store = collect(self.ex.model, spec, Path(tempfile.gettempdir()) / "interpgram-atlas", **kw)
            self.ex.stats.add_time("atlas collection", time.perf_counter() - t)
            self.ex.stats.atlas_samples = self._store.n_images
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

    # ---------------------------------------------------------------- keys
    def key(self, op) -> str:
        plan = self.plan
        if isinstance(op, Layout):
            return cache_key(collection=self.collection_key(), what="atlas layout", layer=op.layer, kind=op.kind,
                             classes=list(op.classes), whiten=op.whiten, n_neighbors=op.n_neighbors,
                             min_dist=op.min_dist, metric=op.metric, fit_sample=op.fit_sample, winners=op.winners,
                             top=op.top, seed=op.seed, version=2)
        if isinstance(op, Grid):
            return cache_key(layout=self.key(plan.ops[op.layout]), what="atlas grid", n=op.n, min_count=op.min_count,
                             examples=op.examples, px=EXAMPLE_PX, version=2)
        raise TypeError(type(op).__name__)

    # ---------------------------------------------------------------- ops
    def layout(self, op: Layout) -> dict[str, torch.Tensor]:
        from interpgram.backends.kernels.atlas import layout as L
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
        self.ex.progress(f"atlas layout of {op.layer} ({len(idx)} vectors)", 0, 1)
        if op.kind == "compare":
            # the grammar's compare is a − b: a (classes[0]) on the right, b on the left
            xy = L.two_class_coords(X, attr[idx], op.classes[1], op.classes[0], **kw)
        else:
            xy = L.normalize_layout(L.layout(X, **kw))
        self.ex.progress(f"atlas layout of {op.layer} ({len(idx)} vectors)", 1, 1)
        self.ex.stats.add_time("atlas layout", time.perf_counter() - t)
        return {"xy": torch.from_numpy(np.ascontiguousarray(xy, dtype=np.float32)),
                "rows": torch.from_numpy(idx.astype(np.int64)), "S": torch.from_numpy(np.asarray(S, dtype=np.float32))}

    def grid(self, op: Grid, lay: Layout, layout_values: dict) -> dict[str, Any]:
        from interpgram.backends.kernels.atlas import layout as L
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
        from interpgram.backends.kernels.examples import letterbox, receptive_fields
        m = len(members)
        out = torch.full((m, k, 3, EXAMPLE_PX, EXAMPLE_PX), 255, dtype=torch.uint8)
        if k == 0 or m == 0:
            return out
        d = self.layer_data(layer)
        boxes = receptive_fields(self.ex.model, layer, device=self.ex.device, cache=self.ex.cache)
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
        from interpgram.backends.kernels.optvis.render import Icon, IconSettings
        from interpgram.backends.kernels.atlas.icons import render_atlas_icons
        means = grid_values["mean_act"].float()
        w = means @ S.float()  # v·S: the whitened direction of each cell
        icons = [Icon.from_vector(op.layer, "atlas", w[i], op.cossim_pow) for i in range(w.shape[0])]
        t = time.perf_counter()
        images, scores, rendered, cached = render_atlas_icons(
            self.ex.model, icons, IconSettings(**dict(op.settings)), seed=op.seed, batch=op.batch, cache=self.ex.cache,
            device=self.ex.device, engine=self.engine, progress=self.ex.progress)
        self.ex.stats.icons_rendered += rendered
        self.ex.stats.icons_cached += cached
        self.ex.stats.add_time("atlas icons", time.perf_counter() - t)
        return {"images": images, "scores": scores}


class AtlasError(RuntimeError):
    """An atlas that cannot be made from what was collected; the message says what to change."""


def run_atlas(ex, values: dict, engine=None) -> None:
    """Compute every Layout, Grid and AtlasIcons op of ``ex.plan`` that an element needs."""
    plan = ex.plan
    icon_ops = [op for op in plan.topological() if isinstance(op, AtlasIcons)]
    if not icon_ops:
        return
    run = AtlasRun(ex, engine)
    for op in icon_ops:
        g = plan.ops[op.grid]
        lay = plan.ops[g.layout]
        if g.id not in values:
            gkey = run.key(g)
            hit = ex.cache.get(gkey)
            if lay.id not in values:
                lkey = run.key(lay)
                lhit = ex.cache.get(lkey)
                if lhit is None:
                    lhit = run.layout(lay)
                    ex.cache.put(lkey, lhit)
                    ex.stats.cache_misses += 1
                else:
                    ex.stats.cache_hits += 1
                values[lay.id] = lhit
            if hit is None:
                t = time.perf_counter()
                hit = run.grid(g, lay, values[lay.id])
                ex.cache.put(gkey, hit)
                ex.stats.add_time("atlas grid", time.perf_counter() - t)
                ex.stats.cache_misses += 1
            else:
                ex.stats.cache_hits += 1
            values[g.id] = hit
        values[op.id] = run.icons(op, values[g.id], values[lay.id]["S"])
    for pt in [op for op in plan.topological() if isinstance(op, PatchTest)]:
        from interpgram.backends.kernels.atlas.patch_test import run_patch_test
        values[pt.id] = run_patch_test(ex, pt, values[pt.icons]["images"], run.open_split)
