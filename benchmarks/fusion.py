"""Fused plan versus one element at a time, measured side by side in one run.

The spec has 8 elements over 4 layers and 2 classes. Three ways to compute the same numbers:
  fused        interpgram's plan: one forward pass, one backward pass per distinct target;
  per-element  interpgram, each element compiled and executed on its own (own forward/backward);
  captum       what a captum user writes: LayerGradientXActivation / LayerActivation per element
               and class, each call its own forward (and backward) pass.
The result cache is off for all three. Prints pass counts, wall times (median of --repeat runs)
and the ratios; also checks that the three give the same numbers.

    python benchmarks/fusion.py [--images 32] [--repeat 5] [--device auto]

The last line is ``RESULT {json}`` (the figures above) for benchmarks/gpu.py.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

SPEC = """
interpgram: 1
title: fusion benchmark
model: builtin:shapes-cnn
input: builtin:shapes/0-{last}
execution: {{device: {device}, cache: false}}
elements:
  attr2:  {{content: {{attribution: {{from: {{layer: conv2}}, to: {{layer: output, select: [star, triangle]}}}}}}, presentation: heatmap}}
  attr3:  {{content: {{attribution: {{from: {{layer: conv3}}, to: {{layer: output, select: [star, triangle]}}}}}}, presentation: heatmap}}
  attr4:  {{content: {{attribution: {{from: {{layer: conv4}}, to: {{layer: output, select: [star, triangle]}}}}}}, presentation: heatmap}}
  chan4:  {{content: {{attribution: {{from: {{layer: conv4, atom: channel}}, to: {{layer: output, select: [star, triangle]}}}}}}, presentation: bars}}
  chan5:  {{content: {{attribution: {{from: {{layer: conv5, atom: channel}}, to: {{layer: output, select: [star]}}}}}}, presentation: bars}}
  mag3:   {{content: {{activation: {{layer: conv3}}}}, presentation: heatmap}}
  mag4:   {{content: {{activation: {{layer: conv4}}}}, presentation: heatmap}}
  diff3:
    content:
      transform:
        op: compare
        a: {{attribution: {{from: {{layer: conv3}}, to: {{layer: output, select: [star]}}}}}}
        b: {{attribution: {{from: {{layer: conv3}}, to: {{layer: output, select: [triangle]}}}}}}
    presentation: heatmap
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    from _bench import device_or_exit, result
    device = device_or_exit(args.device, "benchmarks/fusion.py")

    from captum.attr import LayerActivation, LayerGradientXActivation

    from interpgram.backends.data.inputs import load_inputs
    from interpgram.backends.models import load_model
    from interpgram.backends.pipeline import model_info
    from interpgram.backends.kernels import attribution as A
    from interpgram.backends.execute.cache import ResultCache
    from interpgram.backends.kernels.capture import resolve_module
    from interpgram.backends.execute.executor import execute
    from interpgram.grammar import compile_spec, load_spec_text

    text = SPEC.format(last=args.images - 1, device=args.device)
    loaded = load_spec_text(text, "benchmarks/fusion.py")
    model = load_model("builtin:shapes-cnn")
    info = model_info(model)
    plan = compile_spec(loaded, info)
    inputs = load_inputs(loaded.spec.inputs, model.preprocess.size)
    off = ResultCache(None, enabled=False)

    # one plan per element, compiled from a spec holding only that element
    per_element = []
    for el_id, el in loaded.spec.elements.items():
        one = loaded.spec.model_copy(update={"elements": {el_id: el}, "layout": None, "links": []})
        sub = type(loaded)(one, loaded.located)
        per_element.append(compile_spec(sub, info))

    def fused():
        return execute(plan, model, inputs, cache=off)

    def unfused():
        return [execute(p, model, inputs, cache=off) for p in per_element]

    module = model.module.to(device)
    x = model.preprocess(inputs.images.to(device))
    classes = {c: i for i, c in enumerate(model.classes)}

    def captum_style():
        out, passes = {}, {"forward": 0, "backward": 0}
        for el_id, el in loaded.spec.elements.items():
            c = el.content
            if hasattr(c, "activation"):
                layer = c.activation.layer
                a = LayerActivation(module, resolve_module(module, layer)).attribute(x)
                out[el_id] = [A.reduce(a, None, "spatial")]
                passes["forward"] += 1
                continue
            if hasattr(c, "transform"):
                t = c.transform
                pair = []
                for side in (t.a, t.b):
                    layer = side.attribution.from_.layer
                    cls = classes[side.attribution.to.select[0]]
                    g = LayerGradientXActivation(module, resolve_module(module, layer)).attribute(x, target=cls)
                    pair.append(g.sum(1))
                    passes["forward"] += 1
                    passes["backward"] += 1
                out[el_id] = [pair[0] - pair[1]]
                continue
            attr = c.attribution
            layer = attr.from_.layer
            atom = attr.from_.atom or "spatial"
            res = []
            for name in attr.to.select:
                g = LayerGradientXActivation(module, resolve_module(module, layer)).attribute(x, target=classes[name])
                res.append(g.sum(1) if atom == "spatial" else g.sum((2, 3)))
                passes["forward"] += 1
                passes["backward"] += 1
            out[el_id] = res
        return out, passes

    def timed(fn):
        fn()  # warm-up
        ts = []
        for _ in range(args.repeat):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            r = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts), r

    t_fused, r_fused = timed(fused)
    t_unfused, r_unfused = timed(unfused)
    t_captum, (r_captum, captum_passes) = timed(captum_style)

    # the same numbers, three ways
    for p in plan.elements:
        for k, s in enumerate(p.series):
            ref = r_captum[p.element][k].float().cpu()
            got = r_fused.values[s.op]["value"]
            scale = ref.abs().max().item() or 1.0
            assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * scale), (p.element, (got - ref).abs().max())

    f_pass = r_fused.stats
    u_fwd = sum(r.stats.forward_passes for r in r_unfused)
    u_bwd = sum(r.stats.backward_passes for r in r_unfused)
    print(f"fusion benchmark: {len(plan.elements)} elements, {len(info.layers and plan.layer_shapes)} layers, "
          f"2 classes, {args.images} images of {tuple(model.preprocess.size)}, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeat}")
    print(f"{'':14}{'forward':>9}{'backward':>10}{'seconds':>10}{'vs fused':>10}")
    print(f"{'fused':14}{f_pass.forward_passes:>9}{f_pass.backward_passes:>10}{t_fused:>10.4f}{1.0:>9.2f}×")
    print(f"{'per-element':14}{u_fwd:>9}{u_bwd:>10}{t_unfused:>10.4f}{t_unfused / t_fused:>9.2f}×")
    print(f"{'captum':14}{captum_passes['forward']:>9}{captum_passes['backward']:>10}{t_captum:>10.4f}{t_captum / t_fused:>9.2f}×")
    print("all three agree on every element's numbers (rtol 1e-4)")
    result(device=device.type, images=args.images, repeat=args.repeat, elements=len(plan.elements),
           fused_s=t_fused, per_element_s=t_unfused, captum_s=t_captum,
           per_element_ratio=t_unfused / t_fused, captum_ratio=t_captum / t_fused,
           fused_passes=[f_pass.forward_passes, f_pass.backward_passes], per_element_passes=[u_fwd, u_bwd],
           captum_passes=[captum_passes["forward"], captum_passes["backward"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
