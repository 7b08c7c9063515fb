"""Feature visualisation: many icons in one batched optimisation versus one icon at a time.

Both render the same icons (the channel objective of the first N channels of a layer of the
built-in model) with the same settings (size, steps, transforms, Adam 0.05) and the same per-icon
seeds; the only difference is whether the icons share one optimisation (one forward and backward
pass per step for all of them) or each runs its own. Prints icons per second for both, the ratio,
and the mean final objective of each (they should agree: batching changes the speed, not how well the
icons reach their objective; pixels can differ, because on CPU a batched convolution differs from a
single one by ~1e-6 and the optimisation can amplify that into another, equally good optimum).

    python benchmarks/featurevis_batching.py [--icons 16] [--steps 64] [--size 64] [--layer conv4] [--device auto]

The last line is ``RESULT {json}`` (the figures above) for benchmarks/gpu.py.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--icons", type=int, default=16)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--layer", default="conv4")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    from _bench import device_or_exit, result
    device = device_or_exit(args.device, "benchmarks/featurevis_batching.py")

    from interpgram.backends.models import load_model
    from interpgram.backends.kernels.optvis import Icon, IconSettings, render_icons

    model = load_model("builtin:shapes-cnn")
    settings = IconSettings(size=args.size, steps=args.steps)
    icons = [Icon(args.layer, "channel", index=c) for c in range(args.icons)]
    # warm-up (allocator, kernels) outside the timings
    render_icons(model, icons[:2], IconSettings(size=args.size, steps=2), device=device)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t

    batched, t_batched = timed(lambda: render_icons(model, icons, settings, device=device))
    single, t_single = timed(lambda: [render_icons(model, [ic], settings, device=device)[0] for ic in icons])
    same = max(float((a.images - b.images).abs().max()) for a, b in zip(batched, single))
    obj_b = sum(float(r.scores) for r in batched) / len(batched)
    obj_s = sum(float(r.scores) for r in single) / len(single)

    print(f"feature visualisation, batched vs one icon at a time — builtin:shapes-cnn {args.layer}, channel objective")
    print(f"{args.icons} icons, {args.steps} steps, {args.size} px, standard transforms, Adam 0.05; device {device}"
          f" ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()}), torch {torch.__version__}")
    print(f"{'mode':<22}{'seconds':>9}{'icons/s':>10}{'mean objective':>16}")
    print(f"{'one icon at a time':<22}{t_single:>9.2f}{args.icons / t_single:>10.2f}{obj_s:>16.3f}")
    print(f"{'batched':<22}{t_batched:>9.2f}{args.icons / t_batched:>10.2f}{obj_b:>16.3f}")
    print(f"ratio (icons/s batched ÷ one at a time): {t_single / t_batched:.2f}×")
    print(f"largest pixel difference between the two renders of an icon: {same:.2e} "
          "(float differences of batched convolutions, amplified by the optimisation)")
    result(device=device.type, icons=args.icons, steps=args.steps, size=args.size, layer=args.layer,
           batched_s=t_batched, single_s=t_single, batched_icons_per_s=args.icons / t_batched,
           single_icons_per_s=args.icons / t_single, ratio=t_single / t_batched,
           objective_batched=obj_b, objective_single=obj_s, max_pixel_difference=same)


if __name__ == "__main__":
    main()
