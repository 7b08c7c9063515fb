"""A spec from a YAML path, YAML text or a Python dict, as a :class:`LoadedSpec` whose errors keep
their positions: ``file:line:col`` for a file, ``<text>:line:col`` for text, and the key path
(``<dict>:elements.where.presentation``) for a dict.

A dict has no lines, so its values get made-up positions (one line per value, in order) and every
:class:`SpecError` raised while working on it is translated back to key paths by :func:`key_paths`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from pydantic import ValidationError

from interpgram.grammar import Diagnostic, LoadedSpec, Spec, SpecError
from interpgram.grammar.spec.load import diagnostics_from_validation
from interpgram.grammar.spec.yaml import Located, load_file, load_located

DICT_FILE = "<dict>"
TEXT_FILE = "<text>"


@dataclass(frozen=True)
class KeyPathDiagnostic(Diagnostic):
    """A problem in a dict spec, placed by its key path instead of a line and column."""

    path: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.path}: {self.message}" if self.path else f"{self.file}: {self.message}"


def _show_path(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _plain(x: Any, where: str) -> Any:
    """The dict's data as YAML would give it: str keys, lists for tuples."""
    if isinstance(x, Mapping):
        bad = [k for k in x if not isinstance(k, str)]
        if bad:
            raise SpecError([KeyPathDiagnostic(DICT_FILE, 1, 1, f"mapping keys are names (str), got {bad[0]!r}", where)])
        return {k: _plain(v, f"{where}.{k}" if where else k) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, Path):
        return str(x)
    return x


def _located_dict(data: dict) -> tuple[Located, dict[tuple[int, int], tuple]]:
    """``data`` with one made-up line per value (col 1: the value, col 2: its key) and the way back."""
    loc = Located(data, DICT_FILE)
    back: dict[tuple[int, int], tuple] = {}

    def walk(x, path):
        line = len(back) // 2 + 1
        loc.values[path] = (line, 1)
        back[(line, 1)] = path
        if path:
            loc.keys[path] = (line, 2)
        back[(line, 2)] = path
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, path + (k,))
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, path + (i,))

    walk(data, ())
    return loc, back


@dataclass
class SpecSource:
    """Where a spec came from and how to read it again (the dashboard reloads a file on edit)."""

    kind: str  # path | text | dict
    value: Any
    back: Optional[dict[tuple[int, int], tuple]] = None  # dict specs: made-up position → key path

    @property
    def path(self) -> Optional[Path]:
        return Path(self.value) if self.kind == "path" else None

    @contextlib.contextmanager
    def key_paths(self) -> Iterator[None]:
        """Inside: a SpecError about a dict spec is re-raised with key paths instead of made-up lines."""
        try:
            yield
        except SpecError as e:
            if self.back is None:
                raise
            diags = [KeyPathDiagnostic(d.file, d.line, d.col, d.message, _show_path(self.back.get((d.line, d.col), ())))
                     if d.file == DICT_FILE and not isinstance(d, KeyPathDiagnostic) else d for d in e.diagnostics]
            raise SpecError(diags) from None


def source_of(spec: Any) -> SpecSource:
    if isinstance(spec, Path):
        return SpecSource("path", spec)
    if isinstance(spec, str):
        return SpecSource("text" if "\n" in spec else "path", spec)
    if isinstance(spec, Mapping):
        return SpecSource("dict", spec)
    raise TypeError(f"spec: a path, YAML text or a dict; got {type(spec).__name__}")


def load(src: SpecSource, *, model: Optional[str] = None, inputs: Optional[list[str]] = None) -> LoadedSpec:
    """Read and validate the spec. ``model`` / ``inputs`` (given in Python) fill or replace the
    spec's ``model:`` / ``input:`` (a spec for a model in memory needs no ``model:`` line)."""
    if src.kind == "path":
        located = load_file(src.value)
    elif src.kind == "text":
        located = load_located(src.value, TEXT_FILE)
    else:
        located, src.back = _located_dict(_plain(src.value, ""))
    data = located.data
    if isinstance(data, dict):
        if model is not None:
            data["model"] = model
        if inputs is not None:
            data["input"] = list(inputs)
    with src.key_paths():
        if not isinstance(data, dict):
            kind = "a list" if isinstance(data, list) else f"a single value ({data!r})"
            raise SpecError([Diagnostic(located.file, 1, 1, "a spec is a mapping with keys interpgram, model, input, "
                                                            f"elements; this holds {kind}")])
        try:
            spec = Spec.model_validate(data)
        except ValidationError as err:
            raise SpecError(diagnostics_from_validation(err, located)) from None
    return LoadedSpec(spec, located)
