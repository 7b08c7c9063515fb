"""Links, measured side by side in one run.

The spec links a hover on conv4 positions (8×8) to a conv2 → conv4 layer-to-layer attribution (the
article's spatial-to-spatial attribution: one backward pass per target position).

  precompute, fused     what `interpgram render` does for the static report: every selection in one
                        plan (one forward pass, one backward per position, shared nodes);
  precompute, one by one  each selection compiled and executed on its own (what a dashboard that
                        re-runs the element per hover would do): a forward and a backward each;
  live, first / again   one selection as `interpgram serve` computes it, the first time and again
                        (the second comes from the result cache).

The result cache is off for the precompute rows and on (a fresh temporary folder) for the live rows.
Prints wall times (median of --repeat) and ratios, and checks that fused and one-by-one agree.

    python benchmarks/links.py [--repeat 3] [--device auto]

The last line is ``RESULT {json}`` (the figures above) for benchmarks/gpu.py.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SPEC = """
interpgram: 1
model: builtin:shapes-cnn
input: builtin:shapes/10
execution: {{device: {device}, cache: false}}
elements:
  where: {{content: {{activation: {{layer: conv4, atom: spatial}}}}, presentation: heatmap}}
  upstream:
    content: {{attribution: {{from: {{layer: conv2, atom: spatial}}, to: {{layer: conv4, atom: spatial}}}}}}
    presentation: heatmap
links: [{{from: where.hover, to: upstream.to}}]
"""


def median_time(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    from _bench import device_or_exit, result
    device_or_exit(args.device, "benchmarks/links.py")

    from interpgram.backends import links, pipeline
    from interpgram.backends.execute.cache import ResultCache

    tmp = Path(tempfile.mkdtemp())
    spec = tmp / "links.yaml"
    spec.write_text(SPEC.format(device=args.device))
    prep = pipeline.prepare(spec)
    off = ResultCache(None, enabled=False)
    inputs, results = pipeline.run(prep, cache=off)
    li = prep.plan.link_info[0]
    sels = links.selections(prep.plan, results)
    print(f"{len(sels)} selections (conv4 positions) of link {li.source}.{li.event} → {li.element}.{li.target}; "
          f"device {results.device}; median of {args.repeat}")

    def fused():
        _, res, views = links.run_variants(prep, inputs, sels, cache=off)
        return res.stats, {v.key: v.data["maps"][0]["values"] for vs in views.values() for v in vs}

    def one_by_one():
        out, fwd, bwd = {}, 0, 0
        for sel in sels:
            _, res, views = links.run_variants(prep, inputs, [sel], cache=off)
            fwd, bwd = fwd + res.stats.forward_passes, bwd + res.stats.backward_passes
            out.update({v.key: v.data["maps"][0]["values"] for vs in views.values() for v in vs})
        return (fwd, bwd), out

    t_fused, (st, a) = median_time(fused, args.repeat)
    t_one, ((fwd, bwd), b) = median_time(one_by_one, args.repeat)
    worst = max(float(abs(torch.as_tensor(a[k]) - torch.as_tensor(b[k])).max()) for k in a)
    print(f"  precompute, fused       {t_fused:8.3f} s   {st.forward_passes} forward, {st.backward_passes} backward")
    print(f"  precompute, one by one  {t_one:8.3f} s   {fwd} forward, {bwd} backward")
    print(f"  fused is {t_one / t_fused:.2f}× faster; largest difference between the two: {worst:.2e}")

    firsts, agains = [], []
    for r in range(args.repeat):
        cache = ResultCache(tmp / f"cache{r}")
        value = (r % 8, 3)
        t = time.perf_counter()
        links.variant_views(prep, inputs, li.index, value, cache=cache)
        firsts.append(time.perf_counter() - t)
        t = time.perf_counter()
        links.variant_views(prep, inputs, li.index, value, cache=cache)
        agains.append(time.perf_counter() - t)
    first, again = statistics.median(firsts), statistics.median(agains)
    print(f"  live selection, first   {first * 1000:8.1f} ms   (compile, forward, backward, cache write, view)")
    print(f"  live selection, again   {again * 1000:8.1f} ms   (compile, cache read, view)")
    print(f"  a repeated selection is {first / again:.2f}× faster")
    result(device=str(results.device), selections=len(sels), repeat=args.repeat, fused_s=t_fused, one_by_one_s=t_one,
           ratio=t_one / t_fused, fused_passes=[st.forward_passes, st.backward_passes], one_by_one_passes=[fwd, bwd],
           max_difference=worst, live_first_ms=first * 1000, live_again_ms=again * 1000, live_ratio=first / again)
    return 0


if __name__ == "__main__":
    sys.exit(main())
