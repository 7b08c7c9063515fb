"""Every benchmark that matters, in one call: the whole performance table the first time a GPU is lent.

Runs, one after another, each in its own process (so one's memory or threads never colour the next):

  icon_floor           icon step vs its floor, icons per second at 128 and 224 px (3 models)
  featurevis_autocast  bfloat16 autocast on / off: seconds and the float32-scored objective
  featurevis_batching  icons batched vs one at a time
  fusion               the fused plan vs per-element vs captum
  links                precomputed link selections vs one at a time
  atlas_collect        collection images per second vs a per-image loop
  atlas_end_to_end     the 100,000-activation atlas by stage (collection, layout, grid, icons)

Each benchmark's own output is printed as it ran (its ratios and absolute times), then one summary:
benchmark, exit status, wall seconds. Sized for an H200 to finish in under 8 minutes; ``--quick`` runs
the same scripts on tiny sizes (about 3 minutes on 2 CPU cores) so a test can run it on a CPU and the
script cannot rot. Exits 1 when any benchmark failed, 2 for a device that is not there.

    python benchmarks/gpu.py [--device auto|cuda|cpu] [--quick] [--only icon_floor,fusion]
    bash benchmarks/gpu.sh   # the same
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def plan(device: str, quick: bool) -> list[tuple[str, list[str], int]]:
    """(name, arguments, timeout in s) per benchmark."""
    d = ["--device", device]
    if quick:
        return [
            ("icon_floor", ["--model", "shapes-cnn", "--sizes", "64", "--batches", "4", "--steps", "2", *d], 300),
            ("featurevis_autocast", ["--icons", "2", "--steps", "2", *d], 300),
            ("featurevis_batching", ["--icons", "2", "--steps", "2", "--size", "32", *d], 300),
            ("fusion", ["--images", "4", "--repeat", "1", *d], 300),
            ("links", ["--repeat", "1", *d], 300),
            ("atlas_collect", ["--n", "64", "--naive-n", "8", "--skip-rss", "--quiet", "--batch-size", "32", *d], 300),
            ("atlas_end_to_end", ["--n", "600", "--grid", "4", "--steps", "2", "--fit-sample", "300"], 600),
        ]
    return [
        ("icon_floor", ["--sizes", "128,224", "--batches", "16,64", "--steps", "16", *d], 900),
        ("featurevis_autocast", d, 600),
        ("featurevis_batching", d, 600),
        ("fusion", d, 600),
        ("links", d, 600),
        ("atlas_collect", ["--skip-rss", "--quiet", *d], 900),
        ("atlas_end_to_end", [], 1200),  # picks cuda by itself where there is one
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that every benchmark still runs")
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: --device cuda, but torch sees no CUDA device here; use --device cpu (or auto)", file=sys.stderr)
        return 2
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    todo = plan(device, args.quick)
    if args.only:
        names = {n for n, _, _ in todo}
        want = [n.strip() for n in args.only.split(",") if n.strip()]
        bad = [n for n in want if n not in names]
        if bad:
            ap.error(f"--only {', '.join(bad)}: choose from {', '.join(sorted(names))}")
        todo = [t for t in todo if t[0] in want]
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"interpgram benchmarks on {device} ({where}), torch {torch.__version__}, "
          f"{'quick sizes' if args.quick else 'full sizes'}", flush=True)
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "interpgram" / "numba"))
    summary = []
    for name, extra, limit in todo:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *extra]
        print(f"\n=== {name}: {' '.join(['python', f'benchmarks/{name}.py', *extra])}", flush=True)
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
            rc, out, err = r.returncode, r.stdout, r.stderr
        except subprocess.TimeoutExpired as e:
            rc = "timeout"
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = f"ran past {limit} s"
        seconds = time.perf_counter() - t0
        print(out.rstrip(), flush=True)
        if rc != 0:
            print(f"--- {name} failed ({rc}); the end of its stderr:\n" + "\n".join(err.strip().splitlines()[-20:]),
                  flush=True)
        summary.append((name, rc, seconds))
    print(f"\n{'benchmark':<22}{'status':>9}{'seconds':>10}")
    for name, rc, seconds in summary:
        print(f"{name:<22}{'ok' if rc == 0 else str(rc):>9}{seconds:>10.1f}")
    total = sum(s for _, _, s in summary)
    failed = [n for n, rc, _ in summary if rc != 0]
    print(f"{'total':<22}{'':>9}{total:>10.1f}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
