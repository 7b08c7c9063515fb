"""Channel icons with only the channels they read computed, against the whole layer, side by side.

A channel (or neuron) objective reads one channel of its layer per icon. Where the layer is one
convolution followed by channel-wise modules (conv, folded BatchNorm, ReLU: every conv layer of the
built-in model), the render loop computes only the batch's channels of that last convolution
(``render_vis(slice_channels=True)``, the default) instead of all of them. This renders the same
icons both ways, the two taking turns for ``--rounds`` rounds, and prints the median time of each,
the speed-up and the largest difference between the two runs' images and scores (0: the same
icons).

    python benchmarks/icon_slice.py [--layers conv2,conv3,conv4] [--icons 16] [--steps 64] [--rounds 3] [--device auto]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import _bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="conv2,conv3,conv4")
    ap.add_argument("--icons", type=int, default=16)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = _bench.device_or_exit(args.device, "icon_slice.py")

    from interpgram.backends.kernels.optvis import objectives as O
    from interpgram.backends.kernels.optvis.render import IconSettings, render_vis
    from interpgram.backends.models import load_model

    model = load_model("builtin:shapes-cnn")
    settings = IconSettings(steps=args.steps)
    print(f"builtin:shapes-cnn, {args.icons} channel icons per layer, {args.steps} steps at "
          f"{model.preprocess.size[0]} px (the default icon settings), {device}, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} rounds")
    print(f"{'layer':<8}{'channels':>9}{'whole s':>9}{'sliced s':>10}{'speed-up':>10}{'image diff':>12}{'score diff':>12}")
    rows = []
    for layer in args.layers.split(","):
        width = model.layers()[layer][0]
        objective = O.channel(layer, torch.arange(min(args.icons, width)))
        n = min(args.icons, width)
        for sl in (False, True):  # untimed warm-up of both paths (the frozen copy is made here)
            render_vis(model, objective, n, IconSettings(steps=2), device=device, slice_channels=sl)
        times = {False: [], True: []}
        out = {}
        for _ in range(args.rounds):
            for sl in (False, True):
                t = time.perf_counter()
                out[sl] = render_vis(model, objective, n, settings, seed=0, device=device, slice_channels=sl)
                times[sl].append(time.perf_counter() - t)
        whole, sliced = statistics.median(times[False]), statistics.median(times[True])
        img = float((out[True].images - out[False].images).abs().max())
        score = float((out[True].scores - out[False].scores).abs().max())
        rows.append({"layer": layer, "channels": width, "whole_s": whole, "sliced_s": sliced,
                     "speedup": whole / sliced, "image_diff": img, "score_diff": score})
        print(f"{layer:<8}{width:>9}{whole:>9.2f}{sliced:>10.2f}{whole / sliced:>9.2f}x{img:>12.2g}{score:>12.2g}",
              flush=True)
    _bench.result(icons=args.icons, steps=args.steps, rounds=args.rounds, rows=rows)


if __name__ == "__main__":
    main()
