"""Links: a selection in one element (a position, a channel, a class, a group) drives another.

A link's target element is re-planned for each selection (``compile_variants``): the selection
goes through the same compiler, fused plan and result cache as the spec itself, so a selection
asked for twice is computed once. Two consumers:

* the static report precomputes the selections a reader can make, within the link's
  ``precompute`` bound (all positions of the source layer when they fit, else an even subsample;
  the channels or classes the source element shows; every group), and switches between them in
  the page;
* the dashboard (``interpgram serve``) computes any selection when it is made
  (:func:`variant_views`).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np

from interpgram.backends.execute.executor import execute
from interpgram.backends.render.views import build_views
from interpgram.grammar import Plan, link_kinds
from interpgram.grammar.compile import compile_variants
from interpgram.grammar.plan import IconCount, LinkInfo, Present, count_icons
from interpgram.grammar.presentation import PRESENTATIONS


def position_domain(shape: tuple[int, ...], bound: int) -> list[tuple[int, int]]:
    """Positions (x, y) of a (C, H, W) layer to precompute: all of them when ``H·W ≤ bound``,
    else every s-th position in both directions (s the smallest stride that fits)."""
    h, w = shape[-2:]
    if bound <= 0:
        return []
    if h * w <= bound:
        return [(x, y) for y in range(h) for x in range(w)]
    s = 2
    while math.ceil(h / s) * math.ceil(w / s) > bound:
        s += 1
    return [(x, y) for y in range(min(s // 2, h - 1), h, s) for x in range(min(s // 2, w - 1), w, s)]


def _sources(plan: Plan, li: LinkInfo) -> list[Present]:
    return [p for p in plan.elements if p.element == li.source]


def _shown_atoms(plan: Plan, p: Present, results) -> list[int]:
    """Channel (or class) indices the source element shows, over every input image, strongest first."""
    own = PRESENTATIONS[p.presentation].shown_atoms(p, results)
    if own is not None:  # the presentation knows what it shows (icons, the top bars)
        return own
    if not p.series:
        return []
    v = results.values[p.series[0].op]["value"].float().numpy()
    if v.ndim != 2:
        return []
    out: list[int] = []
    for row in v:
        out += [int(i) for i in np.argsort(-np.abs(row), kind="stable")]
    return list(dict.fromkeys(out))


def domain(plan: Plan, li: LinkInfo, results, extra: tuple = ()) -> list[Any]:
    """The selections of ``li`` that a static report precomputes (at most ``li.precompute``).
    ``extra``: (plan, results) pairs of link variants already computed — when the source element is
    itself the target of a link, the atoms its variants show can be selected too."""
    if li.precompute <= 0:
        return []
    if li.kind == "position":
        return position_domain(li.source_shape, li.precompute)
    srcs = _sources(plan, li)
    if li.kind == "group":
        k = plan.ops[srcs[0].groups].k if srcs and srcs[0].groups else 0
        return list(range(min(k, li.precompute)))
    atoms: list[int] = []
    for p in srcs:
        atoms += _shown_atoms(plan, p, results)
    for vplan, vresults in extra:
        for p in _sources(vplan, li):
            atoms += _shown_atoms(vplan, p, vresults)
    if not atoms:  # nothing to go by: every channel or class, in order
        n = li.source_shape[0] if li.source_shape else 0
        atoms = list(range(n))
    return list(dict.fromkeys(atoms))[:li.precompute]


def _group_count(plan: Plan, li: LinkInfo) -> int:
    """How many NMF groups a group link's source element has (its selections), not the layer's channels."""
    srcs = _sources(plan, li)
    return plan.ops[srcs[0].groups].k if srcs and srcs[0].groups else 0


def planned_domain(plan: Plan, li: LinkInfo) -> tuple[list[Any], bool]:
    """The selections of ``li`` a static report precomputes, as far as the plan knows before running:
    (values, exact). Positions and groups are known; channels and classes are those the source element
    shows, known after the run: stand-ins, as many as the most there can be (``precompute``, at most
    the layer's width)."""
    if li.precompute <= 0:
        return [], True
    if li.kind == "position":
        return position_domain(li.source_shape, li.precompute), True
    if li.kind == "group":
        srcs = _sources(plan, li)
        k = plan.ops[srcs[0].groups].k if srcs and srcs[0].groups else 0
        return list(range(min(k, li.precompute))), True
    n = li.source_shape[0] if li.source_shape else 0
    return list(range(min(n, li.precompute))), False


def icon_work(prep) -> tuple[IconCount, list[str]]:
    """Every icon a render of ``prep`` optimises, the link selections' included (each selection
    re-plans its target element, and a target that shows icons makes new ones for it): (the count,
    the lines ``interpgram plan`` prints)."""
    plan = prep.plan
    own = count_icons([plan])
    plans, parts, exact = [plan], [], True
    for li in plan.link_info:
        values, known = planned_domain(plan, li)
        if not values:
            continue
        vplan = variant_plan(prep, [(li, v) for v in values])
        alone = count_icons([vplan])
        if not alone.total:
            continue
        plans.append(vplan)
        exact = exact and known and alone.exact
        parts.append(f"link {li.source}.{li.event} → {li.element}.{li.target}: {'' if known else 'at most '}"
                     f"{len(values)} selection(s) precomputed, {'' if known and alone.exact else 'at most '}"
                     f"{alone.total} icon(s)")
    total = count_icons(plans)
    total.exact = total.exact and exact
    if not parts:
        return total, (["  " + total.describe()] if total.total else [])
    lines = ["  " + total.describe(f"{own.total} for the elements as the spec states them, {total.total - own.total} "
                                   "more for the link selections the static report holds")]
    lines += [f"         {p}" for p in parts]
    return total, lines


def selections(plan: Plan, results, extra: tuple = ()) -> list[tuple[LinkInfo, Any]]:
    return [(li, v) for li in plan.link_info for v in domain(plan, li, results, extra)]


def mark_sources(plan: Plan, by_element: dict[str, list]) -> None:
    """Views of a link's source element (as the spec states it, or a variant of it) carry
    ``link_source``: their chart then defines the ``link`` selection the page listens to."""
    for li in plan.link_info:
        for v in by_element.get(li.source, []):
            v.link_source = {"event": li.event, "kind": li.kind}


def variant_plan(prep, sels: list[tuple[LinkInfo, Any]]) -> Plan:
    return compile_variants(prep.loaded, prep.info, sels, base=prep.plan, options=prep.options)


def run_variants(prep, inputs, sels: list[tuple[LinkInfo, Any]], *, cache,
                 progress: Optional[Callable[[str, int, int], None]] = None):
    """Compute the variants of ``sels`` as one fused plan. Returns (plan, results, views), views
    keyed by element id as :func:`backends.views.build_views` returns them."""

    plan = variant_plan(prep, sels)
    results = execute(plan, prep.model, inputs, cache=cache, batch_size=prep.loaded.spec.execution.batch_size,
                      progress=progress)
    views = build_views(plan, inputs, results)
    mark_sources(prep.plan, views)  # a target that is itself a link's source stays one
    return plan, results, views


def variant_views(prep, inputs, link_index: int, value: Any, *, cache) -> list:
    """The target element's views for one selection of link ``link_index`` (the dashboard's path)."""
    li = next((l for l in prep.plan.link_info if l.index == link_index), None)
    if li is None:
        raise KeyError(f"no link {link_index} (links: {[l.index for l in prep.plan.link_info]})")
    _, _, views = run_variants(prep, inputs, [(li, value)], cache=cache)
    return [v for vs in views.values() for v in vs]


def parse_key(li: LinkInfo, key: str) -> Any:
    """A selection key as charts report it ("3,5", "17") → the link's value."""
    return link_kinds.parse_key(li.kind, key)


def describe(li: LinkInfo, value: Any, classes: list[str] | None = None) -> str:
    """How a selection of ``li`` reads ("position (3, 5) of conv4"), the same words as the report's."""
    return link_kinds.label(li.kind, link_kinds.key_of(li.kind, value), names=classes, layer=li.source_layer)


def report_links(plan: Plan, base_views: dict[str, list], variant_views_: dict[str, list], n_images: int) -> tuple[list[dict], dict[str, list]]:
    """The static report's link table and the variant views by base view id.

    Each entry: {link, source (view id), target (base view id), kind, event, keys (precomputed),
    label, bound, total}. Views are paired per input image."""
    def per_image(views: list, i: int) -> list:
        return [v for v in views if getattr(v, "image", 0) == i]

    variants: dict[str, list] = {}
    for vs in variant_views_.values():
        for v in vs:
            variants.setdefault(v.base, []).append(v)
    table = []
    for li in plan.link_info:
        keys = sorted({v.key for vs in variants.values() for v in vs if v.link == li.index})
        total = (li.source_shape[-1] * li.source_shape[-2] if li.kind == "position" else
                 _group_count(plan, li) if li.kind == "group" else  # a group link selects one of k groups
                 li.source_shape[0] if li.source_shape else len(keys))
        for i in range(n_images):
            for s in per_image(base_views.get(li.source, []), i):
                for t in per_image(base_views.get(li.element, []), i):
                    entry = {"link": li.index, "source": s.id, "target": t.id, "kind": li.kind,
                             "event": li.event, "keys": keys, "bound": li.precompute, "total": total,
                             "source_element": li.source, "layer": li.source_layer,
                             "label": f"{li.source}.{li.event} → {li.element}.{li.target}"}
                    if li.kind == "class":
                        entry["names"] = {str(k): plan.classes[int(k)] for k in keys}
                    table.append(entry)
    return table, variants
