"""Spec → Plan: lower every element to ops and fuse them.

Fusion rules:
- every layer any element reads is captured by one forward pass over the inputs;
- every distinct gradient target (a class logit, a layer position's norm, ...) is one backward
  pass, taken with respect to every layer that needs it;
- identical requests (same op, same parameters) are one node, so two elements asking for the
  same tensor share it.

The compiler needs to know the model's layers (with output shapes, in execution order) and class
names: a :class:`ModelInfo`, which backends provide. It imports nothing from backends.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from interpgram.grammar.spec.errors import Diagnostic, SpecError, did_you_mean, nearest
from interpgram.grammar.spec.load import LoadedSpec
from interpgram.grammar._presentations import PRESENTATIONS
from interpgram.grammar.plan import (
    ActivationGrid,
    AtlasIcons,
    Capture,
    Collect,
    Grid,
    Layout,
    PatchTest,
    FeatureVis,
    Combine,
    Factorize,
    Gradient,
    GroupAttribution,
    LinkInfo,
    PathGradient,
    Plan,
    Present,
    Reduce,
    Series,
    Target,
)
from interpgram.grammar.spec.nodes import (
    ActivationContent,
    AttributionContent,
    DatasetSubstrate,
    CanonicalAtom,
    NetworkSubstrate,
    ParametersSubstrate,
    TransformContent,
    canonical_atom,
    canonical_presentations,
)

CAPTURE_ID = "fwd"
COLLECT_ID = "collect"


@dataclass
class ModelInfo:
    """What the compiler needs to know about a model (pure data)."""

    name: str
    layers: dict[str, tuple[int, ...]]  # module path -> per-sample output shape, execution order
    classes: list[str]
    input_shape: tuple[int, ...] = (3, 224, 224)

    def order(self, layer: str) -> int:
        if layer == "input":
            return -1
        if layer == "output":
            return len(self.layers) + 1
        return list(self.layers).index(layer)

    def shape(self, layer: str) -> tuple[int, ...]:
        if layer == "input":
            return tuple(self.input_shape)
        if layer == "output":
            return (len(self.classes),)
        return tuple(self.layers[layer])


class _Invalid(Exception):
    """Raised inside the compiler after a diagnostic was recorded for the current element."""


@dataclass
class _Content:
    series: list[Series]
    atom: str
    layer: str
    kind: str  # activation | attribution | transform
    sentence: str
    groups: Optional[str] = None
    canon: Any = None  # the CanonicalAtom of the content's (first) substrate


@dataclass(frozen=True)
class Selection:
    """A link's selection applied while lowering its target element: ``kind`` (position, channel,
    class, group) with ``value`` drives ``target`` (from, to, class, group, position, channel)."""

    kind: str
    value: Any
    target: str
    source_layer: str = ""
    source_shape: tuple[int, ...] = ()


def _top_rank(c: Any, classes: list[str]) -> Optional[int]:
    """``top1``, ``top2``, ... (unless a class has that name) → 0, 1, ...; else None."""
    if isinstance(c, str) and c not in classes:
        m = re.fullmatch(r"top([1-9][0-9]*)", c)
        if m:
            return int(m.group(1)) - 1
    return None


def map_position(xy: tuple[int, int], src: tuple[int, ...], dst: tuple[int, ...]) -> tuple[int, int]:
    """A position of a (C, H, W) layer → the position covering the same place in another layer."""
    (h1, w1), (h2, w2) = src[-2:], dst[-2:]
    x = min(w2 - 1, int((xy[0] + 0.5) * w2 / w1))
    y = min(h2 - 1, int((xy[1] + 0.5) * h2 / h1))
    return x, y


@dataclass
class _Builder:
    loaded: LoadedSpec
    info: ModelInfo
    diags: list[Diagnostic] = field(default_factory=list)
    ops: dict[str, Any] = field(default_factory=dict)
    keys: dict[tuple, str] = field(default_factory=dict)
    capture_layers: list[str] = field(default_factory=list)
    grad_wrt: dict[Target, list[str]] = field(default_factory=dict)
    grad_ids: dict[Target, str] = field(default_factory=dict)
    element_targets: set = field(default_factory=set)
    element_paths: int = 0
    batches: dict[tuple, str] = field(default_factory=dict)  # (layer, icon settings) -> batch id
    sel: Optional[Selection] = None  # set while lowering a link's variant of its target element
    sel_used: bool = False
    sel_problem: str = ""
    atlas_layers: list[str] = field(default_factory=list)  # layers the spec's one data-set collection stores

    # ------------------------------------------------------------ helpers
    def fail(self, path: tuple, msg: str, *, key: bool = False) -> None:
        self.diags.append(self.loaded.error(path, msg, key=key))
        raise _Invalid

    def node(self, kind: str, key: tuple, make) -> str:
        full = (kind,) + key
        if full in self.keys:
            return self.keys[full]
        op_id = f"{kind}{sum(1 for k in self.keys if k[0] == kind)}"
        self.keys[full] = op_id
        self.ops[op_id] = make(op_id)
        return op_id

    def capture(self, layer: str) -> str:
        if layer not in ("output",) and layer not in self.capture_layers:
            self.capture_layers.append(layer)
        if layer == "output" and "output" not in self.capture_layers:
            self.capture_layers.append("output")
        return CAPTURE_ID

    def gradient(self, target: Target, layer: str) -> str:
        self.element_targets.add(target)
        self.capture(layer)
        if target.kind in ("norm", "channel"):
            self.capture(target.layer)
        wrt = self.grad_wrt.setdefault(target, [])
        if layer not in wrt:
            wrt.append(layer)
        if target not in self.grad_ids:
            self.grad_ids[target] = f"grad{len(self.grad_ids)}"
        return self.grad_ids[target]

    # ------------------------------------------------------------ link selections
    def select_atom(self, atom: CanonicalAtom, layer: str) -> CanonicalAtom:
        """The content's atom as a link's selection (``from``, ``position``, ``channel``) changes it."""
        sel = self.sel
        if sel is None or sel.target not in ("from", "position", "channel"):
            return atom
        shape = self.info.shape(layer)
        if sel.kind == "position" and sel.target in ("from", "position"):
            if len(shape) != 3:
                self.sel_problem = f"{layer!r} has no positions to select"
                return atom
            x, y = map_position(sel.value, sel.source_shape, shape)
            if atom.kind == "channel":  # the channels at the selected position
                self.sel_used = True
                return CanonicalAtom(kind="channel", at=(x, y), channels=atom.channels)
            if atom.kind == "spatial":
                self.sel_used = True
                return CanonicalAtom(kind="spatial", at=(x, y))
            if atom.kind == "neuron" and atom.at is not None:
                self.sel_used = True
                return CanonicalAtom(kind="neuron", at=(x, y, atom.at[2]))
            self.sel_problem = f"a position selects spatial, channel or neuron atoms, not {atom.kind}"
            return atom
        if sel.kind == "channel" and sel.target in ("from", "channel"):
            if layer != sel.source_layer:
                self.sel_problem = (f"a channel of {sel.source_layer!r} selects channels of the same layer, "
                                    f"but this content is in {layer!r}")
                return atom
            c = int(sel.value)
            if atom.kind in ("channel", "spatial"):  # spatial: the map of that channel alone
                self.sel_used = True
                return CanonicalAtom(kind=atom.kind, at=atom.at, channels=(c,))
            if atom.kind == "neuron" and atom.at is not None:
                self.sel_used = True
                return CanonicalAtom(kind="neuron", at=(*atom.at[:2], c))
            self.sel_problem = f"a channel selects channel, spatial or neuron atoms, not {atom.kind}"
            return atom
        self.sel_problem = f"a {sel.kind} selection cannot drive {sel.target!r}"
        return atom

    # ------------------------------------------------------------ substrates
    def check_layer(self, layer: str, path: tuple) -> None:
        if layer in ("input", "output") or layer in self.info.layers:
            return
        top = [l for l in self.info.layers if "." not in l]
        guess = nearest(layer, ["input", *self.info.layers, "output"])
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        shown = ", ".join(["input", *top, "output"])
        more = " and their submodules, e.g. " + next(l for l in self.info.layers if "." in l) if len(top) < len(self.info.layers) else ""
        self.fail(path + ("layer",), f"unknown layer {layer!r} in {self.info.name} (layers: {shown}{more}{hint})")

    def class_index(self, c: Any, path: tuple) -> int:
        classes = self.info.classes
        if isinstance(c, bool):
            self.fail(path, f"class {c!r} is neither a class name nor an index")
        if isinstance(c, int):
            if 0 <= c < len(classes):
                return c
            self.fail(path, f"class index {c} is out of range (the model has {len(classes)} classes: 0..{len(classes) - 1})")
        if c in classes:
            return classes.index(c)
        self.fail(path, f"unknown class {c!r} {did_you_mean(c, classes, listing='classes')}")
        raise AssertionError

    def check_atom(self, atom, layer: str, path: tuple) -> None:
        shape = self.info.shape(layer)
        apath = path + ("atom",)
        if atom.kind in ("spatial", "neuron") and atom.at is not None:
            if len(shape) != 3:
                self.fail(apath, f"layer {layer!r} has no spatial positions (shape {shape})")
            c, h, w = shape
            x, y = atom.at[0], atom.at[1]
            if not (0 <= x < w and 0 <= y < h):
                self.fail(apath, f"position x={x}, y={y} is outside {layer!r} ({w}×{h}: x in 0..{w - 1}, y in 0..{h - 1})")
            if atom.kind == "neuron" and not 0 <= atom.at[2] < c:
                self.fail(apath, f"channel {atom.at[2]} is outside {layer!r} ({c} channels: 0..{c - 1})")
        if atom.channels is not None:
            c = shape[0]
            bad = [i for i in atom.channels if not 0 <= i < c]
            if bad:
                self.fail(apath, f"channel {bad[0]} is outside {layer!r} ({c} channels: 0..{c - 1})")
        if atom.kind in ("spatial", "group") and len(shape) != 3 and layer != "output":
            self.fail(apath, f"{atom.kind} atoms need a layer with positions; {layer!r} has shape {shape}")
        if atom.kind == "direction":
            if atom.direction is None:
                self.fail(apath, "a direction atom needs its weights: {direction: [w0, w1, ...]} or {direction: {channel: weight}}")
            if layer in ("input", "output") or len(shape) not in (1, 3):
                self.fail(apath, f"a direction lives in a hidden layer's channel space; {layer!r} has shape {shape}")
            c = shape[0]
            if atom.sparse:
                bad = [ch for ch, _ in atom.direction if not 0 <= ch < c]
                if bad:
                    self.fail(apath, f"direction names channel {bad[0]}, outside {layer!r} ({c} channels: 0..{c - 1})")
            elif len(atom.direction) != c:
                self.fail(apath, f"a direction in {layer!r} needs {c} weights (one per channel), got {len(atom.direction)}; "
                                 "or name only some channels: {direction: {channel: weight}}")
        if atom.kind == "group":
            c, h, w = shape
            if atom.k > min(c, h * w):
                self.fail(apath, f"k={atom.k} groups is more than {layer!r} allows (min(channels {c}, positions {h * w}))")

    def network(self, sub, path: tuple, what: str) -> NetworkSubstrate:
        if isinstance(sub, DatasetSubstrate):
            self.fail(path, f"{what}: a dataset substrate is collected for atlases, which no presentation here shows yet; "
                            "use a network layer ({layer: conv3, atom: spatial})")
        if isinstance(sub, ParametersSubstrate):
            self.fail(path, f"{what}: a parameters substrate has no presentation yet; use a network layer")
        self.check_layer(sub.layer, path)
        return sub

    # ------------------------------------------------------------ content
    def content(self, c, path: tuple) -> _Content:
        if isinstance(c, ActivationContent):
            return self.activation(c, path + ("activation",))
        if isinstance(c, AttributionContent):
            return self.attribution(c, path + ("attribution",))
        if isinstance(c, TransformContent):
            return self.transform(c, path + ("transform",))
        raise AssertionError(type(c))

    def activation(self, c: ActivationContent, path: tuple) -> _Content:
        sub = self.network(c.activation, path, "activation")
        if sub.layer == "output" and sub.atom is None:
            atom = canonical_atom("channel")
        else:
            atom = canonical_atom(sub.atom, "spatial")
        self.check_atom(atom, sub.layer, path)
        atom = self.select_atom(atom, sub.layer)
        cap = self.capture(sub.layer)
        sentence = f"Activation(Network {sub.layer} {atom.kind.capitalize()})"
        if atom.kind == "group":
            src = self.neurons(sub.layer)
            if atom.of == "attribution":
                self.fail(path + ("atom",), "groups of attribution need an attribution content: "
                                            "{attribution: {from: {layer: L, atom: {group: nmf, of: attribution}}, to: ...}}")
            g = self.node("nmf", (src, atom.k, "activation", atom.sign, self.seed),
                          lambda i: Factorize(i, source=src, k=atom.k, of="activation", sign=atom.sign, seed=self.seed))
            return _Content([], "group", sub.layer, "activation", sentence, groups=g, canon=atom)
        vector = self.dense(atom, sub.layer) if atom.kind == "direction" else None
        op = self.node("act", (sub.layer, atom.kind, atom.at, atom.channels, vector),
                       lambda i: Reduce(i, capture=cap, layer=sub.layer, atom=atom.kind, at=atom.at, channels=atom.channels,
                                        vector=vector))
        return _Content([Series(f"{sub.layer} activation", op)], atom.kind, sub.layer, "activation", sentence, canon=atom)

    def dense(self, atom, layer: str) -> tuple[float, ...]:
        if not atom.sparse:
            return tuple(float(x) for x in atom.direction)
        v = [0.0] * self.info.shape(layer)[0]
        for ch, w in atom.direction:
            v[ch] = float(w)
        return tuple(v)

    def neurons(self, layer: str) -> str:
        """The neuron-level activation of ``layer`` (every channel at every position)."""
        cap = self.capture(layer)
        return self.node("act", (layer, "neuron", None, None, None),
                         lambda i: Reduce(i, capture=cap, layer=layer, atom="neuron"))

    def targets(self, to: NetworkSubstrate, frm_layer: str, path: tuple) -> list[tuple[str, Target]]:
        sel = self.sel
        if sel is not None and sel.target in ("to", "class"):
            if sel.kind == "class" and to.layer == "output":
                self.sel_used = True
                rank = _top_rank(sel.value, self.info.classes)
                if rank is not None:  # vary: {class: [top1, top2]}
                    return [("predicted class" if rank == 0 else f"top-{rank + 1} class", Target("logit", None, rank=rank))]
                idx = int(sel.value)
                return [(self.info.classes[idx], Target("logit", idx))]
            if sel.kind == "channel" and sel.target == "to" and to.layer == sel.source_layer:
                if canonical_atom(to.atom, "spatial").kind == "channel":
                    self.sel_used = True
                    c = int(sel.value)
                    return [(f"{to.layer}:{c}", Target("channel", layer=to.layer, channel=c))]
            if sel.kind == "position" and sel.target == "to" and to.layer not in ("input", "output"):
                shape = self.info.shape(to.layer)
                if len(shape) == 3 and self.info.order(to.layer) > self.info.order(frm_layer):
                    self.sel_used = True
                    x, y = map_position(sel.value, sel.source_shape, shape)
                    return [(f"{to.layer} at ({x}, {y})", Target("norm", layer=to.layer, at=(x, y)))]
            self.sel_problem = (f"a {sel.kind} selection drives `{sel.target}` of an attribution to "
                                + ("the output (select a class)" if to.layer == "output" else f"{to.layer!r} (select a position)"))
        if to.layer == "output":
            if to.atom is not None and canonical_atom(to.atom).kind not in ("neuron", "channel"):
                self.fail(path + ("to", "atom"), "the output layer's atoms are its class logits: use select: [class, ...]")
            if to.select is None:
                return [("predicted class", Target("logit", None))]
            out = []
            for i, c in enumerate(to.select):
                rank = _top_rank(c, self.info.classes)
                if rank is not None:  # top1, top2, ...: each input's k-th most likely class
                    if rank >= len(self.info.classes):
                        self.fail(path + ("to", "select", i), f"{c!r}: the model has only {len(self.info.classes)} classes")
                    out.append(("predicted class" if rank == 0 else f"top-{rank + 1} class", Target("logit", None, rank=rank)))
                    continue
                idx = self.class_index(c, path + ("to", "select", i))
                out.append((self.info.classes[idx], Target("logit", idx)))
            return out
        if to.layer == "input":
            self.fail(path + ("to", "layer"), "attribution flows from earlier to later layers; 'input' cannot be a target")
        if self.info.order(to.layer) <= self.info.order(frm_layer):
            self.fail(path + ("to", "layer"),
                      f"attribution goes from an earlier layer to a later one; {to.layer!r} does not come after {frm_layer!r}")
        atom = canonical_atom(to.atom, "spatial")
        self.check_atom(atom, to.layer, path + ("to",))
        if atom.kind == "spatial":
            label = f"{to.layer} at ({atom.at[0]}, {atom.at[1]})" if atom.at else f"{to.layer} strongest position"
            return [(label, Target("norm", layer=to.layer, at=atom.at))]
        if atom.kind == "channel":
            if len(self.info.shape(to.layer)) != 3:
                self.fail(path + ("to", "atom"), f"channel targets need a layer with positions; {to.layer!r} has shape "
                                                 f"{self.info.shape(to.layer)}")
            if atom.channels is None:
                return [(f"{to.layer} strongest channel", Target("channel", layer=to.layer))]
            return [(f"{to.layer}:{c}", Target("channel", layer=to.layer, channel=c)) for c in atom.channels]
        self.fail(path + ("to", "atom"),
                  f"layer-to-layer attribution targets a position ({{spatial: [x, y]}}, atom: spatial) or a channel "
                  f"({{channel: c}}, atom: channel) of {to.layer!r}")
        raise AssertionError

    def attribution(self, c: AttributionContent, path: tuple) -> _Content:
        a = c.attribution
        frm = self.network(a.from_, path + ("from",), "from")
        to = self.network(a.to, path + ("to",), "to")
        if frm.layer == "output":
            self.fail(path + ("from", "layer"), "attribution starts at the input or a hidden layer, not at 'output'")
        atom = canonical_atom(frm.atom, "spatial")
        self.check_atom(atom, frm.layer, path + ("from",))
        if atom.kind == "direction":
            self.fail(path + ("from", "atom"), "direction atoms are shown as activations ({activation: {layer: L, atom: {direction: ...}}}); "
                                               "attribution works on neuron, spatial, channel, group and whole atoms")
        atom = self.select_atom(atom, frm.layer)
        targets = self.targets(to, frm.layer, path)
        cap = self.capture(frm.layer)
        to_name = "Output " + ", ".join(t[0] for t in targets) if to.layer == "output" else f"Network {to.layer}"
        sentence = f"Attribution(Network {frm.layer} {atom.kind.capitalize()}, {to_name})"
        if a.method == "integrated" and atom.kind == "group":
            self.fail(path + ("method",), "method: integrated is not available for group atoms; use grad_x_act")
        series: list[Series] = []
        groups = None
        if atom.kind == "group":
            src_kind = atom.of
            if src_kind == "activation":
                src = self.neurons(frm.layer)
            else:
                if len(targets) != 1:
                    self.fail(path + ("from", "atom"), "groups of attribution factorise one target's attribution: select one class")
                g0 = self.gradient(targets[0][1], frm.layer)
                src = self.node("attr", (frm.layer, "neuron", g0, None, None),
                                lambda i: Reduce(i, capture=cap, layer=frm.layer, atom="neuron", gradient=g0))
            groups = self.node("nmf", (src, atom.k, src_kind, atom.sign, self.seed),
                               lambda i: Factorize(i, source=src, k=atom.k, of=src_kind, sign=atom.sign, seed=self.seed))
            for label, t in targets:
                g = self.gradient(t, frm.layer)
                # the article's group attribution: Σ (spatial_i ⊗ channel_i) · ∇A target
                grad = self.node("dlayer", (frm.layer, g),
                                 lambda i: Reduce(i, capture=cap, layer=frm.layer, atom="gradient", gradient=g))
                ga = self.node("gattr", (groups, grad), lambda i: GroupAttribution(i, groups=groups, gradient=grad))
                series.append(Series(label, ga))
            return _Content(series, "group", frm.layer, "attribution", sentence, groups=groups, canon=atom)
        for label, t in targets:
            if a.method == "integrated" and t.kind == "channel":
                self.fail(path + ("method",), "method: integrated is available for class and position targets; "
                                              "use grad_x_act for channel targets")
            if a.method == "integrated":
                self.element_targets.add(("path", t, frm.layer, a.steps))
                if t.kind == "norm":
                    self.capture(t.layer)
                g = self.node("path", (t, frm.layer, a.steps),
                              lambda i: PathGradient(i, capture=cap, target=t, layer=frm.layer, steps=a.steps))
            else:
                g = self.gradient(t, frm.layer)
            op = self.node("attr", (frm.layer, atom.kind, g, atom.at, atom.channels),
                           lambda i: Reduce(i, capture=cap, layer=frm.layer, atom=atom.kind, gradient=g,
                                            at=atom.at, channels=atom.channels))
            series.append(Series(label, op))
        return _Content(series, atom.kind, frm.layer, "attribution", sentence, canon=atom)

    def transform(self, c: TransformContent, path: tuple) -> _Content:
        t = c.transform
        if t.op == "compare":
            a = self.content(t.a, path + ("a",))
            b = self.content(t.b, path + ("b",))
            if (a.atom, a.layer) != (b.atom, b.layer) or a.groups != b.groups:
                self.fail(path, f"compare needs two contents of the same layer and atom; got {a.layer}·{a.atom} and {b.layer}·{b.atom}")
            if len(a.series) != len(b.series):
                self.fail(path, f"compare needs the same number of series on both sides ({len(a.series)} vs {len(b.series)})")
            series = []
            for sa, sb in zip(a.series, b.series):
                op = self.node("cmp", ("compare", sa.op, sb.op), lambda i: Combine(i, op="compare", inputs=(sa.op, sb.op)))
                series.append(Series(f"{sa.label} − {sb.label}", op))
            return _Content(series, a.atom, a.layer, "transform", f"Transform(compare, {a.sentence}, {b.sentence})", a.groups,
                            canon=a.canon)
        of = self.content(t.of, path + ("of",))
        if of.atom == "group":
            self.fail(path + ("op",), f"transform {t.op} applies to neuron, spatial and channel contents, not groups")
        series = []
        by = None
        if t.op == "filter":
            byc = self.content(t.by, path + ("by",))
            if (byc.atom, byc.layer) != (of.atom, of.layer) or len(byc.series) != 1:
                self.fail(path + ("by",), "filter's `by` must be one series of the same layer and atom as `of`")
            by = byc.series[0].op
        if t.op == "select" and of.atom == "spatial":
            self.fail(path + ("atoms",), "select keeps channels: use it on channel or neuron contents")
        for s in of.series:
            op = self.node("tf", (t.op, s.op, t.k, t.by if isinstance(t.by, str) else by,
                                  tuple(t.atoms) if t.atoms else None, t.threshold),
                           lambda i: Combine(i, op=t.op, inputs=(s.op,), k=t.k,
                                             by=t.by if isinstance(t.by, str) else by,
                                             atoms=tuple(t.atoms) if t.atoms else None, threshold=t.threshold))
            series.append(Series(s.label, op))
        return _Content(series, of.atom, of.layer, "transform", f"Transform({t.op}, {of.sentence})", canon=of.canon)

    # ------------------------------------------------------------ feature visualisation
    def icon_settings(self, opts: dict) -> tuple:
        """Icon options → the frozen settings of a FeatureVis op (size resolved for this model)."""
        keys = ("size", "steps", "lr", "attempts", "param", "decorrelate", "transforms", "relu_redirect", "autocast")
        d = {k: opts[k] for k in keys if k in opts}
        if d.get("size") is None:
            d["size"] = min(int(self.info.input_shape[-1]), 128)
        d["transforms"] = _freeze(d.get("transforms", "standard"))
        return tuple(sorted(d.items()))

    def icon_batch(self, layer: str, opts: dict) -> tuple[tuple, str]:
        """(settings, batch id): icons of one layer with the same settings share one optimisation."""
        settings = self.icon_settings(opts)
        batch = self.batches.setdefault((layer, settings), f"batch{len(self.batches)}")
        return settings, batch

    def featurevis(self, c: _Content, opts: dict, path: tuple) -> tuple[str, ...]:
        """The FeatureVis op of a ``featurevis`` presentation of content ``c``."""
        settings, batch = self.icon_batch(c.layer, opts)
        atom = c.canon
        src = c.series[0].op if c.series else ""
        common = dict(layer=c.layer, settings=settings, seed=self.seed, batch=batch)
        if c.layer in ("input", "output"):
            self.fail(path, f"featurevis shows hidden layers; {c.layer!r} has no icons to optimise "
                            "(the output's class logits: use a layer before it)")
        if c.atom == "group":
            key = ("group", c.groups, settings)
            return (self.node("fv", key, lambda i: FeatureVis(i, source=c.groups, objective="group",
                                                              cossim_pow=opts["cossim_pow"], **common)),)
        if c.atom == "channel":
            explicit = atom.channels if atom is not None and atom.channels else ()
            key = ("channel", src, explicit, opts["top"], settings)
            return (self.node("fv", key, lambda i: FeatureVis(i, source=src, objective="channel", atoms=explicit,
                                                              top=0 if explicit else opts["top"], **common)),)
        if c.atom == "neuron":
            explicit = (atom.at[2],) if atom is not None and atom.at else ()
            key = ("neuron", src, explicit, opts["top"], settings)
            return (self.node("fv", key, lambda i: FeatureVis(i, source=src, objective="neuron", atoms=explicit,
                                                              top=0 if explicit else opts["top"], **common)),)
        if c.atom == "spatial":
            if len(self.info.shape(c.layer)) != 3:
                self.fail(path, f"spatial icons need a layer with positions; {c.layer!r} has shape {self.info.shape(c.layer)}")
            vectors = self.neurons(c.layer)
            explicit = (tuple(atom.at[:2]),) if atom is not None and atom.at else ()
            key = ("spatial", src, vectors, explicit, opts["top"], opts["cossim_pow"], settings)
            return (self.node("fv", key, lambda i: FeatureVis(i, source=src, vectors=vectors, objective="direction_neuron",
                                                              atoms=explicit, top=0 if explicit else opts["top"],
                                                              cossim_pow=opts["cossim_pow"], **common)),)
        if c.atom == "direction":
            vector = self.dense(atom, c.layer)
            key = ("direction", vector, opts["cossim_pow"], settings)
            return (self.node("fv", key, lambda i: FeatureVis(i, source=src, objective="direction", atoms=(vector,),
                                                              cossim_pow=opts["cossim_pow"], **common)),)
        self.fail(path, f"featurevis has no icons for {c.atom} atoms")
        raise AssertionError

    def icons_for(self, name: str, c: _Content, opts: dict, path: tuple) -> tuple[tuple[str, ...], Optional[str]]:
        """(icon ops, detail op) that presentation ``name`` needs besides the content."""
        if name == "featurevis":
            return self.featurevis(c, opts, path), None
        if name == "semantic_dictionary":
            acts = self.neurons(c.layer)
            settings, batch = self.icon_batch(c.layer, opts["icon"])
            key = ("dictionary", acts, opts["top"], settings)
            fv = self.node("fv", key, lambda i: FeatureVis(i, source=acts, layer=c.layer, objective="channel",
                                                           per_position=opts["top"], settings=settings, seed=self.seed,
                                                           batch=batch))
            return (fv,), acts
        if name == "activation_grid":
            acts = self.neurons(c.layer)
            settings = dict(opts)
            if settings.get("cell_size") is None:
                settings["cell_size"] = max(8, min(48, int(self.info.input_shape[-1]) // 2))
            settings["transforms"] = _freeze(settings["transforms"])
            frozen = tuple(sorted(settings.items()))
            return (self.node("grid", (acts, frozen), lambda i: ActivationGrid(i, source=acts, layer=c.layer,
                                                                               settings=frozen, seed=self.seed)),), None
        if name == "groups" and opts.get("icons"):
            settings, batch = self.icon_batch(c.layer, opts["icon"])
            return (self.node("fv", ("group", c.groups, settings),
                              lambda i: FeatureVis(i, source=c.groups, layer=c.layer, objective="group",
                                                   settings=settings, seed=self.seed, batch=batch)),), None
        if name == "bars" and opts.get("icons"):
            if c.layer in ("input", "output"):
                self.fail(path, f"bars icons are feature visualisations of a hidden layer's channels; {c.layer!r} has none "
                                "(set icons: false)")
            settings, batch = self.icon_batch(c.layer, opts["icon"])
            out = []
            for s in c.series:
                out.append(self.node("fv", ("channel", s.op, (), opts["top"], True, settings),
                                     lambda i, s=s: FeatureVis(i, source=s.op, layer=c.layer, objective="channel",
                                                               top=opts["top"], both_signs=True, settings=settings,
                                                               seed=self.seed, batch=batch)))
            return tuple(out), None
        if name == "examples":  # dataset examples: detail = the Examples op (no icons)
            import os
            from pathlib import Path

            from interpgram.grammar.plan import Examples
            shape = self.info.shape(c.layer)
            if c.layer == "input" or len(shape) not in (1, 3):
                self.fail(path, f"examples rank data-set images by a hidden layer's (or the output's) activation; "
                                f"{c.layer!r} has shape {shape}")
            atom, kind = c.canon, c.atom
            vectors = ""
            explicit: tuple = ()
            if kind == "channel" and atom is not None and atom.channels:
                explicit = tuple(atom.channels)
            elif kind == "neuron" and atom is not None and atom.at:
                explicit = (tuple(atom.at),)
            elif kind == "spatial":
                vectors = self.neurons(c.layer)
                explicit = (tuple(atom.at[:2]),) if atom is not None and atom.at else ()
            elif kind == "direction":
                explicit = (self.dense(atom, c.layer),)
            src = c.series[0].op if c.series else ""
            groups = (c.groups or "") if kind == "group" else ""
            ds = opts["dataset"]
            if not ds.startswith(("builtin:", "python:")):  # a folder: relative to the spec's folder
                p = Path(os.path.expanduser(ds))
                ds = str(p if p.is_absolute() else self.loaded.base_dir / p)
            fields = dict(source=src, vectors=vectors, groups=groups, layer=c.layer, atom=kind, atoms=explicit,
                          top=opts["top"], count=opts["atoms"], dataset=ds, n=opts["n"], split=opts["split"],
                          patch=opts["patch"], batch_size=opts["batch_size"])
            return (), self.node("ex", tuple(fields.values()), lambda i: Examples(i, **fields))
        return (), None

    @property
    def seed(self) -> int:
        return self.loaded.spec.execution.seed


def _with_layer(content, layer: str):
    """``content`` with its (source) layer replaced: the activation's layer, an attribution's
    ``from`` layer, recursively through transforms."""
    if isinstance(content, ActivationContent):
        return content.model_copy(update={"activation": content.activation.model_copy(update={"layer": layer})})
    if isinstance(content, AttributionContent):
        a = content.attribution
        return content.model_copy(update={"attribution": a.model_copy(update={"from_": a.from_.model_copy(update={"layer": layer})})})
    if isinstance(content, TransformContent):
        t = content.transform
        upd = {k: _with_layer(getattr(t, k), layer) for k in ("of", "a", "b") if getattr(t, k) is not None}
        if t.by is not None and not isinstance(t.by, str):
            upd["by"] = _with_layer(t.by, layer)
        return content.model_copy(update={"transform": t.model_copy(update=upd)})
    return content


def _lower_varied(b: _Builder, el_id: str, el) -> tuple[list[Present], Optional[set]]:
    """An element with ``vary``: one set of presents per class or layer, side by side (models are
    compared by the pipeline, which compiles the element again for each other model)."""
    v = el.vary
    vpath = ("elements", el_id, "vary", v.kind if v.kind != "class" else "class")
    out: list[Present] = []
    targets: set = set()
    if v.kind == "model":
        got, t = _lower_element(b, el_id, el, side=str(b.loaded.spec.model_spec.source))
        return got, t
    for i, value in enumerate(v.values):
        n = len(b.diags)
        if v.kind == "class":
            rank = _top_rank(value, b.info.classes)
            if rank is not None:
                idx, side = value, str(value)
            else:
                try:
                    idx = b.class_index(value, vpath + (i,))
                except _Invalid:
                    continue
                side = b.info.classes[idx]
            got, problem = _apply_selection(b, el_id, el, Selection("class", idx, "class"), side=side)
            if problem:
                b.diags.append(b.loaded.error(vpath + (i,), f"vary class: {problem} (vary class re-targets an "
                                                             "attribution to the output)"))
                continue
            t = set(b.element_targets)
        else:
            try:
                b.check_layer(value, vpath[:-1] + (i,))
            except _Invalid:
                continue
            got, t = _lower_element(b, el_id, el.model_copy(update={"content": _with_layer(el.content, value)}),
                                    side=value)
            if t is None or len(b.diags) > n:
                continue
        out.extend(got)
        targets |= t or set()
    return out, (targets if out else None)


def _lower_element(b: _Builder, el_id: str, el, *, variant: str = "", link: int = -1,
                   focus: Optional[int] = None, side: str = "") -> tuple[list[Present], Optional[set]]:
    """One element → its Present ops (one per presentation); diagnostics go to ``b.diags``.
    Returns (presents, the gradient targets it needed) — targets is None when the content failed."""
    epath = ("elements", el_id)
    b.element_targets = set()
    if any(name == "atlas" for name, _ in canonical_presentations(el.presentation)):
        return _lower_atlas(b, el_id, el, side=side)
    try:
        content = b.content(el.content, epath + ("content",))
    except _Invalid:
        return [], None
    targets = set(b.element_targets)
    out = []
    for i, (name, opts) in enumerate(canonical_presentations(el.presentation)):
        ppath = epath + ("presentation",) + ((i,) if isinstance(el.presentation, list) else ())
        kind = PRESENTATIONS[name]
        try:
            options = kind.options.model_validate(opts)
        except Exception as err:  # pydantic ValidationError
            for e in getattr(err, "errors", lambda: [])():
                b.diags.append(_option_error(b.loaded, ppath, name, kind.options, opts, e))
            continue
        if content.kind not in kind.contents:
            b.diags.append(b.loaded.error(ppath, f"presentation {name!r} shows {' or '.join(kind.contents)} content, "
                                                 f"but this element's content is {content.kind}"))
            continue
        if content.atom not in kind.atoms:
            want = " or ".join(kind.atoms)
            fits = [n for n, k in PRESENTATIONS.items() if content.atom in k.atoms]
            hint = f"; for {content.atom} content use {' or '.join(fits)}" if fits else ""
            b.diags.append(b.loaded.error(ppath, f"presentation {name!r} shows {want} atoms, but this content is "
                                                 f"{content.layer}·{content.atom}{hint}"))
            continue
        try:
            icons, detail = b.icons_for(name, content, options.model_dump(), ppath)
        except _Invalid:
            continue
        pid = (f"el:{el_id}" + (f":{i}" if i else "") + (f"@{link}:{variant}" if link >= 0 else "")
               + (f"@side:{side}" if side else ""))
        title = (el.title or _title(el_id, name, content)) + (f" · {side}" if side else "")
        out.append(Present(
            pid, element=el_id, presentation=name, options=tuple(sorted(options.model_dump().items())),
            atom=content.atom, layer=content.layer, content_kind=content.kind, series=tuple(content.series),
            groups=content.groups, title=title, icons=icons, detail=detail,
            grammar=_grammar(name, content.sentence), focus=focus, variant=variant, link=link, side=side,
        ))
    return out, targets


# ---------------------------------------------------------------------------- atlases
def _atlas_source(b: _Builder, c, path: tuple) -> tuple[str, Optional[int], str]:
    """An atlas's content → (layer, class or None, sentence). Activation: the layer's vectors;
    attribution to one class: that class's atlas."""
    if isinstance(c, ActivationContent):
        sub = b.network(c.activation, path + ("activation",), "activation")
        layer, atom, apath = sub.layer, sub.atom, path + ("activation",)
    elif isinstance(c, AttributionContent):
        a = c.attribution
        apath = path + ("attribution",)
        frm = b.network(a.from_, apath + ("from",), "from")
        to = b.network(a.to, apath + ("to",), "to")
        layer, atom = frm.layer, frm.atom
        apath = apath + ("from",)
        if to.layer != "output":
            b.fail(path + ("attribution", "to", "layer"), "a class atlas attributes to the output: "
                                                         "to: {layer: output, select: [<class>]}")
        if a.method != "grad_x_act":
            b.fail(path + ("attribution", "method"), "an atlas stores gradient × activation attributions (the article's); "
                                                     "method: integrated is not available for atlases")
        if b.sel is not None and b.sel.kind == "class" and b.sel.target == "class":
            cls = int(b.sel.value) if not isinstance(b.sel.value, str) else None
            if cls is None:
                b.sel_problem = "an atlas has no input whose top classes it could use; name a class"
                raise _Invalid
            b.sel_used = True
        else:
            sel = to.select or []
            if len(sel) != 1:
                b.fail(path + ("attribution", "to", "select"), f"a class atlas shows one class: select: [<class>] "
                                                               f"(got {len(sel)}); compare two with a transform compare")
            if _top_rank(sel[0], b.info.classes) is not None:
                b.fail(path + ("attribution", "to", "select", 0), f"{sel[0]!r} picks an input's likely classes, but an atlas "
                                                                  "shows a data set: name a class "
                                                                  f"{did_you_mean(str(sel[0]), b.info.classes, listing='classes')}")
            cls = b.class_index(sel[0], path + ("attribution", "to", "select", 0))
        return layer, cls, _atlas_check_layer(b, layer, atom, apath)
    else:
        b.fail(path, "an atlas shows an activation, an attribution to one class (class atlas) "
                     "or a compare of two such attributions (two-class atlas)")
    return layer, None, _atlas_check_layer(b, layer, atom, apath)


def _atlas_check_layer(b: _Builder, layer: str, atom, path: tuple) -> str:
    if layer in ("input", "output"):
        b.fail(path + ("layer",), f"an atlas lays out a hidden layer's activation vectors, not {layer!r}")
    b.check_layer(layer, path + ("layer",))
    if len(b.info.shape(layer)) != 3:
        b.fail(path + ("layer",), f"an atlas needs a spatial layer (C, H, W); {layer} has shape {b.info.shape(layer)}")
    if atom is not None and atom != "spatial":
        b.fail(path + ("atom",), "an atlas shows activation vectors at positions: atom: spatial (or leave atom out)")
    return layer


def _lower_atlas(b: _Builder, el_id: str, el, *, side: str = "") -> tuple[list[Present], Optional[set]]:
    """An atlas element: the spec's data-set collection (one for every atlas) → Layout → Grid → icons."""
    epath = ("elements", el_id)
    pres = canonical_presentations(el.presentation)
    if len(pres) != 1:
        b.diags.append(b.loaded.error(epath + ("presentation",), "an atlas is an element of its own: give the other "
                                                                  "presentations their own element"))
        return [], None
    name, opts = pres[0]
    ppath = epath + ("presentation",)
    options = None
    try:
        options = PRESENTATIONS[name].options.model_validate(opts)
    except Exception as err:  # pydantic ValidationError (the content is still checked below)
        for e in getattr(err, "errors", lambda: [])():
            b.diags.append(_option_error(b.loaded, ppath, name, PRESENTATIONS[name].options, opts, e))
    c = el.content
    cpath = epath + ("content",)
    try:
        if isinstance(c, TransformContent):
            t = c.transform
            if t.op != "compare" or not all(isinstance(x, AttributionContent) for x in (t.a, t.b)):
                b.fail(cpath + ("transform",), "a two-class atlas compares two attributions to one class each: "
                                               "{transform: {op: compare, a: {attribution: ...}, b: {attribution: ...}}}")
            la, ca, _ = _atlas_source(b, t.a, cpath + ("transform", "a"))
            lb, cb, _ = _atlas_source(b, t.b, cpath + ("transform", "b"))
            if la != lb:
                b.fail(cpath + ("transform", "b"), f"a two-class atlas compares attributions of one layer ({la} vs {lb})")
            if ca == cb:
                b.fail(cpath + ("transform", "b"), f"a two-class atlas needs two different classes (both are {b.info.classes[ca]})")
            layer, kind, classes = la, "compare", (ca, cb)
        else:
            layer, cls, _ = _atlas_source(b, c, cpath)
            kind, classes = ("activation", ()) if cls is None else ("class", (cls,))
    except _Invalid:
        return [], None
    if options is None:
        return [], None
    o = options.model_dump()
    ds = b.loaded.spec.dataset
    seed = b.seed if ds is None or ds.seed is None else ds.seed
    if layer not in b.atlas_layers:
        b.atlas_layers.append(layer)
    lo = o["layout"]
    lay = b.node("layout", (layer, kind, classes, o["whiten"], lo["n_neighbors"], lo["min_dist"], lo["metric"],
                            lo["fit_sample"], o["winners"] if kind != "activation" else True,
                            o["top"] if kind != "activation" else 0, seed),
                 lambda i: Layout(i, collect=COLLECT_ID, layer=layer, kind=kind, classes=classes, whiten=o["whiten"],
                                  n_neighbors=lo["n_neighbors"], min_dist=lo["min_dist"], metric=lo["metric"],
                                  fit_sample=lo["fit_sample"], winners=o["winners"] if kind != "activation" else True,
                                  top=o["top"] if kind != "activation" else 0, seed=seed))
    grid = b.node("grid", (lay, o["grid"], o["min_count"], o["examples"]),
                  lambda i: Grid(i, layout=lay, n=o["grid"], min_count=o["min_count"], examples=o["examples"]))
    io = o["icon"]
    settings = b.icon_settings(io)
    icons = b.node("aicons", (grid, settings, io["cossim_pow"], io["batch"], b.seed),
                   lambda i: AtlasIcons(i, grid=grid, layer=layer, settings=settings, cossim_pow=io["cossim_pow"],
                                        batch=io["batch"], seed=b.seed))
    src = (ds.source if ds is not None else "builtin:shapes")
    deps = (icons,)
    if o.get("patch_test") is not None:
        pt = o["patch_test"]
        if kind != "class":
            b.diags.append(b.loaded.error(ppath + ("atlas", "patch_test"), "patch_test applies to a class atlas "
                                          "(an attribution to one class): it counts how often a cell's icon turns "
                                          "other images into that class"))
            return [], None
        size = pt["size"] or max(2, round(int(b.info.input_shape[-1]) / 7))
        test = b.node("ptest", (icons, classes[0], size, pt["crop"], pt["n"], src, pt["split"], seed),
                      lambda i: PatchTest(i, icons=icons, cls=classes[0], size=size, crop=pt["crop"], n=pt["n"],
                                          dataset=src, split=pt["split"], seed=seed))
        deps = (icons, test)
    cname = [b.info.classes[x] for x in classes]
    what = {"activation": f"Activation(Dataset {src}, Network {layer} Spatial)",
            "class": f"Attribution(Dataset {src}, Network {layer} Spatial, Output {cname[0] if cname else ''})",
            "compare": f"Transform(compare, Attribution(… Output {cname[0] if cname else ''}), "
                       f"Attribution(… Output {cname[-1] if cname else ''}))"}[kind]
    default_title = {"activation": f"{el_id}: activation atlas of {layer}",
                     "class": f"{el_id}: class atlas of {layer} → {cname[0] if cname else ''}",
                     "compare": f"{el_id}: {layer}, {' vs '.join(cname)}"}[kind]
    title = (el.title or default_title) + (f" · {side}" if side else "")
    variant = ""
    p = Present(f"el:{el_id}" + (f"@side:{side}" if side else ""), element=el_id, presentation=name,
                options=tuple(sorted((k, _freeze(v)) for k, v in o.items())), atom="spatial", layer=layer,
                content_kind={"activation": "activation", "class": "attribution", "compare": "transform"}[kind],
                series=(), title=title, icons=deps, detail=grid,
                grammar=f"FeatureVis({what}) on a UMAP grid", variant=variant, side=side)
    return [p], set()


def _selection_kind(p: Present, info: ModelInfo) -> Optional[str]:
    """What clicking or hovering an atom of this element selects."""
    if not PRESENTATIONS[p.presentation].per_input:
        return None  # an atlas shows a data set, not positions of an input
    if p.atom == "group":
        return "group"
    if p.atom == "channel":
        return "class" if p.layer == "output" else "channel"
    if p.atom in ("spatial", "direction", "neuron") and len(info.shape(p.layer)) == 3:
        return "position"
    return None


def _apply_selection(b: _Builder, el_id: str, el, sel: Selection, *, variant: str = "",
                     link: int = -1, side: str = "") -> tuple[list[Present], str]:
    """Lower ``el`` with ``sel`` applied. Returns (presents, problem: "" when the selection took effect)."""
    b.sel, b.sel_used, b.sel_problem = sel, False, ""
    focus = None
    if sel.target == "group":
        if sel.kind != "group":
            b.sel = None
            return [], f"a {sel.kind} selection cannot drive `group` (a group selection from a groups element can)"
        focus = int(sel.value)
    n_diags = len(b.diags)
    try:
        presents, _ = _lower_element(b, el_id, el, variant=variant, link=link, focus=focus, side=side)
    finally:
        b.sel = None
    if sel.target == "group" and sel.kind == "group":
        ok = presents and all(p.groups for p in presents)
        if ok:
            k = b.ops[presents[0].groups].k
            if int(sel.value) >= k:
                return [], f"group {sel.value} does not exist ({k} groups)"
            b.sel_used = True
        else:
            b.sel_problem = "`group` drives an element whose content is NMF groups"
    if len(b.diags) > n_diags:
        del b.diags[n_diags:]
        return [], b.sel_problem or "the selection does not apply to this element's content"
    maps = [p.presentation for p in presents if p.presentation in ("heatmap", "semantic_dictionary", "activation_grid")]
    if maps and sel.kind == "position" and sel.target in ("from", "position") and presents[0].atom == "spatial":
        return [], (f"{maps[0]} draws a map over positions, and one selected position is a single value; "
                    "drive `to` of a layer-to-layer attribution, or the channels at the position (atom: channel)")
    if not b.sel_used:
        return [], b.sel_problem or f"nothing in this element's content takes a {sel.kind} as `{sel.target}`"
    return presents, ""


def _resolve_links(b: _Builder, presents: list[Present]) -> list[LinkInfo]:
    spec, loaded, info = b.loaded.spec, b.loaded, b.info
    by_el: dict[str, Present] = {}
    for p in presents:
        by_el.setdefault(p.element, p)
    out = []
    for i, link in enumerate(spec.links):
        src_el, _, event = link.from_.partition(".")
        dst_el, _, target = link.to.partition(".")
        if src_el not in spec.elements or dst_el not in spec.elements:
            continue  # reported by the caller
        src = by_el.get(src_el)
        if src is None or dst_el not in by_el:
            continue  # the element itself has an error, already reported
        varied = [e for e in (src_el, dst_el) if spec.elements[e].vary is not None]
        if varied:
            b.diags.append(loaded.error(("links", i), f"link {link.from_} → {link.to}: element {varied[0]!r} compares "
                                        "several views (vary); links join elements that show one view each"))
            continue
        kind = _selection_kind(src, info)
        if kind is None:
            b.diags.append(loaded.error(("links", i, "from"), f"link from {link.from_!r}: element {src_el!r} shows "
                                        f"{src.layer}·{src.atom}, which has no atoms to {event} (positions, channels, "
                                        "classes or groups)"))
            continue
        shape = info.shape(src.layer) if src.layer not in ("output",) else (len(info.classes),)
        sample = {"position": (0, 0), "channel": 0, "class": 0, "group": 0}[kind]
        sel = Selection(kind, sample, target, src.layer, shape)
        probe = _Builder(loaded, info)  # a throwaway builder: checking must not add ops to the plan
        _, problem = _apply_selection(probe, dst_el, spec.elements[dst_el], sel)
        if problem:
            what = {"position": f"a position of {src.layer}", "channel": f"a channel of {src.layer}",
                    "class": "a class", "group": "an NMF group"}[kind]
            b.diags.append(loaded.error(("links", i, "to"), f"link {link.from_} → {link.to}: {src_el!r} selects {what}, "
                                        f"but {problem}"))
            continue
        out.append(LinkInfo(i, src_el, event, dst_el, target, kind, src.layer, tuple(shape), link.precompute))
    return out


def compile_variants(loaded: LoadedSpec, info: ModelInfo, selections: list[tuple[LinkInfo, Any]],
                     *, base: Optional[Plan] = None) -> Plan:
    """The linked elements' variants for ``selections`` ((link, value) pairs) as one fused plan:
    one forward pass, one backward per distinct target, shared nodes — as for the spec itself.
    Presents carry ``link`` (the link's index) and ``variant`` (the selection key)."""
    spec = loaded.spec
    b = _Builder(loaded, info)
    presents: list[Present] = []
    for li, value in selections:
        sel = Selection(li.kind, value, li.target, li.source_layer, li.source_shape)
        got, problem = _apply_selection(b, li.element, spec.elements[li.element], sel, variant=li.key(value),
                                        link=li.index)
        if problem:
            raise SpecError([loaded.error(("links", li.index), f"link {li.source} → {li.element}.{li.target}, "
                                                               f"selection {li.key(value)}: {problem}")])
        presents.extend(got)
    if b.diags:
        raise SpecError(b.diags)
    plan = _finish(b, loaded, info, presents, layout=[], unfused=(0, 0))
    if base is not None:
        plan.link_info = list(base.link_info)
        plan.n_images, plan.resolved_device = base.n_images, base.resolved_device
    return plan


def compile_spec(loaded: LoadedSpec, info: ModelInfo) -> Plan:
    """Lower a validated spec to a fused plan for ``info``'s model. Raises :class:`SpecError`."""
    spec = loaded.spec
    b = _Builder(loaded, info)
    presents: list[Present] = []
    unfused_fwd = unfused_bwd = 0
    for el_id, el in spec.elements.items():
        got, targets = _lower_varied(b, el_id, el) if el.vary is not None else _lower_element(b, el_id, el)
        if targets is None:
            continue
        unfused_fwd += 1 + sum(1 for t in targets if isinstance(t, tuple))
        unfused_bwd += len(targets)
        presents.extend(got)

    ids = set(spec.elements)
    for i, link in enumerate(spec.links):
        for end, key in ((link.from_, "from"), (link.to, "to")):
            el = end.partition(".")[0]
            if el not in ids:
                b.diags.append(loaded.error(("links", i, key), f"link {key} {end!r}: no element {el!r} {did_you_mean(el, ids, listing='elements')}"))
    layout = spec.layout or [[e] for e in spec.elements]
    placed: dict[str, tuple] = {}
    for r, row in enumerate(layout):
        for c, el in enumerate(row):
            if el not in ids:
                b.diags.append(loaded.error(("layout", r, c), f"layout names {el!r}, which is not an element {did_you_mean(el, ids, listing='elements')}"))
            elif el in placed:
                b.diags.append(loaded.error(("layout", r, c), f"element {el!r} is placed twice in the layout"))
            placed[el] = (r, c)
    if spec.layout:
        missing = [e for e in spec.elements if e not in placed]
        if missing:
            b.diags.append(loaded.error(("layout",), f"layout leaves out element(s) {', '.join(missing)}; add them to a row"))
    links = _resolve_links(b, presents)
    if spec.input is None:
        needs = sorted({p.element for p in presents if PRESENTATIONS[p.presentation].per_input})
        if needs:
            b.diags.append(loaded.error((), f"input is missing: element{'s' if len(needs) > 1 else ''} "
                                            f"{', '.join(needs)} show{'' if len(needs) > 1 else 's'} an input image "
                                            "(input: builtin:shapes/7 or an image path); only atlases need none"))
    if spec.dataset is not None and not any(n == "atlas" for el in spec.elements.values()
                                            for n, _ in canonical_presentations(el.presentation)):
        b.diags.append(loaded.error(("dataset",), "dataset: is the data set of atlases, and no element is an atlas "
                                                  "(dataset examples name their data set in the examples presentation)",
                                    key=True))
    if b.diags:
        raise SpecError(b.diags)
    plan = _finish(b, loaded, info, presents, layout=layout, unfused=(unfused_fwd, unfused_bwd))
    plan.link_info = links
    plan.vary_models = {e: list(el.vary.model) for e, el in spec.elements.items()
                        if el.vary is not None and el.vary.kind == "model"}
    return plan


def _finish(b: _Builder, loaded: LoadedSpec, info: ModelInfo, presents: list[Present], *,
            layout: list, unfused: tuple[int, int]) -> Plan:
    spec = loaded.spec
    plan = Plan(model=spec.model_spec.source, inputs=tuple(spec.inputs), title=spec.title or "",
                source=loaded.file, seed=spec.execution.seed, device=spec.execution.device,
                dtype=spec.execution.dtype, classes=list(info.classes), layout=[list(r) for r in layout])
    needs_grad = bool(b.grad_ids) or any(isinstance(o, PathGradient) for o in b.ops.values())
    ordered = sorted(b.capture_layers, key=info.order)
    plan.ops[CAPTURE_ID] = Capture(CAPTURE_ID, inputs=tuple(spec.inputs), layers=tuple(ordered), needs_grad=needs_grad)
    for t, gid in b.grad_ids.items():
        wrt = tuple(sorted(b.grad_wrt[t], key=info.order))
        plan.ops[gid] = Gradient(gid, capture=CAPTURE_ID, target=t, wrt=wrt)
    if b.atlas_layers:
        from interpgram.grammar.spec.nodes import AtlasDataset
        ds = spec.dataset or AtlasDataset()
        plan.ops[COLLECT_ID] = Collect(COLLECT_ID, dataset=ds.source, n=ds.n, split=ds.split,
                                       layers=tuple(sorted(b.atlas_layers, key=info.order)), positions=ds.positions,
                                       seed=spec.execution.seed if ds.seed is None else ds.seed, chunk=ds.chunk,
                                       batch_size=ds.batch_size)
    plan.ops.update(b.ops)
    for p in presents:
        plan.ops[p.id] = p
    plan.layer_shapes = {l: info.shape(l) for l in ordered}
    for op in plan.ops.values():
        if isinstance(op, PathGradient):
            plan.layer_shapes.setdefault(op.layer, info.shape(op.layer))
    for layer in b.atlas_layers:
        plan.layer_shapes.setdefault(layer, info.shape(layer))
    plan.unfused = {"forward": unfused[0], "backward": unfused[1]}
    return plan


def _option_error(loaded: LoadedSpec, ppath: tuple, name: str, model, opts: Any, e: dict) -> Diagnostic:
    """A positioned message for one pydantic error in a presentation's options (nested ones too)."""
    loc = [x for x in e["loc"] if isinstance(x, (str, int))]
    # walk down the options and the option models along the error's location
    where, value, cls, owner_cls = [], opts, model, model
    for part in loc:
        if isinstance(value, dict) and part in value:
            where.append(part)
            value = value[part]
            owner_cls = cls
            f = cls.model_fields.get(part) if cls is not None and hasattr(cls, "model_fields") else None
            ann = getattr(f, "annotation", None) if f is not None else None
            cls = ann if isinstance(ann, type) and hasattr(ann, "model_fields") else None
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            where.append(part)
            value = value[part]
        else:
            break
    dotted = ".".join(str(x) for x in loc) or name
    if e["type"] == "extra_forbidden":
        bad = str(loc[-1]) if loc else name
        owner = ".".join(str(x) for x in loc[:-1])
        fields = list(owner_cls.model_fields) if owner_cls is not None and hasattr(owner_cls, "model_fields") else []
        msg = f"{name}{' ' + owner if owner else ''} has no option {bad!r} {did_you_mean(bad, fields, listing='options')}"
        return loaded.error(ppath + ((name,) if isinstance(opts, dict) else ()) + tuple(where), msg, key=True)
    text = e["msg"]
    text = text[len("Value error, "):] if text.startswith("Value error, ") else text[0].lower() + text[1:]
    msg = f"{name} option {dotted}: {text}"
    return loaded.error(ppath + ((name,) if isinstance(opts, dict) and where else ()) + tuple(where), msg)


FEATUREVIS_PRESENTATIONS = ("featurevis", "activation_grid")


def _grammar(name: str, sentence: str) -> str:
    if name in FEATUREVIS_PRESENTATIONS:
        return f"FeatureVis({sentence})"
    if name == "semantic_dictionary":
        return f"InfoVis({sentence}) + FeatureVis(top channels)"
    return f"InfoVis({sentence})"


def _freeze(v: Any) -> Any:
    """Lists and dicts of options → nested tuples (hashable, stable)."""
    if isinstance(v, dict):
        return tuple((k, _freeze(x)) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


def _title(el_id: str, presentation: str, c: _Content) -> str:
    what = {"activation": "activation", "attribution": "attribution", "transform": "comparison"}[c.kind]
    labels = ", ".join(s.label for s in c.series if c.kind != "activation")
    return f"{el_id}: {c.layer} {c.atom} {what}" + (f" → {labels}" if labels else "")
