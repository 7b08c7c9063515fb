"""Links: what a source element selects, and lowering a target element with a selection applied
(a link that cannot work is a positioned error)."""
from __future__ import annotations

from typing import Optional

from interpgram.grammar.compile.builder import Builder
from interpgram.grammar.compile.element import apply_selection
from interpgram.grammar.compile.model_info import ModelInfo
from interpgram.grammar.compile.vocab import Selection
from interpgram.grammar.plan import LinkInfo, Present
from interpgram.grammar.presentation import PRESENTATIONS


def selection_kind(p: Present, info: ModelInfo) -> Optional[str]:
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


def resolve_links(b: Builder, presents: list[Present]) -> list[LinkInfo]:
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
        kind = selection_kind(src, info)
        if kind is None:
            b.diags.append(loaded.error(("links", i, "from"), f"link from {link.from_!r}: element {src_el!r} shows "
                                        f"{src.layer}·{src.atom}, which has no atoms to {event} (positions, channels, "
                                        "classes or groups)"))
            continue
        shape = info.shape(src.layer) if src.layer not in ("output",) else (len(info.classes),)
        sample = {"position": (0, 0), "channel": 0, "class": 0, "group": 0}[kind]
        sel = Selection(kind, sample, target, src.layer, shape)
        probe = Builder(loaded, info, b.options)  # a throwaway builder: checking must not add ops to the plan
        _, problem = apply_selection(probe, dst_el, spec.elements[dst_el], sel)
        if problem:
            what = {"position": f"a position of {src.layer}", "channel": f"a channel of {src.layer}",
                    "class": "a class", "group": "an NMF group"}[kind]
            b.diags.append(loaded.error(("links", i, "to"), f"link {link.from_} → {link.to}: {src_el!r} selects {what}, "
                                        f"but {problem}"))
            continue
        out.append(LinkInfo(i, src_el, event, dst_el, target, kind, src.layer, tuple(shape), link.precompute))
    return out
