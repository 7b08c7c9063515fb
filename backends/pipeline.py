"""The pipeline, one direction: spec → plan → results → views → report.

Everything a user can get wrong (spec, model reference, inputs) surfaces as a positioned
:class:`~interpgram.grammar.SpecError`; the CLI prints it without a traceback.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from interpgram.backends import links
from interpgram.backends.data.datasets import DatasetError, open_dataset
from interpgram.backends.data.images import IMAGE_SUFFIXES, probe_image
from interpgram.backends.data.inputs import BUILTIN_REF, InputError, Inputs, expand_refs, load_inputs
from interpgram.backends.execute.cache import ResultCache
from interpgram.backends.execute.engines import EngineError, engine_for
from interpgram.backends.execute.executor import Results, execute
from interpgram.backends.files import check_output_dir
from interpgram.backends.models import LoadedModel, ModelSourceError, load_model
from interpgram.backends.render import to_png, to_svg, write_report
from interpgram.backends.render.export import NUMBERS_FILE, numbers_of, write_npz
from interpgram.backends.render.views import build_views as _build
from interpgram.backends.render.views import safe_id
from interpgram.grammar import CompileOptions, LoadedSpec, ModelInfo, Plan, SpecError, compile_spec, load_spec
from interpgram.grammar.compile import compile_all
from interpgram.grammar.spec.load import SchemaError
from interpgram.grammar.plan import ActivationGrid, AtlasIcons, Collect, Examples, FeatureVis


@dataclass
class Prepared:
    loaded: LoadedSpec
    model: LoadedModel
    info: ModelInfo
    plan: Plan
    options: CompileOptions = CompileOptions()  # what the plan was compiled with (link variants use it too)
    allow_code: bool = False  # the user allowed python: sources (models, data sets)
    inputs: Optional[Inputs] = None  # images given in memory (the Python API); None: the spec's ``input``
    cache: Optional[ResultCache] = None  # the cache render used (its .degraded says if it stopped writing)
    others: dict = field(default_factory=dict)  # (element, i) -> the element prepared for its i-th vary model
    link_stats: Optional[object] = None  # the Stats of the link selections a render precomputed (after render)

    @property
    def icon_steps(self) -> Optional[int]:
        return self.options.icon_steps


def model_info(model: LoadedModel) -> ModelInfo:
    """What the compiler is told about ``model``. Icons default to the input side, at most 128 px,
    and the standard transforms change the size the model sees: one forward pass of an image that
    size says which layers it reaches (a model that takes only its own size stops early), so icons of
    the others get the input size, cropped back to it after the transforms."""
    info = ModelInfo(model.name, model.layers(), model.classes, (3, *model.preprocess.size))
    small = info.small_icon_size
    info.reach = {small: icon_reach(model, _fed_size(small, "standard"))[0]}
    return info


def _fed_size(size: int, transforms) -> int:
    """The side of the image a ``size`` px icon becomes after ``transforms`` (no scale drawn)."""
    from interpgram.backends.kernels.optvis.transforms import normalize_steps, output_size
    return output_size(size, size, normalize_steps(list(transforms) if isinstance(transforms, tuple) else transforms))[0]


# what a model's forward raises for an image size it does not take (shape checks, mismatched
# position embeddings or linear layers)
_SIZE_ERRORS = (RuntimeError, ValueError, AssertionError, IndexError, TypeError)


def icon_reach(model: LoadedModel, side: int) -> tuple[Optional[tuple[str, ...]], str]:
    """(the modules a forward pass of a ``side`` px square image completes, None for all of them;
    the error that stopped it) — memoised on the model. Icons of a layer optimise images of their
    size through the network up to that layer, so a layer not reached cannot have them."""
    memo = model.__dict__.setdefault("_icon_reach", {})
    if side in memo:
        return memo[side]
    import torch

    done: list[str] = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, name=name: done.append(name))
               for name, m in model.module.named_modules() if name]
    p = next(model.module.parameters(), None)
    try:
        with torch.no_grad():
            model.module(torch.zeros(1, 3, side, side, device=p.device if p is not None else "cpu",
                                     dtype=p.dtype if p is not None else torch.float32))
        memo[side] = (None, "")
    except _SIZE_ERRORS as e:
        memo[side] = (tuple(dict.fromkeys(done)), f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        for h in handles:
            h.remove()
    return memo[side]


def _icon_ops(plan: Plan):
    """(op, the side of the images it feeds the model, its layer, the option naming its size) for
    every op that optimises icons."""
    for op in plan.ops.values():
        st = dict(getattr(op, "settings", ()))
        if isinstance(op, (FeatureVis, AtlasIcons)):
            yield op, _fed_size(int(st["size"]), st.get("transforms", "standard")), op.layer, "size"
        elif isinstance(op, ActivationGrid):
            cell = int(st["cell_size"]) + 2 * int(st.get("crop", 0))
            yield op, _fed_size(cell, st.get("transforms", "standard")), op.layer, "cell_size"


def _check_icon_sizes(loaded: LoadedSpec, model: LoadedModel, plan: Plan) -> None:
    """Every icon, after its transforms, reaches its layer in ``model`` (a model that takes only its
    own input size fails on any other): refused at check time, at the element, naming the options."""
    side = tuple(model.preprocess.size)
    diags, seen = [], set()
    for op, px, layer, option in _icon_ops(plan):
        if (px, px) == side:
            continue
        reached, why = icon_reach(model, px)
        module, sep, call = layer.rpartition("@")  # one call of a reused module: the module's hook saw it
        if reached is None or (module if sep and module and call.isdecimal() else layer) in reached:
            continue
        for p in plan.elements:
            if op.id not in p.icons + (p.detail,) or p.element in seen:
                continue
            seen.add(p.element)
            size = ("size" if option == "size" else "cell_size + 2 × crop")
            diags.append(loaded.error(_presentation_path(loaded, p.element, p.presentation),
                                      f"{p.presentation}: icons of {layer!r} reach the model as {px} px images (their "
                                      f"{size} after the transforms), but {model.name} does not take that size: the "
                                      f"forward pass stops before {layer!r} ({why}). It takes {side[0]}×{side[1]} "
                                      f"images: set {size} to {side[-1]} and end transforms with "
                                      f"{{crop_or_pad: {side[-1]}}}" + (", or leave both out (the default then fits)"
                                                                          if option == "size" else "")))
    if diags:
        raise SpecError(diags)


def spec_model(loaded: LoadedSpec, allow_code: bool = False) -> LoadedModel:
    """The model the spec's ``model:`` names; a reference that cannot load is a SpecError at that key."""
    return _model(loaded, allow_code)


def _model(loaded: LoadedSpec, allow_code: bool) -> LoadedModel:
    ms = loaded.spec.model_spec
    try:
        return load_model(ms.source, weights=ms.weights, factory=ms.factory, labels=ms.labels,
                          allow_code=allow_code, base_dir=loaded.base_dir, preprocess=ms.preprocessing())
    except ModelSourceError as e:
        path = ("model",) if isinstance(loaded.spec.model, str) else ("model", "source")
        raise SpecError([loaded.error(path, str(e))]) from None


def prepare(spec_path: str | Path | LoadedSpec, *, allow_code: bool = False, icon_steps: Optional[int] = None,
            model: Optional[LoadedModel] = None, inputs: Optional[Inputs] = None) -> Prepared:
    """Load the spec and its model and compile the plan (what ``check`` and ``plan`` do).

    ``icon_steps`` replaces the optimisation steps of every icon and activation grid (a quick draft).
    The Python API passes a spec it loaded itself (a :class:`LoadedSpec`), a ``model`` already in
    memory (used instead of the spec's ``model:``) and ``inputs`` already read (instead of ``input:``).
    """
    diags: list = []  # every problem, reported together: schema, model, compile, inputs, data sets

    def collect(fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except SpecError as e:
            diags.extend(e.diagnostics)
            return None

    if isinstance(spec_path, LoadedSpec):
        loaded = spec_path
    else:
        try:
            loaded = load_spec(spec_path)
        except SchemaError as e:  # go on with the parts that validate, to report their problems too
            if e.partial is None:
                raise
            diags.extend(e.diagnostics)
            loaded = e.partial
    if model is None:
        model = collect(_model, loaded, allow_code)
    n_images = len(inputs.names) if inputs is not None else collect(_n_images, loaded)
    if inputs is None:
        collect(_check_inputs, loaded)  # an input image that render could not read: refused here, with its position
    if model is None:  # nothing to compile against
        raise SpecError(diags)
    info = model_info(model)
    options = CompileOptions(icon_steps=icon_steps, resolved_device=_resolved_device(loaded), n_images=n_images or 0)
    plan, compile_diags = compile_all(loaded, info, options)
    diags.extend(compile_diags)
    collect(_check_datasets, loaded, model, plan, allow_code=allow_code)  # dataset examples: a data set that cannot be opened
    collect(_check_atlas_dataset, loaded, model, plan, allow_code)
    collect(_check_icon_sizes, loaded, model, plan)  # icons of a size the model does not take
    prep = Prepared(loaded, model, info, plan, options, allow_code, inputs)
    for el_id, sources in plan.vary_models.items():  # vary: {model: [...]}: each loads and fits the element
        for i in range(len(sources)):
            prep.others[(el_id, i)] = collect(_vary_model, prep, el_id, i, allow_code)
    if diags:
        raise SpecError(list(dict.fromkeys(diags)))
    return prep


def _resolved_device(loaded: LoadedSpec) -> str:
    """What ``execution: {device: auto}`` means on this machine (empty for an explicit device)."""
    if loaded.spec.execution.device != "auto":
        return ""
    from interpgram.backends.execute.device import pick_device  # imports CUDA probing only when asked
    return str(pick_device("auto"))


def _n_images(loaded: LoadedSpec) -> int:
    try:
        return len(expand_refs(loaded.spec.inputs))
    except InputError as e:
        raise SpecError([loaded.error(("input",), str(e))]) from None


def _check_inputs(loaded: LoadedSpec) -> None:
    """Every input reference names something :func:`load_inputs` can read (a built-in image, or an
    image file that exists), without decoding any image; every one that does not is reported."""
    refs = loaded.spec.inputs
    diags = []
    for idx, r in enumerate(refs):
        where = ("input",) if isinstance(loaded.spec.input, str) else ("input", idx)
        problem = _input_problem(loaded, r)
        if problem:
            diags.append(loaded.error(where, problem))
    if diags:
        raise SpecError(diags)


def _input_problem(loaded: LoadedSpec, r: str) -> str:
    if r.startswith("builtin:"):
        m = BUILTIN_REF.match(r)
        if not m or m.group("name") != "shapes":
            return f"unknown built-in input {r!r}; use builtin:shapes/N, builtin:shapes/train/N or builtin:shapes/A-B"
        return ""
    p = Path(r).expanduser()
    p = p if p.is_absolute() else loaded.base_dir / p
    if not p.exists():
        return f"input image not found: {p}"
    if not p.is_file():
        return f"{p} is not an image file (a folder, a pipe or a device?)"
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        return f"{p} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})"
    if not os.access(p, os.R_OK):
        return f"cannot read the input image {p} (permission denied)"
    why = probe_image(p)  # its header only: damaged, another format, over the pixel limit
    return f"input image {p} {why}" if why else ""


def _vary_model(prep: Prepared, el_id: str, i: int, allow_code: bool) -> Prepared:
    """The element ``el_id`` prepared for the ``i``-th model of its ``vary: {model: [...]}``: that model
    loaded (memoised) and the element compiled against it; either failure is a positioned SpecError."""
    spec = prep.loaded.spec
    el = spec.elements[el_id]
    src = prep.plan.vary_models[el_id][i]
    path = ("elements", el_id, "vary", "model", i)
    sub = spec.model_copy(update={"model": src, "elements": {el_id: el.model_copy(update={"vary": None})},
                                  "links": [], "layout": None, "title": None})
    loaded = replace(prep.loaded, spec=sub)
    ms = src if not isinstance(src, str) else None
    name = src if isinstance(src, str) else src.source
    try:
        model = load_model(name, weights=ms.weights if ms else None, factory=ms.factory if ms else None,
                           labels=ms.labels if ms else None, allow_code=allow_code,
                           base_dir=prep.loaded.base_dir, preprocess=ms.preprocessing() if ms else None)
    except ModelSourceError as e:
        raise SpecError([prep.loaded.error(path, f"vary model: {e}")]) from None
    info = model_info(model)
    try:
        plan = compile_spec(loaded, info, prep.options)
    except SpecError as e:
        raise SpecError([prep.loaded.error(path, f"vary model {name}: the element does not fit this model: "
                                                 + "; ".join(d.message for d in e.diagnostics))]) from None
    return Prepared(loaded, model, info, plan, prep.options, allow_code, inputs=_inputs_for(prep, model, path))


def _check_atlas_dataset(loaded: LoadedSpec, model: LoadedModel, plan: Plan, allow_code: bool) -> None:
    """The atlases' data set opens (a folder is listed, python: code imported only when allowed)."""

    for c in plan.of_type(Collect):
        try:
            open_dataset(c.dataset, n=c.n, split=c.split, size=model.preprocess.fit, base_dir=loaded.base_dir,
                         allow_code=allow_code)
        except DatasetError as e:
            where = ("dataset", "source") if loaded.spec.dataset is not None else ()
            raise SpecError([loaded.error(where, str(e))]) from None


def _has_atlas(plan: Plan) -> bool:
    return any(isinstance(op, AtlasIcons) for op in plan.ops.values())


def _engine(prep: Prepared):
    """The spec's execution engine for atlas collection and icons (``execution: {engine: ray}``)."""
    try:
        return engine_for(prep.loaded.spec.execution)
    except EngineError as e:
        raise SpecError([prep.loaded.error(("execution", "engine"), str(e))]) from None


def _presentation_path(loaded: LoadedSpec, element: str, presentation: str) -> tuple:
    """Where an element names one of its presentations."""
    pres = loaded.spec.elements[element].presentation
    path: tuple = ("elements", element, "presentation")
    if isinstance(pres, list):
        names = [it if isinstance(it, str) else next(iter(it.model_dump())) for it in pres]
        path += (names.index(presentation),) if presentation in names else ()
    return path


def _dataset_path(loaded: LoadedSpec, element: str, presentation: str) -> tuple:
    """Where an element's presentation (one that searches a data set) names its data set."""
    return _presentation_path(loaded, element, presentation) + (presentation, "dataset")


def _check_datasets(loaded: LoadedSpec, model: LoadedModel, plan: Plan, error: Optional[Exception] = None, *,
                    allow_code: bool = False) -> None:
    """Open the data set of every element that searches one for examples (an :class:`Examples` op:
    listing its files, reading none); a failure
    (or ``error``, raised while streaming one) becomes a SpecError at the element's ``dataset`` key."""
    diags, seen = [], set()
    for p in plan.elements:
        if p.element in seen or not isinstance(plan.ops.get(p.detail), Examples):
            continue
        seen.add(p.element)
        op, raw = plan.ops[p.detail], p.option_dict.get("dataset", "builtin:shapes")
        if error is not None:  # the first element whose data set the message names, else the first one
            named = raw in str(error) or op.dataset in str(error)
            if named or not diags:
                diags = [(named, loaded.error(_dataset_path(loaded, p.element, p.presentation), str(error)))]
            if named:
                break
            continue
        try:
            open_dataset(raw, n=op.n, split=op.split, size=model.preprocess.fit, base_dir=loaded.base_dir,
                         allow_code=allow_code)
        except DatasetError as e:
            diags.append((True, loaded.error(_dataset_path(loaded, p.element, p.presentation), str(e))))
    if diags:
        raise SpecError([d for _, d in diags])


def with_input(prep: Prepared, ref: str) -> Prepared:
    """``prep`` for another input (an image path or ``builtin:shapes/N``): the plan is compiled
    again, the loaded model is reused, a draft's icon steps are kept."""


    loaded = LoadedSpec(prep.loaded.spec.model_copy(update={"input": ref}), prep.loaded.located)
    sub = None
    if prep.inputs is not None and ref in prep.inputs.refs:  # one of the images given in memory
        i = prep.inputs.refs.index(ref)
        sub = Inputs([ref], [prep.inputs.names[i]], prep.inputs.images[i:i + 1], prep.inputs.truth[i:i + 1],
                     prep.inputs.notes[i:i + 1])
    options = replace(prep.options, n_images=len(sub.names) if sub is not None else _n_images(loaded))
    plan = compile_spec(loaded, prep.info, options)
    return Prepared(loaded, prep.model, prep.info, plan, options, prep.allow_code, sub)


def load_spec_inputs(prep: Prepared) -> Inputs:
    if prep.inputs is not None:  # given in memory (the Python API)
        return prep.inputs
    refs = prep.loaded.spec.inputs
    try:
        return load_inputs(refs, prep.model.preprocess.fit, prep.loaded.base_dir)
    except InputError as e:
        msg = str(e)
        idx = next((i for i, r in enumerate(refs) if r in msg), None)
        path = ("input",) if isinstance(prep.loaded.spec.input, str) or idx is None else ("input", idx)
        raise SpecError([prep.loaded.error(path, msg)]) from None


def cache_source(cache: ResultCache) -> str:
    """How a result not computed was had: ``from the cache``, or with no cache (``--no-cache``) ``reused
    in this run`` (a piece two stages need, kept in memory: see ``cache.RUN_MEMORY_BYTES``)."""
    return "from the cache" if cache.enabled else "reused in this run"


def make_cache(prep: Prepared, override: Optional[str | Path | bool] = None,
               max_size: Optional[str | int] = None) -> ResultCache:
    """The result cache: ``override`` (``--cache-dir``: a relative folder is relative to the current
    directory, like ``-o``; ``False``: no cache) or the spec's ``execution.cache`` (a relative folder
    is relative to the spec's folder). ``max_size`` (``--cache-max-size``, e.g. ``500M``, ``none``)
    replaces ``$INTERPGRAM_CACHE_MAX_SIZE`` and the 2 GiB default."""
    limit = "default" if max_size is None else max_size
    setting = prep.loaded.spec.execution.cache if override is None else override
    if setting is False:
        return ResultCache(None, enabled=False, max_bytes=None)
    if setting is True:
        return ResultCache(None, max_bytes=limit)
    p = Path(os.path.expanduser(str(setting)))
    if not p.is_absolute():
        p = (Path.cwd() if override is not None else prep.loaded.base_dir) / p
    return ResultCache(p, max_bytes=limit)


def run(prep: Prepared, *, cache: Optional[ResultCache] = None,
        progress: Optional[Callable[[str, int, int], None]] = None) -> tuple[Inputs, Results]:
    inputs = load_spec_inputs(prep)
    plan = prep.plan
    engine = _engine(prep) if _has_atlas(plan) else None
    try:
        results = execute(plan, prep.model, inputs, cache=cache or make_cache(prep),
                          batch_size=prep.loaded.spec.execution.batch_size, progress=progress,
                          engine=engine, base_dir=prep.loaded.base_dir, allow_code=prep.allow_code)
    except InputError as e:  # a data-set image that cannot be read while streaming (dataset examples)
        _check_datasets(prep.loaded, prep.model, plan, error=e)
        raise
    except RuntimeError as e:
        if "execution.device" in str(e):
            raise SpecError([prep.loaded.error(("execution", "device"), str(e))]) from None
        raise
    finally:
        if engine is not None:
            engine.close()  # shuts down only a Ray instance the engine started itself
    return inputs, results


# ---------------------------------------------------------------------------- views
def build_views(plan: Plan, inputs: Inputs, results: Results):
    """Results → one :class:`ElementView` per element and input image (see :mod:`.views`)."""
    return _build(plan, inputs, results)


EXPORT_FORMATS = ("svg", "png", "npz")  # figures of each element; every element's numbers


@dataclass
class ReportParts:
    """Everything a report page is drawn from (``write_report`` / ``render_html`` keyword arguments)."""

    views: list
    title: str
    layout: list
    meta: dict
    links: list
    variants: dict

    def kwargs(self) -> dict:
        return {"title": self.title, "layout": self.layout, "meta": self.meta, "links": self.links,
                "variants": self.variants}


def render(spec_path: str | Path | Prepared, out_dir: str | Path, *, allow_code: bool = False,
           cache: Optional[str | Path | bool] = None, progress=None,
           icon_steps: Optional[int] = None, export: tuple[str, ...] = (),
           cache_max_size: Optional[str | int] = None) -> tuple[Path, Prepared, Results]:
    """Compute and write ``out_dir/index.html`` (and, for each format in ``export`` — svg, png —
    every element's figure as ``out_dir/figures/<view>.<format>``; npz — every element's numbers with
    their labels in ``out_dir/numbers.npz``, see :mod:`.render.export`). Returns (path, prepared, results).

    ``spec_path`` may be a :class:`Prepared` already (the Python API: a model or inputs in memory)."""
    bad = [f for f in export if f not in EXPORT_FORMATS]
    if bad:
        raise ValueError(f"export formats are {', '.join(EXPORT_FORMATS)}, not {', '.join(bad)}")

    check_output_dir(Path(out_dir))  # a read-only, full or misplaced output folder fails now, not after the compute
    t0 = time.perf_counter()
    prep = spec_path if isinstance(spec_path, Prepared) else prepare(spec_path, allow_code=allow_code,
                                                                      icon_steps=icon_steps)
    rc = prep.cache = make_cache(prep, cache, cache_max_size)
    inputs, results = run(prep, cache=rc, progress=progress)
    parts = report_parts(prep, inputs, results, cache=rc, progress=progress, t0=t0)
    path = write_report(parts.views, Path(out_dir), **parts.kwargs())
    figures = [f for f in export if f in ("svg", "png")]
    if figures:
        for v in parts.views:  # figures for papers: each element with its title and grammar sentence
            for fmt in figures:
                (to_svg if fmt == "svg" else to_png)(v, Path(out_dir) / "figures" / f"{v.id}.{fmt}")
    if "npz" in export:
        write_npz(numbers_of(prep.plan, inputs, results), Path(out_dir) / NUMBERS_FILE)
    return path, prep, results


def report_parts(prep: Prepared, inputs: Inputs, results: Results, *, cache: ResultCache, progress=None,
                 t0: Optional[float] = None) -> ReportParts:
    """The report page of computed ``results``: views (with other models' comparisons and the
    precomputed link variants), layout, and the header's facts. ``t0``: when the computation began."""
    t0 = time.perf_counter() if t0 is None else t0
    by_element = build_views(prep.plan, inputs, results)
    for el_id, views_ in compare_models(prep, cache=cache, allow_code=prep.allow_code, progress=progress).items():
        by_element[el_id] = by_element.get(el_id, []) + views_
    links_table, variants, vstats = precompute_links(prep, inputs, results, by_element, cache=cache, progress=progress)
    prep.link_stats = vstats
    views = [v for vs in by_element.values() for v in vs]
    layout = [[v.id for el in row for v in by_element.get(el, [])] for row in prep.plan.layout]
    meta = {**_run_facts(prep, inputs, results, cache, t0, vstats), **_link_facts(prep, variants, vstats)}
    truth = [t for t in inputs.truth if t]
    if truth:
        meta["ground truth"] = ", ".join(t["class"] + (" (with the planted patch)" if t["patched"] else "") for t in truth)
    spec_file = Path(prep.loaded.file)
    title = prep.plan.title or (spec_file.stem if not prep.loaded.file.startswith("<") else "interpgram")
    return ReportParts(views, title, layout, meta, links_table, variants)


def _run_facts(prep: Prepared, inputs: Inputs, results: Results, cache: ResultCache, t0: float,
               link_stats=None) -> dict:
    """The report header's facts about the run: spec, model, inputs, device, passes, cache, icons
    (the link selections' included: ``link_stats``), atlases, dataset examples, the model's notes."""
    st = results.stats
    passes = prep.plan.passes()
    meta = {
        "spec": prep.loaded.file,
        "model": prep.model.name,
        "inputs": ", ".join(inputs.names) or "none (atlases of a data set)",
        "preprocessing": prep.model.preprocess.describe(),
        "device": results.device,
        "passes": f"{passes['forward']} forward, {passes['backward']} backward "
                  f"(one element at a time: {prep.plan.unfused['forward']} forward, {prep.plan.unfused['backward']} backward)",
        "computed": f"{st.forward_passes} forward, {st.backward_passes} backward; cache hits {st.cache_hits}, misses {st.cache_misses}",
    }
    if inputs.notes:  # what was done to each input image (decoded, cropped, resized)
        meta["input images"] = [f"{n}: {note}" for n, note in zip(inputs.names, inputs.notes)]
    ls = link_stats
    icons, cached = st.icons_rendered + (ls.icons_rendered if ls else 0), st.icons_cached + (ls.icons_cached if ls else 0)
    grids, gcached = st.grids_rendered + (ls.grids_rendered if ls else 0), st.grids_cached + (ls.grids_cached if ls else 0)
    if icons or cached or grids or gcached:
        src = cache_source(cache)
        meta["icons"] = f"{icons} rendered, {cached} {src}" + (
            f" (of which {ls.icons_rendered} rendered, {ls.icons_cached} {src} for the link selections)"
            if ls and (ls.icons_rendered or ls.icons_cached) else "") + (
            f"; activation grids {grids} rendered, {gcached} {src}" if grids or gcached else "")
    meta["compute time"] = f"{time.perf_counter() - t0:.2f} s (model load, passes, cache)"
    if cache.degraded:  # a read-only or full cache folder: the report says the results were not kept
        meta["cache"] = cache.degraded
    if not inputs.names:  # atlases only: no pass over inputs to speak of
        for k in ("passes", "computed"):
            meta.pop(k)
    if _has_atlas(prep.plan):
        c = prep.plan.of_type(Collect)[0]
        meta["atlas"] = (f"{c.n} images of {c.dataset} ({c.split}, {c.positions} positions) → "
                         f"{', '.join(c.layers)}; " + ("collected or resumed in this run" if st.atlas_samples
                                                       else "every layout from the cache")
                         + "; " + ", ".join(f"{k} {v:.1f} s" for k, v in st.seconds.items() if k.startswith("atlas")))
    if st.examples_computed or st.examples_cached:
        meta["dataset examples"] = (f"{st.examples_computed} atom(s) searched ({st.dataset_images} data-set images "
                                    f"streamed), {st.examples_cached} from the cache")
    from interpgram.backends.kernels.content import factorize_notes  # how a signed layer's groups were made

    if groups := factorize_notes(prep.plan, results.values):
        meta["neuron groups"] = groups[0] if len(groups) == 1 else groups
    if prep.model.notes:  # every note of the model (the default preprocessing, generic class names, …), not the first
        notes = list(dict.fromkeys(prep.model.notes))
        meta["notes"] = notes[0] if len(notes) == 1 else notes
    return meta


def _link_facts(prep: Prepared, variants: dict, vstats) -> dict:
    """The report header's facts about the links: selections precomputed per link, their passes."""
    if not prep.plan.link_info:
        return {}
    parts = []
    for li in prep.plan.link_info:
        n = len({v.key for vs in variants.values() for v in vs if v.link == li.index})
        parts.append(f"{li.source}.{li.event} → {li.element}.{li.target}: {n} selection(s) precomputed "
                     f"(bound {li.precompute})")
    meta: dict = {"links": parts}
    if vstats is not None:
        meta["link passes"] = (f"{vstats.forward_passes} forward, {vstats.backward_passes} backward; "
                               f"cache hits {vstats.cache_hits}, misses {vstats.cache_misses}; "
                               "any other selection is computed live by interpgram serve")
    return meta


def compare_models(prep: Prepared, *, cache: ResultCache, allow_code: bool = False, progress=None) -> dict[str, list]:
    """Elements with ``vary: {model: [...]}``: the element compiled, run and drawn again for each
    other model (its own preprocessing, the same inputs and cache), titled and named by the model."""

    out: dict[str, list] = {}
    for el_id, sources in prep.plan.vary_models.items():
        for i, src in enumerate(sources):
            ms = src if not isinstance(src, str) else None
            name = src if isinstance(src, str) else src.source
            other = prep.others.get((el_id, i)) or _vary_model(prep, el_id, i, allow_code)
            plan = other.plan
            inputs, results = run(other, cache=cache, progress=progress)
            for v in build_views(plan, inputs, results).get(el_id, []):
                label = name if ms is None or not ms.weights else f"{name} ({Path(ms.weights).name})"
                v.id = f"{v.id}-{safe_id(label)}"
                v.title = f"{v.title} · {label}"
                out.setdefault(el_id, []).append(v)
    return out


def _inputs_for(prep: Prepared, model: LoadedModel, path: tuple) -> Optional[Inputs]:
    """In-memory inputs for another model of a comparison: the same images when its input size is the same."""
    if prep.inputs is None:
        return None
    if tuple(prep.inputs.images.shape[-2:]) != tuple(model.preprocess.size):
        raise SpecError([prep.loaded.error(path, f"vary model {model.name} takes {tuple(model.preprocess.size)} images, "
                                                 f"the inputs given in memory are {tuple(prep.inputs.images.shape[-2:])}; "
                                                 "give them as files or refs so each model reads them at its own size")])
    return prep.inputs


def precompute_links(prep: Prepared, inputs: Inputs, results: Results, by_element: dict, *, cache: ResultCache,
                     progress=None):
    """The link variants a static report holds: (link table, variants by base view id, their stats)."""

    if not prep.plan.link_info:
        return [], {}, None
    links.mark_sources(prep.plan, by_element)
    sels = links.selections(prep.plan, results)
    if not sels:
        table, variants = links.report_links(prep.plan, by_element, {}, len(inputs.names))
        return table, variants, None
    vplan, vresults, vviews = links.run_variants(prep, inputs, sels, cache=cache, progress=progress)
    stats = vresults.stats
    # a source element that is itself a link's target shows other atoms in its variants: those can be
    # selected too (one more fused plan for them)
    done = {(li.index, li.key(v)) for li, v in sels}
    more = [(li, v) for li, v in links.selections(prep.plan, results, extra=((vplan, vresults),))
            if (li.index, li.key(v)) not in done]
    if more:
        _, more_results, more_views = links.run_variants(prep, inputs, more, cache=cache, progress=progress)
        for el, vs in more_views.items():
            vviews.setdefault(el, []).extend(vs)
        for f in ("forward_passes", "backward_passes", "cache_hits", "cache_misses", "icons_rendered", "icons_cached",
                  "grids_rendered", "grids_cached"):
            setattr(stats, f, getattr(stats, f) + getattr(more_results.stats, f))
    table, variants = links.report_links(prep.plan, by_element, vviews, len(inputs.names))
    return table, variants, stats
