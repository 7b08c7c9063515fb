"""Running the user's own Python code, only with their consent.

``python:MODULE:CALLABLE`` model sources, model factories and data sets import ``MODULE`` with the
spec's folder first on ``sys.path`` and call ``CALLABLE``; that runs code, so it happens only when
the user passed ``--allow-code`` (``allow_code=True`` from Python).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from interpgram.grammar.spec.errors import did_you_mean


class CodeError(Exception):
    """User code that may not run (no consent) or cannot be imported; the message says what to do."""


def import_callable(ref: str, *, base_dir: Path, allow_code: bool, what: str):
    """``MODULE:CALLABLE`` → the callable, imported with ``base_dir`` first on ``sys.path``."""
    if not allow_code:
        raise CodeError(f"{what} runs Python code from {ref!r}; run it only if you trust it, by passing --allow-code "
                        "(or allow_code=True from Python)")
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise CodeError(f"{what}: expected MODULE:CALLABLE, e.g. python:mypkg.models:build, got {ref!r}")
    added = str(base_dir)
    sys.path.insert(0, added)
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - the user's module failed to import: say why, with its own exception
        raise CodeError(f"{what}: cannot import {mod_name!r} (looked in {base_dir} first, then on Python's "
                        f"sys.path): {type(e).__name__}: {e}") from None
    finally:
        if sys.path and sys.path[0] == added:
            sys.path.pop(0)
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_")]
        raise CodeError(f"{what}: {mod_name!r} has no {attr!r} {did_you_mean(attr, public, listing='names')}")
    return getattr(module, attr)
