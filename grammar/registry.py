"""Registries: one per kind of unit (presentations, model sources, data sets, attribution methods,
icon objectives, op kernels), each filled by small registered units and extended by plug-ins.

A unit registers itself when its module is imported (``REGISTRY.register(name, unit)``, usually
through a decorator of the kind). Two ways bring modules in:

* the built-in units of interpgram sit one per file in a folder whose package imports every
  module of itself (:func:`import_folder`), so adding a built-in unit is adding one file;
* other packages declare a Python entry point in the registry's group (for presentations,
  ``[project.entry-points."interpgram.presentations"] mine = "mypkg.heatmap3d"``); the registry
  imports every entry point of its group the first time it is asked for its units.

The grammar defines the registries and imports nothing of ``interpgram.backends``: the built-in
presentations are found through interpgram's own entry point, like anyone else's.
"""
from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Any, Generic, Iterator, Optional, TypeVar

from interpgram.grammar.spec.errors import did_you_mean

T = TypeVar("T")


class PluginError(RuntimeError):
    """A plug-in (an entry point) that failed to load or registered something twice."""


class UnknownUnit(KeyError):
    """A name that no unit of the registry carries; the message lists the known ones."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r} {did_you_mean(self.name, self.known, listing=self.kind + 's')}"


class Registry(Generic[T]):
    """Named units of one kind. ``group`` is the entry-point group plug-ins register through."""

    def __init__(self, kind: str, group: Optional[str] = None, *, builtin: Optional[str] = None):
        self.kind = kind
        self.group = group
        self.builtin = builtin  # the module of interpgram's own units, imported even when its entry point is missing
        self._units: dict[str, T] = {}
        self._loaded = group is None
        self._loading = False

    # ------------------------------------------------------------------ registering
    def register(self, name: str, unit: T, *, replace: bool = False) -> T:
        if not isinstance(name, str) or not name or name.strip() != name:
            raise ValueError(f"a {self.kind} name is a non-empty string without surrounding spaces, got {name!r}")
        if name in self._units and self._units[name] is not unit and not replace:
            raise ValueError(f"{self.kind} {name!r} is registered twice (pass replace=True to replace it)")
        self._units[name] = unit
        return unit

    def unregister(self, name: str) -> None:
        self.load()
        if name not in self._units:
            raise UnknownUnit(self.kind, name, self.names())
        del self._units[name]

    # ------------------------------------------------------------------ plug-ins
    def load(self) -> None:
        """Import every entry point of the registry's group, once (their modules register units)."""
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            if self.builtin:  # (an editable install whose metadata predates the entry point still finds them)
                importlib.import_module(self.builtin)
            for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
                try:
                    obj = ep.load()
                except Exception as e:  # a broken plug-in is named, never skipped
                    raise PluginError(f"the {self.kind} plug-in {ep.name!r} ({ep.value}, entry point group "
                                      f"{self.group}) failed to load: {type(e).__name__}: {e}") from e
                register = getattr(obj, "register_into", None)
                if callable(register):  # a unit object rather than a module of units
                    register(self)
            self._loaded = True
        finally:
            self._loading = False

    # ------------------------------------------------------------------ reading
    def get(self, name: str) -> T:
        self.load()
        try:
            return self._units[name]
        except KeyError:
            raise UnknownUnit(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        self.load()
        return list(self._units)

    def items(self) -> list[tuple[str, T]]:
        self.load()
        return list(self._units.items())

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._units

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.load()
        return len(self._units)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._units)} units{'' if self._loaded else ', plug-ins not loaded yet'})"


def import_folder(package: str) -> list[Any]:
    """Import every module of ``package`` (its own folder only), in name order: the built-in units
    of a kind, one file each, register themselves this way. Returns the modules."""
    pkg = importlib.import_module(package)
    out = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            out.append(importlib.import_module(f"{package}.{info.name}"))
    return out
