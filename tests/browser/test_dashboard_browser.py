"""`interpgram serve` in Chromium: the real server (a subprocess of the CLI, on a free loopback
port) with every request that does not go to it blocked. Every element draws as a Vega SVG, a hover
and a click change the linked elements, an edited spec reloads the page, a broken one shows its
positioned errors and recovers, and eight pages at once each see their own selection."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support.browser import guarded_page

pytestmark = pytest.mark.browser

SPEC = """\
interpgram: 1
title: {title}
model: builtin:shapes-cnn
input: builtin:shapes/10
execution: {{cache: {cache}}}
elements:
  where:
    title: "where: conv4 positions for star"
    content: {{attribution: {{from: {{layer: conv4, atom: spatial}}, to: {{layer: output, select: [star]}}}}}}
    presentation: heatmap
  upstream:
    title: "upstream: conv2 positions feeding a conv4 position"
    content: {{attribution: {{from: {{layer: {up}, atom: spatial}}, to: {{layer: conv4, atom: spatial}}}}}}
    presentation: heatmap
  logits:
    title: "logits: click a class"
    content: {{activation: {{layer: output}}}}
    presentation: {{bars: {{top: 5}}}}
  channels:
    title: "channels: conv4 channels for the clicked class"
    content: {{attribution: {{from: {{layer: conv4, atom: channel}}, to: {{layer: output, select: [star]}}}}}}
    presentation: {{bars: {{top: 4}}}}
  groups:
    title: "groups: conv4 neuron groups"
    content: {{attribution: {{from: {{layer: conv4, atom: {{group: nmf, k: 3}}}}, to: {{layer: output, select: [star, crescent]}}}}}}
    presentation: {{groups: {{icons: false, top_channels: 3}}}}
links:
  - {{from: where.hover, to: upstream.to}}
  - {{from: logits.click, to: channels.class}}
layout: [[where, upstream], [logits, channels], [groups]]
"""
ELEMENTS = ("where", "upstream", "logits", "channels", "groups")
GRID = 8  # conv4 is 8×8
WAIT_MS = 60_000


def write_spec(path: Path, cache: Path, *, title: str = "dashboard test", up: str = "conv2") -> str:
    text = SPEC.format(title=title, cache=cache, up=up)
    path.write_text(text)
    return text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``interpgram serve SPEC --port P --no-show`` in a subprocess; its output is collected."""

    def __init__(self, spec: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "interpgram.backends.cli", "serve", str(spec), "--port", str(self.port), "--no-show"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 90) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in l for l in self.lines):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"interpgram serve exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"interpgram serve did not print {text!r} in {timeout} s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _start(folder: Path):
    spec = folder / "dash.yaml"
    write_spec(spec, folder / "cache")
    s = Server(spec)
    s.spec, s.cache = spec, folder / "cache"
    try:
        s.wait_for("interpgram serve: http://127.0.0.1:")
        s.wait_for("ready in")
    except BaseException:
        s.stop()
        raise
    return s


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the tests that leave its spec alone."""
    s = _start(tmp_path_factory.mktemp("dashboard"))
    yield s
    s.stop()


@pytest.fixture
def own_server(tmp_path):
    """A server of its own, for a test that edits the spec."""
    s = _start(tmp_path)
    yield s
    s.stop()


def open_page(browser, server: Server):
    """A page in its own browser context that may reach the server only (everything else is
    aborted and recorded in ``page.blocked``); console errors and uncaught exceptions go to
    ``page.errors``."""
    ctx, page = guarded_page(browser, (f"http://127.0.0.1:{server.port}/",), {"width": 1400, "height": 1000})
    page.goto(server.url)
    return ctx, page


def wait_drawn(page, n: int = len(ELEMENTS), timeout_ms: int = WAIT_MS) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".ig-chart svg.marks")).to_have_count(n, timeout=timeout_ms)


def svg(page, element: str) -> str:
    """An element's drawn SVG, without the gradient ids Vega numbers anew on every draw."""
    html = page.locator(f".ig-el-{element} svg.marks").inner_html()
    return re.sub(r"gradient_\d+", "gradient", html)


def caption(page, element: str) -> str:
    return page.locator(f".ig-el-{element} .ig-caption").inner_text()


def hover_cell(page, x: int, y: int) -> None:
    """Hover cell (x, y) of the link source's pick layer (the last 8×8 grid of rect marks)."""
    groups = page.locator(".ig-el-where g.mark-rect")
    grids = [i for i in range(groups.count()) if groups.nth(i).locator("path").count() == GRID * GRID]
    groups.nth(grids[-1]).locator("path").nth(y * GRID + x).hover()


def click_bar(page, rank: int) -> str:
    """Click the ``rank``-th bar of the logits chart; returns its class (from the mark's aria label)."""
    bar = page.locator(".ig-el-logits g.mark-rect path").nth(rank)
    label = bar.get_attribute("aria-label") or ""
    m = re.search(r"channel: ([\w-]+)", label)
    assert m, f"no class in the bar's aria label {label!r}"
    bar.click()
    return m.group(1)


def wait_until(fn, timeout: float, what: str):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def test_dashboard_draws_and_links_update_offline(browser, server, artifacts):
    t0 = time.monotonic()
    ctx, page = open_page(browser, server)
    try:
        wait_drawn(page)
        for el in ELEMENTS:
            assert page.locator(f".ig-el-{el} svg.marks").count() == 1, el
            assert page.locator(f".ig-el-{el} h3").count() == 1
        assert page.locator("h1").first.inner_text() == "dashboard test"
        assert "the class drives: where, channels, groups" in page.locator(".ig-class-note").inner_text()
        page.screenshot(path=str(artifacts / "dashboard-initial.png"), full_page=True)
        # hover a position of conv4 in `where`: `upstream` is re-planned for it
        before = svg(page, "upstream")
        hover_cell(page, 3, 5)
        wait_until(lambda: "position (3, 5) of conv4" in caption(page, "upstream"), 30, "the hover caption")
        assert "selected in where (hover)" in caption(page, "upstream")
        assert re.search(r"(computed|from the result cache) in \d+\.\d\d s", caption(page, "upstream"))
        wait_until(lambda: svg(page, "upstream") != before, 10, "the upstream chart to change")
        hovered = svg(page, "upstream")
        # another position draws another map; the first again is served from the result cache
        hover_cell(page, 6, 1)
        wait_until(lambda: "position (6, 1)" in caption(page, "upstream"), 30, "the second hover")
        wait_until(lambda: svg(page, "upstream") not in (before, hovered), 10, "the upstream chart to change again")
        hover_cell(page, 3, 5)
        wait_until(lambda: "position (3, 5)" in caption(page, "upstream"), 30, "the repeated hover")
        assert "from the result cache" in caption(page, "upstream")
        wait_until(lambda: svg(page, "upstream") == hovered, 10, "the same chart for the same position")
        # click a class bar in `logits`: `channels` shows that class
        before = svg(page, "channels")
        cls = click_bar(page, 3)
        wait_until(lambda: f"class {cls}" in caption(page, "channels"), 30, "the click caption")
        assert "selected in logits (click)" in caption(page, "channels")
        wait_until(lambda: svg(page, "channels") != before, 10, "the channels chart to change")
        assert f"strongest channels for {cls}" in page.locator(".ig-el-channels svg.marks").text_content()
        # the class picker re-targets where, channels and groups
        before = {el: svg(page, el) for el in ELEMENTS}
        page.locator(".ig-dashboard select").nth(1).select_option(label="7: crescent")
        wait_until(lambda: "class picker: crescent" in caption(page, "groups"), 60, "the class picker")
        wait_drawn(page)
        for el in ("where", "groups"):
            wait_until(lambda el=el: svg(page, el) != before[el], 10, f"{el} to show crescent")
        wait_until(lambda: "strongest channels for crescent" in page.locator(".ig-el-channels svg.marks").text_content(),
                   10, "channels to show crescent")
        page.screenshot(path=str(artifacts / "dashboard-linked.png"), full_page=True)
        assert page.errors == [], page.errors
        assert page.blocked == [], f"requests that left the server: {page.blocked}"
    finally:
        ctx.close()
    assert time.monotonic() - t0 < 90


def test_spec_edits_reload_and_errors_show_positions(browser, own_server, artifacts):
    from playwright.sync_api import expect

    server = own_server
    ctx, page = open_page(browser, server)
    try:
        wait_drawn(page)
        # an edit reloads the page: new title, and `upstream` now starts at conv3
        write_spec(server.spec, server.cache, title="dashboard test, edited", up="conv3")
        expect(page.locator("h1").first).to_have_text("dashboard test, edited", timeout=WAIT_MS)
        wait_drawn(page)
        wait_until(lambda: "Network conv3 Spatial" in page.locator(".ig-el-upstream .ig-grammar").inner_text(), 30,
                   "the upstream element to start at conv3")
        # a broken spec: the positioned error, above the last good dashboard
        text = write_spec(server.spec, server.cache, title="dashboard test, edited", up="conv33")
        line = next(i for i, l in enumerate(text.splitlines(), 1) if "conv33" in l)
        col = text.splitlines()[line - 1].index("conv33") + 1
        alert = page.locator(".ig-spec-error")
        expect(alert).to_contain_text(f"{server.spec}:{line}:{col}: unknown layer 'conv33'", timeout=WAIT_MS)
        expect(alert).to_contain_text("1 problem found")
        assert page.locator(".ig-chart svg.marks").count() == len(ELEMENTS)  # still the last good version
        page.screenshot(path=str(artifacts / "dashboard-error.png"), full_page=True)
        # fixed: the error goes away and the page shows the fixed spec
        write_spec(server.spec, server.cache, title="dashboard test, fixed")
        expect(page.locator("h1").first).to_have_text("dashboard test, fixed", timeout=WAIT_MS)
        expect(alert).to_be_hidden(timeout=WAIT_MS)
        wait_drawn(page)
        wait_until(lambda: "Network conv2 Spatial" in page.locator(".ig-el-upstream .ig-grammar").inner_text(), 30,
                   "the upstream element to start at conv2 again")
        assert page.errors == [], page.errors
        assert page.blocked == []
        assert server.proc.poll() is None  # the server never stopped
        assert "the spec has errors" in server.output()
    finally:
        ctx.close()


def test_eight_pages_at_once_each_see_their_own_selection(browser, server, artifacts):
    """Eight sessions (separate browser contexts) hover and click at the same time; each sees its
    own selection. Bounded: the server is killed if this takes more than 150 s."""
    watchdog = threading.Timer(150, server.stop)
    watchdog.start()
    t0 = time.monotonic()
    pages = []
    try:
        for _ in range(8):
            pages.append(open_page(browser, server))
        for _, page in pages:
            wait_drawn(page)
        positions = [(i, 7 - i) for i in range(8)]
        before = svg(pages[0][1], "upstream")
        clicked = []
        for (_, page), (x, y) in zip(pages, positions):  # every page acts before any result arrives
            hover_cell(page, x, y)
        for i, (_, page) in enumerate(pages):
            clicked.append(click_bar(page, i % 10))
        seen = []
        for (_, page), (x, y), cls in zip(pages, positions, clicked):
            wait_until(lambda page=page, x=x, y=y: f"position ({x}, {y}) of conv4" in caption(page, "upstream"), 60,
                       f"page {x}'s hover")
            wait_until(lambda page=page, cls=cls: f"class {cls}" in caption(page, "channels"), 60, f"page {x}'s click")
            wait_until(lambda page=page: svg(page, "upstream") != before, 10, "a changed chart")
            seen.append(svg(page, "upstream"))
        assert len(set(seen)) == 8, "two pages show the same map for different positions"
        assert len(set(clicked)) == 8
        for _, page in pages:  # nothing changed afterwards either
            assert "selected in where (hover)" in caption(page, "upstream")
            assert page.errors == [], page.errors
            assert page.blocked == []
        pages[3][1].screenshot(path=str(artifacts / "dashboard-concurrent.png"), full_page=True)
    finally:
        watchdog.cancel()
        for ctx, _ in pages:
            ctx.close()
    assert server.proc.poll() is None, "the server stopped (the watchdog fired?)"
    assert time.monotonic() - t0 < 150


def test_the_input_box_keeps_to_the_input_folder_and_no_page_needs_components(browser, server, artifacts):
    """Typed in Chromium: an image outside the spec's folder (the input folder) and a missing one get the
    same refusal; an image inside it draws. No request of the page goes to the closed /components route."""
    import numpy as np
    from PIL import Image

    folder = server.spec.parent
    outside = folder.parent / f"outside-{folder.name}.png"
    rng = np.random.default_rng(0)
    for p in (outside, folder / "inside.png"):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(p)
    ctx, page = open_page(browser, server)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    try:
        page.reload()
        wait_drawn(page)
        box = page.locator(".ig-dashboard input[type=text]")
        alert = page.locator(".ig-input-error")
        message = page.locator(".ig-input-error pre.ig-errors")  # inside the pane's shadow root

        def shown() -> str:
            return message.inner_text() if message.count() else ""

        def refusal(text: str) -> str:
            box.fill(text)
            box.press("Enter")
            return wait_until(lambda: text in shown() and shown(), 60, f"the refusal of {text}")

        there, absent = str(outside), str(outside.with_name("no-such-image.png"))
        a, b = refusal(there), refusal(absent)
        assert "inside the input folder only" in a
        assert a.replace(there, "REF") == b.replace(absent, "REF")
        box.fill("inside.png")
        box.press("Enter")
        wait_until(lambda: "input inside.png" in page.locator(".ig-status").inner_text(), 60, "the inside image")
        wait_drawn(page)
        assert not alert.is_visible()
        assert page.errors == [], page.errors
        assert page.blocked == [], f"requests that left the server: {page.blocked}"
        assert requested and not [u for u in requested if "/components/" in u], requested
    finally:
        ctx.close()
