"""``interpgram serve SPEC``: the live dashboard (Panel).

The page shows the same elements as the static report, built the same way (``pipeline.prepare`` →
``pipeline.run`` → ``pipeline.build_views`` → ``view.chart_for``), in the spec's layout, with

* an input picker (the spec's inputs, or any ``builtin:shapes/N`` or image path typed in): the plan
  is recompiled for that input, the model is reused;
* a class picker: every element whose attribution goes to the output layer is re-planned for the
  picked class through the compiler (``compile_variants`` with a class selection);
* live links: a source element's chart carries a Vega selection parameter named ``link``; the
  session listens to it and computes the target element for that selection through the
  compiler, the fused plan and the result cache (:mod:`interpgram.backends.links`);
* reload: the spec file is polled; a change re-prepares once for the server and every open page
  redraws. A spec with errors never stops the server: its positioned messages are shown above
  the last good dashboard, and fixing the file recovers the page.

One :class:`Engine` per server holds what sessions share: the prepared spec (model, plan), the
result cache and everything computed so far for it; torch work runs under one lock, in worker
threads, so one session's computation neither blocks the page of another nor races it. A
:class:`Dashboard` is one browser session's page.
"""
from __future__ import annotations

import hashlib
import html
import json
import socket
import sys
import threading
import time
import traceback
import weakref
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5006
POLL_S = 1.0  # how often the spec file is checked for changes
HOVER_DEBOUNCE_MS = 60  # a hover link reports the position the pointer rests on, not every cell it crosses
CLASS_EVENT = "select"
SPEC_INPUTS = "(spec)"  # the input picker's value for the spec's own inputs
SPEC_CLASSES = -1  # the class picker's value for the classes the spec names
LINK_CHART_MEMO = 512  # link selections whose chart JSON each computation keeps
EMBED_OPTIONS = {"renderer": "svg", "actions": False}  # vega-embed reads these from the spec's usermeta


# ============================================================================ shared state
@dataclass
class Computed:
    """One input choice of one spec version: the prepared plan for it, its inputs, results, views
    (by element) and their chart specs (by view id, as JSON text: every pane parses its own copy,
    since Panel's Vega pane takes the data sets out of the dict it is given)."""

    ref: Optional[str]  # None: the spec's own inputs
    prep: Any  # pipeline.Prepared
    inputs: Any
    results: Any
    views: dict[str, list]
    charts: dict[str, str]
    seconds: float
    driven: Optional[list[str]] = None  # elements the class picker re-targets (found on first use)
    classes: dict[int, "ClassRun"] = field(default_factory=dict)
    link_charts: "OrderedDict[tuple, dict[str, str]]" = field(default_factory=OrderedDict)  # (link, key) -> charts
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class ClassRun:
    """The class-driven elements re-planned for one class: their views and charts."""

    index: int
    views: dict[str, list]
    charts: dict[str, str]
    stats: Any
    seconds: float


@dataclass
class LinkRun:
    """A link's target element computed for one selection."""

    views: list
    charts: dict[str, str]
    stats: Any
    seconds: float

    @property
    def from_cache(self) -> bool:
        st = self.stats
        return st is not None and st.cache_misses == 0 and st.icons_rendered == 0 and st.grids_rendered == 0

    def timing(self) -> str:
        how = "from the result cache" if self.from_cache else "computed"
        return f"{how} in {self.seconds:.2f} s"


@dataclass
class Good:
    """A spec version that prepared, ran and drew without errors."""

    version: int
    prep: Any
    cache: Any
    base: Computed
    title: str
    runs: "OrderedDict[str, Computed]" = field(default_factory=OrderedDict)  # other inputs, most recent last


def chart_json(view) -> str:
    """A view's Vega-Lite spec as JSON text, drawn as SVG without the action menu."""
    from interpgram.backends.render import chart_for

    spec = chart_for(view).to_dict()
    spec["usermeta"] = {**(spec.get("usermeta") or {}), "embedOptions": dict(EMBED_OPTIONS)}
    return json.dumps(spec)


def _charts(by_element: dict[str, list]) -> dict[str, str]:
    return {v.id: chart_json(v) for vs in by_element.values() for v in vs}


def error_text(err: BaseException) -> str:
    """What the page shows for a problem: a SpecError's positioned lines, else the exception."""
    from interpgram.grammar import SpecError

    if isinstance(err, SpecError):
        n = len(err.diagnostics)
        return f"{err}\n{n} problem{'s' if n != 1 else ''} found"
    tb = traceback.format_exception(type(err), err, err.__traceback__)
    return f"{type(err).__name__}: {err}\n\n" + "".join(tb[-6:])


_NEVER = "never loaded"


class Engine:
    """What every session of one server shares: the spec's prepared model and plan, the result
    cache, what was computed so far (per input, per class), and the lock torch work runs under.

    ``version`` grows on every (re)load, good or bad; ``good`` is the last spec version that
    worked and ``error`` the current problem (None when the file on disk is good)."""

    def __init__(self, spec_path: str | Path, *, allow_code: bool = False, cache_dir: Optional[str | Path] = None,
                 icon_steps: Optional[int] = None, on_load: Optional[Callable[["Engine"], None]] = None,
                 max_runs: int = 8, prepare: Optional[Callable[..., Any]] = None):
        self.path = Path(spec_path)
        self.prepare = prepare  # (path, allow_code=, icon_steps=) -> Prepared; the Python API's keeps its model in memory
        self.allow_code = allow_code
        self.cache_dir = cache_dir
        self.icon_steps = icon_steps  # every icon and activation grid optimised for this many steps (a draft)
        self.on_load = on_load
        self.max_runs = max_runs
        self.lock = threading.Lock()  # torch computation (and model loading)
        self._state = threading.RLock()  # the fields below
        self._load_lock = threading.Lock()  # one (re)load at a time
        self.version = 0
        self.good: Optional[Good] = None
        self.error: Optional[str] = None
        self.loading = False
        self.last_load_s = 0.0
        self._digest: Optional[str] = _NEVER  # the file's content digest at the last load (None: no file)
        self._stop = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="interpgram-serve")
        self.sessions: "weakref.WeakSet[Dashboard]" = weakref.WeakSet()  # the open pages

    # ------------------------------------------------------------------ loading
    def snapshot(self) -> tuple[int, Optional[Good], Optional[str]]:
        with self._state:
            return self.version, self.good, self.error

    def _file_digest(self) -> Optional[str]:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def poll(self) -> bool:
        """Reload when the spec file changed (by content) since the last load. True if it reloaded."""
        if self._file_digest() == self._digest:
            return False
        self.load()
        return True

    def load(self) -> bool:
        """Prepare, run and draw the spec as it is on disk. True when it worked; else the error is
        kept in ``error`` (and the last good version stays in ``good``)."""
        from interpgram.backends import pipeline

        with self._load_lock:
            self._digest = self._file_digest()
            with self._state:
                self.loading = True
            t0 = time.perf_counter()
            try:
                with self.lock:
                    prep = (self.prepare or pipeline.prepare)(self.path, allow_code=self.allow_code,
                                                              icon_steps=self.icon_steps)
                    cache = pipeline.make_cache(prep, self.cache_dir)
                    inputs, results = pipeline.run(prep, cache=cache)
                base = self._finish_run(None, prep, inputs, results, t0)
                title = prep.plan.title or self.path.stem
            except Exception as e:  # a SpecError is the expected case; anything else must not stop the server
                with self._state:
                    self.version += 1
                    self.error = error_text(e)
                    self.loading = False
                    self.last_load_s = time.perf_counter() - t0
                ok = False
            else:
                with self._state:
                    self.version += 1
                    self.good = Good(self.version, prep, cache, base, title)
                    self.error = None
                    self.loading = False
                    self.last_load_s = time.perf_counter() - t0
                ok = True
        if self.on_load is not None:
            self.on_load(self)
        return ok

    def _finish_run(self, ref: Optional[str], prep, inputs, results, t0: float) -> Computed:
        from interpgram.backends import links, pipeline

        by_element = pipeline.build_views(prep.plan, inputs, results)
        links.mark_sources(prep.plan, by_element)
        return Computed(ref, prep, inputs, results, by_element, _charts(by_element), time.perf_counter() - t0)

    def start_watching(self, interval: float = POLL_S) -> None:
        """A daemon thread that loads the spec, then reloads it whenever the file changes."""
        if self._watcher is not None:
            return

        def loop():
            while not self._stop.is_set():
                try:
                    self.poll()
                except Exception as e:  # pragma: no cover - poll catches what load raises
                    print(f"interpgram serve: reload failed: {e}", file=sys.stderr)
                self._stop.wait(interval)

        self._watcher = threading.Thread(target=loop, name="interpgram-spec-watcher", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ computations (thread-safe)
    def computed(self, good: Good, ref: Optional[str]) -> Computed:
        """The dashboard for one input: the spec's own inputs (``ref`` None) or ``ref`` alone.

        The plan is recompiled for the input with the spec version's loaded model. A bad input
        raises a SpecError (the message names the input)."""
        if ref is None:
            return good.base
        with self._state:
            if ref in good.runs:
                good.runs.move_to_end(ref)
                return good.runs[ref]
        from interpgram.backends import pipeline

        t0 = time.perf_counter()
        prep = pipeline.with_input(good.prep, ref)
        with self.lock:
            inputs, results = pipeline.run(prep, cache=good.cache)
        comp = self._finish_run(ref, prep, inputs, results, t0)
        with self._state:
            good.runs[ref] = comp
            while len(good.runs) > self.max_runs:
                good.runs.popitem(last=False)
        return comp

    def class_driven(self, comp: Computed) -> list[str]:
        """The elements a class selection re-targets: those whose attribution goes to the output
        (the compiler refuses the selection for the others)."""
        if comp.driven is not None:
            return comp.driven
        from interpgram.grammar import SpecError
        from interpgram.grammar.compiler import compile_variants

        prep, out = comp.prep, []
        for el in prep.loaded.spec.elements:
            try:
                compile_variants(prep.loaded, prep.info, [(class_link(el), 0)], base=prep.plan)
            except SpecError:
                continue
            out.append(el)
        comp.driven = out
        return out

    def class_run(self, good: Good, comp: Computed, index: int) -> ClassRun:
        """Every class-driven element of ``comp`` re-planned for class ``index``, as one fused plan."""
        with comp.lock:
            if index in comp.classes:
                return comp.classes[index]
        from interpgram.backends import links

        n = len(comp.prep.info.classes)
        if not 0 <= int(index) < n:
            raise ValueError(f"class index {index} is outside 0..{n - 1}")
        t0 = time.perf_counter()
        driven = self.class_driven(comp)
        prep = comp.prep
        stats, by_element = None, {}
        if driven:
            with self.lock:
                _, results, by_element = links.run_variants(prep, comp.inputs,
                                                            [(class_link(el), int(index)) for el in driven],
                                                            cache=good.cache)
            stats = results.stats
        run = ClassRun(int(index), by_element, _charts(by_element), stats, time.perf_counter() - t0)
        with comp.lock:
            comp.classes[int(index)] = run
        return run

    def link_run(self, good: Good, comp: Computed, link_index: int, value: Any) -> LinkRun:
        """The target of link ``link_index`` for one selection, through the compiler, the fused plan
        and the result cache (a selection made before is read back, not computed)."""
        from interpgram.backends import links

        t0 = time.perf_counter()
        li = next(l for l in comp.prep.plan.link_info if l.index == link_index)
        with self.lock:  # run_variants marks a target that is itself a link's source
            _, results, views = links.run_variants(comp.prep, comp.inputs, [(li, value)], cache=good.cache)
        flat = [v for vs in views.values() for v in vs]
        # the same selection of the same computation draws the same charts: keep their JSON
        memo_key = (link_index, li.key(value))
        with comp.lock:
            charts = comp.link_charts.get(memo_key)
            if charts is not None:
                comp.link_charts.move_to_end(memo_key)
        if charts is None or set(charts) != {v.id for v in flat}:
            charts = {v.id: chart_json(v) for v in flat}
            with comp.lock:
                comp.link_charts[memo_key] = charts
                while len(comp.link_charts) > LINK_CHART_MEMO:
                    comp.link_charts.popitem(last=False)
        return LinkRun(flat, charts, results.stats, time.perf_counter() - t0)


def class_link(element: str):
    """The class picker as a link (index -1: the variants keep the element's own ids)."""
    from interpgram.grammar.plan import LinkInfo

    return LinkInfo(-1, "class picker", CLASS_EVENT, element, "class", "class")


def selection_key(kind: str, value: Any) -> Optional[str]:
    """The Vega pane's value of a ``link`` point selection → a selection key ("3,5", "17"), or None
    when nothing is selected.

    Panel reports a point selection over several fields as a list of one-field dicts
    (``[{"col": 3}, {"row": 5}]``), over one field as ``[{"atom": 17}]``; a plain Vega signal value
    (``{"col": [3], "row": [5]}``) is accepted too."""
    if not value:
        return None
    merged: dict[str, Any] = {}
    for item in (value if isinstance(value, list) else [value]):
        if not isinstance(item, dict):
            continue
        for k, v in item.items():
            if isinstance(v, (list, tuple)):
                v = v[0] if v else None
            if v is not None:
                merged.setdefault(k, v)
    try:
        if kind == "position":
            c, r = merged.get("col"), merged.get("row")
            return None if c is None or r is None else f"{int(c)},{int(r)}"
        a = merged.get("gid" if kind == "group" else "atom")
        return None if a is None else str(int(a))
    except (TypeError, ValueError):
        return None


# ============================================================================ one session's page
def _esc(s: Any) -> str:
    return html.escape(str(s))


# Panel draws every component in its own shadow root: the CSS goes to each HTML pane (stylesheets)
CSS = """
h1 { font-size: 22px; margin: 4px 0 2px 0; }
h3 { font-size: 14px; margin: 4px 0; }
.ig-grammar code { font-size: 11px; color: #5f6368; }
.ig-caption { font-size: 12px; color: #1f1f1f; min-height: 16px; }
.ig-caption b { color: #e8710a; }
.ig-caption .err { color: #b3261e; }
pre.ig-errors { white-space: pre-wrap; font-size: 12px; margin: 0; }
"""
CARD_STYLE = {"border": "1px solid #e0e0e0", "border-radius": "6px", "padding": "2px 10px 8px 10px",
              "background": "white"}


class Dashboard:
    """One browser session's page over a shared :class:`Engine`.

    Work runs through ``submit``: in a server session on the engine's worker threads (results are
    applied on the session's document), without one (tests) synchronously."""

    def __init__(self, engine: Engine, *, doc=None, periodic: bool = False):
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
        self.input_text = pn.widgets.TextInput(label="other input", placeholder="builtin:shapes/N or an image path",
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
            except Exception as e:
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
                    except Exception:  # a bug in drawing: say so in the terminal, keep the session
                        traceback.print_exc()
            try:
                doc.add_next_tick_callback(apply)
            except Exception:  # the session was closed meanwhile
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
        from interpgram.backends.data.inputs import InputError, expand_refs

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
        self.class_note.object = '<div class="ig-class-note">' + (
            ("the class drives: " + ", ".join(driven)) if driven else
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
        key = selection_key(li.kind, event.new)
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
        from interpgram.backends import links

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
def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def websocket_origins(host: str, port: int) -> list[str]:
    """Where the page may be opened from: the bound host, and loopback by either name; bound to every
    interface (0.0.0.0, ::), any host name on this port (the user asked for the page to be reachable)."""
    if host in ("0.0.0.0", "::", ""):
        return [f"*:{port}"]
    out = [f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    return list(dict.fromkeys(out))


def _extension() -> None:
    import panel as pn

    pn.extension("vega", notifications=False)


def app_factory(engine: Engine) -> Callable[[], Any]:
    """The function Panel calls once per browser session: one :class:`Dashboard` over the shared engine."""

    def app():
        import panel as pn

        _extension()
        doc = pn.state.curdoc
        dash = Dashboard(engine, doc=doc, periodic=True)
        return dash.layout

    return app


def make_server(engine: Engine, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, show: bool = False,
                title: Optional[str] = None, loop=None):
    """A Panel (Bokeh) server for ``engine``, not started (``loop``: the Tornado IOLoop to run it on)."""
    import panel as pn

    _extension()
    if port == 0:
        port = free_port(host)
    return pn.serve(app_factory(engine), port=port, address=host, websocket_origin=websocket_origins(host, port),
                    show=show, start=False, title=title or f"interpgram: {engine.path.name}", verbose=False,
                    loop=loop)


def url_of(server, host: str) -> str:
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{server.port}/"


def serve(spec_path: str | Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, allow_code: bool = False,
          cache_dir: Optional[str | Path] = None, icon_steps: Optional[int] = None, show: bool = False,
          out=None) -> int:
    """Start the dashboard for ``spec_path`` and serve until interrupted (blocking)."""

    def report(engine: Engine) -> None:
        _, good, error = engine.snapshot()
        if error:
            print(f"{engine.path}: the spec has errors (shown in the page; the server keeps running):\n{error}",
                  file=sys.stderr, flush=True)
        elif good is not None:
            print(f"{engine.path}: version {good.version} ready in {engine.last_load_s:.1f} s "
                  f"({len(good.prep.loaded.spec.elements)} elements)", file=out, flush=True)

    out = out or sys.stdout
    engine = Engine(spec_path, allow_code=allow_code, cache_dir=cache_dir, icon_steps=icon_steps, on_load=report)
    server = make_server(engine, host=host, port=port, show=show)
    print(f"interpgram serve: {url_of(server, host)}  (spec {spec_path}; reloads when the file changes; Ctrl-C stops)",
          file=out, flush=True)
    engine.start_watching()
    try:
        server.start()
        server.io_loop.start()
    finally:
        engine.stop()
    return 0
