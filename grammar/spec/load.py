"""Spec loading: YAML → located data → validated :class:`Spec`, with every error positioned."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from interpgram.grammar.spec.errors import Diagnostic, SpecError, did_you_mean
from interpgram.grammar.spec.yaml import Located, SpecLimits, load_file, load_located
from interpgram.grammar.spec.nodes import Spec

_TYPE_WORDS = {
    "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "dict_type": "a mapping", "list_type": "a list",
    "tuple_type": "a list", "model_type": "a mapping", "model_attributes_type": "a mapping",
}


@dataclass
class LoadedSpec:
    """A validated spec together with where it came from (for positioned errors later on)."""

    spec: Spec
    located: Located
    # elements left out of ``spec`` for their schema errors (a partial spec, see SchemaError): links and
    # the layout may name them without another error
    left_out: frozenset = frozenset()

    @property
    def file(self) -> str:
        return self.located.file

    @property
    def base_dir(self) -> Path:
        f = Path(self.located.file)
        return f.parent if f.name and not self.located.file.startswith("<") else Path.cwd()

    def pos(self, path: tuple, *, key: bool = False) -> tuple[int, int]:
        return self.located.pos(path, key=key)

    def error(self, path: tuple, message: str, *, key: bool = False) -> Diagnostic:
        line, col = self.pos(path, key=key)
        return Diagnostic(self.file, line, col, message)


def _show(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return "a mapping" if isinstance(v, dict) else "a list"
    return repr(v)


def _expected_values(expected: str) -> list[str]:
    return re.findall(r"'([^']*)'", expected) or re.findall(r"(\w+)", expected)


def diagnostics_from_validation(err: ValidationError, located: Located) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    seen: set[tuple] = set()
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        path = located.resolve(loc)
        field = next((str(p) for p in reversed(path) if isinstance(p, str)), "spec")
        kind = e["type"]
        ctx = e.get("ctx") or {}
        value = e.get("input")
        diags: list[tuple[tuple[int, int], str]] = []
        if kind == "unknown_key":
            for key in ctx.get("keys", []):
                diags.append((located.pos(path + (key,), key=True),
                              f"unknown key {key!r} under {field!r} {did_you_mean(key, ctx.get('choices', []))}"
                              if path else f"unknown key {key!r} {did_you_mean(key, ctx.get('choices', []))}"))
        elif kind == "unknown_choice":
            v = ctx.get("value")
            at = located.pos(path + (v,), key=True) if (path + (v,)) in located.keys else located.pos(path)
            diags.append((at, f"unknown {e['msg'].split()[-1]} {v!r} {did_you_mean(v, ctx.get('choices', []))}"))
        elif kind == "missing":
            key = loc[-1]
            where = located.pos(path, key=True) if path else (1, 1)
            name = f"'{field}'" if path else "the spec"
            hint = {"interpgram": " (write 'interpgram: 1' at the top)", "content": "", "presentation": ""}.get(str(key), "")
            diags.append((where, f"{name} is missing the required key {str(key)!r}{hint}"))
        elif kind == "literal_error":
            choices = _expected_values(ctx.get("expected", ""))
            diags.append((located.pos(path), f"{field}: {_show(value)} is not allowed {did_you_mean(value, choices)}"))
        elif kind in _TYPE_WORDS:
            diags.append((located.pos(path), f"{field}: expected {_TYPE_WORDS[kind]}, got {_show(value)}"))
        elif kind in ("value_error", "assertion_error"):
            msg = re.sub(r"^(Value|Assertion) error, ", "", e["msg"])
            diags.append((located.pos(path), f"{field}: {msg}"))
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            diags.append((located.pos(path), f"{field}: {_show(value)} is out of range ({e['msg'].lower()})"))
        elif kind in ("too_short", "too_long"):
            diags.append((located.pos(path), f"{field}: {e['msg'].lower()}"))
        else:
            diags.append((located.pos(path), f"{field}: {e['msg']}"))
        for at, msg in diags:
            if (at, msg) in seen:
                continue
            seen.add((at, msg))
            out.append(Diagnostic(located.file, at[0], at[1], msg))
    return out


class SchemaError(SpecError):
    """Schema problems of a spec. ``partial`` is the spec without the parts that have them (the
    elements, links, layout, execution or dataset settings in error), when what is left still
    validates: the pipeline checks it against the model too, so one ``check`` reports every problem
    (schema and model alike) at once. None when a part every other check needs is in error
    (``model``, ``input``, ``elements`` as a whole)."""

    def __init__(self, diagnostics, partial: Optional[LoadedSpec] = None):
        super().__init__(diagnostics)
        self.partial = partial


# top-level keys whose errors leave nothing to check against the model: every other check needs them
_VITAL = ("model", "input", "elements")
_DEFAULTED = ("title", "execution", "dataset", "layout")  # dropped (their defaults) when in error


def _error_paths(err: ValidationError, located: Located) -> list[tuple]:
    out = []
    for e in err.errors(include_url=False):
        path = located.resolve(tuple(e["loc"]))
        if e["type"] == "unknown_key" and not path:  # unknown top-level keys: each is its own part
            out += [(k,) for k in (e.get("ctx") or {}).get("keys", [])]
        else:
            out.append(path)
    return out


def _shift(table: dict, prefix: tuple, old_to_new: dict[int, int]) -> dict:
    """Positions under ``prefix + (i,)`` moved to ``prefix + (old_to_new[i],)``; dropped items' go."""
    out = {}
    n = len(prefix)
    for path, at in table.items():
        if path[:n] == prefix and len(path) > n and isinstance(path[n], int):
            if path[n] not in old_to_new:
                continue
            path = prefix + (old_to_new[path[n]],) + path[n + 1:]
        out[path] = at
    return out


def _partial(err: ValidationError, located: Located) -> Optional[LoadedSpec]:
    """The spec without its parts in error (see :class:`SchemaError`), or None."""
    data = dict(located.data)
    bad_elements, bad_links = set(), set()
    for path in _error_paths(err, located):
        head = path[0] if path else None
        if head is None or head in _VITAL and not (head == "elements" and len(path) >= 2):
            return None
        if head == "elements":
            bad_elements.add(path[1])
        elif head == "links":
            if len(path) < 2 or not isinstance(path[1], int):
                return None
            bad_links.add(path[1])
        elif head == "interpgram":
            data["interpgram"] = 1  # reported; the version is the only one there is
        elif head in _DEFAULTED or head not in Spec.model_fields:
            data.pop(head, None)
        else:
            return None
    elements = data.get("elements")
    if not isinstance(elements, dict):
        return None
    data["elements"] = {k: v for k, v in elements.items() if k not in bad_elements}
    if not data["elements"]:
        return None
    values, keys = dict(located.values), dict(located.keys)
    links = data.get("links")
    if isinstance(links, list) and bad_links:
        keep = [i for i in range(len(links)) if i not in bad_links]
        data["links"] = [links[i] for i in keep]
        moved = {old: new for new, old in enumerate(keep)}
        values, keys = _shift(values, ("links",), moved), _shift(keys, ("links",), moved)
    part = Located(data, located.file, values, keys)
    try:
        spec = Spec.model_validate(data)
    except ValidationError:
        return None
    return LoadedSpec(spec, part, left_out=frozenset(str(e) for e in bad_elements))


def _validate(located: Located) -> LoadedSpec:
    if not isinstance(located.data, dict):
        kind = "a list" if isinstance(located.data, list) else f"a single value ({located.data!r})"
        raise SpecError([Diagnostic(located.file, 1, 1,
                                    f"a spec is a mapping with keys interpgram, model, input, elements; this file holds {kind}")])
    try:
        spec = Spec.model_validate(located.data)
    except ValidationError as err:
        raise SchemaError(diagnostics_from_validation(err, located), _partial(err, located)) from None
    return LoadedSpec(spec, located)


def load_spec(path: str | Path, *, limits: Optional[SpecLimits] = None) -> LoadedSpec:
    """Load and validate a spec file. Raises :class:`SpecError` listing every problem with its position.

    ``limits`` (:class:`SpecLimits`) bounds what the YAML may ask of the loader; default: the
    ``INTERPGRAM_SPEC_MAX_*`` environment variables, else the built-in bounds."""
    return _validate(load_file(path, limits=limits))


def load_spec_text(text: str | bytes, file: str = "<spec>", *, limits: Optional[SpecLimits] = None) -> LoadedSpec:
    return _validate(load_located(text, file, limits=limits))
