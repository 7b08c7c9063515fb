"""One browser session's page (:class:`Dashboard`): the pickers, the charts in the spec's layout,
live links; work goes to the shared :class:`~interpgram.backends.serve.session.Session`."""
from __future__ import annotations

import html
import json
import traceback
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

from interpgram.backends import links
from interpgram.backends.data.inputs import InputError, expand_refs
from interpgram.backends.serve.session import (
    HOVER_DEBOUNCE_MS,
    POLL_S,
    SPEC_CLASSES,
    SPEC_INPUTS,
    ClassRun,
    Computed,
    Good,
    Session,
    error_text,
)
from interpgram.grammar import link_kinds


# ============================================================================ one session's page
def _esc(s: Any) -> str:
    return html.escape(str(s))


# Panel draws every component in its own shadow root: the CSS goes to each HTML pane (stylesheets)
CSS = (Path(__file__).parent / "assets" / "dashboard.css").read_text(encoding="utf-8")
CARD_STYLE = {"border": "1px solid #e0e0e0", "border-radius": "6px", "padding": "2px 10px 8px 10px",
              "background": "white"}


class Dashboard:
    """One browser session's page over a shared :class:`Session`.

    Work runs through ``submit``: in a server session on the engine's worker threads (results are
    applied on the session's document), without one (tests) synchronously."""

    def __init__(self, engine: Session, *, doc=None, periodic: bool = False):
        import panel as pn

        self.pn = pn
        self.engine = engine
        self.doc = doc
        self.version = -1
        self.good: Optional[Good] = None
        self.comp: Optional[Computed] = None
        self.cls: Optional[ClassRun] = None
        self.drawn_version = -1
        self.input_ref: Optional[str] = None  # None: the spec's inputs
        self.class_index: Optional[int] = None  # None: as the spec says
        self.gen = 0  # bumped on every redraw: results computed for an older page are dropped
        self.panes: dict[str, Any] = {}  # view id -> Vega pane
        self.captions: dict[str, Any] = {}  # view id -> caption pane
        self.shown: dict[tuple[int, int], str] = {}  # (link, image) -> selection key shown
        self._want: dict[tuple[int, int], str] = {}
        self._inflight: set[tuple[int, int]] = set()
        self._syncing = False
        engine.sessions.add(self)
        self.log: deque[str] = deque(maxlen=200)  # what happened (the newest last), for tests and debugging
        self.last_raw: Any = None  # the last value a Vega selection reported (its format is Panel's)

        self.title = self._html("", css_classes=["ig-title"], sizing_mode="stretch_width")
        self.input_select = pn.widgets.Select(label="input", options={}, width=260)
        self.input_text = pn.widgets.TextInput(label="other input",
                                               placeholder="builtin:shapes/N or an image in the input folder",
                                               width=260)
        self.class_select = pn.widgets.Select(label="class", options={}, width=200)
        muted = {"font-size": "12px", "color": "#5f6368"}
        self.class_note = self._html("", width=360, styles=muted)
        self.status = self._html("", sizing_mode="stretch_width", styles=muted)
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width",
                                   css_classes=["ig-spec-error"], stylesheets=[CSS])
        self.input_alert = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width",
                                         css_classes=["ig-input-error"], stylesheets=[CSS])
        self.body = pn.Column(sizing_mode="stretch_width", css_classes=["ig-body"])
        pickers = pn.Row(self.input_select, self.input_text, self.class_select, self.class_note)
        self.layout = pn.Column(self.title, pickers,
                                self.status, self.alert, self.input_alert, self.body,
                                sizing_mode="stretch_width", css_classes=["ig-dashboard"])
        self.input_select.param.watch(self._on_input_select, "value")
        self.input_text.param.watch(self._on_input_text, "value")
        self.class_select.param.watch(self._on_class, "value")
        self.refresh()
        if periodic:
            pn.state.add_periodic_callback(self.tick, period=int(POLL_S * 500))

    def _html(self, text: str, **kw):
        return self.pn.pane.HTML(text, stylesheets=[CSS], **kw)

    # ------------------------------------------------------------------ scheduling
    def submit(self, work: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``work`` (on a worker thread in a server session), then ``done(result or exception)``
        on this session's document."""
        if self.doc is None:
            try:
                r = work()
            except Exception as e:  # noqa: BLE001 - the work's error is handed to done(), which shows it on the page
                r = e
            done(r)
            return
        doc = self.doc

        def finished(fut):
            try:
                r = fut.result()
            except BaseException as e:  # noqa: BLE001 - handed to done, which shows it
                r = e

            def apply():
                from panel.io.state import set_curdoc
                with set_curdoc(doc):
                    try:
                        done(r)
                    except Exception:  # noqa: BLE001 - a bug in drawing: say so in the terminal, keep the session
                        traceback.print_exc()
            try:
                doc.add_next_tick_callback(apply)
            except Exception:  # noqa: BLE001 - the session was closed meanwhile
                pass

        self.engine.executor.submit(work).add_done_callback(finished)

    # ------------------------------------------------------------------ spec versions
    def tick(self) -> None:
        """Redraw when the engine has loaded another version of the spec."""
        if self.engine.version != self.version:
            self.refresh()
        elif self.engine.loading and self.body.objects and not self.body.loading:
            self.body.loading = True  # the spec changed on disk and is being re-prepared

    def refresh(self) -> None:
        version, good, error = self.engine.snapshot()
        self.version = version
        if error:
            self.alert.object = (f"<b>The spec has errors</b> (the server keeps running; fix the file and this page "
                                 f"reloads{' — showing the last good version below' if good else ''}):"
                                 f"<pre class=\"ig-errors\">{_esc(error)}</pre>")
            self.alert.visible = True
        else:
            self.alert.object, self.alert.visible = "", False
        if good is None:
            self.title.object = f"<h1>{_esc(self.engine.path.name)}</h1>"
            self.status.object = ("loading the spec and computing its elements…" if self.engine.loading or not error
                                  else "no dashboard yet: the spec has never loaded without errors")
            return
        if good is self.good:
            self.body.loading = False
            return  # only the error changed: the last good dashboard stays
        self.good = good  # the title changes with the body, when it is drawn
        self._sync_pickers()
        self._show()

    def _sync_pickers(self) -> None:
        good = self.good
        spec = good.prep.loaded.spec
        try:
            refs = expand_refs(spec.inputs)
        except InputError:
            refs = list(spec.inputs)
        opts: dict[str, str] = {}
        if len(refs) > 1:
            opts[f"the spec's {len(refs)} inputs"] = SPEC_INPUTS
            opts.update({r: r for r in refs})
        else:
            opts[f"{refs[0]} (the spec's)" if refs else "the spec's input"] = SPEC_INPUTS
        if self.input_ref is not None and self.input_ref not in opts.values():
            opts[self.input_ref] = self.input_ref  # a typed-in input stays available
        classes = good.prep.info.classes
        copts: dict[str, int] = {"as the spec says": SPEC_CLASSES}
        copts.update({f"{i}: {c}": i for i, c in enumerate(classes)})
        if self.class_index is not None and self.class_index >= len(classes):
            self.class_index = None
        self._syncing = True
        try:
            self.input_select.options = opts
            self.input_select.value = self.input_ref if self.input_ref in opts.values() else SPEC_INPUTS
            self.class_select.options = copts
            self.class_select.value = SPEC_CLASSES if self.class_index is None else self.class_index
        finally:
            self._syncing = False
        # a spec of atlases only shows a data set: there is no input to pick
        self.input_select.visible = self.input_text.visible = bool(refs)

    # ------------------------------------------------------------------ pickers
    def _on_input_select(self, event) -> None:
        if not self._syncing:
            self.choose_input(None if event.new == SPEC_INPUTS else event.new)

    def _on_input_text(self, event) -> None:
        if not self._syncing and event.new and event.new.strip():
            self.choose_input(event.new.strip())

    def _on_class(self, event) -> None:
        if not self._syncing:
            self.choose_class(None if event.new in (None, SPEC_CLASSES) else event.new)

    def choose_input(self, ref: Optional[str]) -> None:
        if self.good is None:
            return
        previous = self.input_ref
        self.input_ref = ref
        self._show(on_error=lambda: self._revert_input(previous))

    def _revert_input(self, previous: Optional[str]) -> None:
        self.input_ref = previous
        self._syncing = True
        try:
            self.input_select.value = previous if previous in self.input_select.options.values() else SPEC_INPUTS
        finally:
            self._syncing = False

    def choose_class(self, index: Optional[int]) -> None:
        if self.good is None:
            return
        self.class_index = None if index is None or int(index) < 0 else int(index)
        self._show()

    # ------------------------------------------------------------------ drawing
    def _show(self, on_error: Optional[Callable[[], None]] = None) -> None:
        """Compute (or fetch) the dashboard for the session's input and class, then draw it."""
        good, ref, cls = self.good, self.input_ref, self.class_index
        self.gen += 1
        gen = self.gen
        self.body.loading = bool(self.body.objects)
        for p in self.panes.values():
            p.loading = True

        def work():
            comp = self.engine.computed(good, ref)
            run = self.engine.class_run(good, comp, cls) if cls is not None else None
            driven = self.engine.class_driven(comp)
            return comp, run, driven

        def done(r):
            if gen != self.gen:
                return
            self.body.loading = False
            if isinstance(r, BaseException):
                for p in self.panes.values():
                    p.loading = False
                what = f"input {ref}" if ref is not None else "the spec's inputs"
                if cls is not None:
                    what += f" with class {cls}"
                self.input_alert.object = (f"<b>{_esc(what)} cannot be shown</b>:"
                                           f"<pre class=\"ig-errors\">{_esc(error_text(r))}</pre>")
                self.input_alert.visible = True
                self.log.append(f"input error: {r}")
                if on_error is not None:
                    on_error()
                if self.drawn_version != good.version and ref is not None:
                    # nothing drawn for this spec version yet: draw the spec's own inputs
                    self.input_ref = None
                    self._sync_pickers()
                    self._show()
                return
            self.input_alert.object, self.input_alert.visible = "", False
            comp, run, driven = r
            self._draw(comp, run, driven)

        self.submit(work, done)

    def _views(self, comp: Computed, run: Optional[ClassRun]) -> tuple[dict[str, list], dict[str, str]]:
        views = dict(comp.views)
        charts = dict(comp.charts)
        if run is not None:
            views.update(run.views)
            charts.update(run.charts)
        return views, charts

    def _draw(self, comp: Computed, run: Optional[ClassRun], driven: list[str]) -> None:
        pn = self.pn
        self.comp, self.cls = comp, run
        self.drawn_version = self.good.version
        if comp.ref is not None and comp.ref not in self.input_select.options.values():
            self._sync_pickers()  # a typed-in input joins the picker
        self.panes, self.captions, self.shown = {}, {}, {}
        self._want, self._inflight = {}, set()
        plan = comp.prep.plan
        views, charts = self._views(comp, run)
        classes = comp.prep.info.classes
        class_name = classes[run.index] if run is not None else None
        targets = {li.element: li for li in plan.link_info}
        rows = []
        for row in plan.layout:
            cards = []
            for el in row:
                for v in views.get(el, []):
                    pane = pn.pane.Vega(json.loads(charts[v.id]), css_classes=["ig-chart"],
                                        debounce=HOVER_DEBOUNCE_MS)
                    self.panes[v.id] = pane
                    note = ""
                    if run is not None and el in run.views:
                        note = f"class picker: <b>{_esc(class_name)}</b>"
                    elif run is not None and el in comp.kept:
                        note = "the class picker leaves this comparison of two classes as the spec says"
                    elif el in targets:
                        li = targets[el]
                        verb = "hover" if li.event == "hover" else "click"
                        what = {"position": "a position", "channel": "a channel", "class": "a class",
                                "group": "a group"}[li.kind]
                        note = f"{verb} {what} in {_esc(li.source)} to change this view"
                    cap = self._html(f'<div class="ig-caption" data-view="{_esc(v.id)}">{note}</div>',
                                       sizing_mode="stretch_width", css_classes=["ig-caption-pane"])
                    self.captions[v.id] = cap
                    card = pn.Column(
                        self._html(f"<h3>{_esc(v.title)}</h3>", sizing_mode="stretch_width"),
                        self._html(f'<div class="ig-grammar" title="the grammar sentence of this element">'
                                     f"<code>{_esc(v.grammar)}</code></div>", sizing_mode="stretch_width"),
                        cap, pane, css_classes=["ig-card", f"ig-el-{v.id}"], name=v.id, styles=CARD_STYLE, margin=6)
                    cards.append(card)
            if cards:
                rows.append(pn.Row(*cards))
        for li in plan.link_info:
            for v in views.get(li.source, []):
                pane = self.panes.get(v.id)
                if pane is not None and pane.selection is not None and "link" in pane.selection.param:
                    pane.selection.param.watch(partial(self._on_link, li.index, v.image), "link")
        self.body.objects = rows
        self.title.object = f"<h1>{_esc(self.good.title)}</h1>"
        st = comp.results.stats
        names = ", ".join(comp.inputs.names)
        n_el = len(comp.prep.loaded.spec.elements)
        self.status.object = '<div class="ig-status">' + (
            f"model <b>{_esc(comp.prep.model.name)}</b> · input {_esc(names)} · {n_el} elements · "
            f"{st.forward_passes} forward / {st.backward_passes} backward passes computed, cache "
            f"{st.cache_hits} hits / {st.cache_misses} misses · {comp.results.device} · "
            f"spec version {self.good.version}"
            + (f" · class {_esc(class_name)}: {len(run.views)} element(s) re-planned in {run.seconds:.2f} s"
               if run is not None else "")) + "</div>"
        kept = (f"it leaves {', '.join(comp.kept)} as {'it is' if len(comp.kept) == 1 else 'they are'} "
                "(a comparison of two classes keeps both)") if comp.kept else ""
        self.class_note.object = '<div class="ig-class-note">' + _esc(
            ("the class drives: " + ", ".join(driven) + (f"; {kept}" if kept else "")) if driven else
            f"the class drives nothing: {kept}" if kept else
            "no element of this spec attributes to the output, so the class drives nothing") + "</div>"
        self.log.append(f"drew version {self.good.version} input {comp.ref} class {class_name}")

    # ------------------------------------------------------------------ links
    def _on_link(self, link_index: int, image: int, event) -> None:
        if self.comp is None:
            return
        li = next((l for l in self.comp.prep.plan.link_info if l.index == link_index), None)
        if li is None:
            return
        self.last_raw = event.new
        key = link_kinds.selection_key(li.kind, event.new)
        self.log.append(f"link {link_index} image {image}: selection {event.new!r} -> {key}")
        if key is None:
            return
        self.select(link_index, image, key)

    def select(self, link_index: int, image: int, key: str) -> None:
        """Show link ``link_index``'s target (for input image ``image``) for selection ``key``."""
        slot = (link_index, image)
        if self.shown.get(slot) == key and slot not in self._inflight:
            return
        self._want[slot] = key
        if slot in self._inflight:
            return  # the running computation picks the newest wish up when it ends
        self._start(slot)

    def _target_ids(self, link_index: int, image: int) -> list[str]:
        li = next(l for l in self.comp.prep.plan.link_info if l.index == link_index)
        views, _ = self._views(self.comp, self.cls)
        return [v.id for v in views.get(li.element, []) if v.image == image]

    def _start(self, slot: tuple[int, int]) -> None:

        link_index, image = slot
        key = self._want[slot]
        comp, good, gen = self.comp, self.good, self.gen
        li = next(l for l in comp.prep.plan.link_info if l.index == link_index)
        value = links.parse_key(li, key)
        self._inflight.add(slot)
        for vid in self._target_ids(link_index, image):
            if vid in self.panes:
                self.panes[vid].loading = True

        def work():
            return self.engine.link_run(good, comp, link_index, value)

        def done(r):
            self._inflight.discard(slot)
            if gen != self.gen:
                return
            if self._want.get(slot) != key:  # another selection was made meanwhile: show that one
                self._start(slot)
                return
            ids = self._target_ids(link_index, image)
            for vid in ids:
                if vid in self.panes:
                    self.panes[vid].loading = False
            picked = _esc(links.describe(li, value, comp.prep.info.classes))
            what = f"selected in {_esc(li.source)} ({_esc(li.event)}): <b>{picked}</b>"

            def cap(vid: str, text: str) -> str:
                return f'<div class="ig-caption" data-view="{_esc(vid)}" data-key="{_esc(key)}">{text}</div>'

            if isinstance(r, BaseException):
                for vid in ids:
                    if vid in self.captions:
                        self.captions[vid].object = cap(vid, f'{what} · <span class="err">{_esc(error_text(r))}</span>')
                self.log.append(f"link {link_index} {key}: error {r}")
                return
            for v in r.views:
                if v.image != image or v.base not in self.panes:
                    continue
                set_chart(self.panes[v.base], json.loads(r.charts[v.id]))
                self.captions[v.base].object = cap(v.base, f"{what} · {r.timing()}")
            self.shown[slot] = key
            self.log.append(f"link {link_index} {key}: {r.timing()}")

        self.submit(work, done)


def set_chart(pane, spec: dict) -> None:
    """Replace a Vega pane's chart. Panel resets the pane's selection values to None when the new
    chart has the same selection parameters, but declares them as lists that refuse None (the
    watcher raised, and everything after the assignment was skipped): allow None first."""
    sel = getattr(pane, "selection", None)
    if sel is not None:
        for name in sel.param:
            if name != "name":
                sel.param[name].allow_None = True
    pane.object = spec


# ============================================================================ the server
