"""The pipeline, one direction: spec → plan → results → views → report.

Everything a user can get wrong (spec, model reference, inputs) surfaces as a positioned
:class:`~interpgram.grammar.SpecError`; the CLI prints it without a traceback.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from interpgram.grammar import LoadedSpec, ModelInfo, Plan, SpecError, compile_spec, load_spec

from .data.inputs import InputError, Inputs, expand_refs, load_inputs
from .models import LoadedModel, ModelSourceError, load_model
from .torch.cache import ResultCache
from .torch.execute import Results, execute


@dataclass
class Prepared:
    loaded: LoadedSpec
    model: LoadedModel
    info: ModelInfo
    plan: Plan


def model_info(model: LoadedModel) -> ModelInfo:
    return ModelInfo(model.name, model.layers(), model.classes, (3, *model.preprocess.size))


def _model(loaded: LoadedSpec, allow_code: bool) -> LoadedModel:
    ms = loaded.spec.model_spec
    try:
        return load_model(ms.source, weights=ms.weights, factory=ms.factory, labels=ms.labels,
                          allow_code=allow_code, base_dir=loaded.base_dir)
    except ModelSourceError as e:
        path = ("model",) if isinstance(loaded.spec.model, str) else ("model", "source")
        raise SpecError([loaded.error(path, str(e))]) from None


def prepare(spec_path: str | Path, *, allow_code: bool = False, icon_steps: Optional[int] = None) -> Prepared:
    """Load the spec and its model and compile the plan (what ``check`` and ``plan`` do).

    ``icon_steps`` replaces the optimisation steps of every icon and activation grid (a quick draft).
    """
    loaded = load_spec(spec_path)
    model = _model(loaded, allow_code)
    info = model_info(model)
    plan = compile_spec(loaded, info)
    if icon_steps is not None:
        _override_steps(plan, icon_steps)
    if plan.device == "auto":
        from .torch.device import pick_device
        plan.resolved_device = str(pick_device("auto"))
    try:
        plan.n_images = len(expand_refs(loaded.spec.inputs))
    except InputError as e:
        raise SpecError([loaded.error(("input",), str(e))]) from None
    return Prepared(loaded, model, info, plan)


def _override_steps(plan: Plan, steps: int) -> None:
    from dataclasses import replace

    from interpgram.grammar.plan import ActivationGrid, FeatureVis
    if steps < 1:
        raise ValueError("icon steps must be at least 1")
    for op_id, op in list(plan.ops.items()):
        if isinstance(op, (FeatureVis, ActivationGrid)):
            settings = tuple((k, steps if k == "steps" else v) for k, v in op.settings)
            plan.ops[op_id] = replace(op, settings=settings)


def load_spec_inputs(prep: Prepared) -> Inputs:
    refs = prep.loaded.spec.inputs
    try:
        return load_inputs(refs, prep.model.preprocess.size, prep.loaded.base_dir)
    except InputError as e:
        msg = str(e)
        idx = next((i for i, r in enumerate(refs) if r in msg), None)
        path = ("input",) if isinstance(prep.loaded.spec.input, str) or idx is None else ("input", idx)
        raise SpecError([prep.loaded.error(path, msg)]) from None


def make_cache(prep: Prepared, override: Optional[str | Path | bool] = None) -> ResultCache:
    setting = prep.loaded.spec.execution.cache if override is None else override
    if setting is False:
        return ResultCache(None, enabled=False)
    if setting is True:
        return ResultCache(None)
    p = Path(os.path.expanduser(str(setting)))
    return ResultCache(p if p.is_absolute() else prep.loaded.base_dir / p)


def run(prep: Prepared, *, cache: Optional[ResultCache] = None,
        progress: Optional[Callable[[str, int, int], None]] = None) -> tuple[Inputs, Results]:
    inputs = load_spec_inputs(prep)
    plan = prep.plan
    try:
        results = execute(plan, prep.model, inputs, cache=cache or make_cache(prep),
                          batch_size=prep.loaded.spec.execution.batch_size, progress=progress)
    except RuntimeError as e:
        if "execution.device" in str(e):
            raise SpecError([prep.loaded.error(("execution", "device"), str(e))]) from None
        raise
    return inputs, results


# ---------------------------------------------------------------------------- views
def build_views(plan: Plan, inputs: Inputs, results: Results):
    """Results → one :class:`ElementView` per element and input image (see :mod:`.views`)."""
    from .views import build_views as _build
    return _build(plan, inputs, results)


def render(spec_path: str | Path, out_dir: str | Path, *, allow_code: bool = False,
           cache: Optional[str | Path | bool] = None, progress=None,
           icon_steps: Optional[int] = None) -> tuple[Path, Prepared, Results]:
    """Compute and write ``out_dir/index.html``. Returns (path, prepared, results)."""
    from .view import write_report

    t0 = time.perf_counter()
    prep = prepare(spec_path, allow_code=allow_code, icon_steps=icon_steps)
    rc = make_cache(prep, cache)
    inputs, results = run(prep, cache=rc, progress=progress)
    by_element = build_views(prep.plan, inputs, results)
    views = [v for vs in by_element.values() for v in vs]
    layout = [[v.id for el in row for v in by_element.get(el, [])] for row in prep.plan.layout]
    st = results.stats
    passes = prep.plan.passes()
    meta = {
        "spec": str(spec_path),
        "model": prep.model.name,
        "inputs": ", ".join(inputs.names),
        "device": results.device,
        "passes": f"{passes['forward']} forward, {passes['backward']} backward "
                  f"(one element at a time: {prep.plan.unfused['forward']} forward, {prep.plan.unfused['backward']} backward)",
        "computed": f"{st.forward_passes} forward, {st.backward_passes} backward; cache hits {st.cache_hits}, misses {st.cache_misses}",
        **({"icons": f"{st.icons_rendered} rendered, {st.icons_cached} from the cache"
                     + (f"; activation grids {st.grids_rendered} rendered, {st.grids_cached} from the cache"
                        if st.grids_rendered or st.grids_cached else "")}
           if st.icons_rendered or st.icons_cached or st.grids_rendered or st.grids_cached else {}),
        "compute time": f"{time.perf_counter() - t0:.2f} s (model load, passes, cache)",
    }
    for note in prep.model.notes:
        meta.setdefault("notes", note)
    if prep.plan.links:
        meta["links"] = ", ".join(f"{a} → {b}" for a, b in prep.plan.links) + " (interactive only in a live dashboard)"
    truth = [t for t in inputs.truth if t]
    if truth:
        meta["ground truth"] = ", ".join(t["class"] + (" (with the planted patch)" if t["patched"] else "") for t in truth)
    path = write_report(views, Path(out_dir), title=prep.plan.title or Path(spec_path).stem, layout=layout, meta=meta)
    return path, prep, results
