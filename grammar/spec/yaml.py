"""YAML loading that remembers where every node came from.

PyYAML's composer gives nodes with start marks; we build plain Python data from them and keep a
map ``path -> (line, col)`` for values and another for mapping keys, so that a validation error on
``elements.attr.content.activation.layer`` can point at the exact spot in the file.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

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
    """SafeLoader: no Python object construction from tags, ever. Only its reader, scanner, parser,
    resolver and scalar constructors are used; nodes are composed by :func:`_compose` (bounded)."""


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp")}
_TAG = "tag:yaml.org,2002:"


# --------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class SpecLimits:
    """Bounds on what a spec file may make the loader do; a spec is untrusted input.

    - ``nodes``: YAML nodes produced, counting every node an alias expands to (alias bombs);
    - ``depth``: nesting of mappings and lists;
    - ``bytes``: size of the file;
    - ``scalar``: characters in one value or key.

    The defaults are far above any real spec (the largest in specs/ has a few hundred nodes, depth 9,
    4 KB). Raise one with the environment variables ``INTERPGRAM_SPEC_MAX_NODES``, ``_DEPTH``,
    ``_BYTES``, ``_SCALAR`` or pass ``limits=SpecLimits(...)`` to the loading functions.
    """

    nodes: int = 100_000
    depth: int = 64
    bytes: int = 1 << 20
    scalar: int = 65_536

    MAX_DEPTH = 256  # the loader and the validator recurse once per level: more would exhaust the stack

    @classmethod
    def from_env(cls, file: str = "<spec>") -> "SpecLimits":
        """The defaults, with any ``INTERPGRAM_SPEC_MAX_*`` variable applied (a bad value is an error)."""
        values = {}
        for name in ("nodes", "depth", "bytes", "scalar"):
            var = _ENV[name]
            raw = os.environ.get(var)
            if raw is None or not raw.strip():
                continue
            try:
                n = int(raw.strip().replace("_", ""))
            except ValueError:
                n = 0
            if n < 1:
                raise SpecError([Diagnostic(file, 1, 1, f"the environment variable {var}={raw!r} is not a positive whole number")])
            values[name] = n
        return cls(**values).checked(file)

    def checked(self, file: str = "<spec>") -> "SpecLimits":
        if self.depth > self.MAX_DEPTH:
            raise SpecError([Diagnostic(file, 1, 1, f"the nesting limit can be raised to at most {self.MAX_DEPTH} "
                                                    f"(asked for {self.depth} via {_ENV['depth']} or limits=)")])
        return self


_ENV = {"nodes": "INTERPGRAM_SPEC_MAX_NODES", "depth": "INTERPGRAM_SPEC_MAX_DEPTH",
        "bytes": "INTERPGRAM_SPEC_MAX_BYTES", "scalar": "INTERPGRAM_SPEC_MAX_SCALAR"}


def _raise_hint(name: str, value: int) -> str:
    if name == "depth" and value >= SpecLimits.MAX_DEPTH:
        return f"{SpecLimits.MAX_DEPTH} levels is as far as the limit goes (the loader and validator recurse per level)"
    more = min(value * 4, SpecLimits.MAX_DEPTH) if name == "depth" else value * 10
    return (f"if the spec is legitimate, raise the limit with the environment variable {_ENV[name]} "
            f"(e.g. {_ENV[name]}={more}) or limits=SpecLimits({name}={more})")


def _mark(node: yaml.Node | yaml.Event) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _diag(file: str, where: yaml.Node | yaml.Event | tuple[int, int], message: str) -> SpecError:
    line, col = where if isinstance(where, tuple) else _mark(where)
    return SpecError([Diagnostic(file, line, col, message)])


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_scalar(file: str, ev: yaml.ScalarEvent, limits: SpecLimits) -> None:
    if len(ev.value) > limits.scalar:
        raise _diag(file, ev, f"this value is {len(ev.value):,} characters long, over the limit of "
                              f"{limits.scalar:,} characters for one value; " + _raise_hint("scalar", limits.scalar))
    m = _SURROGATE.search(ev.value)
    if m:
        raise _diag(file, ev, f"this string holds {ascii(m.group())}, a lone surrogate, which is not a character "
                              "(a character beyond U+FFFF is written \\UXXXXXXXX, e.g. \\U0001F600)")


def _compose(loader: _Loader, file: str, limits: SpecLimits) -> Optional[yaml.Node]:
    """PyYAML's composer without recursion and with bounds: nesting depth, nodes produced (an alias
    counts as every node it stands for) and value size. An alias to a node that is still open (it
    refers to itself) is refused: it would expand forever."""
    ev = loader.get_event()  # StreamStart
    if loader.check_event(yaml.StreamEndEvent):
        return None
    loader.get_event()  # DocumentStart
    anchors: dict[str, yaml.Node] = {}
    open_anchors: dict[str, yaml.Event] = {}
    sizes: dict[int, int] = {}  # id(node) -> nodes it stands for
    stack: list[list] = []  # [node, anchor, count when opened, pending key]
    count = 0
    root: Optional[yaml.Node] = None

    def attach(node: yaml.Node) -> None:
        nonlocal root
        if not stack:
            root = node
            return
        frame = stack[-1]
        parent = frame[0]
        if isinstance(parent, yaml.SequenceNode):
            parent.value.append(node)
        elif frame[3] is None:
            frame[3] = node
        else:
            parent.value.append((frame[3], node))
            frame[3] = None

    def register(anchor: Optional[str], node: yaml.Node, event: yaml.Event) -> None:
        if anchor is None:
            return
        if anchor in anchors:
            first = _mark(anchors[anchor])
            raise _diag(file, event, f"the anchor &{anchor} is defined twice (first at line {first[0]})")
        anchors[anchor] = node

    while True:
        ev = loader.get_event()
        if isinstance(ev, yaml.AliasEvent):
            if ev.anchor in open_anchors:
                first = _mark(open_anchors[ev.anchor])
                raise _diag(file, ev, f"the alias *{ev.anchor} refers to the node that contains it (&{ev.anchor} at "
                                      f"line {first[0]}, column {first[1]}): it would expand forever")
            if ev.anchor not in anchors:
                raise _diag(file, ev, f"the alias *{ev.anchor} names no anchor defined before it (define &{ev.anchor} first)")
            node = anchors[ev.anchor]
            count += sizes[id(node)]
            if count > limits.nodes:
                raise _diag(file, ev, f"the alias *{ev.anchor} expands to {sizes[id(node)]:,} nodes, which takes the spec "
                                      f"over the limit of {limits.nodes:,} YAML nodes (aliases count as every node they "
                                      "stand for; a guard against alias bombs); " + _raise_hint("nodes", limits.nodes))
            attach(node)
        elif isinstance(ev, yaml.ScalarEvent):
            _check_scalar(file, ev, limits)
            tag = ev.tag
            if tag is None or tag == "!":
                tag = loader.resolve(yaml.ScalarNode, ev.value, ev.implicit)
            node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, style=ev.style)
            count += 1
            if count > limits.nodes:
                raise _diag(file, ev, f"the spec has more than {limits.nodes:,} YAML nodes; " + _raise_hint("nodes", limits.nodes))
            sizes[id(node)] = 1
            register(ev.anchor, node, ev)
            attach(node)
        elif isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(stack) + 1 > limits.depth:
                raise _diag(file, ev, f"the spec nests lists and mappings more than {limits.depth} levels deep "
                                      "(the limit on nesting); " + _raise_hint("depth", limits.depth))
            seq = isinstance(ev, yaml.SequenceStartEvent)
            kind = yaml.SequenceNode if seq else yaml.MappingNode
            tag = ev.tag
            if tag is None or tag == "!":
                tag = loader.resolve(kind, None, ev.implicit)
            node = kind(tag, [], ev.start_mark, None, flow_style=ev.flow_style)
            count += 1
            if count > limits.nodes:
                raise _diag(file, ev, f"the spec has more than {limits.nodes:,} YAML nodes; " + _raise_hint("nodes", limits.nodes))
            if ev.anchor is not None:
                if ev.anchor in anchors or ev.anchor in open_anchors:
                    first = _mark(anchors.get(ev.anchor) or open_anchors[ev.anchor])
                    raise _diag(file, ev, f"the anchor &{ev.anchor} is defined twice (first at line {first[0]})")
                open_anchors[ev.anchor] = ev
            stack.append([node, ev.anchor, count, None])
        elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            node, anchor, opened, _ = stack.pop()
            node.end_mark = ev.end_mark
            sizes[id(node)] = count - opened + 1
            if anchor is not None:
                del open_anchors[anchor]
                anchors[anchor] = node
            attach(node)
        else:  # pragma: no cover - the parser emits nothing else inside a document
            raise _diag(file, ev, f"unexpected YAML event {type(ev).__name__}")
        if not stack and root is not None:
            break
    loader.get_event()  # DocumentEnd
    if not loader.check_event(yaml.StreamEndEvent):
        ev = loader.get_event()
        raise _diag(file, ev, "a spec is one YAML document; this file holds more than one (remove the '---' line)")
    return root


# a scalar under an explicit tag must read as that tag would read it unmarked (`!!float x` is no float)
_TAG_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "null": "null",
              "timestamp": "a date (YYYY-MM-DD) or a time stamp"}
_INT_DIGITS = 4300  # Python converts longer integer text only when told to


def _construct_scalar(loader: _Loader, n: yaml.ScalarNode, file: str) -> Any:
    short = n.tag[len(_TAG):] if n.tag.startswith(_TAG) else n.tag
    if short in _TAG_WORDS:  # a plain scalar resolves to its own tag; an explicit one must read the same
        plain = loader.resolve(yaml.ScalarNode, n.value, (True, False))
        if plain != n.tag and not (short == "float" and plain == _TAG + "int"):
            raise _diag(file, n, f"{n.value[:80]!r} is not {_TAG_WORDS[short]}, as its tag !!{short} says")
    if n.tag == _TAG + "int":
        digits = len(n.value.lstrip("+-").replace("_", ""))
        if digits > _INT_DIGITS:
            raise _diag(file, n, f"a whole number of {digits:,} digits is too large for a spec (at most {_INT_DIGITS:,} digits)")
    try:
        value = loader.construct_object(n, deep=True)
    except ValueError as e:  # a date that does not exist (2020-13-45), a malformed number (0x_)
        raise _diag(file, n, f"{n.value[:80]!r} is not {_TAG_WORDS.get(short, 'a valid value')}: {e}") from None
    if isinstance(value, float) and not math.isfinite(value):  # every number a spec takes is finite
        raise _diag(file, n, f"{n.value[:80]!r} is not a finite number (NaN and infinity are not allowed in a spec)")
    if isinstance(value, int) and value.bit_length() > 3.33 * _INT_DIGITS:  # 1:20:… (base 60) grows past printable
        raise _diag(file, n, f"this whole number is too large for a spec (more than {_INT_DIGITS:,} digits)")
    return value


def load_located(text: str | bytes, file: str = "<spec>", *, limits: Optional[SpecLimits] = None) -> Located:
    """Parse YAML text into :class:`Located`, or raise :class:`SpecError` with positions.

    ``limits`` bounds the work a hostile file can ask for (default: :meth:`SpecLimits.from_env`)."""
    limits = limits.checked(file) if limits is not None else SpecLimits.from_env(file)
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > limits.bytes:
        raise SpecError([Diagnostic(file, 1, 1, f"the spec is {size:,} bytes, over the limit of {limits.bytes:,} bytes "
                                                "for a spec file; " + _raise_hint("bytes", limits.bytes))])
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
        loader = _Loader(text)
        node = _compose(loader, file, limits)
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
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (a control character, a surrogate)
        before = text[: e.position]
        line, col = before.count("\n") + 1, e.position - (before.rfind("\n") + 1) + 1
        raise SpecError([Diagnostic(file, line, col, f"the character {ascii(chr(e.character)) if isinstance(e.character, int) else ascii(e.character)} "
                                                     "is not allowed in a YAML file")]) from None
    except yaml.YAMLError as e:  # pragma: no cover - non-marked errors are rare
        raise SpecError([Diagnostic(file, 1, 1, f"invalid YAML: {e}")]) from None
    if node is None:
        raise SpecError([Diagnostic(file, 1, 1, "the spec is empty; start with 'interpgram: 1' and a 'model:'")])

    located = Located(None, file)
    problems: list[Diagnostic] = []

    def build(n: yaml.Node, path: Path_) -> Any:  # recursion is bounded: depth <= limits.depth <= 256
        located.values[path] = _mark(n)
        if n.tag not in _PLAIN_TAGS:
            line, col = _mark(n)
            problems.append(Diagnostic(file, line, col, f"unsupported YAML value: the tag {ascii(n.tag)} is not allowed in specs"))
            return None
        if isinstance(n, yaml.MappingNode):
            if n.tag != _TAG + "map":
                line, col = _mark(n)
                problems.append(Diagnostic(file, line, col, f"a mapping cannot carry the tag {ascii(n.tag)}"))
                return None
            out: dict = {}
            for k_node, v_node in n.value:
                if not isinstance(k_node, yaml.ScalarNode):
                    line, col = _mark(k_node)
                    problems.append(Diagnostic(file, line, col, "mapping keys must be plain names"))
                    continue
                try:
                    key = _construct_scalar(loader, k_node, file) if k_node.tag != "tag:yaml.org,2002:merge" else "<<"
                except SpecError as e:
                    problems.extend(e.diagnostics)
                    continue
                if k_node.tag == "tag:yaml.org,2002:merge" or key == "<<":
                    line, col = _mark(k_node)
                    problems.append(Diagnostic(file, line, col, "YAML merge keys ('<<') are not supported in specs"))
                    continue
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    line, col = _mark(k_node)
                    problems.append(Diagnostic(file, line, col, f"mapping keys must be plain names, not {type(key).__name__} values"))
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
            if n.tag != _TAG + "seq":
                line, col = _mark(n)
                problems.append(Diagnostic(file, line, col, f"a list cannot carry the tag {ascii(n.tag)}"))
                return None
            return [build(v, path + (i,)) for i, v in enumerate(n.value)]
        if n.tag in (_TAG + "seq", _TAG + "map"):
            line, col = _mark(n)
            problems.append(Diagnostic(file, line, col, f"a single value cannot carry the tag {ascii(n.tag)}"))
            return None
        try:
            return _construct_scalar(loader, n, file)
        except SpecError as e:
            problems.extend(e.diagnostics)
            return None

    located.data = build(node, ())
    if problems:
        raise SpecError(problems)
    return located


def load_file(path: str | Path, *, limits: Optional[SpecLimits] = None) -> Located:
    """Read and parse a spec file; a missing or unreadable file is a positioned error too."""
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise SpecError([Diagnostic(name, 1, 1, "no such file")])
    if p.is_dir():
        raise SpecError([Diagnostic(name, 1, 1, "this is a folder, not a spec file")])
    limits = limits.checked(name) if limits is not None else SpecLimits.from_env(name)
    try:
        if not p.is_file():  # a named pipe or a device would block or never end
            raise SpecError([Diagnostic(name, 1, 1, "this is not a regular file (a pipe, a socket or a device?)")])
        with p.open("rb") as fh:
            raw = fh.read(limits.bytes + 1)  # never more than the limit, whatever the file's size
    except OSError as e:
        raise SpecError([Diagnostic(name, 1, 1, f"cannot read the file: {e.strerror}")]) from None
    if len(raw) > limits.bytes:
        size = p.stat().st_size
        raise SpecError([Diagnostic(name, 1, 1, f"the spec is {size:,} bytes, over the limit of {limits.bytes:,} bytes "
                                                "for a spec file; " + _raise_hint("bytes", limits.bytes))])
    return load_located(raw, name, limits=limits)
