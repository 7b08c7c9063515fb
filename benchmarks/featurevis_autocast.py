"""Feature visualisation with the model in bfloat16 (autocast) versus float32, side by side.

The same 16 channel icons of conv4 (built-in model, 128 steps, 64 px, standard transforms, same
seeds) are optimised twice: with the model in float32, and under bfloat16 autocast (parameters,
transforms and objective stay float32). Both sets of final images are then scored by one float32
forward pass, so the objective column compares quality; the seconds column compares speed.
On cuda this is the default (``autocast: auto``); elsewhere ``autocast: bfloat16`` turns it on.

    python benchmarks/featurevis_autocast.py [--icons 16] [--steps 128] [--device auto]

The last line is ``RESULT {json}`` (the figures above) for benchmarks/gpu.py.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--icons", type=int, default=16)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--layer", default="conv4")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="builtin:shapes-cnn")
    ap.add_argument("--size", type=int, default=None, help="icon size in px (default: the model's input size)")
    args = ap.parse_args()
    from _bench import device_or_exit, result
    device = device_or_exit(args.device, "benchmarks/featurevis_autocast.py")

    from interpgram.backends.models import load_model
    from interpgram.backends.kernels.capture import run_capture
    from interpgram.backends.kernels.optvis import IconSettings, objectives as O, render_vis

    model = load_model(args.model)
    size = args.size or int(model.preprocess.size[0])
    chans = torch.arange(args.icons)
    objective = O.channel(args.layer, chans)
    render_vis(model, objective, args.icons, IconSettings(size=size, steps=2, autocast="bfloat16"), device=device)  # warm-up
    rows = []
    for mode in ("off", "bfloat16"):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        r = render_vis(model, objective, args.icons, IconSettings(size=size, steps=args.steps, autocast=mode),
                       device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        with torch.no_grad():
            acts, _ = run_capture(model.module.to(device).float(), model.preprocess(r.images.to(device)),
                                  [args.layer], grad=False)
        score = acts[args.layer][torch.arange(args.icons), chans].mean((1, 2))
        rows.append((mode, seconds, float(score.mean()), float(score.min())))
    print(f"feature visualisation, model in float32 vs bfloat16 autocast — {args.model} {args.layer}, "
          f"{args.icons} channel icons, {args.steps} steps, {size} px; device {device}, torch {torch.__version__}")
    print(f"{'model dtype':<14}{'seconds':>9}{'objective (fp32-scored) mean':>31}{'min':>8}")
    for mode, sec, mean, lo in rows:
        print(f"{'float32' if mode == 'off' else 'bfloat16':<14}{sec:>9.2f}{mean:>31.3f}{lo:>8.3f}")
    print(f"speed (float32 s ÷ bfloat16 s): {rows[0][1] / rows[1][1]:.2f}×; "
          f"objective ratio (bfloat16 ÷ float32): {rows[1][2] / rows[0][2]:.3f}")
    (_, f32_s, f32_obj, f32_min), (_, bf16_s, bf16_obj, bf16_min) = rows
    result(device=device.type, icons=args.icons, steps=args.steps, layer=args.layer, float32_s=f32_s, bfloat16_s=bf16_s,
           speed_ratio=f32_s / bf16_s, objective_float32=f32_obj, objective_bfloat16=bf16_obj,
           objective_ratio=bf16_obj / f32_obj, objective_min_float32=f32_min, objective_min_bfloat16=bf16_min)


if __name__ == "__main__":
    main()
