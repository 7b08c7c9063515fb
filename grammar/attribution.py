"""An attribution method is one unit: an :class:`AttributionMethod` subclass in one file.

``attribution: {from, to, method: NAME, steps}`` names one. ``grad_x_act`` (the articles' linear
approximation) is ``fused``: its gradient is the plain one, taken in the one backward pass per target
that every element shares. Every other method computes, per target and layer, either an effective
gradient (``gives = "gradient"``: the Reduce multiplies it by the activation, as for grad × act) or
the attribution itself (``gives = "attribution"``: summed as it is), in :meth:`layer_values`.

The built-in methods sit one per file in ``interpgram.backends.attribution``; others come from
plug-ins through the entry-point group ``interpgram.attribution_methods`` (or a
:func:`register_attribution_method` call), like presentations. The grammar only defines the base
class and the registry: it imports nothing of ``interpgram.backends``.
"""
from __future__ import annotations

from typing import Any, ClassVar

from interpgram.grammar.registry import Registry

BUILTIN = "interpgram.backends.attribution"
TARGET_KINDS = ("logit", "norm", "channel")


class AttributionMethod:
    name: ClassVar[str]
    help: ClassVar[str] = ""
    fused: ClassVar[bool] = False  # the plain gradient, in the shared backward passes (grad_x_act only)
    gives: ClassVar[str] = "gradient"  # "gradient" (× activation) | "attribution" (as it is)
    targets: ClassVar[tuple[str, ...]] = TARGET_KINDS  # Target kinds it can attribute to
    groups: ClassVar[bool] = False  # NMF group attribution needs the raw gradient: fused methods only

    def layer_values(self, module: Any, x: Any, layer: str, acts: Any, *, target: Any, predicted: Any,
                     steps: int) -> Any:
        """(N, *layer shape) values at ``layer`` for the batch ``x`` (preprocessed) and ``target``
        (a :class:`~interpgram.grammar.plan.Target`); ``acts`` is the layer's activation for ``x``;
        ``predicted``: per input, the class (logit targets without a class) or the strongest position
        (norm targets without one)."""
        raise NotImplementedError(f"attribution method {self.name!r} has no layer_values()")

    def __repr__(self) -> str:
        return f"<attribution method {self.name}>"


ATTRIBUTION_METHODS: Registry[AttributionMethod] = Registry("attribution method",
                                                            group="interpgram.attribution_methods", builtin=BUILTIN)


def register_attribution_method(cls: type[AttributionMethod], *, replace: bool = False) -> type[AttributionMethod]:
    """Class decorator: register one instance of an AttributionMethod subclass under its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, AttributionMethod)):
        raise TypeError(f"register_attribution_method takes an AttributionMethod subclass, got {cls!r}")
    if cls.gives not in ("gradient", "attribution"):
        raise ValueError(f"attribution method {cls.name!r}: gives is 'gradient' or 'attribution', not {cls.gives!r}")
    ATTRIBUTION_METHODS.register(cls.name, cls(), replace=replace)
    return cls
