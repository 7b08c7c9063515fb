"""interpgram: a declarative grammar of interpretability interfaces for PyTorch models.

The Python API (the same pipeline as the ``interpgram`` command)::

    import interpgram
    ui = interpgram.Interface("specs/shapes/demo.yaml")          # a path, YAML text or a dict
    ui = interpgram.Interface(spec, model=interpgram.Model(net, size=32, mean=..., std=..., classes=[...]),
                              inputs=[tensor, "photo.png", pil_image, "builtin:shapes/7"])
    ui.check(); print(ui.plan())
    res = ui.run()                                              # numbers, by element
    res["where"].sel(input=0, cls="star")                       # a labelled array (.numpy(), .torch())
    res                                                         # in Jupyter: the report, drawn inline, offline
    ui.report("out/")                                           # out/index.html, as `interpgram render`
    ui.serve()                                                  # the dashboard on 127.0.0.1

``interpgram.grammar`` (spec, plan IR) and ``interpgram.backends`` (torch, charts, report) are the
layers underneath. Importing this package is light: the names below are loaded on first use
(module ``__getattr__``), so ``import interpgram`` imports neither torch nor altair.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# public name -> module that defines it (imported on first attribute access: keeps `import interpgram` fast)
_LAZY = {
    "Interface": "interpgram.backends.api.interface",
    "Model": "interpgram.backends.api.interface",
    "Results": "interpgram.backends.api.interface",
    "APIError": "interpgram.backends.api.inputs",
    "ElementNumbers": "interpgram.backends.render.export",
    "Labelled": "interpgram.backends.render.export",
    "Numbers": "interpgram.backends.render.export",
    "load_numbers": "interpgram.backends.render.export",
    "SpecError": "interpgram.grammar",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # for type checkers and editors; never executed
    from interpgram.backends.api.inputs import APIError  # noqa: F401
    from interpgram.backends.api.interface import Interface, Model, Results  # noqa: F401
    from interpgram.backends.render.export import ElementNumbers, Labelled, Numbers, load_numbers  # noqa: F401
    from interpgram.grammar import SpecError  # noqa: F401


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'interpgram' has no attribute {name!r} (public names: {', '.join(__all__)})")
    value = getattr(import_module(mod), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
