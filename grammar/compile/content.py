"""Content → ops: activation, attribution (gradient targets fused per target) and transforms.
A mixin of :class:`~interpgram.grammar.compile.builder.Builder` (it uses the builder's nodes and checks)."""
from __future__ import annotations

import contextlib

from interpgram.grammar.compile.vocab import Content, Invalid, map_position, top_rank
from interpgram.grammar.attribution import ATTRIBUTION_METHODS
from interpgram.grammar.plan import Combine, Factorize, GroupAttribution, PathGradient, Reduce, Series, Target
from interpgram.grammar.spec.nodes import (
    ActivationContent,
    AttributionContent,
    NetworkSubstrate,
    TransformContent,
    canonical_atom,
)


class ContentLowering:
    """The content half of the builder."""

    # ------------------------------------------------------------ content
    def both(self, first, second) -> tuple:
        """``(first(), second())`` for two independent parts of one content (an attribution's
        ends, a comparison's sides): a problem in the first still lets the second be checked, so
        both are reported; then :class:`Invalid` stops the element."""
        try:
            one = first()
        except Invalid:
            with contextlib.suppress(Invalid):
                second()
            raise
        return one, second()

    def content(self, c, path: tuple) -> Content:
        if isinstance(c, ActivationContent):
            return self.activation(c, path + ("activation",))
        if isinstance(c, AttributionContent):
            return self.attribution(c, path + ("attribution",))
        if isinstance(c, TransformContent):
            return self.transform(c, path + ("transform",))
        raise AssertionError(type(c))

    def activation(self, c: ActivationContent, path: tuple) -> Content:
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
            return Content([], "group", sub.layer, "activation", sentence, groups=g, canon=atom)
        vector = self.dense(atom, sub.layer) if atom.kind == "direction" else None
        op = self.node("act", (sub.layer, atom.kind, atom.at, atom.channels, vector),
                       lambda i: Reduce(i, capture=cap, layer=sub.layer, atom=atom.kind, at=atom.at, channels=atom.channels,
                                        vector=vector))
        return Content([Series(f"{sub.layer} activation", op)], atom.kind, sub.layer, "activation", sentence, canon=atom)

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
                rank = top_rank(sel.value, self.info.classes)
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
                rank = top_rank(c, self.info.classes)
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

    def target_names(self, to, path: tuple) -> NetworkSubstrate:
        """An attribution's ``to``: its layer, and the classes it selects, name what the model has."""
        sub = self.network(to, path + ("to",), "to")
        if sub.layer == "output" and sub.select is not None:
            for i, c in enumerate(sub.select):
                if top_rank(c, self.info.classes) is None:
                    self.class_index(c, path + ("to", "select", i))
        return sub

    def attribution(self, c: AttributionContent, path: tuple) -> Content:
        a = c.attribution
        frm, to = self.both(lambda: self.network(a.from_, path + ("from",), "from"), lambda: self.target_names(a.to, path))
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
        method = ATTRIBUTION_METHODS[a.method]
        if atom.kind == "group" and not method.groups:
            self.fail(path + ("method",), f"method: {a.method} is not available for group atoms (NMF group attribution "
                                          "needs the plain gradient); use grad_x_act")
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
                                 lambda i, g=g: Reduce(i, capture=cap, layer=frm.layer, atom="gradient", gradient=g))
                ga = self.node("gattr", (groups, grad), lambda i, grad=grad: GroupAttribution(i, groups=groups, gradient=grad))
                series.append(Series(label, ga))
            return Content(series, "group", frm.layer, "attribution", sentence, groups=groups, canon=atom)
        for label, t in targets:
            if not method.fused and t.kind not in method.targets:
                kinds = {"logit": "class", "norm": "position", "channel": "channel"}
                self.fail(path + ("method",), f"method: {a.method} is available for "
                                              f"{' and '.join(kinds[k] for k in method.targets)} targets; "
                                              f"use grad_x_act for {kinds[t.kind]} targets")
            if not method.fused:
                self.element_targets.add(("path", t, frm.layer, a.method, a.steps))
                if t.kind == "norm":
                    self.capture(t.layer)
                g = self.node("path", (t, frm.layer, a.method, a.steps),
                              lambda i, t=t: PathGradient(i, capture=cap, target=t, layer=frm.layer, steps=a.steps,
                                                          method=a.method))
            else:
                g = self.gradient(t, frm.layer)
            op = self.node("attr", (frm.layer, atom.kind, g, atom.at, atom.channels),
                           lambda i, g=g: Reduce(i, capture=cap, layer=frm.layer, atom=atom.kind, gradient=g,
                                            at=atom.at, channels=atom.channels))
            series.append(Series(label, op))
        return Content(series, atom.kind, frm.layer, "attribution", sentence, canon=atom)

    def transform(self, c: TransformContent, path: tuple) -> Content:
        t = c.transform
        if t.op == "compare":
            a, b = self.both(lambda: self.content(t.a, path + ("a",)), lambda: self.content(t.b, path + ("b",)))
            if (a.atom, a.layer) != (b.atom, b.layer) or a.groups != b.groups:
                self.fail(path, f"compare needs two contents of the same layer and atom; got {a.layer}·{a.atom} and {b.layer}·{b.atom}")
            if len(a.series) != len(b.series):
                self.fail(path, f"compare needs the same number of series on both sides ({len(a.series)} vs {len(b.series)})")
            series = []
            for sa, sb in zip(a.series, b.series):
                op = self.node("cmp", ("compare", sa.op, sb.op), lambda i, sa=sa, sb=sb: Combine(i, op="compare", inputs=(sa.op, sb.op)))
                series.append(Series(f"{sa.label} − {sb.label}", op))
            return Content(series, a.atom, a.layer, "transform", f"Transform(compare, {a.sentence}, {b.sentence})", a.groups,
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
                           lambda i, s=s: Combine(i, op=t.op, inputs=(s.op,), k=t.k,
                                             by=t.by if isinstance(t.by, str) else by,
                                             atoms=tuple(t.atoms) if t.atoms else None, threshold=t.threshold))
            series.append(Series(s.label, op))
        return Content(series, of.atom, of.layer, "transform", f"Transform({t.op}, {of.sentence})", canon=of.canon)
