"""Positioned diagnostics: every user mistake is reported as ``file:line:col: message``."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Diagnostic:
    file: str
    line: int  # 1-based
    col: int  # 1-based
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class SpecError(Exception):
    """One or more problems in a spec. ``str()`` lists them all, one per line."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.file, d.line, d.col))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


def nearest(value: object, choices: Iterable[str], n: int = 1) -> list[str]:
    """The closest valid choices to ``value`` (difflib ratio, case-insensitive)."""
    choices = [str(c) for c in choices]
    if not choices:
        return []
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(str(value).lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def did_you_mean(value: object, choices: Iterable[str], *, listing: str = "valid") -> str:
    """``"(valid: a, b, c; did you mean b?)"`` with a short listing of the choices."""
    choices = list(dict.fromkeys(str(c) for c in choices))
    shown = _short_list(choices)
    guess = nearest(value, choices)
    tail = f"; did you mean {guess[0]!r}?" if guess else ""
    return f"({listing}: {shown}{tail})"


def _short_list(choices: list[str], limit: int = 12) -> str:
    if len(choices) <= limit:
        return ", ".join(choices)
    return ", ".join(choices[: limit - 2]) + f", … {choices[-1]} ({len(choices)} in all)"
