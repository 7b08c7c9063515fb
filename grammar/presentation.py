"""A presentation is one unit: a :class:`Presentation` subclass in one file.

The unit holds everything about it, together:

* ``Options`` — its options model, the only place its defaults are written;
* ``atoms`` / ``contents`` — what it can show (``check`` reports a mismatch with a position);
* :meth:`Presentation.lower` — the plan ops it needs besides its content (icons, examples, ...);
* :meth:`Presentation.views` — its results for one input image → the data its chart draws;
* :meth:`Presentation.chart` — that data → an Altair chart (report and dashboard alike).

The built-in presentations sit one per file in ``interpgram.backends.presentations``; others come
from plug-ins through the entry-point group ``interpgram.presentations``. The grammar only defines
the base class and the registry: it imports nothing of ``interpgram.backends`` (the built-in units
are found through interpgram's own entry point, like anyone else's; :data:`BUILTIN` names the module
to fall back on when the package metadata is stale).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Optional

from interpgram.grammar.options import OptionsModel
from interpgram.grammar.registry import Registry

if TYPE_CHECKING:  # annotations only: the compiler imports this module
    from interpgram.grammar.compile import Builder, Content
    from interpgram.grammar.plan import Present

BUILTIN = "interpgram.backends.presentations"
ALL_CONTENTS = ("activation", "attribution", "transform")


class Presentation:
    """The base of every presentation unit. Subclass it, set the class attributes, implement
    :meth:`views` and :meth:`chart` (and :meth:`lower` when it needs ops besides its content), and
    decorate the class with :func:`register_presentation`."""

    name: ClassVar[str]
    Options: ClassVar[type[OptionsModel]] = OptionsModel
    atoms: ClassVar[tuple[str, ...]] = ()
    contents: ClassVar[tuple[str, ...]] = ALL_CONTENTS
    help: ClassVar[str] = ""
    per_input: ClassVar[bool] = True  # False: one view for the whole spec (an atlas shows a data set)
    draws_positions: ClassVar[bool] = False  # a map over a layer's positions (one selected position cannot drive it)
    feature_vis: ClassVar[bool] = False  # the grammar's FeatureVis(...) rather than InfoVis(...)
    whole_element: ClassVar[bool] = False  # lowers its element itself (content included): see lower_element
    uses_dataset: ClassVar[bool] = False  # reads the spec's top-level ``dataset:``

    # ------------------------------------------------------------------ grammar side
    def grammar(self, sentence: str) -> str:
        """The grammar sentence of an element showing content ``sentence``."""
        return f"FeatureVis({sentence})" if self.feature_vis else f"InfoVis({sentence})"

    def lower(self, b: "Builder", content: "Content", opts: dict, path: tuple) -> tuple[tuple[str, ...], Optional[str]]:
        """(icon ops, detail op) this presentation needs besides the content: add them with
        ``b.node(...)``; report a problem with ``b.fail(path, message)``."""
        return (), None

    def lower_element(self, b: "Builder", el_id: str, el: Any, *, side: str = "") -> tuple[list["Present"], Optional[set]]:
        """For ``whole_element`` presentations: the element → its Present ops (content included)."""
        raise NotImplementedError(f"presentation {self.name!r} sets whole_element but does not lower elements")

    # ------------------------------------------------------------------ backend side
    def views(self, ctx: Any) -> list:
        """One element's results for one input image (a ``backends.render.views.ViewContext``) →
        its ElementViews (usually one: ``[ctx.view(data)]``)."""
        raise NotImplementedError(f"presentation {self.name!r} has no views()")

    def chart(self, view: Any) -> Any:
        """An ElementView → its Altair top-level chart."""
        raise NotImplementedError(f"presentation {self.name!r} has no chart()")

    def shown_atoms(self, p: "Present", results: Any) -> Optional[list[int]]:
        """The channel (or class) indices a link from this element can select, strongest first;
        None: the default (every atom of the content's first series, by magnitude)."""
        return None

    def defaults(self) -> dict:
        """The options' defaults, as the executor passes them."""
        return self.Options().model_dump()

    def __repr__(self) -> str:
        return f"<presentation {self.name}>"


PRESENTATIONS: Registry[Presentation] = Registry("presentation", group="interpgram.presentations", builtin=BUILTIN)


def register_presentation(cls: type[Presentation], *, replace: bool = False) -> type[Presentation]:
    """Class decorator: register one instance of a Presentation subclass under its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, Presentation)):
        raise TypeError(f"register_presentation takes a Presentation subclass, got {cls!r}")
    if not issubclass(cls.Options, OptionsModel):
        raise TypeError(f"presentation {getattr(cls, 'name', cls.__name__)!r}: Options must subclass "
                        "interpgram.grammar.options.OptionsModel")
    PRESENTATIONS.register(cls.name, cls(), replace=replace)
    return cls
