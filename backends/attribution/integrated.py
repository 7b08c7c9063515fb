"""``integrated``: the path-integrated variant, the left Riemann sum of ∇f(A·n/N), n = 0…N−1, at the
layer, batched over path points by replacing the layer's output with a forward hook; × A by the
Reduce. Checked against captum's LayerIntegratedGradients in the tests."""
from __future__ import annotations

from interpgram.backends.kernels import attribution as A
from interpgram.grammar.attribution import AttributionMethod, register_attribution_method


@register_attribution_method
class Integrated(AttributionMethod):
    name = "integrated"
    help = "path-integrated gradients (steps points from 0 to the activation) × activation"
    targets = ("logit", "norm")

    def layer_values(self, module, x, layer, acts, *, target, predicted, steps):
        return A.path_gradient(module, x, layer, acts.detach(), kind=target.kind, cls=target.cls,
                               target_layer=target.layer, at=target.at, predicted=predicted, steps=steps)
