"""One feature-visualisation step against its floor, on the built-in CNN, InceptionV1 and EfficientNet-Lite0.

The floor of one optimisation step is one forward and one backward pass of the network as loaded,
truncated at the objective's layer, on a batch of the same size and resolution. A step adds the
Fourier parameterisation, colour decorrelation, the transforms, the objective and Adam. For each
model, size and batch this prints, measured side by side in one process:

  step      s per step of ``render_vis`` (the real renderer: the frozen, BatchNorm-folded,
            channels-last copy of the network), timed over --steps steps after a warm-up
  unfrozen  the same with ``frozen=False`` (the module as loaded: the code before the frozen copy)
  floor     s per forward + backward of the loaded module truncated at the layer (``capture_until``)
  step/floor, unfrozen/step, icons per second (batch / step) and the final objective of both runs

Icons here are fed to the model at the icon size (lucid's ``crop_or_pad`` after the standard
transforms), so the floor's input and the step's are the same size. InceptionV1 uses random
weights (the published ones are a download), which costs the same time.

    python benchmarks/icon_floor.py [--model shapes-cnn,inceptionv1,efficientnet-lite0] [--sizes 128]
        [--batches 16] [--steps 8] [--device auto] [--layer L] [--autocast auto|off|bfloat16]

The last line is ``RESULT {json}`` (one row per model, size and batch) for benchmarks/gpu.py.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

MODELS = {  # name: (source, default layer, kwargs of load_model)
    "shapes-cnn": ("builtin:shapes-cnn", "conv4", {}),
    "inceptionv1": ("python:interpgram.backends.models.inceptionv1:InceptionV1", "mixed4a", {"allow_code": True}),
    "efficientnet-lite0": ("builtin:efficientnet-lite0", "_blocks.10", {}),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def one(name: str, layer: str, size: int, batch: int, steps: int, device: torch.device, autocast: str = "auto") -> dict:
    from interpgram.backends.kernels.capture import capture_until
    from interpgram.backends.kernels.optvis import Icon, IconSettings
    from interpgram.backends.kernels.optvis.render import icon_objective, render_vis
    from interpgram.backends.kernels.optvis.transforms import STANDARD
    from interpgram.backends.models import load_model

    source, _, kw = MODELS[name]
    model = load_model(source, **kw)
    width = model.layers()[layer][0]
    obj = icon_objective([Icon(layer, "channel", index=c % width) for c in range(batch)])
    settings = IconSettings(size=size, steps=steps, transforms=STANDARD + (("crop_or_pad", size),), relu_redirect=0,
                            autocast=autocast)
    out = {}
    for frozen in (True, False):  # warm-up both, then time both
        render_vis(model, obj, batch, IconSettings(size=size, steps=1, relu_redirect=0, autocast=autocast),
                   device=device, frozen=frozen)
    for frozen in (True, False):
        _sync(device)
        t = time.perf_counter()
        r = render_vis(model, obj, batch, settings, device=device, frozen=frozen)
        _sync(device)
        out["step" if frozen else "unfrozen"] = (time.perf_counter() - t) / (steps + 1)  # + the final evaluation
        out["objective" if frozen else "objective_unfrozen"] = float(r.scores.mean())
    module = model.on(device, torch.float32)
    x = torch.rand(batch, 3, size, size, device=device)
    idx = torch.arange(batch, device=device)
    times = []
    for _ in range(steps + 1):
        xi = model.preprocess(x).requires_grad_(True)
        _sync(device)
        t = time.perf_counter()
        a = capture_until(module, xi, [layer])[layer]
        a[idx, idx % a.shape[1]].mean().backward()
        _sync(device)
        times.append(time.perf_counter() - t)
    out["floor"] = sum(times[1:]) / steps
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-cnn,inceptionv1,efficientnet-lite0",
                    help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--layer", default=None, help="default: conv4 / mixed4a / _blocks.10")
    ap.add_argument("--sizes", default="128")
    ap.add_argument("--batches", default="16")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--autocast", default="auto", choices=("auto", "off", "bfloat16"),
                    help="the steps' autocast (auto: bfloat16 where it is native); the floor is always float32")
    args = ap.parse_args(argv)
    from _bench import device_or_exit, result

    names = [m.strip() for m in args.model.split(",") if m.strip()]
    bad = [m for m in names if m not in MODELS]
    if bad:
        ap.error(f"--model {', '.join(bad)}: choose from {', '.join(MODELS)}")
    device = device_or_exit(args.device, "icon_floor.py")
    from interpgram.backends.execute.device import native_bfloat16

    bf16 = args.autocast == "bfloat16" or (args.autocast == "auto" and native_bfloat16(device))
    steps_dtype = f"bfloat16 (autocast {args.autocast})" if bf16 else f"float32 (autocast {args.autocast})"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    print(f"icon step vs its floor: channel objective, standard transforms + crop_or_pad to the size, "
          f"{args.steps} timed steps; {device.type} ({where}), torch {torch.__version__}; steps in {steps_dtype}, "
          "floor in float32")
    hdr = (f"{'model':<20}{'layer':<12}{'px':>5}{'batch':>6}{'step s':>9}{'unfrozen s':>11}{'floor s':>9}"
           f"{'step/floor':>11}{'unfrozen/step':>14}{'icon-steps/s':>13}{'objective':>10}{'(unfrozen)':>11}")
    print(hdr)
    rows = []
    for name in names:
        layer = args.layer or MODELS[name][1]
        for size in (int(s) for s in args.sizes.split(",")):
            for b in (int(x) for x in args.batches.split(",")):
                r = one(name, layer, size, b, args.steps, device, args.autocast)
                row = {"model": name, "layer": layer, "size": size, "batch": b, "step_s": r["step"],
                       "unfrozen_s": r["unfrozen"], "floor_s": r["floor"], "ratio": r["step"] / r["floor"],
                       "speedup": r["unfrozen"] / r["step"], "icons_per_s": b / r["step"],
                       "objective": r["objective"], "objective_unfrozen": r["objective_unfrozen"]}
                rows.append(row)
                print(f"{name:<20}{layer:<12}{size:>5}{b:>6}{r['step']:>9.4f}{r['unfrozen']:>11.4f}{r['floor']:>9.4f}"
                      f"{row['ratio']:>11.2f}{row['speedup']:>14.2f}{row['icons_per_s']:>13.1f}"
                      f"{r['objective']:>10.3f}{r['objective_unfrozen']:>11.3f}", flush=True)
    print("icon-steps/s: icons optimised one step per second (batch / step s)")
    result(rows=rows, device=device.type)
    return 0


if __name__ == "__main__":
    sys.exit(main())
