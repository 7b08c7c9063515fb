"""Comparing reports of the same spec rendered in different runs (fresh, from the cache, resumed).

Two renders of one spec differ only in the meta lines that describe the run itself (what was
computed versus read from the cache, how long it took, the cache's state, the atlas collection's
timings); :func:`report_core` blanks exactly those, so equal cores mean equal numbers, figures and
page."""
from __future__ import annotations

import re
from pathlib import Path

RUN_META = ("computed", "icons", "compute time", "link passes", "cache", "atlas", "dataset examples")
_META_RE = re.compile(r"(<dt>(?:" + "|".join(re.escape(k) for k in RUN_META) + r")</dt><dd>)(.*?)(</dd>)", re.S)


def report_core(html: str | Path) -> str:
    text = Path(html).read_text(encoding="utf-8") if isinstance(html, Path) else html
    return _META_RE.sub(r"\1…\3", text)
