"""The builder: the plan's nodes (identical requests are one node), checks of layers, classes and
atoms against the model, link selections, icon settings; and the positioned message of a
presentation option error."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from interpgram.grammar.compile.content import ContentLowering
from interpgram.grammar.compile.model_info import CompileOptions, ModelInfo
from interpgram.grammar.compile.vocab import CAPTURE_ID, STANDARD_TRANSFORMS, Invalid, Selection, freeze, map_position
from interpgram.grammar.plan import Target
from interpgram.grammar.spec.errors import Diagnostic, did_you_mean, nearest
from interpgram.grammar.spec.load import LoadedSpec
from interpgram.grammar.spec.nodes import CanonicalAtom, DatasetSubstrate, NetworkSubstrate, ParametersSubstrate


@dataclass
class Builder(ContentLowering):
    loaded: LoadedSpec
    info: ModelInfo
    options: CompileOptions = field(default_factory=CompileOptions)
    diags: list[Diagnostic] = field(default_factory=list)
    ops: dict[str, Any] = field(default_factory=dict)
    keys: dict[tuple, str] = field(default_factory=dict)
    capture_layers: list[str] = field(default_factory=list)
    grad_wrt: dict[Target, list[str]] = field(default_factory=dict)
    grad_ids: dict[Target, str] = field(default_factory=dict)
    element_targets: set = field(default_factory=set)
    batches: dict[tuple, str] = field(default_factory=dict)  # (layer, icon settings) -> batch id
    sel: Optional[Selection] = None  # set while lowering a link's variant of its target element
    sel_used: bool = False
    sel_problem: str = ""
    atlas_layers: list[str] = field(default_factory=list)  # layers the spec's one data-set collection stores

    # ------------------------------------------------------------ helpers
    def fail(self, path: tuple, msg: str, *, key: bool = False) -> None:
        self.diags.append(self.loaded.error(path, msg, key=key))
        raise Invalid

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
        module, sep, call = layer.rpartition("@")
        if not (sep and module and call.isdecimal()):
            module = layer
        calls = self.info.calls(module)
        if calls:  # a module the forward pass calls more than once: each call is a layer of its own
            shown = [f"{c} (shape {self.info.shape(c)})" for c in calls[:8]]
            use = ", ".join(shown[:-1]) + " or " + shown[-1] if len(calls) <= 8 else ", ".join(shown) + f", … {calls[-1]}"
            what = f"{layer!r}: " if module != layer else ""
            self.fail(path + ("layer",), f"{what}{module} is called {len(calls)} times in the forward pass: use {use}")
        if module != layer and module in self.info.layers:
            self.fail(path + ("layer",), f"{layer!r}: {module} is called once in the forward pass: use {module} "
                                         "(NAME@N names one call of a module called more than once)")
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
        if atom.kind in ("spatial", "group") and len(shape) != 3 and (layer != "output" or atom.kind == "group"):
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
        self.check_shape(sub.layer, path + ("layer",))
        return sub

    def check_shape(self, layer: str, path: tuple) -> None:
        """A hidden layer's per-sample output is one the grammar reads: (C, H, W) (channels at
        positions) or (C,) (channels). A token layer (tokens, width) or any other shape would have its
        first axis taken as channels, silently: refused, with the shapes that work."""
        if layer in ("input", "output"):
            return
        shape = self.info.shape(layer)
        if len(shape) in (1, 3):
            return
        what = ("a token layer (tokens, width), as in a transformer" if len(shape) == 2 else
                "a scalar per sample" if not shape else f"a {len(shape)}-D output")
        self.fail(path, f"layer {layer!r} has per-sample output shape {shape}, {what}; the grammar reads layers "
                        "of shape (C, H, W) (channels at positions) or (C,) (channels) only: use a convolutional or "
                        "pooled layer, or a module whose output has one of those shapes")

    # ------------------------------------------------------------ feature visualisation
    def icon_settings(self, opts: dict, layer: Optional[str] = None) -> tuple:
        """Icon options → the frozen settings of a FeatureVis op: the size resolved for this model
        (its input side, at most ``DEFAULT_ICON_MAX_PX``) and for ``layer`` (None: any layer) — a model
        that takes only its own input size (a size check, position embeddings, a fixed linear layer
        before the layer) gets icons of that size whose transforms end cropped back to it."""
        keys = ("size", "steps", "lr", "attempts", "param", "decorrelate", "transforms", "relu_redirect", "race", "autocast")
        d = {k: opts[k] for k in keys if k in opts}
        if not self.info.reaches(self.info.small_icon_size, layer):
            # a model that takes only its own input size: icons of that size, cropped (or padded) back
            # to it after the transforms, which change the size the model sees
            side = int(self.info.input_shape[-1])
            if d.get("size") is None:
                d["size"] = side
            if d.get("transforms", "standard") == "standard" and d["size"] == side:
                d["transforms"] = [*STANDARD_TRANSFORMS, {"crop_or_pad": side}]
        if d.get("size") is None:
            d["size"] = self.info.small_icon_size
        if self.options.icon_steps is not None:
            d["steps"] = self.options.icon_steps
        d["transforms"] = freeze(d.get("transforms", "standard"))
        return tuple(sorted(d.items()))

    def icon_batch(self, layer: str, opts: dict) -> tuple[tuple, str]:
        """(settings, batch id): icons of one layer with the same settings share one optimisation."""
        settings = self.icon_settings(opts, layer)
        batch = self.batches.setdefault((layer, settings), f"batch{len(self.batches)}")
        return settings, batch

    @property
    def seed(self) -> int:
        return self.loaded.spec.execution.seed


def option_error(loaded: LoadedSpec, ppath: tuple, name: str, model, opts: Any, e: dict) -> Diagnostic:
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
