"""``grad_x_act``: gradient × activation, the articles' linear approximation (the default). Its gradient
is the plain one, taken in the single backward pass per target that all elements share."""
from __future__ import annotations

from interpgram.grammar.attribution import AttributionMethod, register_attribution_method


@register_attribution_method
class GradXAct(AttributionMethod):
    name = "grad_x_act"
    help = "gradient × activation (the articles' linear approximation)"
    fused = True
    groups = True
