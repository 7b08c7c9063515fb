"""Activation grid: wall time as the number of cells grows, shared-parameter sampling vs naive.

The article's technique (interpgram's ``activation_grid``) optimises a random sample of 64 cells
per step, with cell images sharing parameters through an NMF of the positions, so a step costs the
same however many cells there are. The naive alternative optimises every cell's icon in every step
(one batched render_vis with one direction objective per cell). Both run the same steps and icon
size on conv4 activations of the built-in model for inputs of 32, 64 and 112 px (4×4 = 16,
8×8 = 64 and 14×14 = 196 cells). Prints seconds and the growth relative to the smallest grid.

    python benchmarks/activation_grid.py [--steps 64] [--cell 32] [--device auto] [--no-naive]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--cell", type=int, default=32)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 112], help="input sizes (cells = (size/8)²)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-naive", action="store_true")
    args = ap.parse_args()

    from interpgram.backends.data.inputs import load_inputs
    from interpgram.backends.models import load_model
    from interpgram.backends.kernels.capture import run_capture
    from interpgram.backends.execute.device import pick_device
    from interpgram.backends.kernels.optvis import IconSettings, objectives as O, render_vis
    from interpgram.backends.kernels.optvis.grid import activation_grid

    model = load_model("builtin:shapes-cnn")
    device = pick_device(args.device)
    image = load_inputs(["builtin:shapes/10"], (64, 64)).images
    acts = {}
    for s in args.sizes:
        x = F.interpolate(image, size=(s, s), mode="bilinear", align_corners=False)
        with torch.no_grad():
            a, _ = run_capture(model.module, model.preprocess(x), ["conv4"], grad=False)
        acts[s] = a["conv4"][0]
    activation_grid(model, acts[args.sizes[0]], "conv4", cell_size=args.cell, steps=2, device=device)  # warm-up

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    for s in args.sizes:
        a = acts[s]
        cells = a.shape[1] * a.shape[2]
        sync()
        t = time.perf_counter()
        activation_grid(model, a, "conv4", cell_size=args.cell, steps=args.steps, device=device)
        sync()
        t_grid = time.perf_counter() - t
        t_naive = None
        if not args.no_naive:
            vectors = a.reshape(a.shape[0], -1).T
            sync()
            t = time.perf_counter()
            render_vis(model, O.direction("conv4", vectors, cossim_pow=1.0), cells,
                       IconSettings(size=args.cell + 4, steps=args.steps, relu_redirect=0), device=device)
            sync()
            t_naive = time.perf_counter() - t
        rows.append((cells, t_grid, t_naive))

    print(f"activation grid, conv4 of builtin:shapes-cnn: {args.steps} steps, {args.cell} px cells, "
          f"64 sampled cells per step; device {device}, torch {torch.__version__}")
    print(f"{'cells':>6}{'grid s':>9}{'× smallest':>12}" + ("" if args.no_naive else f"{'naive s':>10}{'× smallest':>12}{'naive ÷ grid':>14}"))
    c0, g0, n0 = rows[0]
    for cells, g, n in rows:
        line = f"{cells:>6}{g:>9.2f}{g / g0:>12.2f}"
        if n is not None:
            line += f"{n:>10.2f}{n / n0:>12.2f}{n / g:>14.2f}"
        print(line)


if __name__ == "__main__":
    main()
