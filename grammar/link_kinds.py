"""What a link selects, in one table: for each kind of selection (a position of a layer, a channel,
a class, an NMF group) the chart fields its key is made of, how the key reads to a person, and how
a page tells the user what to do.

One definition serves everyone: the compiler and the links code make and parse keys with it, the
dashboard turns Panel's selection values into keys and captions with it, and the static report
embeds :func:`as_json` so that its script (``backends/render/assets/report.js``) reads the same
fields, labels and hints instead of a copy of them in JavaScript.

Label templates use ``{0}``, ``{1}`` (the key's parts), ``{number}`` (the first part + 1, for
1-based names), ``{name}`` (a class's name, else the key) and ``{layer}`` (the source layer).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence


@dataclass(frozen=True)
class LinkKind:
    name: str
    fields: tuple[str, ...]  # the chart's selection fields, in key order ("3,5": col 3, row 5)
    label: str  # how one selection reads
    noun: str  # "a position": what the user hovers or clicks


LINK_KINDS: dict[str, LinkKind] = {k.name: k for k in (
    LinkKind("position", ("col", "row"), "position ({0}, {1}) of {layer}", "a position"),
    LinkKind("channel", ("atom",), "channel {layer}:{0}", "a channel"),
    LinkKind("class", ("atom",), "class {name}", "a class"),
    LinkKind("group", ("gid",), "group {number}", "a group"),
)}
EVENT_VERBS = {"hover": "hover", "click": "click", "select": "click"}


def kind(name: str) -> LinkKind:
    if name not in LINK_KINDS:
        raise ValueError(f"unknown link kind {name!r} (kinds: {', '.join(LINK_KINDS)})")
    return LINK_KINDS[name]


def key_of(kind_name: str, value: Any) -> str:
    """A selection's value (``(x, y)`` for a position, an index otherwise) → its key ("3,5", "17")."""
    parts = value if isinstance(value, (tuple, list)) else (value,)
    if len(parts) != len(kind(kind_name).fields):
        raise ValueError(f"a {kind_name} selection has {len(kind(kind_name).fields)} part(s), got {value!r}")
    return ",".join(str(int(p)) for p in parts)


def parse_key(kind_name: str, key: str) -> Any:
    """A key → the selection's value: ``(x, y)`` for a position, an int otherwise."""
    parts = tuple(int(t) for t in str(key).split(","))
    if len(parts) != len(kind(kind_name).fields):
        raise ValueError(f"a {kind_name} selection key has {len(kind(kind_name).fields)} part(s), got {key!r}")
    return parts if len(parts) > 1 else parts[0]


def selection_key(kind_name: str, value: Any) -> Optional[str]:
    """A chart's ``link`` point selection → its key, or None when nothing is selected.

    Panel reports a selection over several fields as a list of one-field dicts (``[{"col": 3},
    {"row": 5}]``), over one field as ``[{"atom": 17}]``; a plain Vega signal value
    (``{"col": [3], "row": [5]}``) is accepted too (the report's script sees that form)."""
    if not value:
        return None
    merged: dict[str, Any] = {}
    for item in (value if isinstance(value, list) else [value]):
        if not isinstance(item, dict):
            continue
        for k, v in item.items():
            if isinstance(v, (list, tuple)):
                v = v[0] if v else None
            if v is not None:
                merged.setdefault(k, v)
    try:
        parts = [merged.get(f) for f in kind(kind_name).fields]
        return None if any(p is None for p in parts) else ",".join(str(int(p)) for p in parts)
    except (TypeError, ValueError):
        return None


def label(kind_name: str, key: str, *, names: Optional[Sequence[str]] = None, layer: str = "") -> str:
    """How selection ``key`` reads ("position (3, 5) of conv4", "class star", "group 2")."""
    parts = str(key).split(",")
    name = key
    if names is not None and parts[0].lstrip("-").isdigit() and 0 <= int(parts[0]) < len(names):
        name = names[int(parts[0])]
    number = int(parts[0]) + 1 if parts[0].lstrip("-").isdigit() else parts[0]
    template = kind(kind_name).label
    if not layer:  # the same words without the layer
        template = template.replace(" of {layer}", "").replace("{layer}:", "")
    return template.format(*parts, number=number, name=name, layer=layer)


def hint(kind_name: str, event: str, source_element: str, precomputed: int, total: int) -> str:
    """What a linked view says about how to drive it (the static report's line under its chart)."""
    verb = EVENT_VERBS.get(event, "click")
    return (f"{verb} {kind(kind_name).noun} in {source_element} to change this view "
            f"({precomputed} of {total} selections precomputed here)")


def as_json() -> dict:
    """The table for a page's script: {kind: {fields, label, noun}} and the event verbs."""
    return {"kinds": {k: {f: v for f, v in asdict(lk).items() if f != "name"} for k, lk in LINK_KINDS.items()},
            "verbs": dict(EVENT_VERBS)}
