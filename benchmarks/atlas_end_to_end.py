"""An activation atlas of N activations (default 100,000) of the built-in model, end to end, with
the time of each stage: collection (images → activations + attribution to every class, chunked store),
whitening + UMAP layout (fit on a sample, transform the rest), grid, icons, report.

    python benchmarks/atlas_end_to_end.py                   # 100,000 images, conv4, 20 × 20 grid
    python benchmarks/atlas_end_to_end.py --n 20000 --steps 64
    python benchmarks/atlas_end_to_end.py --device cuda      # the model on cuda (UMAP stays on the CPU)

Each stage is timed inside one run of the real pipeline (``interpgram render`` of a generated spec
with a fresh cache); the second render of the same spec (everything cached) is timed too.
The last line is ``RESULT {json}`` (the figures above) for benchmarks/gpu.py.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from interpgram.backends.pipeline import render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="images (one random position each)")
    ap.add_argument("--layer", default="conv4")
    ap.add_argument("--grid", type=int, default=20)
    ap.add_argument("--steps", type=int, default=128, help="icon optimisation steps")
    ap.add_argument("--attempts", type=int, default=1)
    ap.add_argument("--fit-sample", type=int, default=20_000)
    ap.add_argument("--device", default="auto", help="the spec's execution.device: auto, cpu, cuda")
    a = ap.parse_args()
    from _bench import device_or_exit, result
    device_or_exit(a.device, "benchmarks/atlas_end_to_end.py")
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "atlas.yaml"
        spec.write_text(f"""interpgram: 1
model: builtin:shapes-cnn
dataset: {{source: builtin:shapes, n: {a.n}, split: train, positions: random}}
execution: {{device: {a.device}}}
elements:
  atlas:
    content: {{activation: {{layer: {a.layer}}}}}
    presentation: {{atlas: {{grid: {a.grid}, min_count: 8, layout: {{fit_sample: {a.fit_sample}}},
                            icon: {{size: 64, steps: {a.steps}, attempts: {a.attempts}}}}}}}
""")
        t0 = time.perf_counter()
        out, prep, res = render(spec, Path(tmp) / "report", cache=Path(tmp) / "cache")
        total = time.perf_counter() - t0
        t1 = time.perf_counter()
        render(spec, Path(tmp) / "report2", cache=Path(tmp) / "cache")
        again = time.perf_counter() - t1
        st = res.stats
        cells = res.values[prep.plan.elements[0].detail]["count"].numel()
        print(f"atlas of {a.n} activations of {a.layer} ({res.device}): {cells} cells of {a.grid}×{a.grid}, "
              f"{st.icons_rendered} icons × {a.steps} steps × {a.attempts}")
        print(f"{'stage':<22}{'seconds':>10}{'share':>9}")
        stages = [(k, v) for k, v in st.seconds.items() if k.startswith("atlas")]
        for k, v in stages:
            print(f"{k:<22}{v:>10.1f}{v / total:>9.1%}")
        rest = total - sum(v for _, v in stages)
        print(f"{'model, views, report':<22}{rest:>10.1f}{rest / total:>9.1%}")
        print(f"{'total':<22}{total:>10.1f}")
        print(f"collection rate: {a.n / st.seconds.get('atlas collection', float('nan')):.0f} images/s")
        print(f"second render (all cached): {again:.1f} s = {total / again:.0f}× faster; report {out.stat().st_size / 1e6:.1f} MB")
        result(device=str(res.device), n=a.n, layer=a.layer, grid=a.grid, cells=cells, icons=st.icons_rendered,
               steps=a.steps, attempts=a.attempts, fit_sample=a.fit_sample, total_s=total,
               stages={k.removeprefix("atlas "): v for k, v in stages} | {"model, views, report": rest},
               collection_images_per_s=a.n / st.seconds.get("atlas collection", float("nan")),
               again_s=again, cached_speedup=total / again, report_mb=out.stat().st_size / 1e6)


if __name__ == "__main__":
    main()
