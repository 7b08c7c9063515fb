"""The static report: one self-contained HTML file that opens from disk with no network.

Vega, Vega-Lite and vega-embed are inlined from vl-convert's offline bundle (pinned to the
Vega-Lite version altair emits); every chart spec is embedded as JSON next to its section; images
are data URLs. The page is rendered completely in memory — any chart error surfaces, naming its
element, before the disk is touched — then written to ``index.html.tmp-<pid>`` in the target
folder, fsynced and moved into place with ``os.replace``, so a crash or an interrupt never leaves
a half-written report and an existing report survives a failed render.
"""
from __future__ import annotations

import html
import os
import json
import math
import re
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from string import Template
from typing import Any

from interpgram.backends.files import atomic_write, atomic_write_text
from interpgram.backends.render.draw import spec_for, vegalite_version
from interpgram.backends.render.types import ElementView
from interpgram.grammar import link_kinds

ASSETS = Path(__file__).parent / "assets"
CSS = (ASSETS / "report.css").read_text(encoding="utf-8")


# the page's script: draws every section, then wires the links (backends/render/assets/report.js)
EMBED_JS = (ASSETS / "report.js").read_text(encoding="utf-8")
# the page around them (string.Template: $title, $main, ...; the values are inserted as they are)
PAGE = Template((ASSETS / "report.html").read_text(encoding="utf-8"))


class ElementRenderError(RuntimeError):
    """One element of a report could not be drawn; names the element and keeps the cause."""

    def __init__(self, view: ElementView, cause: BaseException):
        self.element = view.id
        self.presentation = view.presentation
        super().__init__(f"element {view.id!r} (presentation {view.presentation!r}) could not be drawn: "
                         f"{type(cause).__name__}: {cause}")


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one classic script, from vl-convert (offline). Building it
    takes a second or two, so it is kept on disk, keyed by the vl-convert and Vega-Lite versions."""
    import hashlib

    import vl_convert


    vl = vegalite_version()
    tag = hashlib.sha256(f"{version('vl-convert-python')}|{vl}".encode()).hexdigest()[:12]
    # beside the user's caches, never beside a results folder named by $INTERPGRAM_CACHE (which may be
    # a relative path: the bundle would land in the current folder)
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = home / "interpgram" / f"vega-bundle-{tag}.js"
    marker = "\n/*interpgram: complete*/"
    try:
        text = path.read_text(encoding="utf-8")
        if text.endswith(marker):
            return _script_safe(text)
    except OSError:
        pass
    text = vl_convert.javascript_bundle(vl_version=vl) + marker
    try:
        atomic_write(path, text.encode("utf-8"))
    except OSError:  # a read-only home: fine, just slower next time
        pass
    return _script_safe(text)


def _script_safe(js: str) -> str:
    """Inline JS must not contain ``</script``; in JS source ``<\\/script`` means the same."""
    return re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element: no ``<``, ``>``, ``&`` or line separators survive raw."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def interpgram_version() -> str:
    try:
        return version("interpgram")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "(not installed)"


def _fmt(value: Any) -> str:
    """One meta value as escaped HTML: numbers compact, mappings and lists as inline lists."""
    if isinstance(value, bool) or value is None:
        return html.escape(str(value).lower() if isinstance(value, bool) else "—")
    if isinstance(value, float):
        return html.escape(f"{value:.4g}" if math.isfinite(value) else str(value))
    if isinstance(value, dict):
        items = "".join(f"<li>{html.escape(str(k))}: {_fmt(v)}</li>" for k, v in value.items())
        return f"<ul>{items}</ul>"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "<ul>" + "".join(f"<li>{_fmt(v)}</li>" for v in value) + "</ul>"
    return html.escape(str(value))


def _rows(views: list[ElementView], layout: list[list[str]] | None) -> list[list[str]]:
    ids = [v.id for v in views]
    for vid in ids:
        if not isinstance(vid, str) or not vid or any(c.isspace() for c in vid):
            raise ValueError(f"element view ids must be non-empty strings without spaces, got {vid!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"element view ids must be unique, repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
    rows = [list(r) for r in (layout or [])]
    placed = [i for r in rows for i in r]
    missing = [i for i in placed if i not in ids]
    if missing:
        raise ValueError(f"layout names views that do not exist: {', '.join(map(str, missing))} "
                         f"(views: {', '.join(ids) or 'none'})")
    twice = sorted({i for i in placed if placed.count(i) > 1})
    if twice:
        raise ValueError(f"layout places a view twice: {', '.join(twice)}")
    # views the layout does not mention are shown too, one per row, after the layout's rows
    return [r for r in rows if r] + [[i] for i in ids if i not in placed]


def _share_images(variant_specs: dict[str, dict[str, Any]]) -> list[str]:
    """Images (data URLs) that occur in more than one variant are stored once in the page and
    referenced as "@img:N" (the page's script puts them back before drawing)."""
    counts: dict[str, int] = {}

    def walk(x, f):
        if isinstance(x, str):
            return f(x)
        if isinstance(x, list):
            return [walk(i, f) for i in x]
        if isinstance(x, dict):
            return {k: walk(v, f) for k, v in x.items()}
        return x

    def count(x: str) -> str:
        if x.startswith("data:image/"):
            counts[x] = counts.get(x, 0) + 1
        return x

    for specs in variant_specs.values():
        for spec in specs.values():
            walk(spec, count)
    shared = [u for u, n in counts.items() if n > 1]
    index = {u: i for i, u in enumerate(shared)}
    for specs in variant_specs.values():
        for key in list(specs):
            specs[key] = walk(specs[key], lambda x: f"@img:{index[x]}" if x in index else x)
    return shared


def _link_hint(vid: str, links: list[dict] | None) -> str:
    for L in links or []:
        if L["target"] == vid:
            return link_kinds.hint(L["kind"], L["event"], L["source_element"], len(L["keys"]), L["total"])
    return ""


def render_html(views: list[ElementView], *, title: str, layout: list[list[str]] | None = None,
                meta: dict | None = None, links: list[dict] | None = None,
                variants: dict[str, list[ElementView]] | None = None) -> str:
    """The whole report page as a string (nothing is written).

    ``links`` (see :func:`interpgram.backends.links.report_links`) and ``variants`` (base view id →
    its precomputed variant views) make the page interactive across elements."""
    import vl_convert

    by_id = {v.id: v for v in views}
    rows = _rows(views, layout)
    specs: dict[str, dict] = {}
    for v in views:  # every chart is built before anything is written
        try:
            specs[v.id] = spec_for(v)
        except Exception as e:
            raise ElementRenderError(v, e) from e
    variant_specs: dict[str, dict[str, Any]] = {}
    for base, vs in (variants or {}).items():
        for v in vs:
            try:
                variant_specs.setdefault(base, {})[f"{v.link}|{v.key}"] = spec_for(v, validate=False)
            except Exception as e:
                raise ElementRenderError(v, e) from e
    images = _share_images(variant_specs)
    meta_html = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{_fmt(val)}</dd>" for k, val in (meta or {}).items())
    body = []
    for r in rows:
        cells = []
        for vid in r:
            v = by_id[vid]
            e = html.escape
            cells.append(
                f'<section class="element" id="el-{e(vid)}" data-view="{e(vid)}" data-presentation="{e(v.presentation)}">'
                f"<h2>{e(v.title)}</h2>"
                f'<p class="grammar" title="the grammar sentence of this element"><code>{e(v.grammar)}</code></p>'
                + (f'<p class="selection" aria-live="polite">{e(_link_hint(vid, links))}</p>' if vid in variant_specs else "")
                + f'<div class="chart" id="chart-{e(vid)}" role="figure" aria-label="{e(v.title)}"></div>'
                f'<script type="application/json" class="spec">{_script_json(specs[vid])}</script>'
                + (f'<script type="application/json" class="variants">{_script_json(variant_specs[vid])}</script>'
                   if vid in variant_specs else "")
                + "</section>")
        body.append(f'<div class="row">{"".join(cells)}</div>')
    libs = (f"Vega {vl_convert.get_vega_version()}, Vega-Lite {vegalite_version()}, "
            f"vega-embed {vl_convert.get_vega_embed_version()}")
    data = ""
    if links:
        data += (f'<script type="application/json" id="interpgram-links">{_script_json(links)}</script>\n'
                 f'<script type="application/json" id="interpgram-link-kinds">{_script_json(link_kinds.as_json())}</script>\n')
    if images:
        data += f'<script type="application/json" id="interpgram-images">{_script_json(images)}</script>\n'
    return PAGE.substitute(version=html.escape(interpgram_version()), title=html.escape(title), css=CSS,
                           libs=html.escape(libs), vega=vega_bundle(), meta=meta_html, main="\n".join(body),
                           data=data, script=EMBED_JS)


def write_report(views: list[ElementView], out_dir: Path, *, title: str, layout: list[list[str]] | None = None,
                 meta: dict | None = None, links: list[dict] | None = None,
                 variants: dict[str, list[ElementView]] | None = None) -> Path:
    """Write ``out_dir/index.html`` (creating ``out_dir``); returns its path.

    ``layout`` is rows of element ids (default: one element per row, in order); views it does not
    mention follow, one per row. Everything is rendered before anything touches the disk.
    """
    text = render_html(views, title=title, layout=layout, meta=meta, links=links, variants=variants)
    return atomic_write_text(Path(out_dir) / "index.html", text)


def to_svg(view: ElementView, path: Path) -> Path:
    """One element's chart as a standalone SVG (with its title), rendered offline by vl-convert."""
    import vl_convert

    svg = vl_convert.vegalite_to_svg(_export_spec(view), vl_version=vegalite_version())
    return atomic_write_text(Path(path), svg)


def to_png(view: ElementView, path: Path, *, scale: float = 2.0) -> Path:
    """One element's chart as a PNG (``scale`` × its CSS pixel size), rendered offline by vl-convert."""
    import vl_convert

    png = vl_convert.vegalite_to_png(_export_spec(view), vl_version=vegalite_version(), scale=scale)
    return atomic_write(Path(path), png)


def _export_spec(view: ElementView) -> dict:
    """The chart's spec titled with the element's title and grammar sentence (a page shows both
    above the chart; an exported file has to carry them itself)."""
    try:
        spec = spec_for(view)
    except Exception as e:
        raise ElementRenderError(view, e) from e
    inner = spec.pop("title", None)
    title = {"text": view.title, "subtitle": view.grammar, "anchor": "start", "fontSize": 14, "subtitleFontSize": 11,
             "subtitleFont": "DejaVu Sans Mono, monospace", "offset": 12}
    if inner is None:
        spec["title"] = title
        return spec
    # a chart with its own title keeps it inside a one-element vconcat under the element's title
    top = {k: spec.pop(k) for k in ("$schema", "config", "datasets") if k in spec}
    spec["title"] = inner
    return {**top, "title": title, "vconcat": [spec]}
