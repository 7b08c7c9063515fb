"""The plan: what tensors an interface needs, not how to compute them.

Ops form a DAG keyed by ``id``. The compiler fuses: one :class:`Capture` (forward pass) per input
batch records every layer any element reads; one :class:`Gradient` (backward pass) per distinct
target serves every layer that needs it; identical requests are one node. Backends lower each op.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

MiB = 1024 * 1024


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
    id: str

    @property
    def deps(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class Capture(Op):
    """One forward pass over ``inputs`` recording the outputs of ``layers``."""

    inputs: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    needs_grad: bool = False


@dataclass(frozen=True)
class Gradient(Op):
    """One backward pass from ``target`` to every layer in ``wrt`` (no parameter gradients)."""

    capture: str = ""
    target: Target = Target("logit")
    wrt: tuple[str, ...] = ()

    @property
    def deps(self):
        return (self.capture,)


@dataclass(frozen=True)
class PathGradient(Op):
    """Path-integrated gradient of ``target`` at ``layer``: the mean of ∇f(A·n/N) for n = 0…N−1
    (the articles' integrated variant); ``steps`` extra forward+backward evaluations, batched."""

    capture: str = ""
    target: Target = Target("logit")
    layer: str = ""
    steps: int = 50

    @property
    def deps(self):
        return (self.capture,)


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

    @property
    def deps(self):
        return (self.capture,) + ((self.gradient,) if self.gradient else ())


@dataclass(frozen=True)
class Factorize(Op):
    """NMF of one layer's positions × channels into ``k`` groups (per input)."""

    source: str = ""  # a Reduce op with atom=neuron (activation or attribution)
    k: int = 6
    of: str = "activation"
    sign: Optional[str] = None
    seed: int = 0

    @property
    def deps(self):
        return (self.source,)


@dataclass(frozen=True)
class GroupAttribution(Op):
    """Attribution of each NMF group to a target: Σ (spatial_i ⊗ channel_i) · ∇A target."""

    groups: str = ""
    gradient: str = ""  # a Reduce op with atom=gradient

    @property
    def deps(self):
        return (self.groups, self.gradient)


@dataclass(frozen=True)
class Combine(Op):
    """A transform over content results: compare (a − b), top_k, select, filter."""

    op: str = "compare"
    inputs: tuple[str, ...] = ()
    k: Optional[int] = None
    by: Optional[str] = None
    atoms: Optional[tuple[int, ...]] = None
    threshold: float = 0.0

    @property
    def deps(self):
        # filter's `by` is a content computed like the inputs (top_k's `by` is a word: value | abs)
        return self.inputs + ((self.by,) if self.op == "filter" and self.by else ())


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

    @property
    def deps(self):
        return tuple(x for x in (self.source, self.vectors) if x)

    @property
    def setting_dict(self) -> dict:
        return dict(self.settings)


@dataclass(frozen=True)
class ActivationGrid(Op):
    """One icon per position of ``layer`` for each image, optimised with parameters shared through
    an NMF of the positions; each step optimises a random sample of cells."""

    source: str = ""  # a Reduce op with atom=neuron (the activation)
    layer: str = ""
    settings: tuple = ()
    seed: int = 0

    @property
    def deps(self):
        return (self.source,)


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

    @property
    def deps(self):
        return tuple(x for x in (self.source, self.vectors, self.groups) if x)


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

    @property
    def deps(self):
        return (self.collect,)


@dataclass(frozen=True)
class Grid(Op):
    """``n`` × ``n`` cells over a layout: count, mean activation, mean attribution and top class of
    each cell with at least ``min_count`` samples, and ``examples`` data-set patches per cell."""

    layout: str = ""
    n: int = 20
    min_count: int = 5
    examples: int = 4

    @property
    def deps(self):
        return (self.layout,)


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

    @property
    def deps(self):
        return (self.grid,)


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

    @property
    def deps(self):
        return (self.icons,)


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

    @property
    def deps(self):
        return (tuple(s.op for s in self.series) + tuple(self.icons)
                + tuple(x for x in (self.groups, self.detail) if x))

    @property
    def option_dict(self) -> dict:
        return dict(self.options)


def _images(n: int) -> str:
    return f"{n} image" + ("s" if n != 1 else "")


def _size(n: int) -> str:
    if n >= MiB:
        return f"{n / MiB:8.1f} MiB"
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
        for pg in self.of_type(PathGradient):
            fwd += 1  # batched over the path points
            bwd += 1
        return {"forward": fwd, "backward": bwd}

    def topological(self) -> list[AnyOp]:
        order, seen = [], set()

        def visit(i: str) -> None:
            if i in seen:
                return
            seen.add(i)
            for d in self.ops[i].deps:
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
            stack.extend(self.ops[i].deps)
        return out

    # ---------------------------------------------------------------- memory
    def _numel(self, layer: str) -> int:
        n = 1
        for s in self.layer_shapes.get(layer, ()):
            n *= s
        return n

    def estimated_bytes(self, op: AnyOp) -> int:
        b = (self.n_images or len(self.inputs)) * (2 if self.dtype != "float32" else 4)
        if isinstance(op, Capture):
            return b * sum(self._numel(l) for l in op.layers)
        if isinstance(op, Gradient):
            return b * sum(self._numel(l) for l in op.wrt)
        if isinstance(op, PathGradient):
            return b * op.steps * self._numel(op.layer) * 2
        if isinstance(op, Reduce):
            n = self._numel(op.layer)
            shape = self.layer_shapes.get(op.layer, (1,))
            if op.atom in ("neuron", "gradient"):
                return b * n
            if op.atom == "spatial":
                return b * (n // max(shape[0], 1))
            if op.atom == "channel":
                return b * shape[0]
            return b
        if isinstance(op, Factorize):
            src = self.ops[op.source]
            shape = self.layer_shapes.get(src.layer, (1, 1, 1))
            hw = self._numel(src.layer) // max(shape[0], 1)
            return b * op.k * (hw + shape[0])
        return 0

    # ---------------------------------------------------------------- EXPLAIN
    def explain(self) -> str:
        p = self.passes()
        lines = [
            f"plan for {self.source or '<spec>'}",
            f"  model   {self.model}   input "
            + (f"{_images(self.n_images or len(self.inputs))}: {', '.join(self.inputs)}" if self.inputs else "none (atlases only)"),
            f"  device  {self.device}" + (f" ({self.resolved_device})" if self.resolved_device and
                                          self.resolved_device != self.device else "") + f"   dtype {self.dtype}",
            f"  passes  {p['forward']} forward, {p['backward']} backward"
            + (f"   (one element at a time: {self.unfused.get('forward', 0)} forward, "
               f"{self.unfused.get('backward', 0)} backward)" if self.unfused else ""),
            "",
        ]
        total = 0
        width = 0
        rows = []
        for op in self.topological():
            if isinstance(op, Capture) and not op.layers and not op.needs_grad:
                continue  # nothing read from the inputs (an atlas-only spec)
            est = self.estimated_bytes(op)
            total += est
            rows.append((op, est))
        for op, est in rows:
            desc = self._describe(op)
            width = max(width, len(desc))
        for op, est in rows:
            desc = self._describe(op)
            mem = _size(est) if est else ""
            lines.append(f"  {desc:<{width}}  {mem}")
        lines.append("")
        lines.append(f"  estimated tensor memory: {_size(total).strip()}")
        fv = self.of_type(FeatureVis)
        if fv:
            batches = sorted({op.batch for op in fv})
            lines.append(f"  icons: {len(fv)} feature-visualisation request(s) in {len(batches)} batched optimisation(s) "
                         f"({', '.join(batches)}); each icon is cached on its own")
        for c in self.of_type(Collect):
            per = sum(self.layer_shapes.get(l, (1, 1, 1))[0] + len(self.classes) + 1 for l in c.layers)
            rows = c.n * (1 if c.positions != "all" else max(
                (self.layer_shapes.get(l, (1, 1, 1))[-1] * self.layer_shapes.get(l, (1, 1, 1))[-2] for l in c.layers), default=1))
            atlases = sum(1 for p in self.elements if p.presentation == "atlas")
            lines.append(f"  atlas collection: one pass over {c.n} images serves {atlases} atlas view(s); "
                         f"store ≈ {_size(rows * per * 4).strip()} on disk (resumable, in the cache folder)")
        if self.link_info:
            for li in self.link_info:
                lines.append(f"  link {li.source}.{li.event} → {li.element}.{li.target}: selects a {li.kind}"
                             + (f" of {li.source_layer}" if li.kind in ("position", "channel") else "")
                             + f"; up to {li.precompute} selections precomputed for the static report, any live in "
                               "`interpgram serve`")
        return "\n".join(lines)

    def _cls(self, c: int) -> str:
        return self.classes[c] if 0 <= c < len(self.classes) else str(c)

    def _describe(self, op: AnyOp) -> str:
        name = type(op).__name__
        w = max(len(i) for i in self.ops)
        if isinstance(op, Capture):
            return f"{op.id:<{w}} Capture      forward {', '.join(op.layers)}" + (" (+graph)" if op.needs_grad else "")
        if isinstance(op, Gradient):
            return f"{op.id:<{w}} Gradient     backward ∂{op.target.describe(self.classes)} → {', '.join(op.wrt)}"
        if isinstance(op, PathGradient):
            return f"{op.id:<{w}} PathGradient {op.steps} points ∂{op.target.describe(self.classes)} → {op.layer}"
        if isinstance(op, Reduce):
            if op.atom == "gradient":
                return f"{op.id:<{w}} Gradient of  {op.layer} from {op.gradient}"
            what = f"{op.layer} × {op.gradient}" if op.gradient else op.layer
            return f"{op.id:<{w}} {'Attribute' if op.gradient else 'Activation':<12} {what} by {op.atom}"
        if isinstance(op, Factorize):
            return f"{op.id:<{w}} Factorize    NMF k={op.k} of {op.source} ({op.of})"
        if isinstance(op, GroupAttribution):
            return f"{op.id:<{w}} GroupAttr    {op.groups} · {op.gradient}"
        if isinstance(op, Combine):
            return f"{op.id:<{w}} Transform    {op.op}({', '.join(op.inputs)})"
        if isinstance(op, FeatureVis):
            st = op.setting_dict
            which = (f"{len(op.atoms)} given" if op.atoms else
                     f"top {op.per_position} per position" if op.per_position else
                     f"top {op.top}" + (" each sign" if op.both_signs else "") if op.top else "per group")
            return (f"{op.id:<{w}} FeatureVis   {op.objective} icons of {op.layer} ({which}) · {op.batch}: "
                    f"{st.get('size')} px, {st.get('steps')} steps × {st.get('attempts', 1)}")
        if isinstance(op, ActivationGrid):
            st = dict(op.settings)
            return (f"{op.id:<{w}} ActGrid      {op.layer}: a {st.get('cell_size')} px icon per position, "
                    f"{st.get('steps')} steps × {st.get('sample')} cells, {st.get('groups')} shared NMF images")
        if isinstance(op, Examples):
            which = (f"{len(op.atoms)} given" if op.atoms else "every group" if op.atom == "group"
                     else f"top {op.count} per image")
            return (f"{op.id:<{w}} Examples     top {op.top} of {op.dataset} ({op.split}, n={op.n}) per {op.atom} atom "
                    f"of {op.layer} ({which}){', patches' if op.patch else ''}")
        if isinstance(op, Collect):
            return (f"{op.id:<{w}} Collect      {op.dataset} ({op.split}, n={op.n}, {op.positions} positions) → "
                    f"{', '.join(op.layers)}: activation + attribution to every class, chunks of {op.chunk}")
        if isinstance(op, Layout):
            which = {"activation": "all samples", "class": f"class {self._cls(op.classes[0])}" if op.classes else "class",
                     "compare": " vs ".join(self._cls(c) for c in op.classes)}[op.kind]
            return (f"{op.id:<{w}} Layout       {op.layer} ({which}): UMAP {op.metric} n_neighbors={op.n_neighbors} "
                    f"min_dist={op.min_dist:g}{', whitened' if op.whiten else ''}, fit on ≤{op.fit_sample}")
        if isinstance(op, Grid):
            return f"{op.id:<{w}} Grid         {op.n}×{op.n} over {op.layout}, cells with ≥{op.min_count} samples"
        if isinstance(op, AtlasIcons):
            st = dict(op.settings)
            return (f"{op.id:<{w}} AtlasIcons   a whitened cossim^{op.cossim_pow:g} icon per cell of {op.grid}: "
                    f"{st.get('size')} px, {st.get('steps')} steps × {st.get('attempts', 1)}, batches of {op.batch}")
        if isinstance(op, PatchTest):
            return (f"{op.id:<{w}} PatchTest    each cell's icon ({op.crop}, {op.size} px) pasted onto {op.n} images of "
                    f"{op.dataset} ({op.split}) not predicted {self._cls(op.cls)}: how many become {self._cls(op.cls)}")
        if isinstance(op, Present):
            what = ", ".join(s.label for s in op.series) or f"{op.layer} ({op.content_kind})"
            return f"{op.id:<{w}} Present      {op.element}: {op.presentation} of {what}"
        return f"{op.id:<{w}} {name}"
