"""Render time of every spec in specs/imagenet on the real pretrained network (builtin:efficientnet-lite0),
with a fresh cache and then from that cache, split by stage: model load + check (prepare), and each
executor stage (neuron groups / NMF, feature visualisation (icons), activation
grids, dataset examples, atlas collection / layout / icons); the rest is the network passes (and
the link selections' passes) and the report (views, charts, HTML).

    python benchmarks/imagenet_specs.py [--icon-steps N] [--only NAME,NAME]

--icon-steps replaces every icon's optimisation steps (the specs' own: 256) for a quicker draft; the
figures then say so. Each spec is rendered in this process one after another (the model loads once
per process: later specs' "prepare" reuse it).
"""
from __future__ import annotations

import argparse
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--icon-steps", type=int, default=None)
    ap.add_argument("--only", default="")
    args = ap.parse_args()

    from interpgram.backends import pipeline

    specs = sorted((ROOT / "specs" / "imagenet").glob("*.yaml"))
    if args.only:
        want = set(args.only.split(","))
        specs = [s for s in specs if s.stem in want]
    print(f"specs/imagenet on builtin:efficientnet-lite0 — icons at "
          f"{args.icon_steps or 'the specs’ own'} steps; {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(f"{'spec':<22}{'run':<7}{'total s':>9}{'prepare':>9}  stages (s)")
    tmp = Path(tempfile.mkdtemp(prefix="interpgram-bench-"))
    try:
        for spec in specs:
            cache = tmp / f"cache-{spec.stem}"
            for run in ("fresh", "cached"):
                t0 = time.perf_counter()
                prep = pipeline.prepare(spec, icon_steps=args.icon_steps)
                t_prep = time.perf_counter() - t0
                _, _, results = pipeline.render(prep, tmp / f"report-{spec.stem}", cache=cache)
                total = time.perf_counter() - t0
                sec = dict(results.stats.seconds)
                accounted = t_prep + sum(v for k, v in sec.items() if k not in ("cache lookup", "cache write"))
                sec["passes, links, report"] = max(0.0, total - accounted)
                stages = ", ".join(f"{k} {v:.1f}" for k, v in sec.items() if v >= 0.05)
                print(f"{spec.stem:<22}{run:<7}{total:>9.1f}{t_prep:>9.1f}  {stages}", flush=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory of this process: {peak:,.0f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
