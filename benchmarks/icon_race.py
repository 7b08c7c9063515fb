"""The attempts race against running every attempt to the end, side by side in one run.

With ``attempts: 2`` the article's recipe optimises both random starts for all the steps and keeps
the better final image per icon. The race (``race: r``, default 0.5) runs both as rows of one batch
until r × steps, keeps each icon's leading attempt (by the objective of its untransformed image) and
optimises only that one on. This renders the same icons (channels 0..N-1 of --layer of the built-in
model, the default icon settings) with race 1 (every attempt to the end), 0.5 and 0.25, and prints
each run's time and the mean and worst ratio of its icons' final objective to race 1's.

    python benchmarks/icon_race.py [--layer conv4] [--icons 16] [--steps 256] [--attempts 2] [--device auto]
"""
from __future__ import annotations

import argparse
import time

import torch

import _bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="conv4")
    ap.add_argument("--icons", type=int, default=16)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--attempts", type=int, default=2)
    ap.add_argument("--races", default="1,0.5,0.25")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = _bench.device_or_exit(args.device, "icon_race.py")

    from interpgram.backends.kernels.optvis import objectives as O
    from interpgram.backends.kernels.optvis.render import IconSettings, render_vis
    from interpgram.backends.models import load_model

    model = load_model("builtin:shapes-cnn")
    objective = O.channel(args.layer, torch.arange(args.icons))
    render_vis(model, objective, args.icons, IconSettings(steps=2), device=device)  # untimed warm-up
    print(f"builtin:shapes-cnn {args.layer}, {args.icons} channel icons, {args.attempts} attempts, {args.steps} steps, "
          f"{device}, {torch.get_num_threads()} threads")
    print(f"{'race':>6}{'s':>8}{'speed-up':>10}{'mean objective':>16}{'mean ratio':>12}{'worst ratio':>12}")
    rows, base = [], None
    for race in (float(r) for r in args.races.split(",")):
        settings = IconSettings(steps=args.steps, attempts=args.attempts, race=race)
        t = time.perf_counter()
        r = render_vis(model, objective, args.icons, settings, seed=0, device=device)
        sec = time.perf_counter() - t
        base = base or (sec, r.scores)
        ratio = r.scores / base[1]
        rows.append({"race": race, "seconds": sec, "speedup": base[0] / sec, "mean_objective": float(r.scores.mean()),
                     "mean_ratio": float(ratio.mean()), "worst_ratio": float(ratio.min())})
        print(f"{race:>6g}{sec:>8.1f}{base[0] / sec:>9.2f}x{float(r.scores.mean()):>16.3f}"
              f"{float(ratio.mean()):>12.4f}{float(ratio.min()):>12.4f}", flush=True)
    _bench.result(layer=args.layer, icons=args.icons, steps=args.steps, attempts=args.attempts, rows=rows)


if __name__ == "__main__":
    main()
