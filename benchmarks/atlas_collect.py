"""Atlas collection: throughput against the naive loop, and peak memory at two data-set sizes.

1. Throughput. ``collect`` (batched; attribution to all K classes by one forward-mode pass per
   layer) against what one writes without it: for each image, a forward pass with hooks, then one
   backward pass per class, reading Σ_c h_c·∂logit_k/∂h_c at the image's sampled position. Both
   see the same images and positions (the naive loop loads the images in batches too); the
   collection's time includes writing its store. Prints both rates, their ratio and the largest
   difference between the two sets of numbers.
2. Peak RSS of a whole collection at each of ``--sizes`` images, each in a fresh subprocess
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), and the ratio of the largest to the smallest:
   flat (≈ 1.0) when memory does not grow with n.

    python benchmarks/atlas_collect.py                       # 2,000 images; RSS at 10,000 and 100,000
    python benchmarks/atlas_collect.py --n 500 --sizes 2000,8000 --threads 1     # a quick run
    python benchmarks/atlas_collect.py --skip-rss  /  --skip-throughput
    python benchmarks/atlas_collect.py --skip-rss --allow-code --layers mixed4d --n 64 --naive-n 2 --batch-size 32 \
        --model python:interpgram.backends.models.inceptionv1:InceptionV1          # K = 1,008 classes

The last line is ``RESULT {json}`` (the figures of the parts that ran) for benchmarks/gpu.py.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _spec(args, n: int):
    from interpgram.backends.kernels.atlas.collect import CollectSpec
    return CollectSpec(args.dataset, n, split="train", layers=tuple(args.layers.split(",")), positions="random",
                       seed=0, chunk=args.chunk, batch_size=args.batch_size)


def naive(model, ds, layers: list[str], n: int, seed: int, batch: int, device) -> dict:
    """Per image: forward with hooks, one backward per class. Returns {layer: (act (n, C), attr (n, K))}."""
    import numpy as np
    import torch

    from interpgram.backends.kernels.atlas.collect import grid_xy, sample_uv
    from interpgram.backends.kernels.capture import hooks

    module = model.on(device, torch.float32)
    k = len(model.classes)
    shapes = model.layers()
    out = {l: (np.zeros((n, shapes[l][0]), np.float32), np.zeros((n, k), np.float32)) for l in layers}
    uv = sample_uv(seed, range(n))
    for start in range(0, n, batch):
        x01 = ds.load(range(start, min(start + batch, n)))
        for j in range(x01.shape[0]):
            i = start + j
            x = model.preprocess(x01[j:j + 1].to(device)).requires_grad_(True)
            with torch.enable_grad(), hooks(module, layers) as store:
                logits = module(x)
            acts = [store[l] for l in layers]
            for c in range(k):
                grads = torch.autograd.grad(logits[0, c], acts, retain_graph=c < k - 1)
                for l, a, g in zip(layers, acts, grads):
                    if a.dim() == 2:
                        a, g = a[:, :, None, None], g[:, :, None, None]
                    xs, ys = grid_xy(uv[i:i + 1], a.shape[2], a.shape[3])
                    out[l][1][i, c] = float((a.detach() * g)[0, :, int(ys[0]), int(xs[0])].sum())
            for l, a in zip(layers, acts):
                a = a[:, :, None, None] if a.dim() == 2 else a
                xs, ys = grid_xy(uv[i:i + 1], a.shape[2], a.shape[3])
                out[l][0][i] = a[0, :, int(ys[0]), int(xs[0])].detach().cpu().numpy()
    return out


def throughput(args) -> dict:
    import numpy as np
    import torch

    from interpgram.backends.kernels.atlas.collect import collect
    from interpgram.backends.data.datasets import open_dataset
    from interpgram.backends.models import load_model
    from interpgram.backends.execute.device import pick_device

    model = load_model(args.model, allow_code=args.allow_code)
    device = pick_device(args.device)
    layers = args.layers.split(",")
    model.layers()
    n_naive = min(args.naive_n or args.n, args.n)
    # warm up both paths (one-time imports of forward-mode formulas, kernel selection)
    with tempfile.TemporaryDirectory() as warm:
        collect(model, _spec(args, 32), warm, device=args.device, progress=False)
    ds = open_dataset(args.dataset, n=args.n, split="train", size=model.preprocess.fit)
    naive(model, ds, layers, min(4, n_naive), 0, 4, device)

    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        st = collect(model, _spec(args, args.n), root, device=args.device, progress=not args.quiet)
        t_collect = time.perf_counter() - t
        got = {l: (st.read(f"{l}/act"), st.read(f"{l}/attr")) for l in layers}
        disk = st.disk_bytes()
    t = time.perf_counter()
    ref = naive(model, ds, layers, n_naive, 0, args.batch_size, device)
    t_naive = time.perf_counter() - t

    r_collect, r_naive = args.n / t_collect, n_naive / t_naive
    print(f"\nthroughput on {device} ({torch.get_num_threads()} threads), {args.model}, layers {', '.join(layers)}, "
          f"positions random, attribution to all {len(model.classes)} classes")
    print(f"{'method':<44}{'images':>8}{'seconds':>10}{'images/s':>11}")
    print(f"{'collect (forward-mode, batch ' + str(args.batch_size) + ', into the store)':<44}{args.n:>8}"
          f"{t_collect:>10.1f}{r_collect:>11.1f}")
    print(f"{'naive (per image: forward + 1 backward/class)':<44}{n_naive:>8}{t_naive:>10.1f}{r_naive:>11.1f}")
    print(f"speed-up: {r_collect / r_naive:.1f}×   store on disk: {disk / 2**20:.1f} MiB")
    # The check: the same images collected at batch size 1, like the naive loop. (Against the batched
    # collection a few values can differ beyond rounding: float32 convolutions round differently at
    # another batch size, and where that flips a ReLU or a max-pool near-tie the gradient path changes;
    # seen with InceptionV1's random weights, never with builtin:shapes-cnn. captum agrees with each at
    # its own batch size.)
    with tempfile.TemporaryDirectory() as root:
        one = collect(model, _spec1(args, n_naive), root, device=args.device, progress=False)
        same = {l: (one.read(f"{l}/act"), one.read(f"{l}/attr")) for l in layers}
    worst = 0.0
    for l in layers:
        for j, name in ((0, "act"), (1, "attr")):
            y = ref[l][j]
            scale = float(np.max(np.abs(y))) or 1.0
            batched = float(np.max(np.abs(got[l][j][:n_naive] - y)))
            single = float(np.max(np.abs(same[l][j] - y)))
            worst = max(worst, single / scale)
            print(f"  {l}/{name}: max |collect − naive| = {single:.2e} at batch 1, {batched:.2e} at batch "
                  f"{args.batch_size} (values up to {scale:.2e})")
    ok = worst < 1e-4
    print("numbers agree" if ok else f"NUMBERS DIFFER (worst relative {worst:.2e})")
    if not ok:
        raise SystemExit(1)
    return {"device": device.type, "model": args.model, "layers": layers, "classes": len(model.classes),
            "n": args.n, "naive_n": n_naive, "batch_size": args.batch_size, "collect_s": t_collect, "naive_s": t_naive,
            "collect_images_per_s": r_collect, "naive_images_per_s": r_naive, "speedup": r_collect / r_naive,
            "disk_mib": disk / 2**20, "worst_relative_difference": worst}


def _spec1(args, n: int):
    from interpgram.backends.kernels.atlas.collect import CollectSpec
    return CollectSpec(args.dataset, n, split="train", layers=tuple(args.layers.split(",")), positions="random",
                       seed=0, chunk=max(1, n), batch_size=1)


CHILD = """
import json, resource, sys, time
from interpgram.backends.kernels.atlas.collect import CollectSpec, collect
from interpgram.backends.models import load_model
a = json.loads(sys.argv[1])
model = load_model(a["model"], allow_code=a["allow_code"])
spec = CollectSpec(a["dataset"], a["n"], split="train", layers=tuple(a["layers"].split(",")), positions="random",
                   chunk=a["chunk"], batch_size=a["batch_size"])
t = time.perf_counter()
st = collect(model, spec, a["root"], device=a["device"], progress=False)
print(json.dumps({"n": a["n"], "seconds": time.perf_counter() - t, "nbytes": st.nbytes, "disk": st.disk_bytes(),
                  "complete": st.complete, "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def rss(args) -> dict:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as root:
            a = {"model": args.model, "dataset": args.dataset, "n": n, "layers": args.layers, "chunk": args.chunk,
                 "batch_size": args.batch_size, "device": args.device, "root": root,
                 "allow_code": args.allow_code}
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(a)], capture_output=True, text=True,
                                 env={**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})})
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"the collection of {n} images failed")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  {n} images done in {rows[-1]['seconds']:.0f} s", file=sys.stderr)
    print(f"\npeak RSS of a collection (fresh process each; layers {args.layers}, chunk {args.chunk}, "
          f"batch {args.batch_size})")
    print(f"{'images':>9}{'arrays MiB':>12}{'disk MiB':>10}{'seconds':>9}{'images/s':>10}{'peak RSS MiB':>14}")
    for r in rows:
        print(f"{r['n']:>9}{r['nbytes'] / 2**20:>12.1f}{r['disk'] / 2**20:>10.1f}{r['seconds']:>9.0f}"
              f"{r['n'] / r['seconds']:>10.0f}{r['maxrss'] / 2**20:>14.0f}")
    big, small = max(rows, key=lambda r: r["n"]), min(rows, key=lambda r: r["n"])
    print(f"peak RSS ratio {big['n']} / {small['n']} images: {big['maxrss'] / small['maxrss']:.3f} "
          f"(arrays grow {big['nbytes'] / small['nbytes']:.0f}×)")
    return {"rss": [{"n": r["n"], "seconds": r["seconds"], "images_per_s": r["n"] / r["seconds"],
                     "peak_rss_mib": r["maxrss"] / 2**20, "arrays_mib": r["nbytes"] / 2**20} for r in rows],
            "rss_ratio": big["maxrss"] / small["maxrss"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:shapes-cnn")
    ap.add_argument("--dataset", default="builtin:shapes")
    ap.add_argument("--layers", default="conv3,conv5")
    ap.add_argument("--n", type=int, default=2000, help="images for the throughput comparison")
    ap.add_argument("--naive-n", type=int, default=0, help="images for the naive loop (default: --n)")
    ap.add_argument("--sizes", default="10000,100000", help="data-set sizes for the peak-RSS comparison")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--allow-code", action="store_true", help="allow a python: model, e.g. "
                    "python:interpgram.backends.models.inceptionv1:InceptionV1 (random weights, 1,008 classes)")
    args = ap.parse_args()
    from _bench import device_or_exit, result
    device_or_exit(args.device, "benchmarks/atlas_collect.py")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    try:
        load = os.getloadavg()
        print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    except OSError:
        pass
    out = {"device": args.device, "threads": args.threads}
    if not args.skip_throughput:
        out.update(throughput(args))
    if not args.skip_rss:
        out.update(rss(args))
    result(**out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
