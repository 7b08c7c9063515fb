"""Spec → Plan: lower every element to ops and fuse them (the entry points of the compiler).

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

from typing import Any, Optional

from interpgram.grammar.compile.builder import Builder
from interpgram.grammar.compile.element import lower_element, lower_varied
from interpgram.grammar.compile.links import apply_selection, resolve_links
from interpgram.grammar.compile.model_info import CompileOptions, ModelInfo
from interpgram.grammar.compile.vocab import CAPTURE_ID, COLLECT_ID, Selection
from interpgram.grammar.plan import Capture, Collect, Gradient, LinkInfo, PathGradient, Plan, Present
from interpgram.grammar.presentation import PRESENTATIONS
from interpgram.grammar.spec.errors import Diagnostic, SpecError, did_you_mean
from interpgram.grammar.spec.load import LoadedSpec
from interpgram.grammar.spec.nodes import AtlasDataset, canonical_presentations


def compile_variants(loaded: LoadedSpec, info: ModelInfo, selections: list[tuple[LinkInfo, Any]],
                     *, base: Optional[Plan] = None, options: Optional[CompileOptions] = None) -> Plan:
    """The linked elements' variants for ``selections`` ((link, value) pairs) as one fused plan:
    one forward pass, one backward per distinct target, shared nodes — as for the spec itself.
    Presents carry ``link`` (the link's index) and ``variant`` (the selection key)."""
    spec = loaded.spec
    b = Builder(loaded, info, options or CompileOptions())
    presents: list[Present] = []
    for li, value in selections:
        sel = Selection(li.kind, value, li.target, li.source_layer, li.source_shape)
        got, problem = apply_selection(b, li.element, spec.elements[li.element], sel, variant=li.key(value),
                                        link=li.index)
        if problem:
            raise SpecError([loaded.error(("links", li.index), f"link {li.source} → {li.element}.{li.target}, "
                                                               f"selection {li.key(value)}: {problem}")])
        presents.extend(got)
    if b.diags:
        raise SpecError(b.diags)
    plan = finish_plan(b, loaded, info, presents, layout=[], unfused=(0, 0))
    if base is not None:
        plan.link_info = list(base.link_info)
    return plan


def compile_spec(loaded: LoadedSpec, info: ModelInfo, options: Optional[CompileOptions] = None) -> Plan:
    """Lower a validated spec to a fused plan for ``info``'s model. Raises :class:`SpecError`."""
    plan, diags = compile_all(loaded, info, options)
    if diags:
        raise SpecError(diags)
    return plan


def compile_all(loaded: LoadedSpec, info: ModelInfo,
                options: Optional[CompileOptions] = None) -> tuple[Plan, list[Diagnostic]]:
    """Lower a spec and return every problem found instead of raising: (plan, diagnostics). With
    diagnostics the plan holds only the elements that compiled (enough for the checks that follow
    compiling, which report their own problems in the same run); it is never to be executed."""
    spec = loaded.spec
    b = Builder(loaded, info, options or CompileOptions())
    presents: list[Present] = []
    unfused_fwd = unfused_bwd = 0
    for el_id, el in spec.elements.items():
        got, targets = lower_varied(b, el_id, el) if el.vary is not None else lower_element(b, el_id, el)
        if targets is None:
            continue
        unfused_fwd += 1 + sum(1 for t in targets if isinstance(t, tuple))
        unfused_bwd += len(targets)
        presents.extend(got)

    # in the file's order; the elements left out for schema errors are reported already
    ids = sorted(set(spec.elements) | set(loaded.left_out), key=lambda e: loaded.pos(("elements", e), key=True))
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
    links = resolve_links(b, presents)
    if spec.input is None:
        needs = sorted({p.element for p in presents if PRESENTATIONS[p.presentation].per_input})
        if needs:
            b.diags.append(loaded.error((), f"input is missing: element{'s' if len(needs) > 1 else ''} "
                                            f"{', '.join(needs)} show{'' if len(needs) > 1 else 's'} an input image "
                                            "(input: builtin:shapes/7 or an image path); only atlases need none"))
    if spec.dataset is not None and not any(PRESENTATIONS[n].uses_dataset for el in spec.elements.values()
                                            for n, _ in canonical_presentations(el.presentation)):
        b.diags.append(loaded.error(("dataset",), "dataset: is the data set of atlases, and no element is an atlas "
                                                  "(dataset examples name their data set in the examples presentation)",
                                    key=True))
    layout = [[e for e in row if e in spec.elements] for row in layout]
    plan = finish_plan(b, loaded, info, presents, layout=[r for r in layout if r], unfused=(unfused_fwd, unfused_bwd))
    plan.link_info = links
    plan.vary_models = {e: list(el.vary.model) for e, el in spec.elements.items()
                        if el.vary is not None and el.vary.kind == "model"}
    return plan, list(b.diags)


def finish_plan(b: Builder, loaded: LoadedSpec, info: ModelInfo, presents: list[Present], *,
            layout: list, unfused: tuple[int, int]) -> Plan:
    spec = loaded.spec
    plan = Plan(model=spec.model_spec.source, inputs=tuple(spec.inputs), title=spec.title or "",
                source=loaded.file, seed=spec.execution.seed, device=spec.execution.device,
                dtype=spec.execution.dtype, classes=list(info.classes), layout=[list(r) for r in layout],
                resolved_device=b.options.resolved_device, n_images=b.options.n_images)
    needs_grad = bool(b.grad_ids) or any(isinstance(o, PathGradient) for o in b.ops.values())
    ordered = sorted(b.capture_layers, key=info.order)
    plan.ops[CAPTURE_ID] = Capture(CAPTURE_ID, inputs=tuple(spec.inputs), layers=tuple(ordered), needs_grad=needs_grad)
    for t, gid in b.grad_ids.items():
        wrt = tuple(sorted(b.grad_wrt[t], key=info.order))
        plan.ops[gid] = Gradient(gid, capture=CAPTURE_ID, target=t, wrt=wrt)
    if b.atlas_layers:
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
