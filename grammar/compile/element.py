"""One element → its Present ops: its content lowered once, then each presentation's own ops
(``Presentation.lower``); ``vary`` makes one set per class or layer."""
from __future__ import annotations

from typing import Optional

from pydantic import ValidationError

from interpgram.grammar.compile.builder import Builder, option_error
from interpgram.grammar.compile.vocab import Content, Invalid, Selection, top_rank
from interpgram.grammar.plan import Present
from interpgram.grammar.presentation import PRESENTATIONS
from interpgram.grammar.spec.nodes import (
    ActivationContent,
    AttributionContent,
    TransformContent,
    canonical_presentations,
)


def with_layer(content, layer: str):
    """``content`` with its (source) layer replaced: the activation's layer, an attribution's
    ``from`` layer, recursively through transforms."""
    if isinstance(content, ActivationContent):
        return content.model_copy(update={"activation": content.activation.model_copy(update={"layer": layer})})
    if isinstance(content, AttributionContent):
        a = content.attribution
        return content.model_copy(update={"attribution": a.model_copy(update={"from_": a.from_.model_copy(update={"layer": layer})})})
    if isinstance(content, TransformContent):
        t = content.transform
        upd = {k: with_layer(getattr(t, k), layer) for k in ("of", "a", "b") if getattr(t, k) is not None}
        if t.by is not None and not isinstance(t.by, str):
            upd["by"] = with_layer(t.by, layer)
        return content.model_copy(update={"transform": t.model_copy(update=upd)})
    return content


def lower_varied(b: Builder, el_id: str, el) -> tuple[list[Present], Optional[set]]:
    """An element with ``vary``: one set of presents per class or layer, side by side (models are
    compared by the pipeline, which compiles the element again for each other model)."""
    v = el.vary
    vpath = ("elements", el_id, "vary", v.kind if v.kind != "class" else "class")
    out: list[Present] = []
    targets: set = set()
    if v.kind == "model":
        got, t = lower_element(b, el_id, el, side=str(b.loaded.spec.model_spec.source))
        return got, t
    for i, value in enumerate(v.values):
        n = len(b.diags)
        if v.kind == "class":
            rank = top_rank(value, b.info.classes)
            if rank is not None:
                idx, side = value, str(value)
            else:
                try:
                    idx = b.class_index(value, vpath + (i,))
                except Invalid:
                    continue
                side = b.info.classes[idx]
            got, problem = apply_selection(b, el_id, el, Selection("class", idx, "class"), side=side)
            if problem:
                b.diags.append(b.loaded.error(vpath + (i,), f"vary class: {problem} (vary class re-targets an "
                                                             "attribution to the output)"))
                continue
            t = set(b.element_targets)
        else:
            try:
                b.check_layer(value, vpath[:-1] + (i,))
            except Invalid:
                continue
            got, t = lower_element(b, el_id, el.model_copy(update={"content": with_layer(el.content, value)}),
                                    side=value)
            if t is None or len(b.diags) > n:
                continue
        out.extend(got)
        targets |= t or set()
    return out, (targets if out else None)


def lower_element(b: Builder, el_id: str, el, *, variant: str = "", link: int = -1,
                   focus: Optional[int] = None, side: str = "") -> tuple[list[Present], Optional[set]]:
    """One element → its Present ops (one per presentation); diagnostics go to ``b.diags``.
    Returns (presents, the gradient targets it needed) — targets is None when the content failed."""
    epath = ("elements", el_id)
    b.element_targets = set()
    whole = [name for name, _ in canonical_presentations(el.presentation) if PRESENTATIONS[name].whole_element]
    if whole:  # a presentation that lowers its element itself (an atlas: a data set, not this content)
        return PRESENTATIONS[whole[0]].lower_element(b, el_id, el, side=side)
    try:
        content = b.content(el.content, epath + ("content",))
    except Invalid:  # the presentations' options are still checked: every problem is reported at once
        for i, (name, opts) in enumerate(canonical_presentations(el.presentation)):
            ppath = epath + ("presentation",) + ((i,) if isinstance(el.presentation, list) else ())
            try:
                PRESENTATIONS[name].Options.model_validate(opts)
            except ValidationError as err:
                b.diags.extend(option_error(b.loaded, ppath, name, PRESENTATIONS[name].Options, opts, e)
                               for e in err.errors())
        return [], None
    targets = set(b.element_targets)
    out = []
    for i, (name, opts) in enumerate(canonical_presentations(el.presentation)):
        ppath = epath + ("presentation",) + ((i,) if isinstance(el.presentation, list) else ())
        kind = PRESENTATIONS[name]
        try:
            options = kind.Options.model_validate(opts)
        except ValidationError as err:  # every problem is reported; the element is left out with a diagnostic
            for e in err.errors():
                b.diags.append(option_error(b.loaded, ppath, name, kind.Options, opts, e))
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
            icons, detail = kind.lower(b, content, options.model_dump(), ppath)
        except Invalid:
            continue
        pid = (f"el:{el_id}" + (f":{i}" if i else "") + (f"@{link}:{variant}" if link >= 0 else "")
               + (f"@side:{side}" if side else ""))
        title = (el.title or default_title(el_id, name, content)) + (f" · {side}" if side else "")
        out.append(Present(
            pid, element=el_id, presentation=name, options=tuple(sorted(options.model_dump().items())),
            atom=content.atom, layer=content.layer, content_kind=content.kind, series=tuple(content.series),
            groups=content.groups, title=title, icons=icons, detail=detail,
            grammar=kind.grammar(content.sentence), focus=focus, variant=variant, link=link, side=side,
        ))
    return out, targets


def default_title(el_id: str, presentation: str, c: Content) -> str:
    what = {"activation": "activation", "attribution": "attribution", "transform": "comparison"}[c.kind]
    labels = ", ".join(s.label for s in c.series if c.kind != "activation")
    return f"{el_id}: {c.layer} {c.atom} {what}" + (f" → {labels}" if labels else "")


def apply_selection(b: Builder, el_id: str, el, sel: Selection, *, variant: str = "",
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
        presents, _ = lower_element(b, el_id, el, variant=variant, link=link, focus=focus, side=side)
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
    maps = [p.presentation for p in presents if PRESENTATIONS[p.presentation].draws_positions]
    if maps and sel.kind == "position" and sel.target in ("from", "position") and presents[0].atom == "spatial":
        return [], (f"{maps[0]} draws a map over positions, and one selected position is a single value; "
                    "drive `to` of a layer-to-layer attribution, or the channels at the position (atom: channel)")
    if not b.sel_used:
        return [], b.sel_problem or f"nothing in this element's content takes a {sel.kind} as `{sel.target}`"
    return presents, ""
