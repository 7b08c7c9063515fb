"""interpgram's feature visualisation versus torch-lucent's ``render_vis``, side by side in one run.

Same model (builtin:shapes-cnn), same objective (mean activation of one channel of --layer, one icon
per channel 0..N-1), same step count, same image size, same optimiser (Adam, lr 0.05), same
parameterisation (Fourier, decorrelated colour) and lucid's standard robustness transforms. These
modes are timed:

  lucent one-at-a-time   one render_vis call per icon, objective "net_<layer>:<c>" (its usual use)
  lucent batched         one render_vis call: param.image(size, batch=N) and the sum of
                         objectives.channel(layer, c_i, batch=i)
  ours one-at-a-time     render_vis(m, O.channel(layer, [c]), n=1) per icon
  ours batched           render_vis(m, O.channel(layer, arange(N)), n=N), all icons in one call
  ours batched, crop     the same, the transforms ending with lucid's crop_or_pad_to(size) (the model
                         sees size × size, as lucent's does)
  ours batched, crop, f32  the same with autocast off: the model in float32 also where auto runs it
                         in bfloat16 (a CPU with AMX or AVX512-BF16); lucent runs float32

For fairness every mode's final images are scored by one shared function: the mean activation of
the icon's channel for the final, un-transformed image (no jitter/scale/rotate), through the model.
Each side gets one short untimed warm-up call. With ``--rounds R`` every mode runs R times, the
modes taking turns within each round, and the table shows each mode's median (the ratios are
medians of the per-round ratios), so that a busy moment of a shared machine does not decide them. Hooks that lucent's render_vis leaves on the model
after each call are removed between calls, outside the timed region (otherwise they pile up).

Needs torch-lucent, which lives in its own venv (it asks for torchvision and an old kornia):

    bash benchmarks/lucent_env.sh
    .venv-lucent/bin/python benchmarks/vs_lucent.py [--icons 8] [--steps 64] [--size 64] [--layer conv4] [--rounds 3]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch import nn

ENV_HELP = ("torch-lucent is not importable in this Python ({exe}): {err}\n"
            "Create its venv and run the benchmark with it:\n"
            "    bash benchmarks/lucent_env.sh\n"
            "    .venv-lucent/bin/python benchmarks/vs_lucent.py")


class Normalised(nn.Module):
    """What lucent optimises: [0, 1] images in, the model's normalisation applied inside. lucent hooks
    every submodule under "_"-joined names, so layer ``conv4`` of the model is ``net_conv4`` here."""

    def __init__(self, loaded):
        super().__init__()
        self.net = loaded.module
        self._pre = loaded.preprocess

    def forward(self, x01):
        return self.net(self._pre(x01))


def clear_hooks(module: nn.Module) -> None:
    for sub in module.modules():
        sub._forward_hooks.clear()


@torch.no_grad()
def channel_scores(loaded, layer: str, images01: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Mean activation of channel ``channels[i]`` for image i (un-transformed), one forward pass."""
    got = {}
    mod = loaded.module.get_submodule(layer)
    h = mod.register_forward_hook(lambda _m, _i, out: got.__setitem__("a", out))
    try:
        loaded.module(loaded.preprocess(images01.float()))
    finally:
        h.remove()
    a = got["a"]
    return a[torch.arange(a.shape[0]), channels].mean(dim=(-2, -1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--icons", type=int, default=8)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--layer", default="conv4")
    ap.add_argument("--warmup-steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1, help="run every mode this many times, taking turns; report medians")
    args = ap.parse_args(argv)

    try:
        from lucent.optvis import objectives, param, render, transform
    except Exception as e:  # noqa: BLE001 - anything that stops lucent from loading
        print(ENV_HELP.format(exe=sys.executable, err=f"{type(e).__name__}: {e}"), file=sys.stderr)
        return 2

    from interpgram.backends.models import load_model
    from interpgram.backends.kernels.optvis import objectives as O
    from interpgram.backends.kernels.optvis.render import IconSettings, render_vis as our_render_vis

    m = load_model("builtin:shapes-cnn")
    N, steps, size, layer = args.icons, args.steps, args.size, args.layer
    width = m.layers()[layer][0]
    if N > width:
        ap.error(f"--icons {N}: layer {layer} has only {width} channels")
    chans = torch.arange(N)
    wrapped = Normalised(m).eval()
    llayer = "net_" + layer.replace(".", "_")

    def lucent_call(objective, batch, n_steps):
        try:
            out = render.render_vis(
                wrapped, objective,
                param_f=lambda: param.image(size, batch=batch, fft=True, decorrelate=True),
                optimizer=lambda params: torch.optim.Adam(params, lr=0.05),
                transforms=transform.standard_transforms,
                thresholds=(n_steps,), show_image=False, progress=False, preprocess=False,
                fixed_image_size=size)
        finally:
            clear_hooks(wrapped)  # render_vis never removes the hooks it adds
        return torch.from_numpy(out[-1]).permute(0, 3, 1, 2)  # (b, h, w, 3) -> (b, 3, h, w)

    def lucent_seed(k):
        torch.manual_seed(k)
        np.random.seed(k)  # lucent's transforms draw with np.random

    def batched_objective(cs):
        return sum((objectives.channel(llayer, int(c), batch=i) for i, c in enumerate(cs)), start=0) \
            if len(cs) > 1 else objectives.channel(llayer, int(cs[0]))

    def ours(n_steps, crop=False, autocast="auto"):
        from interpgram.backends.kernels.optvis.transforms import STANDARD
        return IconSettings(size=size, steps=n_steps, lr=0.05, attempts=1, param="fourier", decorrelate=True,
                            transforms=STANDARD + (("crop_or_pad", size),) if crop else "standard",
                            autocast=autocast)

    times: dict[str, list[float]] = {}
    finals: dict[str, torch.Tensor] = {}

    def record(mode, seconds, images):
        times.setdefault(mode, []).append(seconds)
        finals[mode] = images

    # warm-up (untimed): first-call costs (allocator, kernels, imports) off both sides' clocks
    lucent_seed(0)
    lucent_call(batched_objective(chans[:2]), 2, args.warmup_steps)
    our_render_vis(m, O.channel(layer, chans[:2]), n=2, settings=ours(args.warmup_steps), seed=0)

    own = float("nan")
    for _round in range(max(1, args.rounds)):
        # lucent, one icon per render_vis call
        imgs, t0 = [], time.perf_counter()
        for c in chans.tolist():
            lucent_seed(c)
            imgs.append(lucent_call(f"{llayer}:{c}", 1, steps))
        record("lucent one-at-a-time", time.perf_counter() - t0, torch.cat(imgs))

        # lucent, all icons in one render_vis call (param batch=N, objective summed over the batch)
        lucent_seed(0)
        t0 = time.perf_counter()
        img = lucent_call(batched_objective(chans), N, steps)
        record("lucent batched", time.perf_counter() - t0, img)

        # ours, one icon per call
        imgs, t0 = [], time.perf_counter()
        for c in chans.tolist():
            res = our_render_vis(m, O.channel(layer, torch.tensor([c])), n=1, settings=ours(steps), seed=c)
            imgs.append(res.images)
        record("ours one-at-a-time", time.perf_counter() - t0, torch.cat(imgs))

        # ours, all icons in one call
        t0 = time.perf_counter()
        res = our_render_vis(m, O.channel(layer, chans), n=N, settings=ours(steps), seed=0)
        record("ours batched", time.perf_counter() - t0, res.images)
        own = float(res.scores.mean())

        # ours, all icons in one call, with lucid's recipe ending crop_or_pad_to(size): the model then sees
        # size×size images, as lucent's fixed_image_size gives it (it resizes rather than crops)
        t0 = time.perf_counter()
        res = our_render_vis(m, O.channel(layer, chans), n=N, settings=ours(steps, crop=True), seed=0)
        record("ours batched, crop", time.perf_counter() - t0, res.images)

        # the same with the model in float32 whatever the CPU (auto runs it in bfloat16 where that is native)
        t0 = time.perf_counter()
        res = our_render_vis(m, O.channel(layer, chans), n=N, settings=ours(steps, crop=True, autocast="off"), seed=0)
        record("ours batched, crop, f32", time.perf_counter() - t0, res.images)

    rows = []
    for mode, secs in times.items():
        score = channel_scores(m, layer, finals[mode], chans)
        rows.append((mode, N, steps, size, float(np.median(secs)), float(np.median(secs)) / N, float(score.mean())))

    import importlib.metadata as md
    print(f"feature visualisation: interpgram vs torch-lucent {md.version('torch-lucent')} "
          f"(kornia {md.version('kornia')}), torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"model builtin:shapes-cnn, objective: mean activation of {layer} channel c, c = 0..{N - 1} "
          f"(lucent layer name {llayer!r})")
    print(f"{steps} steps, Adam lr 0.05, Fourier param + decorrelated colour, standard transforms, "
          f"{size}x{size} images; lucent with fixed_image_size={size}")
    print("  (without it lucent upsamples images under 224 px to 224 before the model), preprocess=False,")
    print("  normalisation inside the model wrapper. Differences that remain: lucent resizes the transformed")
    print(f"  image back to {size} px and runs the whole model; ours feeds the transformed image (~{size + 12} px)")
    print(f"  and stops after {layer}, with lucid's redirected-ReLU gradient for the first 16 steps.")
    print(f"  'ours batched, crop' adds lucid's recipe step crop_or_pad_to({size}), so its model input is {size} px too.")
    from interpgram.backends.execute.device import native_bfloat16
    print(f"  ours: autocast auto, which here runs the model in {'bfloat16' if native_bfloat16(torch.device('cpu')) else 'float32'}"
          " (native bfloat16: AMX or AVX512-BF16); 'f32' forces float32. lucent: float32.")
    print("final objective: mean channel activation of the final un-transformed images, same scorer for all\n")
    R = len(next(iter(times.values())))
    if R > 1:
        print(f"{R} rounds, the modes taking turns in each; seconds are medians (min-max in brackets)\n")
    hdr = f"{'mode':<26}{'icons':>6}{'steps':>6}{'size':>6}{'seconds':>10}{'s/icon':>9}{'final obj':>11}"
    print(hdr)
    print("-" * len(hdr))
    for mode, n, st, sz, sec, per, obj in rows:
        spread = f"  ({min(times[mode]):.2f}-{max(times[mode]):.2f})" if R > 1 else ""
        print(f"{mode:<26}{n:>6}{st:>6}{sz:>6}{sec:>10.2f}{per:>9.3f}{obj:>11.3f}{spread}")
    print(f"\n(ours batched: the engine's own scores average {own:.3f})")
    print("ratios, per icon (lucent s/icon / ours s/icon; above 1: ours is faster"
          + ("; the median of the rounds' ratios, each round's in brackets" if R > 1 else "") + "):")
    result = {}
    for a, b in (("ours batched", "lucent one-at-a-time"), ("ours batched", "lucent batched"),
                 ("ours batched, crop", "lucent batched"), ("ours batched, crop, f32", "lucent batched"),
                 ("ours one-at-a-time", "lucent one-at-a-time")):
        each = [tb / ta for ta, tb in zip(times[a], times[b])]
        result[f"{a} vs {b}"] = round(float(np.median(each)), 3)
        rounds = "  (" + ", ".join(f"{r:.2f}" for r in each) + ")" if R > 1 else ""
        print(f"  {a + ' vs ' + b + ':':<50}{float(np.median(each)):6.2f}{rounds}")
    import json
    print("RESULT " + json.dumps({"rounds": R, "ratios": result,
                                  "objective": {r[0]: round(r[6], 4) for r in rows}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
