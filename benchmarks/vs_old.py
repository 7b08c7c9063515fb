"""End-to-end render time of specs with this checkout's code against an older commit's, side by side in one run.

    python benchmarks/vs_old.py [--old 1e04b21] [--specs specs/shapes/class_atlas.yaml,...] [--rounds 1]

The older commit is exported with ``git archive`` into a temporary folder and installed there with
``pip install --no-deps --target`` (its own files, this venv's packages), so both sides run on the same
Python, torch and numba. Each spec is rendered by each side in a fresh process with a fresh cache, the two
sides taking turns (old, new, old, new ... with --rounds > 1) so that a machine that gets busier during
the run slows both. Before the first timed render, one untimed UMAP fit fills numba's on-disk cache, which
both sides share, so that neither pays its compilation. Each child reports the executor's own stage
times (icons, atlas collection, layout, ...); the rest of the wall time is model load, network passes and
the report. Icon quality is the objective each icon reaches: the table gives the mean over each render's
icons, and since an atlas's cells (so its icons) move when the collection's last bits change, the icons
of the new side's render are then optimised once more by each side's renderer (no cache), and the mean
objective and the median per-icon ratio of those same icons are printed: a side that is faster by making
worse icons shows it there.

The default old commit, 1e04b21, is the code before issue 14's work (the commit on which the issue's
451 s class atlas and 164 s semantic dictionary were measured).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _bench

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPECS = "specs/shapes/class_atlas.yaml,specs/shapes/semantic_dictionary.yaml"

# Runs in the child, against whichever interpgram its sys.path finds first. It records every icon the
# render optimises (its fields, settings, seed and final objective) so that the icons can be compared.
CHILD = r"""
import dataclasses, json, pickle, sys, time
t0 = time.perf_counter()
import interpgram
from interpgram.backends import pipeline
from interpgram.backends.kernels import featurevis as FV
from interpgram.backends.kernels.atlas import icons as AI
from interpgram.backends.kernels.optvis import render as R
calls = []
_orig = R.render_icons
def _recorded(model, icons, settings=R.DEFAULT_SETTINGS, **kw):
    res = _orig(model, icons, settings, **kw)
    calls.append({"icons": [dataclasses.asdict(i) for i in icons], "settings": dataclasses.asdict(settings),
                  "seed": kw.get("seed", 0), "scores": [float(r.scores[0]) for r in res]})
    return res
R.render_icons = FV.render_icons = AI.render_icons = _recorded
spec, out, cache, record = sys.argv[1:5]
prep = pipeline.prepare(spec)
_, _, results = pipeline.render(prep, out, cache=cache)
total = time.perf_counter() - t0
with open(record, "wb") as f:
    pickle.dump(calls, f)
print("CHILD " + json.dumps({"file": interpgram.__file__, "total": total, "stages": dict(results.stats.seconds),
                             "icon_scores": [x for c in calls for x in c["scores"]]}))
"""

# Renders the icons another child recorded, with this side's renderer (no cache), for a per-icon comparison.
CHILD_ICONS = r"""
import dataclasses, json, pickle, sys, time
import interpgram
from interpgram.backends import pipeline
from interpgram.backends.kernels.optvis import render as R
spec, record = sys.argv[1:3]
model = pipeline.prepare(spec).model
known = {f.name for f in dataclasses.fields(R.IconSettings)}
scores, t = [], time.perf_counter()
for c in pickle.load(open(record, "rb")):
    settings = R.IconSettings(**{k: v for k, v in c["settings"].items() if k in known})
    icons = [R.Icon(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in i.items()}) for i in c["icons"]]
    scores += [float(r.scores[0]) for r in R.render_icons(model, icons, settings, seed=c["seed"], device="cpu")]
print("CHILD " + json.dumps({"file": interpgram.__file__, "seconds": time.perf_counter() - t, "scores": scores}))
"""

ICON_STAGES = ("feature visualisation", "atlas icons")  # the executor's stages that optimise icons

WARM = r"""
import numpy as np, umap
umap.UMAP(n_neighbors=5, random_state=0).fit_transform(np.random.default_rng(0).normal(size=(300, 8)))
"""


def install_old(ref: str, where: Path) -> Path:
    src, site = where / "src", where / "site"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(src)], check=True)
    return site


def _child(code: str, args: list[str], site: Path | None, tmp: Path, tag: str) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd=tmp)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"vs_old.py: {tag} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads([x for x in p.stdout.splitlines() if x.startswith("CHILD ")][-1][6:])
    r["wall"] = wall
    where = Path(r["file"]).resolve()
    if (site is not None) != (tmp in where.parents):
        raise SystemExit(f"vs_old.py: {tag} imported {where}")
    return r


def run_child(spec: str, site: Path | None, tmp: Path, tag: str) -> dict:
    out, cache = tmp / f"report-{tag}", tmp / f"cache-{tag}"
    r = _child(CHILD, [str(ROOT / spec), str(out), str(cache), str(tmp / f"icons-{tag}.pkl")], site, tmp, tag)
    r["record"] = tmp / f"icons-{tag}.pkl"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="1e04b21", help="the older commit (default: before issue 14's work)")
    ap.add_argument("--specs", default=DEFAULT_SPECS, help="comma-separated spec paths, relative to the repository")
    ap.add_argument("--rounds", type=int, default=1, help="renders of each spec by each side")
    args = ap.parse_args()
    old_sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.old], check=True,
                             capture_output=True, text=True).stdout.strip()
    new_sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True,
                             capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    import torch
    print(f"old {old_sha} against this checkout ({new_sha}{' + uncommitted changes' if dirty else ''}); "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="interpgram-vs-old-"))
    rows: dict[str, dict] = {}
    try:
        site = install_old(args.old, tmp / "old")
        subprocess.run([sys.executable, "-c", WARM], check=True, capture_output=True)
        print(f"{'spec':<26}{'side':<5}{'wall s':>8}{'icons s':>9}{'other s':>9}{'icons':>7}{'mean score':>12}")
        for spec in args.specs.split(","):
            name = Path(spec).stem
            for rnd in range(args.rounds):
                for side in ("old", "new"):
                    r = run_child(spec, site if side == "old" else None, tmp, f"{name}-{side}-{rnd}")
                    icons = sum(v for k, v in r["stages"].items() if k in ICON_STAGES)
                    sc = r["icon_scores"]
                    mean = sum(sc) / len(sc) if sc else float("nan")
                    print(f"{name:<26}{side:<5}{r['wall']:>8.1f}{icons:>9.1f}{r['wall'] - icons:>9.1f}"
                          f"{len(sc):>7}{mean:>12.3f}", flush=True)
                    stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items() if v >= 0.1)
                    print(f"{'':<31}stages (s): {stages}", flush=True)
                    rows.setdefault(name, {}).setdefault(side, []).append(
                        {"wall": r["wall"], "icons": icons, "n_icons": len(sc), "mean_score": mean,
                         "stages": r["stages"], "record": r["record"]})
        print()
        # the icons of the new side's render, optimised again by each side's renderer: a per-icon
        # comparison of the objective that does not depend on both renders choosing the same icons (an
        # atlas's cells move when the collection's last bits do)
        same: dict[str, dict] = {}
        for spec in args.specs.split(","):
            name = Path(spec).stem
            record = rows[name]["new"][0]["record"]
            got = {side: _child(CHILD_ICONS, [str(ROOT / spec), str(record)], site if side == "old" else None, tmp,
                                f"{name}-{side}-icons") for side in ("old", "new")}
            o, n = got["old"]["scores"], got["new"]["scores"]
            if o:
                ratio = sorted(b / a for a, b in zip(o, n) if a != 0)
                same[name] = {"icons": len(o), "old_s": got["old"]["seconds"], "new_s": got["new"]["seconds"],
                              "old_mean": sum(o) / len(o), "new_mean": sum(n) / len(n),
                              "median_ratio": ratio[len(ratio) // 2] if ratio else float("nan")}
                d = same[name]
                print(f"{name}: the same {d['icons']} icons, old renderer {d['old_s']:.1f} s, new {d['new_s']:.1f} s "
                      f"({d['old_s'] / d['new_s']:.2f}x); mean objective old {d['old_mean']:.4g}, new {d['new_mean']:.4g}"
                      f" (new/old {d['new_mean'] / d['old_mean']:.3f}; median per-icon ratio {d['median_ratio']:.3f})",
                      flush=True)
        summary = {}
        for name, sides in rows.items():
            old = min(x["wall"] for x in sides["old"])
            new = min(x["wall"] for x in sides["new"])
            summary[name] = {"old_s": old, "new_s": new, "speedup": old / new,
                             "old_score": sides["old"][0]["mean_score"], "new_score": sides["new"][0]["mean_score"]}
            print(f"{name}: old {old:.1f} s, new {new:.1f} s: {old / new:.2f}x faster end to end "
                  f"(mean icon objective {summary[name]['old_score']:.3f} -> {summary[name]['new_score']:.3f})")
        _bench.result(old=old_sha, new=new_sha, specs=summary, same_icons=same)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
