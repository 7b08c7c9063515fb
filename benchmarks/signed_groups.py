"""Neuron groups of signed activations: how well each way of making them non-negative reconstructs them.

On the built-in CNN's BatchNorm outputs (conv3.1, conv4.1, conv5.1: each stage is Conv → BatchNorm →
ReLU, so ``.1`` is signed) for the first ``--images`` test images, with ``k`` groups, prints the mean
and worst relative error ``‖X − X̂‖ / ‖X‖`` of the signed activation X for

* split: the default, NMF of ``[max(X, 0) | max(−X, 0)]``, ``X̂ = W (H+ − H−)``;
* clip: NMF of ``max(X, 0)`` (``sign: positive``, the nearest ReLU), ``X̂ = W H``;

and the NMF seconds per image of each.

    python benchmarks/signed_groups.py [--images 8] [--k 4 6]
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--k", type=int, nargs="+", default=[4, 6])
    args = ap.parse_args()

    from interpgram.backends.data.shapes import generate
    from interpgram.backends.kernels.factorize import neuron_groups
    from interpgram.backends.models.shapes_cnn import load_shapes_cnn, normalize

    model = load_shapes_cnn()
    modules = dict(model.named_modules())
    acts: dict[str, torch.Tensor] = {}
    layers = ("conv3.1", "conv4.1", "conv5.1")
    for name in layers:
        modules[name].register_forward_hook(lambda m, i, o, name=name: acts.__setitem__(name, o.detach()))
    with torch.no_grad():
        model(normalize(generate(list(range(args.images)), split="test").images))

    print(f"{'layer':8} {'shape':14} {'min':>7} {'k':>2}  {'split err':>9} {'clip err':>8}  "
          f"{'worst split/clip':>16}  {'split s':>7} {'clip s':>6}")
    for layer in layers:
        a = acts[layer]
        for k in args.k:
            rows = []
            for act in a:
                X = act.permute(1, 2, 0).reshape(-1, act.shape[0])
                t0 = time.perf_counter()
                s = neuron_groups(act, k)
                t1 = time.perf_counter()
                c = neuron_groups(act, k, sign="positive")
                t2 = time.perf_counter()
                rec_s = torch.einsum("khw,kc->hwc", s.spatial, s.channels).reshape(X.shape)
                rec_c = torch.einsum("khw,kc->hwc", c.spatial, c.channels).reshape(X.shape)
                rows.append((float((X - rec_s).norm() / X.norm()), float((X - rec_c).norm() / X.norm()),
                             t1 - t0, t2 - t1))
            n = len(rows)
            es, ec = sum(r[0] for r in rows) / n, sum(r[1] for r in rows) / n
            worst = max(r[0] / r[1] for r in rows)
            print(f"{layer:8} {str(tuple(a.shape[1:])):14} {float(a.min()):7.2f} {k:2d}  {es:9.3f} {ec:8.3f}  "
                  f"{worst:16.3f}  {sum(r[2] for r in rows) / n:7.3f} {sum(r[3] for r in rows) / n:6.3f}")


if __name__ == "__main__":
    main()
