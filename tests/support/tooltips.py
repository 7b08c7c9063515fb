"""Hovering a Vega chart in a real browser until its tooltip shows (shared by the browser tests;
``tests/`` is on ``sys.path`` through pytest's ``pythonpath`` setting in pyproject.toml)."""
from __future__ import annotations

import pytest


TOOLTIP_STATE = """(([x, y]) => {
    const tip = document.getElementById('vg-tooltip-element');
    const at = document.elementFromPoint(x, y);
    const cut = s => s.replace(/data:image\\/png;base64,[A-Za-z0-9+\\/=]+/g, 'data:…').slice(0, 400);
    return {tooltip: tip ? tip.className + ' ' + cut(tip.innerHTML) : 'no #vg-tooltip-element',
            at_point: at ? cut(at.outerHTML) : 'nothing (off screen?)',
            viewport: [innerWidth, innerHeight], scrollY: scrollY};
})"""


def hover_until_tooltip(page, x: float, y: float, selector: str = "#vg-tooltip-element.visible img",
                        timeout_ms: int = 10_000) -> None:
    """Move the mouse onto (x, y) (viewport coordinates) in a few steps, as a hand does, and wait for
    ``selector``; a timeout fails with what the tooltip and the element under the pointer were."""
    page.mouse.move(x, y, steps=4)
    try:
        page.wait_for_selector(selector, timeout=timeout_ms)
    except Exception as e:
        if "Timeout" not in type(e).__name__:
            raise
        state = page.evaluate(TOOLTIP_STATE, [x, y])
        pytest.fail(f"no {selector!r} after hovering ({x:.0f}, {y:.0f}): {state}", pytrace=False)
