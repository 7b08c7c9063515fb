"""UMAP layout time in a fresh process, with and without the disk cache of umap's compiled functions.

Each run is a new Python process that fits UMAP on the same --n × --dim vectors with the class
atlas's settings (20 neighbours, min_dist 0.01, cosine, seed 0), as every ``interpgram render`` of an
atlas spec does. All runs share one new NUMBA_CACHE_DIR, in this order:

  cache, first run   interpgram's import_umap (every umap/pynndescent numba function cached on disk):
                     compiles and writes the cache
  umap as shipped    plain ``import umap``: the functions umap declares cache=True come from that
                     cache, the rest compile (what every render paid before)
  cache, warm        import_umap again: everything from the cache

and the coordinates of all three are compared (they must be identical).

    python benchmarks/umap_cache.py [--n 2000] [--dim 128] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import _bench

CHILD = r"""
import json, sys, time
import numpy as np
mode, n, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
if mode == "plain":
    import umap
else:
    from interpgram.backends.kernels.atlas.umap_cache import import_umap
    umap = import_umap()
t1 = time.perf_counter()
X = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
emb = umap.UMAP(n_neighbors=20, min_dist=0.01, metric="cosine", random_state=0, transform_seed=0,
                n_jobs=1).fit_transform(X)
t2 = time.perf_counter()
np.save(sys.argv[4], emb)
print("CHILD " + json.dumps({"import": t1 - t0, "fit": t2 - t1}))
"""


def run(mode: str, args, cache_dir: str, out: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    p = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.n), str(args.dim), out], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"umap_cache.py: the {mode} run failed:\n{p.stderr[-2000:]}")
    return json.loads([x for x in p.stdout.splitlines() if x.startswith("CHILD ")][-1][6:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2, help="warm runs of each kind (the best is kept)")
    args = ap.parse_args()
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="interpgram-numba-") as tmp:
        cache = os.path.join(tmp, "numba")
        first = run("cached", args, cache, os.path.join(tmp, "first.npy"))
        plain = [run("plain", args, cache, os.path.join(tmp, "plain.npy")) for _ in range(args.rounds)]
        warm = [run("cached", args, cache, os.path.join(tmp, "warm.npy")) for _ in range(args.rounds)]
        same = all(np.array_equal(np.load(os.path.join(tmp, "first.npy")), np.load(os.path.join(tmp, f)))
                   for f in ("plain.npy", "warm.npy"))
    best_plain = min(plain, key=lambda r: r["fit"])
    best_warm = min(warm, key=lambda r: r["fit"])
    print(f"UMAP fit of {args.n} x {args.dim} in a fresh process (s; import separately)")
    print(f"  cache, first run  fit {first['fit']:6.1f}  import {first['import']:.1f}")
    print(f"  umap as shipped   fit {best_plain['fit']:6.1f}  import {best_plain['import']:.1f}")
    print(f"  cache, warm       fit {best_warm['fit']:6.1f}  import {best_warm['import']:.1f}")
    print(f"warm cache vs umap as shipped: {best_plain['fit'] / best_warm['fit']:.2f}x faster fit; "
          f"coordinates identical: {same}")
    _bench.result(first_fit_s=first["fit"], plain_fit_s=best_plain["fit"], warm_fit_s=best_warm["fit"],
                  speedup=best_plain["fit"] / best_warm["fit"], identical=same)
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
