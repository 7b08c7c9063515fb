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


def _validate(located: Located) -> LoadedSpec:
    if not isinstance(located.data, dict):
        kind = "a list" if isinstance(located.data, list) else f"a single value ({located.data!r})"
        raise SpecError([Diagnostic(located.file, 1, 1,
                                    f"a spec is a mapping with keys interpgram, model, input, elements; this file holds {kind}")])
    try:
        spec = Spec.model_validate(located.data)
    except ValidationError as err:
        raise SpecError(diagnostics_from_validation(err, located)) from None
    return LoadedSpec(spec, located)


def load_spec(path: str | Path, *, limits: Optional[SpecLimits] = None) -> LoadedSpec:
    """Load and validate a spec file. Raises :class:`SpecError` listing every problem with its position.

    ``limits`` (:class:`SpecLimits`) bounds what the YAML may ask of the loader; default: the
    ``INTERPGRAM_SPEC_MAX_*`` environment variables, else the built-in bounds."""
    return _validate(load_file(path, limits=limits))


def load_spec_text(text: str | bytes, file: str = "<spec>", *, limits: Optional[SpecLimits] = None) -> LoadedSpec:
    return _validate(load_located(text, file, limits=limits))
