"""What the compiler is told: the model (:class:`ModelInfo`, pure data the backends provide) and the
compile options (a draft's icon steps, the resolved device, the number of input images)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from interpgram.grammar.compile.vocab import DEFAULT_ICON_MAX_PX


@dataclass
class ModelInfo:
    """What the compiler needs to know about a model (pure data)."""

    name: str
    layers: dict[str, tuple[int, ...]]  # module path (PATH@N: one call of a reused module) -> per-sample output shape, execution order
    classes: list[str]
    input_shape: tuple[int, ...] = (3, 224, 224)
    # icon size (px) -> the layers a forward pass reaches of an image that size after the standard
    # transforms (None: all of them), for the sizes the backend tried: a model that takes only its
    # own input size (a size check, position embeddings, a fixed linear layer) stops part of the way
    reach: dict[int, Optional[tuple[str, ...]]] = field(default_factory=dict)

    def order(self, layer: str) -> int:
        if layer == "input":
            return -1
        if layer == "output":
            return len(self.layers) + 1
        return list(self.layers).index(layer)

    def calls(self, module: str) -> list[str]:
        """The layers ``MODULE@1``, ``MODULE@2``, … of a module the forward pass calls more than once,
        in execution order ([] for a module called once or not at all)."""
        return [name for name in self.layers
                if name.rpartition("@")[0] == module and name.rpartition("@")[2].isdecimal()]

    @property
    def small_icon_size(self) -> int:
        """The default icon side: the model's input side, at most ``DEFAULT_ICON_MAX_PX``."""
        return min(int(self.input_shape[-1]), DEFAULT_ICON_MAX_PX)

    def reaches(self, size: int, layer: Optional[str]) -> bool:
        """Whether a ``size`` px icon reaches ``layer`` (None: the whole network) in a forward pass;
        sizes nobody tried count as reaching."""
        got = self.reach.get(int(size))
        if layer is not None:
            module, sep, call = layer.rpartition("@")
            layer = module if sep and module and call.isdecimal() else layer  # one call of a reused module
        return got is None or (layer is not None and layer in got)

    def shape(self, layer: str) -> tuple[int, ...]:
        if layer == "input":
            return tuple(self.input_shape)
        if layer == "output":
            return (len(self.classes),)
        return tuple(self.layers[layer])


@dataclass(frozen=True)
class CompileOptions:
    """What the backend tells the compiler besides the model: a draft's icon steps (``--icon-steps``
    replaces the optimisation steps of every icon, grid and atlas icon), what ``device: auto``
    resolves to on this machine, and how many input images the spec's refs expand to. They are
    compile inputs, so a compiled plan is final: nothing patches it afterwards."""

    icon_steps: Optional[int] = None
    resolved_device: str = ""
    n_images: int = 0

    def __post_init__(self):
        if self.icon_steps is not None and (isinstance(self.icon_steps, bool) or not isinstance(self.icon_steps, int)
                                            or self.icon_steps < 1):
            raise ValueError(f"icon steps must be a whole number ≥ 1, got {self.icon_steps!r}")
