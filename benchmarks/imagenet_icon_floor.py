"""Icons on the real pretrained network: one optimisation step against its floor, and its memory.

The floor of one feature-visualisation step is one forward and one backward pass of the network
truncated at the objective's layer, on a batch of the same size and resolution (the step adds the
Fourier parameterisation, colour decorrelation, the transforms, the objective and Adam). For
builtin:efficientnet-lite0 at a layer of the specs, for each batch size: seconds per step of
``render_vis`` (the real renderer, timed over --steps steps after a warm-up), seconds per
forward + backward of ``capture_until`` on the same batch, their ratio, the icons per second, and
the peak resident memory of a fresh process doing only that step loop.

    python benchmarks/imagenet_icon_floor.py [--layer _blocks.10] [--size 128] [--batches 8,16,32,98] [--steps 8]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch


def one(layer: str, size: int, batch: int, steps: int) -> dict:
    from interpgram.backends.kernels.capture import capture_until
    from interpgram.backends.kernels.optvis import Icon, IconSettings
    from interpgram.backends.kernels.optvis.render import icon_objective, render_vis
    from interpgram.backends.models import load_model

    model = load_model("builtin:efficientnet-lite0")
    icons = [Icon(layer, "channel", index=c) for c in range(batch)]
    obj = icon_objective(icons)
    render_vis(model, obj, batch, IconSettings(size=size, steps=1), device="cpu")  # warm-up
    t = time.perf_counter()
    render_vis(model, obj, batch, IconSettings(size=size, steps=steps), device="cpu")
    step = (time.perf_counter() - t) / steps
    module = model.on(torch.device("cpu"), torch.float32)
    x = torch.rand(batch, 3, size, size)
    times = []
    for _ in range(steps + 1):
        xi = model.preprocess(x).requires_grad_(True)
        t = time.perf_counter()
        a = capture_until(module, xi, [layer])[layer]
        a[torch.arange(batch), torch.arange(batch) % a.shape[1]].mean().backward()
        times.append(time.perf_counter() - t)
    floor = sum(times[1:]) / steps
    return {"step": step, "floor": floor, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="_blocks.10")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batches", default="8,16,32,98")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.layer, args.size, args.batch, args.steps)))
        return
    print(f"icons on builtin:efficientnet-lite0 {args.layer}, channel objective, {args.size} px, standard transforms, "
          f"{args.steps} timed steps; {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}")
    print(f"{'batch':>6}{'s/step':>9}{'floor s':>9}{'step/floor':>12}{'icon-steps/s':>14}{'peak MiB':>10}")
    for b in (int(x) for x in args.batches.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", "--batch", str(b), "--layer", args.layer,
                              "--size", str(args.size), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{b:>6}{r['step']:>9.3f}{r['floor']:>9.3f}{r['step'] / r['floor']:>12.2f}{b / r['step']:>14.1f}"
              f"{r['rss_mib']:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
