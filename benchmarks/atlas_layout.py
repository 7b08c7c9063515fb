"""Atlas layout: UMAP fitted on a sample + ``transform`` of the rest, against fitting on everything.

Synthetic activation-like vectors (N × C, default 100,000 × 256): a mixture of 24 gaussian
clusters in an 8-d latent space, pushed through a random linear map and a ReLU (non-negative,
correlated channels, clustered, like a layer's activations). Three layouts, all with the atlas's
defaults (20 neighbours, min_dist 0.01, cosine, seed 0):

* ``sample``: UMAP fitted on ``--fit-sample`` rows only (what the fit costs);
* ``sample+transform``: the same fit, then every other row placed with ``transform``
  (``interpgram.backends.kernels.atlas.layout.layout``; fit and transform timed apart through its
  progress callback);
* ``all``: UMAP fitted on all N rows (skipped with ``--no-full``; on 2 busy cores this is the slow one).

Quality: scikit-learn's trustworthiness (cosine, 10 neighbours) of the normalised layout on
5,000 rows drawn from the fitted sample (``E_fit``) and on 5,000 rows drawn from all N (``E_all``,
mostly transformed rows for ``sample+transform``). Numba compilation is paid in a warm-up first.

    NUMBA_CACHE_DIR=/tmp/numba-cache python benchmarks/atlas_layout.py [--n 100000] [--c 256]
        [--fit-sample 20000] [--eval 5000] [--no-full] [--seed 0]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def synthetic(n: int, c: int, seed: int = 0, clusters: int = 24, latent: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(clusters, latent))
    z = centres[rng.integers(0, clusters, n)] + rng.normal(scale=0.6, size=(n, latent))
    w = rng.normal(size=(latent, c)) / np.sqrt(latent)
    return np.maximum(z @ w + 0.3, 0).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--c", type=int, default=256)
    ap.add_argument("--fit-sample", type=int, default=20_000)
    ap.add_argument("--eval", type=int, default=5_000, help="rows the trustworthiness is measured on")
    ap.add_argument("--no-full", action="store_true", help="skip fitting UMAP on all N rows")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from sklearn.manifold import trustworthiness

    from interpgram.backends.kernels.atlas.layout import layout, normalize_layout

    x = synthetic(args.n, args.c, args.seed)
    n, fs = args.n, min(args.fit_sample, args.n)
    print(f"N = {n:,} × C = {args.c}, fit sample {fs:,}, seed {args.seed}")

    t = time.perf_counter()
    layout(x[:6000], fit_sample=5000, seed=args.seed)  # numba warm-up: nn-descent fit and transform paths
    print(f"warm-up (numba compilation, cached with NUMBA_CACHE_DIR): {time.perf_counter() - t:.1f} s")

    rng = np.random.default_rng(args.seed + 1)
    fit_idx = np.sort(np.random.default_rng(args.seed).choice(n, size=fs, replace=False))  # as layout() draws it
    e_fit = np.sort(rng.choice(fit_idx, size=min(args.eval, fs), replace=False))
    e_all = np.sort(rng.choice(n, size=min(args.eval, n), replace=False))

    def tw(xy: np.ndarray, rows: np.ndarray) -> float:
        return float(trustworthiness(x[rows], xy[rows], n_neighbors=10, metric="cosine"))

    stamps: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "fit" and done == 1:
            stamps["fit"] = time.perf_counter()

    t0 = time.perf_counter()
    xy = normalize_layout(layout(x, fit_sample=fs, seed=args.seed, progress=progress))
    total = time.perf_counter() - t0
    t_fit = stamps["fit"] - t0
    t_transform = total - t_fit
    # the fitted rows of that run are exactly a fit on the sample alone (same seed, same rows)
    xy_sample = normalize_layout(xy[fit_idx])
    pos = np.searchsorted(fit_idx, e_fit)
    tw_sample = float(trustworthiness(x[e_fit], xy_sample[pos], n_neighbors=10, metric="cosine"))
    rows = [("sample", t_fit, tw_sample, None),
            ("sample+transform", total, tw(xy, e_fit), tw(xy, e_all))]
    print(f"fit on {fs:,}: {t_fit:.1f} s; transform of {n - fs:,}: {t_transform:.1f} s "
          f"({(n - fs) / max(t_transform, 1e-9):,.0f} rows/s); total {total:.1f} s "
          f"= {total / t_fit:.2f}× the fit alone")

    if not args.no_full and n > fs:
        t0 = time.perf_counter()
        full = normalize_layout(layout(x, fit_sample=n, seed=args.seed))
        t_full = time.perf_counter() - t0
        rows.append(("all", t_full, tw(full, e_fit), tw(full, e_all)))
        print(f"fit on all {n:,}: {t_full:.1f} s = {t_full / total:.2f}× sample+transform")

    print()
    print(f"{'layout':<18} {'seconds':>9} {'trust E_fit':>12} {'trust E_all':>12}")
    for name, sec, a, b in rows:
        print(f"{name:<18} {sec:>9.1f} {a:>12.4f} {'' if b is None else f'{b:.4f}':>12}")


if __name__ == "__main__":
    main()
