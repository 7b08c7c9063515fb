"""The plan: what tensors an interface needs, not how to compute them.

Ops form a DAG keyed by ``id``. The compiler fuses: one :class:`Capture` (forward pass) per input
batch records every layer any element reads; one :class:`Gradient` (backward pass) per distinct
target serves every layer that needs it; identical requests are one node. Backends lower each op.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar, Optional, Sequence, Union

MiB = 1024 * 1024
FLOAT_BYTES = 4  # float32, as results are stored
EXAMPLE_SIDE_MAX = 96  # the largest side of a stored data-set example patch (backends' examples PATCH_PX)
ATLAS_PATCH_PX = 40  # the side of an atlas cell's example patch (backends' atlas EXAMPLE_PX)


@dataclass(frozen=True)
class Target:
    """A scalar per input whose gradient is taken.

    - ``logit``: the logit of ``cls`` (a class index, or ``None`` for each input's top-1 prediction);
    - ``norm``: the L2 norm of ``layer``'s activation vector at position ``at`` = (x, y), as the
      article's layer-to-layer spatial attribution uses it;
    - ``channel``: the total activation (Σ over positions) of ``channel`` of ``layer`` (``None``: each
      input's strongest channel): layer-to-layer channel attribution.
    """

    kind: str  # "logit" | "norm" | "channel"
    cls: Optional[int] = None
    layer: Optional[str] = None
    at: Optional[tuple[int, int]] = None
    channel: Optional[int] = None  # kind "channel": Σ over positions of this channel of ``layer``
    rank: int = 0  # kind "logit" without ``cls``: the rank-th most likely class of each input (0: predicted)

    def describe(self, classes: list[str] | None = None) -> str:
        if self.kind == "logit":
            if self.cls is None:
                return "logit[predicted]" if self.rank == 0 else f"logit[top-{self.rank + 1}]"
            name = classes[self.cls] if classes and self.cls < len(classes) else str(self.cls)
            return f"logit[{name}]"
        if self.kind == "channel":
            return f"Σ {self.layer}:{'strongest' if self.channel is None else self.channel}"
        if self.at is None:
            return f"‖{self.layer}[strongest position]‖"
        return f"‖{self.layer}[x={self.at[0]},y={self.at[1]}]‖"


@dataclass(frozen=True)
class Op:
    """One node of the plan. Each op type declares, next to its fields:

    - ``DEPS``: the fields naming other ops (a str, or a tuple of str; "" or None: none);
    - :meth:`signature`: what makes its cache key, structural (free of op ids, recursive over deps);
    - :meth:`describe`: one line for ``interpgram plan``;
    - :meth:`memory`: an estimate of its result's bytes, from the layer shapes and the image count.

    Its kernel (how it runs) is registered by the backend, keyed by the op type's name.
    """

    id: str

    DEPS: ClassVar[tuple[str, ...]] = ()
    LABEL: ClassVar[str] = ""  # the op's column in `interpgram plan` (default: the type's name)
    #: ops whose kernel needs an autograd graph of their capture (backward passes)
    NEEDS_GRAPH: ClassVar[bool] = False

    @property
    def deps(self) -> tuple[str, ...]:
        out: list[str] = []
        for name in self.DEPS:
            v = getattr(self, name)
            if isinstance(v, tuple):
                out.extend(x for x in v if x)
            elif v:
                out.append(v)
        return tuple(out)

    def requires(self, plan: "Plan") -> tuple[str, ...]:
        """The ops whose results this op's kernel reads: its deps (and, for a few atlas ops, what
        their deps stand on)."""
        return self.deps

    def reads(self, plan: "Plan") -> dict[str, tuple[str, ...]]:
        """The layers this op reads from each op it depends on (a Capture's or a Gradient's)."""
        return {}

    def signature(self, plan: "Plan") -> tuple:
        """Every field but the id; a field naming another op stands for that op's signature."""
        parts: list = [type(self).__name__]
        for f in fields(self):
            if f.name == "id":
                continue
            v = getattr(self, f.name)
            if f.name in self.DEPS:
                v = (tuple(plan.signature(x) for x in v) if isinstance(v, tuple)
                     else plan.signature(v) if v else None)
            parts.append((f.name, v))
        return tuple(parts)

    def label(self) -> str:
        return self.LABEL or type(self).__name__

    def describe(self, plan: "Plan") -> str:
        return self.label()

    def memory(self, plan: "Plan") -> int:
        return 0


def _row(label: str, text: str) -> str:
    return f"{label:<12} {text}"


@dataclass(frozen=True)
class Capture(Op):
    """One forward pass over ``inputs`` recording the outputs of ``layers``."""

    inputs: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    needs_grad: bool = False

    def signature(self, plan):
        return ("Capture",)  # what a forward pass records is named by the ops that read it

    def describe(self, plan):
        return _row("Capture", f"forward {', '.join(self.layers)}" + (" (+graph)" if self.needs_grad else ""))

    def memory(self, plan):
        return plan.value_bytes * sum(plan.numel(layer) for layer in self.layers)


@dataclass(frozen=True)
class Gradient(Op):
    """One backward pass from ``target`` to every layer in ``wrt`` (no parameter gradients)."""

    capture: str = ""
    target: Target = Target("logit")
    wrt: tuple[str, ...] = ()

    DEPS: ClassVar[tuple[str, ...]] = ("capture",)
    NEEDS_GRAPH: ClassVar[bool] = True

    def reads(self, plan):
        t = self.target
        return {self.capture: self.wrt + ((t.layer,) if t.kind in ("norm", "channel") and t.layer else ())}

    def signature(self, plan):
        return ("Gradient", self.target)  # the layers it reaches are named by the ops that read them

    def describe(self, plan):
        return _row("Gradient", f"backward ∂{self.target.describe(plan.classes)} → {', '.join(self.wrt)}")

    def memory(self, plan):
        return plan.value_bytes * sum(plan.numel(layer) for layer in self.wrt)


@dataclass(frozen=True)
class PathGradient(Op):
    """What an attribution ``method`` other than grad × act computes for ``target`` at ``layer`` (its
    unit's ``layer_values``): for ``integrated`` the path-integrated gradient, the mean of ∇f(A·n/N)
    for n = 0…N−1 (``steps`` extra forward+backward evaluations, batched); for a plug-in method its
    effective gradient or its attribution."""

    capture: str = ""
    target: Target = Target("logit")
    layer: str = ""
    steps: int = 50
    method: str = "integrated"

    DEPS: ClassVar[tuple[str, ...]] = ("capture",)
    NEEDS_GRAPH: ClassVar[bool] = True

    def reads(self, plan):
        t = self.target
        return {self.capture: (self.layer,) + ((t.layer,) if t.kind == "norm" and t.layer else ())}

    def signature(self, plan):
        return ("PathGradient", self.target, self.layer, self.steps) + ((self.method,) if self.method != "integrated" else ())

    def describe(self, plan):
        how = f"{self.steps} points" if self.method == "integrated" else f"{self.method}, {self.steps} steps"
        return _row("PathGradient", f"{how} ∂{self.target.describe(plan.classes)} → {self.layer}")

    def memory(self, plan):
        return plan.value_bytes * self.steps * plan.numel(self.layer) * 2


@dataclass(frozen=True)
class Reduce(Op):
    """Content of one atom kind from a captured activation, or from activation × gradient."""

    capture: str = ""
    layer: str = ""
    atom: str = "spatial"  # neuron | spatial | channel | whole | gradient (the raw ∇, for groups)
    gradient: Optional[str] = None  # None: activation content; else attribution = act × grad
    at: Optional[tuple[int, ...]] = None
    channels: Optional[tuple[int, ...]] = None
    vector: Optional[tuple[float, ...]] = None  # atom=direction: the projection onto this direction

    DEPS: ClassVar[tuple[str, ...]] = ("capture", "gradient")

    def reads(self, plan):
        return {self.capture: (self.layer,), **({self.gradient: (self.layer,)} if self.gradient else {})}

    def signature(self, plan):
        return (("Reduce", self.layer, self.atom, self.at, self.channels,
                 plan.signature(self.gradient) if self.gradient else None)
                + ((self.vector,) if self.vector else ()))

    def label(self):
        return "Gradient of" if self.atom == "gradient" else "Attribute" if self.gradient else "Activation"

    def describe(self, plan):
        if self.atom == "gradient":
            return _row(self.label(), f"{self.layer} from {self.gradient}")
        what = f"{self.layer} × {self.gradient}" if self.gradient else self.layer
        return _row(self.label(), f"{what} by {self.atom}")

    def memory(self, plan):
        b, n = plan.value_bytes, plan.numel(self.layer)
        shape = plan.layer_shapes.get(self.layer, (1,))
        if self.atom in ("neuron", "gradient"):
            return b * n
        if self.atom == "spatial":
            return b * (n // max(shape[0], 1))
        if self.atom == "channel":
            return b * shape[0]
        return b


@dataclass(frozen=True)
class Factorize(Op):
    """NMF of one layer's positions × channels into ``k`` groups (per input)."""

    source: str = ""  # a Reduce op with atom=neuron (activation or attribution)
    k: int = 6
    of: str = "activation"
    sign: Optional[str] = None
    seed: int = 0

    DEPS: ClassVar[tuple[str, ...]] = ("source",)

    def signature(self, plan):
        return ("Factorize", self.k, self.of, self.sign, self.seed, plan.signature(self.source))

    def describe(self, plan):
        how = (f"sign: {self.sign}" if self.sign else "sign: positive" if self.of == "attribution"
               else "[A+, A−] where signed")  # the default: a signed activation's positive and negative parts
        return _row("Factorize", f"NMF k={self.k} of {self.source} ({self.of}, {how})")

    def memory(self, plan):
        layer = getattr(plan.ops.get(self.source), "layer", "")
        shape = plan.layer_shapes.get(layer, (1, 1, 1))
        hw = plan.numel(layer) // max(shape[0], 1)
        return plan.value_bytes * self.k * (hw + shape[0])


@dataclass(frozen=True)
class GroupAttribution(Op):
    """Attribution of each NMF group to a target: Σ (spatial_i ⊗ channel_i) · ∇A target."""

    groups: str = ""
    gradient: str = ""  # a Reduce op with atom=gradient

    DEPS: ClassVar[tuple[str, ...]] = ("groups", "gradient")
    LABEL: ClassVar[str] = "GroupAttr"

    def signature(self, plan):
        return ("GroupAttribution", plan.signature(self.groups), plan.signature(self.gradient))

    def describe(self, plan):
        return _row(self.label(), f"{self.groups} · {self.gradient}")

    def memory(self, plan):
        return plan.value_bytes * getattr(plan.ops.get(self.groups), "k", 1)


@dataclass(frozen=True)
class Combine(Op):
    """A transform over content results: compare (a − b), top_k, select, filter (``by``: the op
    whose values decide, for filter; ``abs`` or ``value`` for top_k)."""

    op: str = "compare"
    inputs: tuple[str, ...] = ()
    k: Optional[int] = None
    by: Optional[str] = None
    atoms: Optional[tuple[int, ...]] = None
    threshold: float = 0.0

    DEPS: ClassVar[tuple[str, ...]] = ("inputs",)
    LABEL: ClassVar[str] = "Transform"

    @property
    def deps(self):
        # filter's `by` is a content computed like the inputs (top_k's `by` is a word: value | abs)
        return self.inputs + ((self.by,) if self.op == "filter" and self.by else ())

    def signature(self, plan):
        by = plan.signature(self.by) if self.by and self.by in plan.ops else self.by
        return ("Combine", self.op, tuple(plan.signature(i) for i in self.inputs), self.k, by, self.atoms,
                self.threshold)

    def describe(self, plan):
        return _row(self.label(), f"{self.op}({', '.join(self.deps)})")

    def memory(self, plan):
        return max((plan.memory(i) for i in self.inputs if i in plan.ops), default=0)


@dataclass(frozen=True)
class FeatureVis(Op):
    """Icons (optimised images) for the atoms of one content.

    ``objective``: channel | neuron | direction | direction_neuron (the icon of an activation
    vector) | group (an NMF group's channel direction). Which icons:

    - ``atoms``: explicit channels (channel, neuron), positions (direction_neuron) or one vector
      (direction);
    - ``top``: the ``top`` strongest atoms of ``source`` per image (``both_signs``: the strongest
      positive and the strongest negative, as bars show them);
    - ``per_position``: the ``per_position`` strongest channels at every position (semantic
      dictionaries).

    Icons of every FeatureVis op with the same ``batch`` key (layer, size, settings) are rendered
    in one batched optimisation; each icon is cached on its own.
    """

    source: str = ""  # a Reduce (values per atom) or Factorize op; "" for explicit atoms
    vectors: str = ""  # direction_neuron: the neuron-level activation the vectors come from
    layer: str = ""
    objective: str = "channel"
    atoms: tuple = ()
    top: int = 0
    both_signs: bool = False
    per_position: int = 0
    cossim_pow: float = 0.0
    settings: tuple = ()  # sorted (key, value) pairs of the icon settings
    seed: int = 0
    batch: str = ""

    DEPS: ClassVar[tuple[str, ...]] = ("source", "vectors")

    @property
    def setting_dict(self) -> dict:
        return dict(self.settings)

    def icons_per_image(self, plan) -> int:
        if self.atoms:
            return len(self.atoms)
        if self.objective == "group":
            return getattr(plan.ops.get(self.source), "k", 1)
        if self.per_position:
            return self.per_position * plan.positions(self.layer)
        return self.top * (2 if self.both_signs else 1)

    def describe(self, plan):
        st = self.setting_dict
        which = (f"{len(self.atoms)} given" if self.atoms else
                 f"top {self.per_position} per position" if self.per_position else
                 f"top {self.top}" + (" each sign" if self.both_signs else "") if self.top else "per group")
        return _row("FeatureVis", f"{self.objective} icons of {self.layer} ({which}) · {self.batch}: "
                                  f"{st.get('size')} px, {st.get('steps')} steps × {st.get('attempts', 1)}")

    def memory(self, plan):
        side = int(self.setting_dict.get("size") or 0)
        return plan.images * self.icons_per_image(plan) * 3 * side * side * FLOAT_BYTES


@dataclass(frozen=True)
class ActivationGrid(Op):
    """One icon per position of ``layer`` for each image, optimised with parameters shared through
    an NMF of the positions; each step optimises a random sample of cells."""

    source: str = ""  # a Reduce op with atom=neuron (the activation)
    layer: str = ""
    settings: tuple = ()
    seed: int = 0

    DEPS: ClassVar[tuple[str, ...]] = ("source",)
    LABEL: ClassVar[str] = "ActGrid"

    def describe(self, plan):
        st = dict(self.settings)
        return _row(self.label(), f"{self.layer}: a {st.get('cell_size')} px icon per position, "
                                  f"{st.get('steps')} steps × {st.get('sample')} cells, {st.get('groups')} shared NMF images")

    def memory(self, plan):
        side = int(dict(self.settings).get("cell_size") or 0)
        return plan.images * plan.positions(self.layer) * 3 * side * side * FLOAT_BYTES


@dataclass(frozen=True)
class Examples(Op):
    """Dataset examples: for each atom, the ``top`` images of a data set whose activation of
    ``layer`` scores highest for it (always activation, whatever the content), found in one
    streaming pass over the first ``n`` images of ``dataset``/``split``.

    ``atom``: channel (max over positions of A[c]) | neuron (A[c, y, x]) | spatial (max over
    positions of the cosine similarity to this input's activation vector at (x, y), taken from
    ``vectors``) | direction (max over positions of ⟨A, w⟩) | group (a ``groups`` NMF group's channel
    factor, as a direction). ``atoms``: explicit channels, neurons (x, y, c), positions (x, y) or one
    direction; when empty, the ``count`` strongest atoms of ``source`` for each input (every group
    for group atoms). ``patch``: crop to the receptive field of the best position.
    """

    source: str = ""  # the content (a Reduce/Combine op whose values pick the atoms); "" when not needed
    vectors: str = ""  # spatial atoms: the neuron-level activation the query vectors come from
    groups: str = ""  # group atoms: the Factorize op
    layer: str = ""
    atom: str = "channel"
    atoms: tuple = ()
    top: int = 6
    count: int = 4
    dataset: str = "builtin:shapes"  # builtin:shapes, or a folder (resolved against the spec's folder)
    n: int = 2000
    split: str = "test"
    patch: bool = True
    batch_size: int = 256

    DEPS: ClassVar[tuple[str, ...]] = ("source", "vectors", "groups")

    def describe(self, plan):
        which = (f"{len(self.atoms)} given" if self.atoms else "every group" if self.atom == "group"
                 else f"top {self.count} per image")
        return _row("Examples", f"top {self.top} of {self.dataset} ({self.split}, n={self.n}) per {self.atom} atom "
                                f"of {self.layer} ({which}){', patches' if self.patch else ''}")

    def memory(self, plan):
        atoms = (len(self.atoms) if self.atoms else getattr(plan.ops.get(self.groups), "k", 1)
                 if self.atom == "group" else self.count)
        return plan.images * atoms * self.top * 3 * EXAMPLE_SIDE_MAX * EXAMPLE_SIDE_MAX  # uint8 patches


@dataclass(frozen=True)
class Collect(Op):
    """Stream ``n`` images of ``dataset`` through the model once; store, per sample, the activation
    vector at each of ``layers`` (one ``positions`` sample per image: random | centre | all) and its
    attribution to every class, in a chunked on-disk store (resumable)."""

    dataset: str = "builtin:shapes"
    n: int = 10000
    split: str = "train"
    layers: tuple[str, ...] = ()
    positions: str = "random"
    seed: int = 0
    chunk: int = 2048
    batch_size: int = 256

    def rows(self, plan) -> int:
        """Samples the store holds per layer (at most)."""
        if self.positions != "all":
            return self.n
        return self.n * max((plan.positions(layer) for layer in self.layers), default=1)

    def store_bytes(self, plan) -> int:
        per = sum(plan.channels(layer) + len(plan.classes) + 1 for layer in self.layers)
        return self.rows(plan) * per * FLOAT_BYTES

    def describe(self, plan):
        return _row("Collect", f"{self.dataset} ({self.split}, n={self.n}, {self.positions} positions) → "
                               f"{', '.join(self.layers)}: activation + attribution to every class, chunks of {self.chunk}")

    def memory(self, plan):  # one batch of activations in flight (the store itself is on disk)
        return self.batch_size * sum(plan.numel(layer) for layer in self.layers) * FLOAT_BYTES


@dataclass(frozen=True)
class Layout(Op):
    """UMAP of one layer's collected vectors to 2-D (``kind`` activation), of one class's samples
    (``class``: winners ∪ the ``top`` by attribution), or a two-class layout (``compare``: x from the
    attribution difference, y a 1-D layout)."""

    collect: str = ""
    layer: str = ""
    kind: str = "activation"  # activation | class | compare
    classes: tuple[int, ...] = ()
    whiten: bool = True
    n_neighbors: int = 20
    min_dist: float = 0.01
    metric: str = "cosine"
    fit_sample: int = 20000
    winners: bool = True
    top: int = 2000
    seed: int = 0

    DEPS: ClassVar[tuple[str, ...]] = ("collect",)

    def describe(self, plan):
        which = {"activation": "all samples",
                 "class": f"class {plan.class_name(self.classes[0])}" if self.classes else "class",
                 "compare": " vs ".join(plan.class_name(c) for c in self.classes)}[self.kind]
        return _row("Layout", f"{self.layer} ({which}): UMAP {self.metric} n_neighbors={self.n_neighbors} "
                              f"min_dist={self.min_dist:g}{', whitened' if self.whiten else ''}, fit on ≤{self.fit_sample}")

    def memory(self, plan):  # xy and row of each sample, and the C × C whitening matrix
        collect = plan.ops.get(self.collect)
        rows = collect.rows(plan) if isinstance(collect, Collect) else 0
        return rows * 3 * FLOAT_BYTES + plan.channels(self.layer) ** 2 * FLOAT_BYTES


@dataclass(frozen=True)
class Grid(Op):
    """``n`` × ``n`` cells over a layout: count, mean activation, mean attribution and top class of
    each cell with at least ``min_count`` samples, and ``examples`` data-set patches per cell."""

    layout: str = ""
    n: int = 20
    min_count: int = 5
    examples: int = 4

    DEPS: ClassVar[tuple[str, ...]] = ("layout",)

    def requires(self, plan):
        """The layout, and the collection it was made from (the cells average the collected vectors)."""
        lay = plan.ops.get(self.layout)
        return self.deps + ((lay.collect,) if isinstance(lay, Layout) and lay.collect else ())

    def describe(self, plan):
        return _row("Grid", f"{self.n}×{self.n} over {self.layout}, cells with ≥{self.min_count} samples")

    def memory(self, plan):
        lay = plan.ops.get(self.layout)
        c = plan.channels(lay.layer) if isinstance(lay, Layout) else 0
        cells = self.n * self.n
        return cells * (c + len(plan.classes)) * FLOAT_BYTES + cells * self.examples * 3 * ATLAS_PATCH_PX ** 2


@dataclass(frozen=True)
class AtlasIcons(Op):
    """Feature inversion of each grid cell's mean activation: the whitened cosine-power direction
    objective at the centre position, batched, best of several attempts, each icon cached."""

    grid: str = ""
    layer: str = ""
    settings: tuple = ()
    cossim_pow: float = 4.0
    batch: int = 64
    seed: int = 0

    DEPS: ClassVar[tuple[str, ...]] = ("grid",)

    def requires(self, plan):
        """The grid, and its layout (whose whitening matrix turns each cell's mean into a direction)."""
        grid = plan.ops.get(self.grid)
        return self.deps + ((grid.layout,) if isinstance(grid, Grid) and grid.layout else ())

    def describe(self, plan):
        st = dict(self.settings)
        return _row("AtlasIcons", f"a whitened cossim^{self.cossim_pow:g} icon per cell of {self.grid}: "
                                  f"{st.get('size')} px, {st.get('steps')} steps × {st.get('attempts', 1)}, "
                                  f"batches of {self.batch}")

    def memory(self, plan):
        grid = plan.ops.get(self.grid)
        cells = grid.n * grid.n if isinstance(grid, Grid) else 0
        side = int(dict(self.settings).get("size") or 0)
        return cells * 3 * side * side * FLOAT_BYTES


@dataclass(frozen=True)
class PatchTest(Op):
    """For each cell of a class atlas: paste its icon (``crop`` centre | whole, ``size`` px) at one
    random place onto ``n`` data-set images the model does not predict as ``cls``; the fraction whose
    prediction becomes ``cls``, next to a same-size uniform-noise patch at the same places."""

    icons: str = ""
    cls: int = 0
    size: int = 9
    crop: str = "centre"
    n: int = 500
    dataset: str = "builtin:shapes"
    split: str = "test"
    seed: int = 0

    DEPS: ClassVar[tuple[str, ...]] = ("icons",)

    def describe(self, plan):
        c = plan.class_name(self.cls)
        return _row("PatchTest", f"each cell's icon ({self.crop}, {self.size} px) pasted onto {self.n} images of "
                                 f"{self.dataset} ({self.split}) not predicted {c}: how many become {c}")

    def memory(self, plan):
        icons = plan.ops.get(self.icons)
        grid = plan.ops.get(icons.grid) if isinstance(icons, AtlasIcons) else None
        return (grid.n * grid.n if isinstance(grid, Grid) else 0) * FLOAT_BYTES


@dataclass(frozen=True)
class Series:
    """One labelled series of an element's content (e.g. the map for one class)."""

    label: str
    op: str  # id of the op holding the values


@dataclass(frozen=True)
class Present(Op):
    """An element: content series shown through one presentation."""

    element: str = ""
    presentation: str = ""
    options: tuple = ()  # sorted (key, value) pairs
    atom: str = "spatial"
    layer: str = ""
    content_kind: str = "activation"  # activation | attribution | transform
    series: tuple[Series, ...] = ()
    groups: Optional[str] = None  # Factorize op for group presentations
    title: str = ""
    grammar: str = ""
    icons: tuple[str, ...] = ()  # FeatureVis ops (one per series for bars) or one ActivationGrid op
    detail: Optional[str] = None  # neuron-level activation (semantic dictionaries)
    focus: Optional[int] = None  # group presentations: the one group a link selected
    variant: str = ""  # a linked element's variant: the selection key it was compiled for ("3,5", "star", "g2")
    link: int = -1  # index of the link that selects this variant (-1: the element as the spec states it)
    side: str = ""  # comparisons (an element's ``vary``): which class, layer or model this view shows

    DEPS: ClassVar[tuple[str, ...]] = ("icons", "groups", "detail")  # and each series' op

    @property
    def deps(self):
        return (tuple(s.op for s in self.series) + tuple(self.icons)
                + tuple(x for x in (self.groups, self.detail) if x))

    @property
    def option_dict(self) -> dict:
        return dict(self.options)

    def signature(self, plan):
        return ("Present", self.element, self.presentation, self.options, self.variant,
                tuple((s.label, plan.signature(s.op)) for s in self.series))

    def describe(self, plan):
        what = ", ".join(s.label for s in self.series) or f"{self.layer} ({self.content_kind})"
        return _row("Present", f"{self.element}: {self.presentation} of {what}")


def _images(n: int) -> str:
    return f"{n} image" + ("s" if n != 1 else "")


def _size(n: int) -> str:
    if n >= MiB:
        return f"{n / MiB:8.1f} MiB"
    if n < 1024:
        return f"{n:6d} B  "
    return f"{n / 1024:8.1f} KiB"


AnyOp = Union[Capture, Gradient, PathGradient, Reduce, Factorize, GroupAttribution, Combine, FeatureVis,
              ActivationGrid, Examples, Collect, Layout, Grid, AtlasIcons, PatchTest, Present]


@dataclass(frozen=True)
class LinkInfo:
    """A link between two elements, resolved against the model.

    ``kind`` is what the source selects: ``position`` (x, y) of ``source_layer``, ``channel`` of
    ``source_layer``, ``class`` (an output class) or ``group`` (an NMF group index). ``target`` is
    what it drives in the target element: from | to | class | group | position | channel.
    """

    index: int
    source: str  # element id
    event: str  # hover | click | select
    element: str  # target element id
    target: str
    kind: str
    source_layer: str = ""
    source_shape: tuple[int, ...] = ()
    precompute: int = 64

    def key(self, value) -> str:
        """The selection's key, as charts and the report name it: "x,y", a channel, a class, a group."""
        if self.kind == "position":
            return f"{int(value[0])},{int(value[1])}"
        return str(value)


@dataclass
class Plan:
    model: str
    inputs: tuple[str, ...]
    ops: dict[str, AnyOp] = field(default_factory=dict)
    layer_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    unfused: dict[str, int] = field(default_factory=dict)  # passes an element-at-a-time run would do
    link_info: list[LinkInfo] = field(default_factory=list)
    vary_models: dict[str, list[str]] = field(default_factory=dict)  # element -> other models to compare with
    layout: list[list[str]] = field(default_factory=list)
    title: str = ""
    source: str = ""
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    resolved_device: str = ""  # what "auto" became on this machine (set by the backend)
    n_images: int = 0  # images after expanding ranges such as builtin:shapes/0-31 (set by the backend)

    # ---------------------------------------------------------------- queries
    def of_type(self, cls) -> list:
        return [op for op in self.ops.values() if isinstance(op, cls)]

    @property
    def elements(self) -> list[Present]:
        return self.of_type(Present)

    @property
    def base_elements(self) -> list[Present]:
        """The elements as the spec states them (no link variants)."""
        return [p for p in self.of_type(Present) if p.link < 0]

    def passes(self) -> dict[str, int]:
        fwd = sum(1 for c in self.of_type(Capture) if c.layers)
        bwd = len(self.of_type(Gradient))
        for _ in self.of_type(PathGradient):
            fwd += 1  # batched over the path points
            bwd += 1
        return {"forward": fwd, "backward": bwd}

    def requires(self, op_id: str) -> tuple[str, ...]:
        """The ops whose results ``op_id``'s kernel reads (those of them that are in this plan)."""
        return tuple(d for d in self.ops[op_id].requires(self) if d in self.ops)

    def topological(self) -> list[AnyOp]:
        order, seen = [], set()

        def visit(i: str) -> None:
            if i in seen:
                return
            seen.add(i)
            for d in self.requires(i):
                visit(d)
            order.append(self.ops[i])

        for i in self.ops:
            visit(i)
        return order

    def dependencies(self, op_id: str) -> set[str]:
        out, stack = set(), [op_id]
        while stack:
            i = stack.pop()
            if i in out:
                continue
            out.add(i)
            stack.extend(self.requires(i))
        return out

    def signature(self, op_id: str) -> tuple:
        """The structural description of ``op_id`` and everything it depends on, free of op ids:
        what its cache key is made of."""
        return self.ops[op_id].signature(self)

    # ---------------------------------------------------------------- sizes
    @property
    def images(self) -> int:
        return self.n_images or len(self.inputs)

    @property
    def value_bytes(self) -> int:
        """Bytes of one tensor element per image, at the plan's dtype, times the image count."""
        return self.images * (2 if self.dtype != "float32" else FLOAT_BYTES)

    def numel(self, layer: str) -> int:
        n = 1
        for s in self.layer_shapes.get(layer, ()):
            n *= s
        return n

    def channels(self, layer: str) -> int:
        shape = self.layer_shapes.get(layer, ())
        return shape[0] if shape else 0

    def positions(self, layer: str) -> int:
        shape = self.layer_shapes.get(layer, ())
        return shape[-1] * shape[-2] if len(shape) >= 3 else 1

    def class_name(self, c: int) -> str:
        return self.classes[c] if 0 <= c < len(self.classes) else str(c)

    def memory(self, op_id: str) -> int:
        return self.ops[op_id].memory(self)

    def estimated_bytes(self, op: AnyOp) -> int:
        return op.memory(self)

    # ---------------------------------------------------------------- EXPLAIN
    def explain(self, status: Optional[dict[str, str]] = None, *, to_run: Optional["Plan"] = None,
                icon_lines: Optional[list[str]] = None) -> str:
        """What the plan computes, one op a line with its memory estimate. With ``status`` (op id →
        "cached" | "runs" | "skipped", from pruning against a result cache) and the pruned plan
        ``to_run``, each op also says whether this cache spares it (a "runs" may say what its
        kernel caches piece by piece). ``icon_lines`` replace the icon count of this plan alone (the
        backend's, which adds the icons of the link selections a render precomputes)."""
        p = self.passes()
        lines = [
            f"plan for {self.source or '<spec>'}",
            f"  model   {self.model}   input "
            + (f"{_images(self.images)}: {', '.join(self.inputs)}" if self.inputs else "none (atlases only)"),
            f"  device  {self.device}" + (f" ({self.resolved_device})" if self.resolved_device and
                                          self.resolved_device != self.device else "") + f"   dtype {self.dtype}",
            f"  passes  {p['forward']} forward, {p['backward']} backward"
            + (f"   (one element at a time: {self.unfused.get('forward', 0)} forward, "
               f"{self.unfused.get('backward', 0)} backward)" if self.unfused else ""),
        ]
        if status is not None and to_run is not None:
            q = to_run.passes()
            work = [i for i, s in status.items() if s.startswith("runs")]
            hit = [i for i, s in status.items() if s == "cached"]
            lines.append(f"  cache   {len(hit)} op(s) cached, {len(work)} to run: "
                         f"{q['forward']} forward, {q['backward']} backward pass(es) left")
        lines.append("")
        rows = []
        total = 0
        for op in self.topological():
            if isinstance(op, Capture) and not op.layers and not op.needs_grad:
                continue  # nothing read from the inputs (an atlas-only spec)
            est = op.memory(self)
            if not isinstance(op, Present):
                total += est
            rows.append((op, est))
        w = max((len(i) for i in self.ops), default=0)
        descs = [f"{op.id:<{w}} {op.describe(self)}" for op, _ in rows]
        width = max((len(d) for d in descs), default=0)
        lines.append(f"  {'op':<{width}}  {'memory':>12}" + ("  cache" if status is not None else ""))
        for (op, est), desc in zip(rows, descs):
            mem = _size(est) if est else ""
            mark = ""
            if status is not None:
                mark = "" if isinstance(op, Present) else status.get(op.id, "")
                mark = "not needed" if mark == "skipped" else mark
            lines.append((f"  {desc:<{width}}  {mem:>12}" + (f"  {mark}" if mark else "")).rstrip())
        lines.append("")
        lines.append(f"  estimated tensor memory: {_size(total).strip()}")
        fv = self.of_type(FeatureVis)
        if icon_lines is not None:
            lines.extend(icon_lines)
        elif fv or self.of_type(ActivationGrid) or self.of_type(AtlasIcons):
            lines.append("  " + count_icons([self]).describe())
        if fv:
            batches = sorted({op.batch for op in fv})
            lines.append(f"         from {len(fv)} feature-visualisation request(s) in {len(batches)} batched "
                         f"optimisation(s) ({', '.join(batches)}); each icon is cached on its own")
        for c in self.of_type(Collect):
            atlases = sum(1 for p in self.elements if p.presentation == "atlas")
            lines.append(f"  atlas collection: one pass over {c.n} images serves {atlases} atlas view(s); "
                         f"store ≈ {_size(c.store_bytes(self)).strip()} on disk (resumable, in the cache folder)")
        if self.link_info:
            for li in self.link_info:
                lines.append(f"  link {li.source}.{li.event} → {li.element}.{li.target}: selects a {li.kind}"
                             + (f" of {li.source_layer}" if li.kind in ("position", "channel") else "")
                             + f"; up to {li.precompute} selections precomputed for the static report, any live in "
                               "`interpgram serve`")
        return "\n".join(lines)


@dataclass
class IconCount:
    """The icons a render optimises: feature-visualisation icons (``icons``; ``exact`` False when
    some are chosen by the results, e.g. the top channels, and the count is a bound), activation-grid
    cells (``grid_cells``, one icon per position per image) and atlas icons (``atlas``, at most one per
    grid cell)."""

    icons: int = 0
    exact: bool = True
    grid_cells: int = 0
    atlas: int = 0

    @property
    def total(self) -> int:
        return self.icons + self.grid_cells + self.atlas

    def describe(self, detail: str = "") -> str:
        parts = [f"{'' if self.exact else 'at most '}{self.icons} feature-visualisation icon(s)"]
        if self.grid_cells:
            parts.append(f"{self.grid_cells} activation-grid cell icon(s)")
        if self.atlas:
            parts.append(f"at most {self.atlas} atlas icon(s)")
        return "icons: " + ", ".join(parts) + " to optimise" + (f" ({detail})" if detail else "")


def count_icons(plans: Sequence["Plan"]) -> IconCount:
    """The icons the ``plans`` (a spec's plan and its link variants' plans) optimise together, with
    the executor's rules: per image, the explicit atoms, the ``top`` strongest, the top channels at
    every position, or one icon per NMF group; channel and neuron icons of one layer and settings are
    one icon however many images, ops or plans ask for them (an icon is its layer, objective, atom and
    settings), icons of an image's activation vectors are that image's own."""
    explicit: set = set()  # channel / neuron / direction icons named by the spec or a selection
    chosen: dict[tuple, int] = {}  # (settings, seed, layer, objective) -> the bound on the icons the results choose
    widths: dict[tuple, int] = {}
    vectors = grid = atlas = 0
    exact = True
    for plan in plans:
        n = plan.images
        for op in plan.of_type(FeatureVis):
            key = (op.settings, op.seed, op.layer, op.objective)
            if op.objective == "group":
                src = plan.ops.get(op.source)
                vectors += n * (src.k if isinstance(src, Factorize) else 0)
            elif op.objective == "direction":
                explicit.add(key + (op.atoms[0], op.cossim_pow))
            elif op.objective == "direction_neuron":
                vectors += n * (len(op.atoms) if op.atoms else min(op.top, plan.positions(op.layer)))
            elif op.atoms:
                explicit.update(key + (int(c),) for c in op.atoms)
            else:
                per = (op.per_position * plan.positions(op.layer) if op.per_position else
                       2 * op.top if op.both_signs else op.top)
                widths[key] = (plan.layer_shapes.get(op.layer) or (n * per,))[0]  # the layer's channels
                one = n == 1 and not op.per_position and not op.both_signs and key not in chosen
                chosen[key] = chosen.get(key, 0) + n * per
                exact = exact and one
        grid += sum(plan.images * plan.positions(op.layer) for op in plan.of_type(ActivationGrid))
        for op in plan.of_type(AtlasIcons):
            g = plan.ops.get(op.grid)
            atlas += g.n * g.n if isinstance(g, Grid) else 0
    bounded = 0
    for key, bound in chosen.items():
        named = sum(1 for e in explicit if e[:4] == key)
        if named:
            exact = False  # the results may choose channels the spec names too
        bounded += min(bound, max(widths[key] - named, 0))
    return IconCount(len(explicit) + bounded + vectors, exact, grid, atlas)
