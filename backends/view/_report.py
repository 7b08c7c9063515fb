"""The static report: one self-contained HTML file that opens from disk with no network.

Vega, Vega-Lite and vega-embed are inlined from vl-convert's bundle; images are data URLs. The file
is rendered completely in memory, written to a temporary name in the target folder, fsynced and
moved into place, so a crash or interrupt never leaves a half-written report.
"""
from __future__ import annotations

import html
import json
import os
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ._charts import chart_for
from ._types import ElementView

CSS = """
:root { --ink:#1f1f1f; --muted:#5f6368; --rule:#e3e3e3; --accent:#1a73e8; }
* { box-sizing: border-box; }
body { margin:0; font: 16px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color:var(--ink); background:#fff; }
header { padding: 28px 48px 18px; border-bottom: 1px solid var(--rule); }
header h1 { font: 600 28px/1.2 Georgia, "Times New Roman", serif; margin: 0 0 10px; }
dl.meta { display:grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin:0; font-size: 13px; color: var(--muted); }
dl.meta dt { font-weight:600; } dl.meta dd { margin:0; }
main { padding: 12px 48px 32px; }
.row { display:flex; flex-wrap:wrap; gap: 28px; align-items:flex-start; margin: 22px 0; }
section.element { flex: 0 1 auto; max-width: 100%; }
section.element h2 { font: 600 18px/1.3 Georgia, serif; margin: 0 0 4px; }
section.element .grammar { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; color: var(--muted); margin: 0 0 10px; }
.chart { overflow-x:auto; }
.error { color:#b3261e; font-family: ui-monospace, monospace; white-space: pre-wrap; }
footer { padding: 14px 48px 28px; border-top: 1px solid var(--rule); font-size: 12px; color: var(--muted); }
"""


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one script, from vl-convert (offline). Building it takes
    seconds, so it is kept on disk per vl-convert version."""
    import hashlib

    import vl_convert

    from interpgram.backends.torch.cache import default_root

    tag = hashlib.sha256(f"{version('vl-convert-python')}".encode()).hexdigest()[:12]
    path = default_root().parent / f"vega-bundle-{tag}.js"
    try:
        text = path.read_text(encoding="utf-8")
        if text.endswith("/*complete*/"):
            return text
    except OSError:
        pass
    text = vl_convert.javascript_bundle() + "\n/*complete*/"
    try:
        atomic_write_text(path, text)
    except OSError:  # a read-only home: fine, just slower next time
        pass
    return text


def _version() -> str:
    try:
        return version("interpgram")
    except PackageNotFoundError:  # pragma: no cover
        return "dev"


def _script_json(obj) -> str:
    """JSON safe to place inside a <script> element."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(views: list[ElementView], *, title: str, layout: list[list[str]] | None = None, meta: dict | None = None) -> str:
    by_id = {v.id: v for v in views}
    if len(by_id) != len(views):
        raise ValueError("element view ids must be unique")
    rows = layout if layout else [[v.id] for v in views]
    placed = [i for r in rows for i in r]
    missing = [i for i in placed if i not in by_id]
    if missing:
        raise ValueError(f"layout names views that do not exist: {', '.join(missing)}")
    rows = rows + [[v.id] for v in views if v.id not in placed]
    specs = {v.id: chart_for(v).to_dict() for v in views}  # any chart error surfaces before writing
    meta_html = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(val))}</dd>" for k, val in (meta or {}).items())
    body = []
    for r in rows:
        cells = []
        for vid in r:
            v = by_id[vid]
            cells.append(
                f'<section class="element" id="el-{html.escape(vid)}" data-presentation="{html.escape(v.presentation)}">'
                f"<h2>{html.escape(v.title)}</h2><p class=\"grammar\">{html.escape(v.grammar)}</p>"
                f'<div class="chart" id="chart-{html.escape(vid)}"></div></section>')
        body.append(f'<div class="row">{"".join(cells)}</div>')
    embed = (
        "const SPECS = " + _script_json(specs) + ";\n"
        "for (const [id, spec] of Object.entries(SPECS)) {\n"
        "  const el = document.getElementById('chart-' + id);\n"
        "  vegaEmbed(el, spec, {renderer: 'svg', actions: {export: true, source: false, compiled: false, editor: false}})\n"
        "    .then(() => el.dataset.rendered = '1')\n"
        "    .catch(err => { el.innerHTML = '<p class=\"error\"></p>'; el.firstChild.textContent = String(err); console.error(err); });\n"
        "}\n"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style>"
        f"<script>{vega_bundle()}</script></head><body>"
        f"<header><h1>{html.escape(title)}</h1><dl class=\"meta\">{meta_html}</dl></header>"
        f"<main>{''.join(body)}</main>"
        f"<footer>interpgram {html.escape(_version())} · static report: every chart and image is embedded in this file "
        f"and opens without a network. Use each chart's ⋯ menu to save it as PNG or SVG.</footer>"
        f"<script>{embed}</script></body></html>\n"
    )


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_report(views: list[ElementView], out_dir: Path, *, title: str, layout: list[list[str]] | None = None,
                 meta: dict | None = None) -> Path:
    """Write ``out_dir/index.html``; everything is rendered before anything touches the disk."""
    text = render_html(views, title=title, layout=layout, meta=meta)
    path = Path(out_dir) / "index.html"
    atomic_write_text(path, text)
    return path


def to_svg(view: ElementView, path: Path) -> Path:
    import vl_convert

    atomic_write_text(Path(path), vl_convert.vegalite_to_svg(chart_for(view).to_dict()))
    return Path(path)


def to_png(view: ElementView, path: Path, *, scale: float = 2.0) -> Path:
    import vl_convert

    data = vl_convert.vegalite_to_png(chart_for(view).to_dict(), scale=scale)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
