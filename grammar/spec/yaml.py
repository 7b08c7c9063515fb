"""YAML loading that remembers where every node came from.

PyYAML's composer gives nodes with start marks; we build plain Python data from them and keep a
map ``path -> (line, col)`` for values and another for mapping keys, so that a validation error on
``elements.attr.content.activation.layer`` can point at the exact spot in the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from interpgram.grammar.spec.errors import Diagnostic, SpecError

Path_ = tuple  # a path into the data: keys (str) and list indices (int)


@dataclass
class Located:
    """Parsed YAML data with the position of every value and key."""

    data: Any
    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def pos(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Position of ``path``; falls back to the nearest ancestor that has one."""
        path = tuple(path)
        table = self.keys if key else self.values
        while path:
            if path in table:
                return table[path]
            if not key and path in self.keys:
                return self.keys[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def resolve(self, loc: Path_) -> Path_:
        """Map a validator's location (which may hold union tags) onto a real data path.

        Components that are not keys/indices of the data at that point are skipped.
        """
        node, out = self.data, []
        for part in loc:
            if isinstance(node, dict) and part in node:
                node = node[part]
                out.append(part)
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
                out.append(part)
        return tuple(out)


class _Loader(yaml.SafeLoader):
    """SafeLoader: no Python object construction from tags, ever."""


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp")}


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load_located(text: str | bytes, file: str = "<spec>") -> Located:
    """Parse YAML text into :class:`Located`, or raise :class:`SpecError` with positions."""
    if isinstance(text, bytes):
        if b"\x00" in text[:8192]:
            raise SpecError([Diagnostic(file, 1, 1, "this is a binary file, not a YAML spec")])
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            line = text[: e.start].count(b"\n") + 1
            raise SpecError([Diagnostic(file, line, 1, "the file is not valid UTF-8 text (is it a binary file?)")]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise SpecError([Diagnostic(file, 1, 1, "the spec is empty; start with 'interpgram: 1' and a 'model:'")])
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = e.problem or str(e)
        if "\t" in problem or "'\\t'" in problem:
            msg = "a tab character is not allowed for indentation in YAML; indent with spaces"
        else:
            msg = f"invalid YAML: {problem}"
            if e.context:
                msg += f" ({e.context})"
        raise SpecError([Diagnostic(file, line, col, msg)]) from None
    except yaml.YAMLError as e:  # pragma: no cover - non-marked errors are rare
        raise SpecError([Diagnostic(file, 1, 1, f"invalid YAML: {e}")]) from None
    if node is None:
        raise SpecError([Diagnostic(file, 1, 1, "the spec is empty; start with 'interpgram: 1' and a 'model:'")])

    located = Located(None, file)
    problems: list[Diagnostic] = []

    def build(n: yaml.Node, path: Path_) -> Any:
        located.values[path] = _mark(n)
        if n.tag not in _PLAIN_TAGS:
            line, col = _mark(n)
            problems.append(Diagnostic(file, line, col, f"unsupported YAML value: the tag {n.tag!r} is not allowed in specs"))
            return None
        if isinstance(n, yaml.MappingNode):
            out: dict = {}
            for k_node, v_node in n.value:
                if not isinstance(k_node, yaml.ScalarNode):
                    line, col = _mark(k_node)
                    problems.append(Diagnostic(file, line, col, "mapping keys must be plain names"))
                    continue
                key = _Loader.construct_scalar(_loader, k_node)
                if k_node.tag == "tag:yaml.org,2002:merge" or key == "<<":
                    line, col = _mark(k_node)
                    problems.append(Diagnostic(file, line, col, "YAML merge keys ('<<') are not supported in specs"))
                    continue
                if key in out:
                    line, col = _mark(k_node)
                    first = located.keys[path + (key,)]
                    problems.append(Diagnostic(file, line, col, f"duplicate key {key!r} (first defined at line {first[0]})"))
                    continue
                located.keys[path + (key,)] = _mark(k_node)
                out[key] = build(v_node, path + (key,))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(v, path + (i,)) for i, v in enumerate(n.value)]
        try:
            return _loader.construct_object(n, deep=True)
        except yaml.constructor.ConstructorError as e:
            line, col = _mark(n)
            problems.append(Diagnostic(file, line, col, f"unsupported YAML value: {e.problem}"))
            return None

    _loader = _Loader("")
    located.data = build(node, ())
    if problems:
        raise SpecError(problems)
    return located


def load_file(path: str | Path) -> Located:
    """Read and parse a spec file; a missing or unreadable file is a positioned error too."""
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise SpecError([Diagnostic(name, 1, 1, "no such file")])
    if p.is_dir():
        raise SpecError([Diagnostic(name, 1, 1, "this is a folder, not a spec file")])
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError([Diagnostic(name, 1, 1, f"cannot read the file: {e.strerror}")]) from None
    return load_located(raw, name)
