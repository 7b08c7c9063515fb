"""Atlas geometry (backends/atlas/layout.py) against independent oracles: the torch whitening of
the icon objective, scipy's matrix square root, umap-learn called directly, scikit-learn's
trustworthiness, brute-force loops and numbers worked out by hand.

The UMAP tests are marked slow: umap-learn compiles with numba on its first fit in a process
(about a minute without ``NUMBA_CACHE_DIR``, ~15 s with a warm cache); after that each fit here
takes seconds.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from interpgram.backends.kernels.atlas.layout import (AtlasGrid, class_samples, grid, layout, layout_1d, normalize_layout,
                                              second_moment, two_class_coords, two_class_x, whiten_for_layout,
                                              whitening_matrix)
from interpgram.backends.kernels.optvis import objectives


def correlated(n=4000, c=24, seed=0):
    """Non-negative (post-ReLU-like) activations with correlated channels and unequal scales."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(c, c)) * rng.uniform(0.2, 3.0, size=c)
    return np.maximum(rng.normal(size=(n, c)) @ mix + 0.5, 0).astype(np.float32)


def blobs(n, c=16, k=3, spread=0.7, seed=0):
    """``k`` gaussian blobs around random unit vectors, projected onto the unit sphere."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, c))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    label = rng.integers(0, k, n)
    x = centres[label] + spread * rng.normal(size=(n, c)) / np.sqrt(c)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), label


# ----------------------------------------------------------------------------- whitening
def test_second_moment_is_uncentred_and_streams():
    a = correlated(3000)
    want = a.astype(np.float64).T @ a.astype(np.float64) / len(a)
    np.testing.assert_allclose(second_moment(a), want, rtol=1e-12)
    chunks = (a[i:i + 700] for i in range(0, len(a), 700))  # uneven chunks from a generator
    np.testing.assert_allclose(second_moment(chunks), want, rtol=1e-12)
    np.testing.assert_allclose(second_moment(torch.from_numpy(a)), want, rtol=1e-12)
    assert second_moment(a).dtype == np.float64
    # uncentred: a constant offset shows up in M (a centred covariance would not see it)
    ones = np.ones((10, 3), np.float32)
    np.testing.assert_allclose(second_moment(ones), np.ones((3, 3)))
    with pytest.raises(ValueError):
        second_moment(iter([]))


def test_whitening_matrix_equals_the_icon_objectives_whitening():
    a = correlated()
    want = objectives.whitening(torch.from_numpy(a)).numpy()
    got = whitening_matrix(a)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    # from a streamed moment, and with a channel that never fires (singular M without the ridge)
    np.testing.assert_allclose(whitening_matrix(moment=second_moment(iter([a[:1000], a[1000:]]))), want,
                               rtol=1e-5, atol=1e-6 * np.abs(want).max())
    dead = a.copy()
    dead[:, 3] = 0
    s = whitening_matrix(dead)
    np.testing.assert_allclose(s, objectives.whitening(torch.from_numpy(dead)).numpy(), rtol=1e-4,
                               atol=1e-6 * np.abs(s).max())
    assert np.isfinite(s).all()


def test_whiten_for_layout_gives_identity_second_moment_with_the_symmetric_root():
    a = correlated()
    m = second_moment(a)
    w = whiten_for_layout(a, m)
    assert w.shape == a.shape and w.dtype == np.float32
    np.testing.assert_allclose(second_moment(w), np.eye(a.shape[1]), atol=2e-4)
    # the symmetric inverse square root (scipy's sqrtm as the oracle), same ridge as S
    ridge = m + 1e-6 * np.mean(np.diag(m)) * np.eye(len(m))
    root = np.linalg.inv(np.real(scipy.linalg.sqrtm(ridge)))
    np.testing.assert_allclose(w, (a.astype(np.float64) @ root), rtol=1e-4, atol=1e-4 * np.abs(w).max())
    # and its square is the article's S
    np.testing.assert_allclose(root @ root, whitening_matrix(moment=m), rtol=1e-3, atol=1e-5 * np.abs(root @ root).max())
    # torch in
    np.testing.assert_allclose(whiten_for_layout(torch.from_numpy(a), m), w, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- normalize
def test_normalize_layout_by_hand():
    # no clipping (0th–100th percentile): a plain rescale of each axis
    np.testing.assert_allclose(normalize_layout(np.array([0.0, 2, 4, 10]), lo=0, hi=100), [0, 0.2, 0.4, 1.0])
    # percentiles 25/75 of [0, 1, 2, 3, 4, 100] are 1.25 and 3.75; ±10 % of 2.5 → clip to [1, 4]
    v = np.array([0.0, 1, 2, 3, 4, 100])
    np.testing.assert_allclose(normalize_layout(v, lo=25, hi=75), [0, 0, 1 / 3, 2 / 3, 1, 1], atol=1e-7)
    # axes independent; a constant axis maps to 0.5; defaults (1st/99th) on 2-D data
    xy = np.stack([v, np.full(6, 3.0)], axis=1)
    out = normalize_layout(xy, lo=25, hi=75)
    assert out.shape == (6, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [0, 0, 1 / 3, 2 / 3, 1, 1], atol=1e-7)
    np.testing.assert_allclose(out[:, 1], 0.5)
    rng = np.random.default_rng(0)
    big = rng.normal(size=(1000, 2)) * [1, 100]
    big[0] = [1e6, -1e6]  # an outlier is pulled onto the edge instead of squeezing the rest
    n = normalize_layout(big)
    assert n.min() == 0 and n.max() == 1
    assert n[0, 0] == 1 and n[0, 1] == 0
    assert 0.3 < np.median(n[:, 0]) < 0.7 and 0.3 < np.median(n[:, 1]) < 0.7


# ----------------------------------------------------------------------------- grid
def test_grid_counts_edges_filter_and_top_class_by_hand():
    xy = np.array([[0.0, 0.0], [0.49, 0.1], [0.2, 0.3],  # cell (0, 0): 3 points
                   [1.0, 1.0], [0.5, 0.5], [0.99, 0.7],  # cell (1, 1): 3 (1.0 falls in the last cell)
                   [0.7, 0.2]])  # cell (1, 0): 1 point
    acts = np.arange(14, dtype=np.float32).reshape(7, 2)
    attrs = np.array([[1, 0], [1, 0], [0, 5],  # majority votes class 0, the mean's argmax is class 1
                      [0, 1], [0, 1], [3, 0],
                      [9, 9]], dtype=np.float32)
    g = grid(xy, 2, acts, attrs, min_count=3)
    assert g.n == 2 and len(g) == 2
    np.testing.assert_array_equal(g.cells, [[0, 0], [1, 1]])  # (col, row), row-major order
    np.testing.assert_array_equal(g.count, [3, 3])
    np.testing.assert_allclose(g.mean_act, [acts[:3].mean(0), acts[3:6].mean(0)])
    np.testing.assert_allclose(g.mean_attr, [[2 / 3, 5 / 3], [1, 2 / 3]])
    np.testing.assert_array_equal(g.top_class, [1, 0])
    assert [m.tolist() for m in g.members] == [[0, 1, 2], [3, 4, 5]]
    np.testing.assert_allclose(g.centre, [[0.25, 0.25], [0.75, 0.75]])
    np.testing.assert_allclose(g.size, [1.0, 1.0])
    # count ≥ min_count: with 1 the lone point's cell is kept too, and sizes follow log(count)/log(max)
    g1 = grid(xy, 2, acts, attrs, min_count=1)
    np.testing.assert_array_equal(g1.cells, [[0, 0], [1, 0], [1, 1]])
    np.testing.assert_allclose(g1.size, [1.0, 0.0, 1.0])
    assert grid(xy, 2, acts, attrs, min_count=4).cells.shape == (0, 2)
    # without attributions
    g2 = grid(xy, 2, acts)
    assert g2.mean_attr is None and (g2.top_class == -1).all()
    with pytest.raises(ValueError):
        grid(xy * 2, 2, acts)


def test_grid_matches_a_brute_force_loop():
    rng = np.random.default_rng(1)
    n_pts, n = 3000, 7
    xy = rng.beta(2, 3, size=(n_pts, 2))
    xy[:5] = 1.0
    acts = rng.normal(size=(n_pts, 40)).astype(np.float32)
    attrs = rng.normal(size=(n_pts, 6)).astype(np.float32)
    g = grid(torch.from_numpy(xy), n, torch.from_numpy(acts), attrs, min_count=20)
    want = {}
    for i, (x, y) in enumerate(xy):
        c, r = min(int(x * n), n - 1), min(int(y * n), n - 1)
        want.setdefault((c, r), []).append(i)
    kept = sorted((k for k, v in want.items() if len(v) >= 20), key=lambda k: (k[1], k[0]))
    assert [tuple(c) for c in g.cells] == kept
    for j, k in enumerate(kept):
        idx = want[k]
        assert g.count[j] == len(idx) and g.members[j].tolist() == idx
        np.testing.assert_allclose(g.mean_act[j], acts[idx].astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g.mean_attr[j], attrs[idx].astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
        assert g.top_class[j] == int(np.argmax(attrs[idx].astype(np.float64).mean(0)))
        np.testing.assert_allclose(g.size[j], np.log(len(idx)) / np.log(max(len(want[q]) for q in kept)))
    # cached form: numpy arrays only, and back
    d = g.to_dict()
    assert all(isinstance(v, np.ndarray) for v in d.values())
    back = AtlasGrid.from_dict(d)
    for f in ("cells", "count", "mean_act", "mean_attr", "top_class", "size", "centre"):
        np.testing.assert_array_equal(getattr(back, f), getattr(g, f))
    assert back.n == n and all((a == b).all() for a, b in zip(back.members, g.members))
    assert AtlasGrid.from_dict(grid(xy, n, acts).to_dict()).mean_attr is None


# ----------------------------------------------------------------------------- class atlases
def test_class_samples_by_hand():
    attr = np.array([[5, 1, 0],   # 0: winner of class 0
                     [0, 2, 1],   # 1: winner of class 1, attr to 0 is 0 (not positive)
                     [3, 4, 0],   # 2: winner of class 1, attr to 0 = 3
                     [1, 0, 9],   # 3: winner of class 2, attr to 0 = 1
                     [-1, -2, -3],  # 4: winner of class 0, but negative
                     [2, 0, 6]], dtype=np.float32)  # 5: attr to 0 = 2
    np.testing.assert_array_equal(class_samples(attr, 0, top=2), [0, 2, 4])  # winners {0, 4} ∪ top-2 {0, 2}
    np.testing.assert_array_equal(class_samples(attr, 0, top=3), [0, 2, 4, 5])
    np.testing.assert_array_equal(class_samples(attr, 0, winners=False, top=10), [0, 2, 3, 5])  # positive only
    np.testing.assert_array_equal(class_samples(attr, 0, top=0), [0, 4])
    np.testing.assert_array_equal(class_samples(torch.from_numpy(attr), 2, top=1), [3, 5])
    assert class_samples(attr, 1).dtype == np.int64


def test_two_class_x_orders_scales_and_clips():
    # |b − a| = 0, 1, …, 100 with alternating signs: the 99th percentile is exactly 99
    i = np.arange(101)
    d = np.where(i % 2 == 0, i, -i).astype(np.float64)
    attr = np.zeros((101, 3))
    attr[:, 2] = 5.0  # an unrelated class does not matter
    attr[:, 0] = -d / 2  # class a
    attr[:, 1] = d / 2   # class b: b − a = d
    x = two_class_x(attr, 0, 1)
    np.testing.assert_allclose(x, (np.clip(d / 99, -1, 1) + 1) / 2)
    assert x[100] == 1.0 and x[99] == 0.0 and x[0] == 0.5  # clipped at ±1; 0 is the a side
    np.testing.assert_allclose(x[2], (2 / 99 + 1) / 2)
    np.testing.assert_allclose(two_class_x(attr, 1, 0), 1 - x)  # swapping the classes mirrors
    assert (two_class_x(np.ones((5, 2)), 0, 1) == 0.5).all()


# ----------------------------------------------------------------------------- UMAP
@pytest.mark.slow
def test_layout_equals_umap_learn_called_directly_and_is_deterministic():
    import umap

    x, _ = blobs(600)
    got = layout(x, seed=3)
    assert got.shape == (600, 2) and got.dtype == np.float32
    want = umap.UMAP(n_components=2, n_neighbors=20, min_dist=0.01, metric="cosine", random_state=3,
                     transform_seed=3, n_jobs=1).fit_transform(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(normalize_layout(got), normalize_layout(want), atol=1e-6)
    np.testing.assert_array_equal(layout(torch.from_numpy(x), seed=3), got)  # same seed, same layout


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_small_fits_use_umap_learns_own_distance_matrix_bit_for_bit(metric):
    # below 4,096 rows umap-learn computes every distance through scikit-learn's Python loop over the
    # pairs; layout() computes the same matrix in compiled code and fits on it as "precomputed"
    import umap
    from sklearn.metrics import pairwise_distances
    from umap import distances as dist

    from interpgram.backends.kernels.atlas import umap_small

    x = np.random.default_rng(5).normal(size=(300, 24)).astype(np.float32)  # signed: cosine reaches past 1
    x[7] = -x[3]  # an exactly opposite pair: cosine 2, umap-learn's disconnection bound
    want = pairwise_distances(x, metric=dist.named_distances[metric])
    got = umap_small.distance_matrix(x, metric)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert umap_small.applies(metric, 4095) and not umap_small.applies(metric, 4096)
    direct = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.01, metric=metric, random_state=1,
                       transform_seed=1, n_jobs=1).fit_transform(x)
    np.testing.assert_array_equal(layout(x, n_neighbors=15, metric=metric, seed=1), direct)


@pytest.mark.slow
def test_fit_on_a_sample_and_transform_keeps_the_layout_faithful():
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import NearestNeighbors

    x, _ = blobs(2000)
    calls = []
    full = normalize_layout(layout(x, seed=0))
    part_raw = layout(x, seed=0, fit_sample=800, transform_batch=500, progress=lambda *a: calls.append(a))
    part = normalize_layout(part_raw)
    assert calls == [("fit", 0, 1), ("fit", 1, 1), ("transform", 0, 1200), ("transform", 500, 1200),
                     ("transform", 1000, 1200), ("transform", 1200, 1200)]
    # every row, held-out ones included: measured 0.906 (full) and 0.887 (800 + transform)
    t_full = trustworthiness(x, full, n_neighbors=10, metric="cosine")
    t_part = trustworthiness(x, part, n_neighbors=10, metric="cosine")
    assert t_full > 0.85 and t_part > 0.85
    assert t_part > t_full - 0.05
    # each transformed point lands among its nearest fitted neighbours (input space, cosine):
    # measured median 0.04 of the unit square, 95th percentile ≤ 0.12, random pairs 0.6–0.9
    fit_idx = np.sort(np.random.default_rng(0).choice(2000, size=800, replace=False))
    rest = np.setdiff1d(np.arange(2000), fit_idx)
    _, nb = NearestNeighbors(n_neighbors=5, metric="cosine").fit(x[fit_idx]).kneighbors(x[rest])
    dist = np.linalg.norm(part[rest] - np.median(part[fit_idx][nb], axis=1), axis=1)
    assert np.median(dist) < 0.1 and np.percentile(dist, 90) < 0.2
    # the fitted rows are umap's fit of that sample, untouched by the transform
    import umap
    fitted = umap.UMAP(n_neighbors=20, min_dist=0.01, metric="cosine", random_state=0, transform_seed=0,
                       n_jobs=1).fit_transform(x[fit_idx])
    np.testing.assert_allclose(part_raw[fit_idx], fitted, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_two_class_coords_puts_each_blob_in_its_own_band():
    x, label = blobs(400, k=2, spread=0.5, seed=4)
    attr = np.stack([np.where(label == 0, 2.0, 0.0), np.where(label == 1, 3.0, 0.0)], axis=1)
    attr += np.random.default_rng(0).normal(scale=0.1, size=attr.shape)
    xy = two_class_coords(x, attr, 0, 1, seed=0)
    assert xy.shape == (400, 2) and xy.dtype == np.float32
    assert xy.min() >= 0 and xy.max() <= 1
    np.testing.assert_allclose(xy[:, 0], two_class_x(attr, 0, 1), atol=1e-6)
    assert xy[label == 0, 0].max() < 0.5 < xy[label == 1, 0].min()  # class a left, b right
    # 1-D UMAP keeps the blobs apart in y: a point's 10 nearest in y share its blob, and sorted by
    # y the blobs come in a few long runs (1-D UMAP may split a blob around the other; over data
    # seeds 0–7: purity ≥ 0.997, 2–3 runs)
    from sklearn.neighbors import NearestNeighbors
    _, nb = NearestNeighbors(n_neighbors=11).fit(xy[:, 1:]).kneighbors(xy[:, 1:])
    assert (label[nb[:, 1:]] == label[:, None]).mean() > 0.97
    assert (np.diff(label[np.argsort(xy[:, 1])]) != 0).sum() + 1 <= 4
    np.testing.assert_allclose(layout_1d(x, seed=0), layout(x, seed=0, n_components=1)[:, 0])
