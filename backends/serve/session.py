"""What every page of one server shares (:class:`Session`): the prepared spec, the result cache,
everything computed so far, the input folder's rules; torch work under one lock."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from interpgram.backends import links, pipeline
from interpgram.backends.data.images import IMAGE_SUFFIXES
from interpgram.backends.data.inputs import InputError, expand_refs
from interpgram.backends.render import chart_for
from interpgram.grammar import SpecError
from interpgram.grammar.compile import compile_variants
from interpgram.grammar.plan import LinkInfo
from interpgram.grammar.spec.nodes import AttributionContent, TransformContent

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5006
POLL_S = 1.0  # how often the spec file is checked for changes
HOVER_DEBOUNCE_MS = 60  # a hover link reports the position the pointer rests on, not every cell it crosses
CLASS_EVENT = "select"
SPEC_INPUTS = "(spec)"  # the input picker's value for the spec's own inputs
SPEC_CLASSES = -1  # the class picker's value for the classes the spec names
LINK_CHART_MEMO = 512  # link selections whose chart JSON each computation keeps
EMBED_OPTIONS = {"renderer": "svg", "actions": False}  # vega-embed reads these from the spec's usermeta
MAX_TYPED_IMAGES = 16  # a range typed into the input box (builtin:shapes/A-B) holds at most this many images


class InputRefused(ValueError):
    """An input typed into the page that the server will not open; the message says what is allowed
    (and never whether a path outside the input folder exists)."""


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
    kept: list[str] = field(default_factory=list)  # comparisons of two classes it leaves as they are
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
    spec = chart_for(view).to_dict()
    spec["usermeta"] = {**(spec.get("usermeta") or {}), "embedOptions": dict(EMBED_OPTIONS)}
    return json.dumps(spec)


def _charts(by_element: dict[str, list]) -> dict[str, str]:
    return {v.id: chart_json(v) for vs in by_element.values() for v in vs}


def error_text(err: BaseException) -> str:
    """What the page shows for a problem: a SpecError's positioned lines, else the exception."""
    if isinstance(err, SpecError):
        n = len(err.diagnostics)
        return f"{err}\n{n} problem{'s' if n != 1 else ''} found"
    if isinstance(err, InputRefused):
        return str(err)
    tb = traceback.format_exception(type(err), err, err.__traceback__)
    return f"{type(err).__name__}: {err}\n\n" + "".join(tb[-6:])


_NEVER = "never loaded"


class Session:
    """What every session of one server shares: the spec's prepared model and plan, the result
    cache, what was computed so far (per input, per class), and the lock torch work runs under.

    ``version`` grows on every (re)load, good or bad; ``good`` is the last spec version that
    worked and ``error`` the current problem (None when the file on disk is good)."""

    def __init__(self, spec_path: str | Path, *, allow_code: bool = False, cache_dir: Optional[str | Path] = None,
                 icon_steps: Optional[int] = None, on_load: Optional[Callable[["Session"], None]] = None,
                 max_runs: int = 8, input_root: Optional[str | Path] = None, prepare: Optional[Callable[..., Any]] = None):
        self.path = Path(spec_path)
        self.prepare = prepare  # (path, allow_code=, icon_steps=) -> Prepared; the Python API's keeps its model in memory
        self.allow_code = allow_code
        # the only folder a typed-in image path may open (its own symlinks resolved once, here)
        self.input_root = Path(os.path.realpath(input_root if input_root is not None else self.path.parent.absolute()))
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
        self.sessions: weakref.WeakSet = weakref.WeakSet()  # the open pages (Dashboards)

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
            except Exception as e:  # noqa: BLE001 - a SpecError is the expected case; anything else must not stop the server
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
                except Exception as e:  # noqa: BLE001 - pragma: no cover - poll catches what load raises
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
        target = self.input_target(good, ref)
        with self._state:
            if ref in good.runs:
                good.runs.move_to_end(ref)
                return good.runs[ref]

        t0 = time.perf_counter()
        prep = pipeline.with_input(good.prep, target)
        with self.lock:
            inputs, results = pipeline.run(prep, cache=good.cache)
        comp = self._finish_run(ref, prep, inputs, results, t0)
        with self._state:
            good.runs[ref] = comp
            while len(good.runs) > self.max_runs:
                good.runs.popitem(last=False)
        return comp

    def input_target(self, good: Good, ref: str) -> str:
        """What the input box may open for ``ref``: one of the spec's own inputs as it is, a
        ``builtin:`` reference (at most :data:`MAX_TYPED_IMAGES` images), or an image file inside
        :attr:`input_root`, as its resolved absolute path (what was checked is what is opened).

        A path outside the folder (``..``, absolute, a symlink out of it) is refused with one
        message whatever is there, before the file system is asked when the text alone leaves
        the folder; ``~`` is not expanded (that would tell which user names exist)."""
        spec_refs = good.prep.loaded.spec.inputs
        if ref in spec_refs or ref in _expanded(spec_refs):
            return ref
        if ref.startswith("builtin:"):
            try:
                n = len(expand_refs([ref]))
            except InputError as e:
                raise InputRefused(str(e)) from None
            if n > MAX_TYPED_IMAGES:
                raise InputRefused(f"{ref}: {n} images; the input box takes at most {MAX_TYPED_IMAGES} at a time")
            return ref
        root = self.input_root
        outside = InputRefused(
            f"{ref!r}: the input box opens image files inside the input folder only (paths are relative to it; "
            "the folder is set with --input-root DIR when interpgram serve starts)")
        if "\0" in ref:
            raise InputRefused(f"{ref!r} is not a valid path")
        candidate = Path(os.path.normpath(root / ref))  # `..` and absolute paths, by the text alone
        if not candidate.is_relative_to(root):
            raise outside
        try:
            real = Path(os.path.realpath(candidate))  # symlinks followed
        except (OSError, ValueError):
            raise InputRefused(f"{ref!r} is not a valid path") from None
        if not real.is_relative_to(root):
            raise outside
        shown = candidate.relative_to(root).as_posix()
        try:
            st = real.stat()
        except FileNotFoundError:
            raise InputRefused(f"input image not found: {shown} (in the input folder)") from None
        except OSError as e:
            raise InputRefused(f"{shown}: cannot be read ({e.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputRefused(f"{shown} is not an image file (a folder, pipe or device)")
        if real.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputRefused(f"{shown} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return str(real)

    def class_driven(self, comp: Computed) -> list[str]:
        """The elements a class selection re-targets: those whose attribution goes to the output
        (the compiler refuses the selection for the others)."""
        if comp.driven is not None:
            return comp.driven

        prep, out, kept = comp.prep, [], []
        for el, element in prep.loaded.spec.elements.items():
            if compares_classes(element.content):  # re-targeted, both sides would be the one class: a − a = 0
                kept.append(el)
                continue
            try:
                compile_variants(prep.loaded, prep.info, [(class_link(el), 0)], base=prep.plan)
            except SpecError:
                continue
            out.append(el)
        comp.kept = kept
        comp.driven = out
        return out

    def class_run(self, good: Good, comp: Computed, index: int) -> ClassRun:
        """Every class-driven element of ``comp`` re-planned for class ``index``, as one fused plan."""
        with comp.lock:
            if index in comp.classes:
                return comp.classes[index]

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


def _expanded(refs: list[str]) -> list[str]:
    try:
        return expand_refs(refs)
    except InputError:
        return list(refs)


def _output_classes(content) -> set:
    """The class selections (``select`` of each attribution to the output) inside a content."""
    if isinstance(content, AttributionContent):
        to = content.attribution.to
        return {tuple(to.select) if to.select is not None else None} if to.layer == "output" else set()
    if isinstance(content, TransformContent):
        t = content.transform
        return set().union(*(_output_classes(c) for c in (t.of, t.a, t.b, t.by) if c is not None and not isinstance(c, str)))
    return set()


def compares_classes(content) -> bool:
    """Whether a content compares attributions to different classes (``compare`` with ``a`` and ``b``
    selecting other classes, at any depth): the class picker must leave it as it is, since re-targeting
    both sides to the picked class would show that class minus itself."""
    if not isinstance(content, TransformContent):
        return False
    t = content.transform
    if t.op == "compare" and _output_classes(t.a) != _output_classes(t.b):
        return True
    return any(compares_classes(c) for c in (t.of, t.a, t.b, t.by) if c is not None and not isinstance(c, str))


def class_link(element: str):
    """The class picker as a link (index -1: the variants keep the element's own ids)."""
    return LinkInfo(-1, "class picker", CLASS_EVENT, element, "class", "class")
