"""Numbers out: every element's computed numbers with their labels, in memory and as one ``.npz``.

:func:`numbers_of` turns a run's raw results (op id → tensors) into :class:`Numbers`: one
:class:`ElementNumbers` per element of the spec (``name[side]`` for each side of a ``vary``), each
holding :class:`Labelled` arrays — numpy data with named dimensions and the labels along them:

- ``values``: the element's content, dims ``(input, series|cls, <atom dims>)``. The second dim is
  ``cls`` when the series are output classes (attribution to ``select: [star, crescent]``), else
  ``series`` (its labels are the plan's series labels). Atom dims: spatial ``(y, x)``, channel
  ``(channel)`` (``cls`` at the output layer), neuron ``(channel, y, x)``, group ``(group)``, whole none;
- ``groups.spatial`` ``(input, group, y, x)`` and ``groups.channels`` ``(input, group, channel)`` for
  NMF groups;
- every other tensor the element's presentation reads (icons, activation grids, atlas cells), as
  ``<op kind>.<name>`` with its first dim ``input`` for per-input presentations (``cell`` for an
  atlas's per-cell numbers) and positional dims after it.

``write_npz`` stores them in one compressed ``numbers.npz``: each array under ``<element>/<array>``
and one JSON document of labels (dims, coords, layer, atom, grammar sentence, the spec's inputs and
classes) under ``__labels__`` as a 0-d unicode array, so ``numpy.load(path)`` reads it all without
``allow_pickle`` and :func:`load_numbers` gives back the same :class:`Numbers`.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from interpgram.backends.files import atomic_write
from interpgram.grammar import PRESENTATIONS
from interpgram.grammar.spec.errors import did_you_mean

NUMBERS_FILE = "numbers.npz"
LABELS_KEY = "__labels__"
FORMAT = "interpgram-numbers"
FORMAT_VERSION = 1


class NumbersError(KeyError):
    """A label, dimension, element or array that is not there; the message lists what is."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


# ============================================================================ labelled arrays
@dataclass
class Labelled:
    """A numpy array with named dimensions and, where they mean something, labels along them.

    ``coords[dim]`` is the list of labels of that dim (input names, class names, channel indices)
    or ``None`` for a plain position (y, x). ``sel(dim=label)`` picks by label — a string matches a
    label, an int matches an int label (channels) or else a position — and drops the dim; a list
    keeps it. ``numpy()`` / ``torch()`` / ``np.asarray`` give the data."""

    data: np.ndarray
    dims: tuple[str, ...]
    coords: dict[str, Optional[list]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        self.dims = tuple(self.dims)
        if len(self.dims) != self.data.ndim:
            raise ValueError(f"{len(self.dims)} dims {self.dims} for an array of shape {self.data.shape}")
        for d in self.dims:
            c = self.coords.setdefault(d, None)
            if c is not None and len(c) != self.data.shape[self.dims.index(d)]:
                raise ValueError(f"dim {d!r} has {self.data.shape[self.dims.index(d)]} entries but {len(c)} labels")

    # ---------------------------------------------------------------- access
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def numpy(self) -> np.ndarray:
        return self.data

    def torch(self):
        import torch  # only when asked for: the numbers themselves need numpy alone
        return torch.from_numpy(np.ascontiguousarray(self.data))

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __float__(self) -> float:
        return float(self.data)

    def labels(self, dim: str) -> list:
        """The labels along ``dim`` (positions 0…n−1 where it has none)."""
        self._dim(dim)
        c = self.coords[dim]
        return list(range(self.data.shape[self.dims.index(dim)])) if c is None else list(c)

    def _dim(self, dim: str) -> int:
        if dim not in self.dims:
            raise NumbersError(f"no dim {dim!r} in this array {did_you_mean(dim, self.dims, listing='dims')}")
        return self.dims.index(dim)

    def _index(self, dim: str, key) -> int:
        axis = self._dim(dim)
        n = self.data.shape[axis]
        c = self.coords[dim]
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer, str)):
            raise NumbersError(f"{dim}={key!r}: select with a label (str), an index (int) or a list of them")
        if c is not None and any(str(x) == str(key) for x in c) and (
                isinstance(key, str) or all(isinstance(x, (int, np.integer)) for x in c)):
            return [str(x) for x in c].index(str(key))
        if isinstance(key, (int, np.integer)) and not (c is not None and all(isinstance(x, (int, np.integer)) for x in c)):
            if -n <= int(key) < n:
                return int(key) % n
            raise NumbersError(f"{dim}={key}: out of range ({n} entries: 0..{n - 1})")
        shown = [str(x) for x in (c if c is not None else range(n))]
        raise NumbersError(f"{dim}={key!r} is not a label {did_you_mean(key, shown, listing=dim)}")

    def sel(self, **keys) -> "Labelled":
        """Select by label along named dims: ``sel(input=0, cls="star")``. A scalar drops the dim,
        a list keeps it (in the order given)."""
        out = self
        for dim, key in keys.items():
            axis = out._dim(dim)
            if isinstance(key, (list, tuple)):
                idx = [out._index(dim, k) for k in key]
                c = out.coords[dim]
                coords = {**out.coords, dim: [c[i] for i in idx] if c is not None else None}
                out = Labelled(np.take(out.data, idx, axis=axis), out.dims, coords, out.attrs)
            else:
                i = out._index(dim, key)
                coords = {d: v for d, v in out.coords.items() if d != dim}
                out = Labelled(np.take(out.data, i, axis=axis), out.dims[:axis] + out.dims[axis + 1:], coords, out.attrs)
        return out

    def __repr__(self) -> str:
        def lab(d):
            c = self.coords.get(d)
            if c is None:
                return ""
            shown = ", ".join(map(repr, c[:4])) + (", …" if len(c) > 4 else "")
            return f" [{shown}]"
        dims = ", ".join(f"{d}: {n}{lab(d)}" for d, n in zip(self.dims, self.data.shape)) or "scalar"
        return f"<Labelled {self.data.dtype} ({dims})>\n{np.array2string(self.data, threshold=20, edgeitems=2, precision=4)}"

    def _meta(self) -> dict:
        return {"dims": list(self.dims), "coords": {d: c for d, c in self.coords.items() if c is not None}}


@dataclass
class ElementNumbers:
    """The numbers of one element: its content ``values`` and whatever else its presentation reads."""

    key: str  # the element id, or "id[side]" for one side of a vary
    element: str
    presentations: list[str]
    layer: str
    atom: str
    kind: str  # activation | attribution | transform
    title: str
    grammar: str
    series: list[str]
    arrays: dict[str, Labelled] = field(default_factory=dict)
    side: str = ""

    @property
    def values(self) -> Labelled:
        if "values" not in self.arrays:
            raise NumbersError(f"{self.key} ({', '.join(self.presentations)}) has no content values; "
                               f"its arrays: {', '.join(self.arrays) or 'none'}")
        return self.arrays["values"]

    def sel(self, **keys) -> Labelled:
        """``values.sel(...)``: e.g. ``res["where"].sel(input=0, cls="star")``."""
        return self.values.sel(**keys)

    def numpy(self) -> np.ndarray:
        return self.values.numpy()

    def torch(self):
        return self.values.torch()

    def __array__(self, dtype=None, copy=None):
        return self.values.__array__(dtype)

    def __getitem__(self, name: str) -> Labelled:
        if name not in self.arrays:
            raise NumbersError(f"{self.key} has no array {name!r} {did_you_mean(name, self.arrays, listing='arrays')}")
        return self.arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __repr__(self) -> str:
        head = f"<ElementNumbers {self.key}: {' + '.join(self.presentations)} of {self.kind} {self.layer} by {self.atom}>"
        rows = [f"  {n}: " + ", ".join(f"{d} {s}" for d, s in zip(a.dims, a.shape)) for n, a in self.arrays.items()]
        return "\n".join([head, f"  {self.grammar}", *rows])

    def _meta(self) -> dict:
        return {"element": self.element, "side": self.side, "presentations": self.presentations, "layer": self.layer,
                "atom": self.atom, "kind": self.kind, "title": self.title, "grammar": self.grammar,
                "series": self.series, "arrays": {n: a._meta() for n, a in self.arrays.items()}}


@dataclass
class Numbers:
    """Every element's numbers: ``numbers["where"]`` → :class:`ElementNumbers`."""

    elements: dict[str, ElementNumbers]
    inputs: list[str]
    classes: list[str]
    model: str = ""
    spec: str = ""

    def __getitem__(self, key: str) -> ElementNumbers:
        if key not in self.elements:
            raise NumbersError(f"no element {key!r} {did_you_mean(key, self.elements, listing='elements')}")
        return self.elements[key]

    def __contains__(self, key: object) -> bool:
        return key in self.elements

    def __iter__(self) -> Iterator[str]:
        return iter(self.elements)

    def __len__(self) -> int:
        return len(self.elements)

    def keys(self):
        return self.elements.keys()

    def items(self):
        return self.elements.items()

    def to_npz(self, path: str | Path) -> Path:
        return write_npz(self, Path(path))

    def __repr__(self) -> str:
        lines = [f"<Numbers of {len(self.elements)} element(s) · model {self.model} · inputs {self.inputs}>"]
        for k, e in self.elements.items():
            arrays = "; ".join(f"{n} ({', '.join(a.dims)})" for n, a in e.arrays.items())
            lines.append(f"  {k}: {' + '.join(e.presentations)} · {arrays}")
        return "\n".join(lines)


# ============================================================================ results → numbers
def _np(t) -> np.ndarray:
    t = t.detach().cpu()
    if not t.dtype.is_floating_point or t.dtype.itemsize >= 4:
        return t.numpy()
    return t.float().numpy()  # numpy has no bfloat16


def _array_of(t) -> Optional[np.ndarray]:
    """A tensor, or a per-input list of same-shape tensors or of equal-length number lists, as one
    array; None for what has no rectangular numeric form (nested records such as data-set examples)."""
    if hasattr(t, "detach"):
        return _np(t)
    if isinstance(t, list) and t and all(hasattr(x, "detach") for x in t):
        if len({tuple(x.shape) for x in t}) == 1:
            return np.stack([_np(x) for x in t])
        return None
    if isinstance(t, list) and t:
        try:
            arr = np.asarray(t)
        except ValueError:  # ragged
            return None
        return arr if arr.dtype.kind in "biuf" else None
    return None


def _atom_dims(atom: str, layer: str, shape: tuple[int, ...], classes: list[str]) -> tuple[tuple, dict]:
    """Dims (and labels) of one input's content of ``atom`` at ``layer`` with this shape."""
    if len(shape) == 0:
        return (), {}
    if len(shape) == 1:
        if atom == "group":
            return ("group",), {"group": list(range(shape[0]))}
        if layer == "output" and shape[0] == len(classes):
            return ("cls",), {"cls": list(classes)}
        return ("channel",), {"channel": list(range(shape[0]))}
    if len(shape) == 2:
        return ("y", "x"), {}
    if len(shape) == 3:
        return ("channel", "y", "x"), {"channel": list(range(shape[0]))}
    return tuple(f"axis{i}" for i in range(len(shape))), {}


def _generic(arr: np.ndarray, per_input: bool, inputs: list[str], lead: str = "cell") -> Labelled:
    """Positional dims for a tensor whose layout only its kernel knows (the first dim named)."""
    if arr.ndim == 0:
        return Labelled(arr, ())
    if per_input and arr.shape[0] == len(inputs):
        return Labelled(arr, ("input",) + tuple(f"axis{i}" for i in range(1, arr.ndim)), {"input": list(inputs)})
    return Labelled(arr, (lead if not per_input else "axis0",) + tuple(f"axis{i}" for i in range(1, arr.ndim)))


def numbers_of(plan, inputs, results) -> Numbers:
    """The labelled numbers of every element of ``plan`` (as the spec states it: link variants are
    the report's interactivity, not elements of their own)."""

    names = list(inputs.names)
    classes = list(plan.classes)
    out: dict[str, ElementNumbers] = {}
    for p in plan.base_elements:
        key = p.element + (f"[{p.side}]" if p.side else "")
        per_input = PRESENTATIONS[p.presentation].per_input
        el = out.get(key)
        if el is None:
            el = out[key] = ElementNumbers(key, p.element, [], p.layer, p.atom, p.content_kind, p.title, p.grammar,
                                           [s.label for s in p.series], side=p.side)
            vals = [_np(results.values[s.op]["value"]) for s in p.series]
            if vals and per_input and len({v.shape for v in vals}) == 1:
                adims, acoords = _atom_dims(p.atom, p.layer, vals[0].shape[1:], classes)
                labels = [s.label for s in p.series]
                sdim = ("cls" if p.content_kind != "activation" and p.layer != "output" and "cls" not in adims
                        and all(lab in classes for lab in labels) else "series")
                el.arrays["values"] = Labelled(np.stack(vals, axis=1), ("input", sdim) + adims,
                                               {"input": names, sdim: labels, **acoords})
            if p.groups:
                g = results.values[p.groups]
                sp, ch = _np(g["spatial"]), _np(g["channels"])
                k = sp.shape[1]
                el.arrays["groups.spatial"] = Labelled(sp, ("input", "group", "y", "x"),
                                                       {"input": names, "group": list(range(k))})
                el.arrays["groups.channels"] = Labelled(ch, ("input", "group", "channel"),
                                                        {"input": names, "group": list(range(k)),
                                                         "channel": list(range(ch.shape[2]))})
        if p.presentation not in el.presentations:
            el.presentations.append(p.presentation)
        for op_id in tuple(p.icons) + ((p.detail,) if p.detail else ()):
            kind = type(plan.ops[op_id]).__name__
            for name, t in results.values.get(op_id, {}).items():
                arr = _array_of(t)
                if arr is not None and f"{kind}.{name}" not in el.arrays:
                    el.arrays[f"{kind}.{name}"] = _generic(arr, per_input, names)
        if not per_input:  # an atlas: its cells' numbers, labelled where the layout is known
            _label_cells(el, classes)
    return Numbers(out, names, classes, plan.model, plan.source)


def _label_cells(el: ElementNumbers, classes: list[str]) -> None:
    """The atlas grid's per-cell arrays: cell × (col, row), cell × class."""
    cells = el.arrays.get("Grid.cells")
    if cells is not None and cells.ndim == 2 and cells.shape[1] == 2:
        el.arrays["Grid.cells"] = Labelled(cells.data, ("cell", "xy"), {"xy": ["col", "row"]})
    attr = el.arrays.get("Grid.mean_attr")
    if attr is not None and attr.ndim == 2 and attr.shape[1] == len(classes):
        el.arrays["Grid.mean_attr"] = Labelled(attr.data, ("cell", "cls"), {"cls": list(classes)})


# ============================================================================ the .npz file
def _array_name(key: str, name: str) -> str:
    return f"{key}/{name}"


def write_npz(numbers: Numbers, path: Path) -> Path:
    """One compressed ``.npz``: every array under ``<element>/<array>``, the labels as JSON under
    ``__labels__``. Written to a temporary name and moved into place (never half-written)."""

    meta = {"format": FORMAT, "version": FORMAT_VERSION, "model": numbers.model, "spec": numbers.spec,
            "inputs": numbers.inputs, "classes": numbers.classes,
            "elements": {k: e._meta() for k, e in numbers.elements.items()}}
    arrays = {_array_name(k, n): a.data for k, e in numbers.elements.items() for n, a in e.arrays.items()}
    arrays[LABELS_KEY] = np.array(json.dumps(meta, ensure_ascii=False))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write(Path(path), buf.getvalue())


def load_numbers(path: str | Path) -> Numbers:
    """Read a ``numbers.npz`` (``interpgram render --export npz``) back into :class:`Numbers`."""
    p = Path(path)
    try:
        npz = np.load(p, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{p}: not an interpgram numbers file ({e})") from None
    with npz:
        if LABELS_KEY not in npz.files:
            raise ValueError(f"{p}: not an interpgram numbers file (no {LABELS_KEY} entry)")
        meta = json.loads(str(npz[LABELS_KEY][()]))
        if meta.get("format") != FORMAT or meta.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{p}: format {meta.get('format')} v{meta.get('version')}, this interpgram reads "
                             f"{FORMAT} up to v{FORMAT_VERSION}")
        elements = {}
        for k, m in meta["elements"].items():
            arrays = {n: Labelled(npz[_array_name(k, n)], tuple(am["dims"]), dict(am.get("coords", {})))
                      for n, am in m["arrays"].items()}
            elements[k] = ElementNumbers(k, m["element"], list(m["presentations"]), m["layer"], m["atom"], m["kind"],
                                         m["title"], m["grammar"], list(m["series"]), arrays, side=m.get("side", ""))
    return Numbers(elements, list(meta["inputs"]), list(meta["classes"]), meta.get("model", ""), meta.get("spec", ""))


def iter_arrays(numbers: Numbers) -> Iterator[tuple[str, str, Labelled]]:
    """(element key, array name, array) for every array (tests and tools compare two Numbers)."""
    for k, e in numbers.elements.items():
        for n, a in e.arrays.items():
            yield k, n, a


__all__: Sequence[str] = ("ElementNumbers", "Labelled", "NUMBERS_FILE", "Numbers", "NumbersError", "iter_arrays",
                          "load_numbers", "numbers_of", "write_npz")
