"""The Python API: :class:`Interface` (a spec with its model and inputs), :class:`Model` (an
``nn.Module`` in memory with its preprocessing and class names) and :class:`Results` (the numbers,
labelled; the report page, inline in Jupyter).

It is the same pipeline as the ``interpgram`` command — :func:`pipeline.prepare` / ``run`` /
``report_parts`` — with the model and the images handed over in memory instead of named in the spec.
"""
from __future__ import annotations

import html
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from torch import nn

from interpgram.backends import pipeline
from interpgram.backends.api.inputs import APIError, to_inputs
from interpgram.backends.api.spec_source import SpecSource, load, source_of
from interpgram.backends.files import atomic_write_text
from interpgram.backends.models import LoadedModel
from interpgram.backends.models.base import ModelSourceError, Preprocess, from_module, make_preprocess
from interpgram.backends.render import render_html, to_png, to_svg
from interpgram.backends.render.export import NUMBERS_FILE, ElementNumbers, Numbers, numbers_of, write_npz
from interpgram.grammar import LoadedSpec

IFRAME_MIN_PX, IFRAME_ROW_PX, IFRAME_MAX_PX = 320, 460, 2400  # inline display height: header + rows of charts


class Text(str):
    """A plain-text answer (a plan, a check) that a notebook shows as text, not as a quoted string."""

    def __repr__(self) -> str:
        return str(self)


@dataclass
class Model:
    """An ``nn.Module`` in memory with what interpgram needs to know about it.

    ``size``: the input's (H, W) (or one int); ``mean`` / ``std`` / ``value_range``: how an RGB image
    in [0, 1] becomes the model's input, ``(x · (hi − lo) + lo − mean) / std``; ``resize`` (``shorter``,
    the default: cover the size, then a centre crop; ``stretch``; ``pad``: letterbox) and ``crop``
    (``center`` | ``none``): how an image is brought to ``size``, as a spec's ``model:`` keys of the same
    names; ``classes``: the output's class names (default ``class0 … classN``). The module is put in
    eval mode and its parameters stop requiring gradients, as every model interpgram loads."""

    module: nn.Module
    size: int | tuple[int, int] = 224
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    classes: Optional[Sequence[str]] = None
    name: Optional[str] = None
    value_range: tuple[float, float] = (0.0, 1.0)
    resize: Optional[str] = None
    crop: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise APIError(f"Model(module): a torch.nn.Module, not {type(self.module).__name__}")
        for what, v in (("mean", self.mean), ("std", self.std)):
            if len(tuple(v)) != 3:
                raise APIError(f"Model({what}=...): three numbers, one per RGB channel; got {tuple(v)}")
        if any(float(s) <= 0 for s in self.std):
            raise APIError(f"Model(std=...): standard deviations are positive; got {tuple(self.std)}")
        try:  # size, resize and crop checked now, as a spec's model: keys are
            make_preprocess(Preprocess(), {"size": self.size, "resize": self.resize, "crop": self.crop}, "Model")
        except ModelSourceError as e:
            raise APIError(str(e)) from None
        self._loaded: Optional[LoadedModel] = None

    def load(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = from_module(self.module, name=self.name, size=self.size, mean=tuple(self.mean),
                                       std=tuple(self.std), value_range=tuple(self.value_range),
                                       classes=list(self.classes) if self.classes is not None else None,
                                       resize=self.resize, crop=self.crop)
        return self._loaded


def _model_arg(model: Any) -> tuple[Optional[str], Optional[LoadedModel]]:
    """``model=`` as (a reference for the spec, a model in memory)."""
    if model is None:
        return None, None
    if isinstance(model, str):
        return model, None
    if isinstance(model, Model):
        lm = model.load()
        return lm.name, lm
    if isinstance(model, LoadedModel):
        return model.name, model
    if isinstance(model, nn.Module):
        raise APIError("model=: a bare nn.Module does not say its input size, normalisation or class names; pass "
                       "interpgram.Model(module, size=(H, W), mean=(...), std=(...), classes=[...])")
    raise APIError(f"model=: a reference such as 'builtin:shapes-cnn', an interpgram.Model or a loaded model; "
                   f"got {type(model).__name__}")


class Interface:
    """An interpretability interface: a spec (a YAML path, YAML text or a dict), its model and inputs.

    ``model``: a reference (``"builtin:shapes-cnn"``, ``"torchvision:resnet18"``, ...) or an
    :class:`Model` wrapping a module in memory; it replaces the spec's ``model:`` (which may then be
    left out). ``inputs``: tensors, numpy arrays, PIL images, paths or refs (``"builtin:shapes/7"``),
    one or a list; they replace the spec's ``input:``. ``cache``: the result cache (default: the
    spec's ``execution.cache``; ``False`` recomputes everything)."""

    def __init__(self, spec: Any, *, model: Any = None, inputs: Any = None, allow_code: bool = False,
                 cache: Optional[str | Path | bool] = None, icon_steps: Optional[int] = None,
                 progress: Optional[Callable[[str, int, int], None]] = None):
        self.source: SpecSource = source_of(spec)
        self._model_ref, self._model = _model_arg(model)
        self._inputs = inputs
        self.allow_code = allow_code
        self.cache = cache
        self.icon_steps = icon_steps
        self.progress = progress
        self._prep: Optional[pipeline.Prepared] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ preparing
    def _build(self) -> pipeline.Prepared:
        src = self.source
        with src.key_paths():
            loaded = load(src, model=self._model_ref)
            model = self._model or pipeline.spec_model(loaded, self.allow_code)
            inputs = None
            if self._inputs is not None:
                inputs = to_inputs(self._inputs, model.preprocess.fit, loaded.base_dir)
                loaded = LoadedSpec(loaded.spec.model_copy(update={"input": list(inputs.refs)}), loaded.located)
            return pipeline.prepare(loaded, allow_code=self.allow_code, icon_steps=self.icon_steps, model=model,
                                    inputs=inputs)

    def prepared(self) -> pipeline.Prepared:
        """The spec loaded, its model loaded and the plan compiled (once; :meth:`reload` forgets it)."""
        with self._lock:
            if self._prep is None:
                self._prep = self._build()
            return self._prep

    def reload(self) -> "Interface":
        """Read the spec again (after editing its file)."""
        with self._lock:
            self._prep = None
        return self

    # ------------------------------------------------------------------ what the CLI does
    def check(self) -> Text:
        """Validate the spec against the model; raises :class:`SpecError` (with positions) or says ok."""
        prep = self.prepared()
        n = len(prep.loaded.spec.elements)
        lines = [f"{prep.loaded.file}: ok — {n} element{'s' if n != 1 else ''} on {prep.model.name} "
                 f"({len(prep.info.layers)} layers, {len(prep.info.classes)} classes)"]
        lines += [f"note: {note}" for note in prep.model.notes]
        return Text("\n".join(lines))

    def plan(self) -> Text:
        """The fused plan as ``interpgram plan`` prints it: passes, ops, estimated memory."""
        return Text(self.prepared().plan.explain())

    def run(self) -> "Results":
        """Compute every element (the result cache skips what was computed before)."""
        prep = self.prepared()
        with self.source.key_paths():
            cache = pipeline.make_cache(prep, self.cache)
            inputs, results = pipeline.run(prep, cache=cache, progress=self.progress)
        return Results(numbers_of(prep.plan, inputs, results), prep, inputs, results, cache, self.source, self.progress)

    def report(self, out_dir: str | Path, *, export: Sequence[str] = ()) -> Path:
        """Compute and write ``out_dir/index.html``, the same report as ``interpgram render``
        (``export``: svg, png, npz as ``--export``). Returns the page's path."""
        return self.run().report(out_dir, export=export)

    def serve(self, *, host: str = "127.0.0.1", port: int = 0, block: bool = False, show: bool = False):
        """The live dashboard (``interpgram serve``) on ``host`` (this machine only by default).

        ``block=False`` (for notebooks) serves from a background thread and returns a
        :class:`Served` handle (``.url``, ``.stop()``); ``block=True`` serves until interrupted.
        A spec file is reloaded when it changes; the model stays the one in memory."""
        from interpgram.backends.api.served import Served  # Panel loads only when a dashboard is asked for

        return Served.start(self, host=host, port=port, block=block, show=show)

    def __repr__(self) -> str:
        what = {"path": str(self.source.value), "text": "YAML text", "dict": "a dict"}[self.source.kind]
        model = self._model.name if self._model else (self._model_ref or "the spec's model")
        return f"<interpgram.Interface of {what} · model {model}>"


class Results:
    """What :meth:`Interface.run` computed: the numbers of every element, labelled, and the report.

    ``results["where"]`` is an :class:`ElementNumbers`; ``.sel(input=0, cls="star")`` picks by label.
    In Jupyter a Results object draws itself: the report page, inline and offline."""

    def __init__(self, numbers: Numbers, prep: pipeline.Prepared, inputs, raw, cache, source: SpecSource,
                 progress=None):
        self.numbers = numbers
        self.prep = prep
        self.inputs = inputs
        self.raw = raw  # the executor's Results: op id → tensors, stats, device
        self._cache = cache
        self._source = source
        self._progress = progress
        self._parts: Optional[pipeline.ReportParts] = None
        self._page: Optional[str] = None

    # ------------------------------------------------------------------ numbers
    def __getitem__(self, key: str) -> ElementNumbers:
        return self.numbers[key]

    def __iter__(self):
        return iter(self.numbers)

    def __len__(self) -> int:
        return len(self.numbers)

    def __contains__(self, key: object) -> bool:
        return key in self.numbers

    def keys(self):
        return self.numbers.keys()

    @property
    def stats(self):
        return self.raw.stats

    @property
    def device(self) -> str:
        return self.raw.device

    def to_npz(self, path: str | Path) -> Path:
        """Every element's numbers with their labels in one .npz (as ``--export npz``)."""
        return write_npz(self.numbers, Path(path))

    # ------------------------------------------------------------------ the report
    def parts(self) -> pipeline.ReportParts:
        if self._parts is None:
            with self._source.key_paths():
                self._parts = pipeline.report_parts(self.prep, self.inputs, self.raw, cache=self._cache,
                                                    progress=self._progress)
        return self._parts

    def html(self) -> str:
        """The report page (a whole HTML document, everything inlined, as ``index.html``)."""
        if self._page is None:
            parts = self.parts()
            self._page = render_html(parts.views, **parts.kwargs())
        return self._page

    def report(self, out_dir: str | Path, *, export: Sequence[str] = ()) -> Path:

        bad = [f for f in export if f not in pipeline.EXPORT_FORMATS]
        if bad:
            raise APIError(f"export: formats are {', '.join(pipeline.EXPORT_FORMATS)}, not {', '.join(bad)}")
        out = Path(out_dir)
        path = atomic_write_text(out / "index.html", self.html())
        for v in self.parts().views:
            for fmt in (f for f in export if f in ("svg", "png")):
                (to_svg if fmt == "svg" else to_png)(v, out / "figures" / f"{v.id}.{fmt}")
        if "npz" in export:
            self.to_npz(out / NUMBERS_FILE)
        return path

    def _repr_html_(self) -> str:
        """The report in an iframe: its own document, so its script and styles touch nothing else
        in the notebook, and it draws offline (Vega is inlined in the page, no CDN)."""
        rows = max(1, len(self.parts().layout))
        height = min(IFRAME_MAX_PX, IFRAME_MIN_PX + IFRAME_ROW_PX * rows)
        return (f'<iframe class="interpgram-report" title="{html.escape(self.parts().title)}" '
                f'sandbox="allow-scripts allow-downloads" style="width:100%;height:{height}px;border:0;resize:vertical" '
                f'srcdoc="{html.escape(self.html(), quote=True)}"></iframe>')

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/html": self._repr_html_(), "text/plain": repr(self)}

    def __repr__(self) -> str:
        st = self.raw.stats
        return (repr(self.numbers) + f"\n  computed on {self.raw.device}: {st.forward_passes} forward, "
                f"{st.backward_passes} backward; cache hits {st.cache_hits}, misses {st.cache_misses}")
