"""`interpgram serve` without a browser: the shared engine and one session's page built in-process
(work runs synchronously when a Dashboard has no document), plus the real server over HTTP."""
from __future__ import annotations

import html
import json
import sys
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support import ROOT
from interpgram.backends.cli import build_parser
from interpgram.backends.serve import (DEFAULT_HOST, Dashboard, Session, free_port, make_server, selection_key,
                                       websocket_origins)

DEMO = ROOT / "specs" / "shapes" / "demo.yaml"

LINKED = """\
interpgram: 1
title: linked test
model: builtin:shapes-cnn
input: builtin:shapes/10
execution: {{cache: {cache}}}
elements:
  where:
    content: {{attribution: {{from: {{layer: conv4, atom: spatial}}, to: {{layer: output, select: [star]}}}}}}
    presentation: heatmap
  upstream:
    content: {{attribution: {{from: {{layer: {up}, atom: spatial}}, to: {{layer: conv4, atom: spatial}}}}}}
    presentation: heatmap
  logits:
    content: {{activation: {{layer: output}}}}
    presentation: {{bars: {{top: 5}}}}
  channels:
    content: {{attribution: {{from: {{layer: conv4, atom: channel}}, to: {{layer: output, select: [star]}}}}}}
    presentation: {{bars: {{top: 6}}}}
links:
  - {{from: where.hover, to: upstream.to}}
  - {{from: logits.click, to: channels.class}}
layout: [[where, upstream], [logits, channels]]
"""


def linked_spec(tmp_path: Path, up: str = "conv2") -> Path:
    p = tmp_path / "linked.yaml"
    p.write_text(LINKED.format(cache=tmp_path / "cache", up=up))
    return p


def datasets(pane) -> str:
    """What a chart draws (its data sets), to compare two charts."""
    return json.dumps(pane.object.get("datasets"), sort_keys=True)


def all_views(dash: Dashboard) -> list[str]:
    return [v.id for vs in dash.comp.views.values() for v in vs]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    engine = Session(DEMO, cache_dir=tmp_path_factory.mktemp("cache"), icon_steps=4)
    assert engine.load(), engine.error
    yield engine
    engine.stop()


@pytest.fixture
def linked(tmp_path):
    engine = Session(linked_spec(tmp_path))
    assert engine.load(), engine.error
    yield engine
    engine.stop()


def test_demo_page_has_every_element_with_title_and_grammar(demo):
    dash = Dashboard(demo)
    spec = demo.good.prep.loaded.spec
    assert set(dash.comp.views) == set(spec.elements)
    assert set(dash.panes) == set(all_views(dash)) and len(dash.panes) >= len(spec.elements)
    # one card per view, in the spec's layout rows, each with its title, grammar sentence and chart
    rows = dash.body.objects
    assert len(rows) == len(spec.layout)
    for row, names in zip(rows, spec.layout):
        cards = row.objects
        assert [c.name for c in cards] == [v.id for el in names for v in dash.comp.views[el]]
        for card in cards:
            v = next(v for vs in dash.comp.views.values() for v in vs if v.id == card.name)
            text = " ".join(str(o.object) for o in card.objects[:3])
            assert html.escape(v.title) in text and html.escape(v.grammar) in text
            pane = card.objects[-1]
            assert pane is dash.panes[v.id] and pane.object["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
            assert pane.object["usermeta"]["embedOptions"]["renderer"] == "svg"
    assert html.escape(spec.title) in dash.title.object
    assert "builtin:shapes-cnn" in dash.status.object and not dash.alert.visible
    # a second page shares the prepared model, plan and charts: nothing is computed again
    before = demo.good.base.results
    dash2 = Dashboard(demo)
    assert dash2.comp is dash.comp and dash2.comp.results is before
    assert dash2.panes["where"].object == dash.panes["where"].object
    assert dash2.panes["where"].object is not dash.panes["where"].object  # each pane gets its own copy


def test_class_picker_retargets_the_class_driven_elements(demo):
    dash = Dashboard(demo)
    assert demo.class_driven(dash.comp) == ["where", "channels", "groups"]  # versus compares star and crescent
    assert "where, channels, groups; it leaves versus as it is" in dash.class_note.object
    before = {vid: datasets(p) for vid, p in dash.panes.items()}
    classes = demo.good.prep.info.classes
    dash.choose_class(classes.index("square"))
    after = {vid: datasets(p) for vid, p in dash.panes.items()}
    for vid in ("where", "channels", "groups"):
        assert after[vid] != before[vid], vid
        assert "square" in dash.captions[vid].object
    for vid in ("versus", "magnitude", "upstream"):  # a comparison of two classes, not attributions to the output: unchanged
        assert after[vid] == before[vid], vid
    assert "strongest channels for square" in json.dumps(dash.panes["channels"].object)
    # the same class again comes from memory; back to the spec's classes restores the base charts
    run = dash.cls
    dash.choose_class(classes.index("square"))
    assert dash.cls is run
    dash.choose_class(None)
    assert {vid: datasets(p) for vid, p in dash.panes.items()} == before


def test_link_selection_changes_the_target_and_a_repeat_comes_from_the_cache(linked):
    dash = Dashboard(linked)
    li = {l.source: l for l in linked.good.prep.plan.link_info}
    assert li["where"].kind == "position" and li["logits"].kind == "class"
    base = datasets(dash.panes["upstream"])
    dash.select(li["where"].index, 0, "3,5")
    first = datasets(dash.panes["upstream"])
    assert first != base
    cap = dash.captions["upstream"].object
    assert "selected in where (hover)" in cap and "position (3, 5) of conv4" in cap and 'data-key="3,5"' in cap
    assert "computed in" in cap
    dash.select(li["where"].index, 0, "1,1")
    assert datasets(dash.panes["upstream"]) not in (first, base)
    # the first selection again: every result is read from the result cache, the charts are the same
    t0 = time.perf_counter()
    dash.select(li["where"].index, 0, "3,5")
    repeat_s = time.perf_counter() - t0
    assert datasets(dash.panes["upstream"]) == first
    assert "from the result cache" in dash.captions["upstream"].object
    run = linked.link_run(linked.good, dash.comp, li["where"].index, (3, 5))
    assert run.from_cache and run.stats.cache_misses == 0 and run.stats.cache_hits > 0
    assert run.stats.forward_passes == 0 and run.stats.backward_passes == 0
    assert repeat_s < 2.0
    # a click on a class bar re-targets the channel attribution
    before = datasets(dash.panes["channels"])
    dash.select(li["logits"].index, 0, "7")
    assert datasets(dash.panes["channels"]) != before
    assert "class crescent" in dash.captions["channels"].object
    assert "strongest channels for crescent" in json.dumps(dash.panes["channels"].object)
    # the source charts define the selection parameter the page listens to
    assert "link" in dash.panes["where"].selection.param and "link" in dash.panes["logits"].selection.param


def test_links_pair_the_views_of_each_input_image(tmp_path):
    path = linked_spec(tmp_path)
    path.write_text(path.read_text().replace("input: builtin:shapes/10", "input: [builtin:shapes/10, builtin:shapes/3]"))
    engine = Session(path)
    assert engine.load(), engine.error
    dash = Dashboard(engine)
    assert {"where-0", "where-1", "upstream-0", "upstream-1"} <= set(dash.panes)
    assert list(dash.input_select.options) == ["the spec's 2 inputs", "builtin:shapes/10", "builtin:shapes/3"]
    first, second = datasets(dash.panes["upstream-0"]), datasets(dash.panes["upstream-1"])
    dash.select(0, 1, "2,2")  # hovering the second image's `where` changes the second image's `upstream` only
    assert datasets(dash.panes["upstream-0"]) == first and datasets(dash.panes["upstream-1"]) != second
    assert "position (2, 2)" in dash.captions["upstream-1"].object and "selected" not in dash.captions["upstream-0"].object
    engine.stop()


def test_a_missing_spec_file_is_reported_until_it_appears(tmp_path):
    path = tmp_path / "later.yaml"
    engine = Session(path)
    assert engine.poll() and f"{path}:1:1: no such file" in engine.error
    assert not engine.poll()  # still missing: not loaded again every second
    dash = Dashboard(engine)
    assert dash.alert.visible and not dash.body.objects
    linked_spec(tmp_path).rename(path)
    assert engine.poll() and engine.error is None
    dash.tick()
    assert not dash.alert.visible and len(dash.panes) == 4
    engine.stop()


def test_vega_selection_values_become_keys():
    # what Panel's Vega pane reports for a point selection (over two fields, over one), and Vega's own form
    assert selection_key("position", [{"col": 3}, {"row": 5}]) == "3,5"
    assert selection_key("position", {"col": [3], "row": [5]}) == "3,5"
    assert selection_key("class", [{"atom": 2}]) == "2"
    assert selection_key("channel", [{"atom": 17.0}]) == "17"
    assert selection_key("group", [{"gid": 1}]) == "1"
    for empty in (None, [], {}, [{"col": 3}], [{"_vgsid_": 4}]):
        assert selection_key("position", empty) is None


def test_input_picker_recompiles_for_the_input_and_reuses_the_model(linked):
    dash = Dashboard(linked)
    base = datasets(dash.panes["where"])
    dash.choose_input("builtin:shapes/3")
    assert dash.comp.ref == "builtin:shapes/3" and "shapes/test/3" in dash.status.object
    assert dash.comp.prep.model is linked.good.prep.model  # not loaded again
    assert datasets(dash.panes["where"]) != base
    # links follow the input
    dash.select(0, 0, "2,2")
    assert "position (2, 2)" in dash.captions["upstream"].object
    # a bad input shows its message and keeps the page as it was
    shown = datasets(dash.panes["where"])
    dash.choose_input("builtin:nope/3")
    assert dash.input_alert.visible and "unknown built-in input 'builtin:nope/3'" in dash.input_alert.object.replace("&#x27;", "'")
    assert dash.input_ref == "builtin:shapes/3" and datasets(dash.panes["where"]) == shown
    dash.choose_input(str(Path(linked.path).parent / "missing.png"))
    assert dash.input_alert.visible and "missing.png" in dash.input_alert.object
    dash.choose_input(None)
    assert not dash.input_alert.visible and datasets(dash.panes["where"]) == base


def _broken(text: str) -> tuple[str, str]:
    """The spec with an unknown layer, and the position ``line:col`` of the bad value."""
    bad = text.replace("layer: conv2, atom: spatial", "layer: conv22, atom: spatial")
    line = next(i for i, l in enumerate(bad.splitlines(), 1) if "conv22" in l)
    col = bad.splitlines()[line - 1].index("conv22") + 1
    return bad, f"{line}:{col}"


def test_a_broken_spec_shows_positioned_errors_above_the_last_good_page_and_recovers(tmp_path):
    path = linked_spec(tmp_path)
    good_text = path.read_text()
    engine = Session(path)
    assert engine.load()
    dash = Dashboard(engine)
    assert not dash.alert.visible
    good_panes = dict(dash.panes)
    bad, at = _broken(good_text)
    path.write_text(bad)
    assert engine.poll() and engine.error and engine.good is not None
    assert not engine.poll()  # unchanged file: no reload
    dash.tick()
    assert dash.alert.visible
    text = dash.alert.object.replace("&#x27;", "'")
    assert f"{path}:{at}: unknown layer 'conv22'" in text and "did you mean" in text
    assert "1 problem found" in text
    assert dash.panes == good_panes and dash.body.objects  # the last good dashboard stays below
    new = Dashboard(engine)  # a page opened now shows the error and the last good version
    assert new.alert.visible and new.panes.keys() == good_panes.keys()
    # the fixed file (with a change) reloads every page
    path.write_text(good_text.replace("title: linked test", "title: linked test, fixed"))
    assert engine.poll() and engine.error is None
    dash.tick()
    assert not dash.alert.visible and "linked test, fixed" in dash.title.object
    assert dash.panes.keys() == good_panes.keys() and dash.panes["where"] is not good_panes["where"]
    engine.stop()


def test_a_spec_broken_from_the_start_shows_its_errors(tmp_path):
    path = linked_spec(tmp_path)
    bad, at = _broken(path.read_text())
    path.write_text(bad)
    engine = Session(path)
    assert not engine.load() and engine.good is None
    dash = Dashboard(engine)
    assert dash.alert.visible and f"{path}:{at}:" in dash.alert.object and not dash.body.objects
    path.write_text(bad.replace("conv22", "conv2"))
    engine.poll()
    dash.tick()
    assert not dash.alert.visible and len(dash.panes) == 4
    engine.stop()


def test_defaults_bind_loopback():
    args = build_parser().parse_args(["serve", "x.yaml"])
    assert (args.host, args.port, args.no_show, args.allow_code) == ("127.0.0.1", 5006, False, False)
    assert DEFAULT_HOST == "127.0.0.1"
    assert websocket_origins("127.0.0.1", 5006) == ["127.0.0.1:5006", "localhost:5006"]
    assert websocket_origins("0.0.0.0", 8000) == ["*:8000"]  # asked to be reachable from anywhere


def _page_text(url: str, timeout: float = 60.0) -> str:
    """The text of every model of a session's page, as a Bokeh client pulls it from the server.
    Pulled on a thread of its own: the Bokeh client runs a Tornado loop, which must not meet an
    asyncio loop another library (Playwright's sync API, in the browser tests) left on this one."""
    import importlib
    import pkgutil

    import panel.models
    from bokeh.client import pull_session

    for m in pkgutil.iter_modules(panel.models.__path__):  # the page's Panel models, so the client can read them
        try:
            importlib.import_module(f"panel.models.{m.name}")
        except Exception:  # noqa: BLE001 - optional extras (e.g. a model needing a package not installed)
            pass

    out: dict = {}

    def pull() -> None:
        try:
            with pull_session(url=url) as session:
                out["texts"] = [getattr(m, "text", None) for m in session.document.models]
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    t = threading.Thread(target=pull, daemon=True)
    t.start()
    t.join(timeout)
    if "error" in out:
        raise out["error"]
    if "texts" not in out:
        raise TimeoutError(f"no page from {url} in {timeout} s")
    return "\n".join(html.unescape(html.unescape(x)) for x in out["texts"] if isinstance(x, str))


def test_the_server_survives_a_broken_spec(tmp_path):
    """The real server (`interpgram serve` in a subprocess on a free loopback port): pages open
    before, while and after the spec is broken (each pull makes a session's page on the server, as
    a browser would), and the watcher reloads the spec on its own."""
    import requests

    path = linked_spec(tmp_path)
    good_text = path.read_text()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "interpgram.backends.cli", "serve", str(path), "--port", str(port),
                             "--no-show"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"

    def until(check, what: str, timeout: float = 90.0) -> str:
        end = time.monotonic() + timeout
        text = ""
        while time.monotonic() < end:
            assert proc.poll() is None, f"the server died: {proc.stdout.read()}"
            try:
                text = _page_text(url)
                if check(text):
                    return text
            except (OSError, requests.RequestException, RuntimeError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; last page text:\n{text[:2000]}")

    try:
        until(lambda t: "<h1>linked test</h1>" in t and "upstream: conv2 spatial attribution" in t, "the first page")
        assert requests.get(url, timeout=60).status_code == 200
        bad, at = _broken(good_text)
        path.write_text(bad)
        text = until(lambda t: f"{path}:{at}: unknown layer 'conv22'" in t, "the positioned error")
        assert "upstream: conv2 spatial attribution" in text  # the last good dashboard below the errors
        path.write_text(good_text)
        until(lambda t: "unknown layer" not in t and "<h1>linked test</h1>" in t, "the recovery")
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_replacing_a_link_source_chart_keeps_its_selection_watchable():
    """Panel resets a replaced chart's selection values to None, which its list parameters refuse;
    set_chart allows None first, so a target that is itself a link source can be redrawn."""
    import altair as alt
    import panel as pn

    from interpgram.backends.serve import set_chart

    pick = alt.selection_point(name="link", fields=["atom"], on="click")

    def chart(v: float) -> dict:
        return alt.Chart({"values": [{"atom": 1, "v": v}]}).mark_bar().encode(x="v:Q", y="atom:N").add_params(pick).to_dict()

    pane = pn.pane.Vega(chart(2.0))
    seen = []
    pane.selection.param.watch(lambda e: seen.append(e.new), "link")
    pane.selection.link = [{"atom": 1}]
    with pytest.raises(ValueError, match="must be a list"):  # what Panel does on its own
        _plain_replace(chart)
    set_chart(pane, chart(3.0))  # raised ValueError inside Panel's watcher before
    assert seen[-1] is None
    pane.selection.link = [{"atom": 1}]
    assert seen[-1] == [{"atom": 1}]


def _plain_replace(chart) -> None:
    import panel as pn
    pane = pn.pane.Vega(chart(2.0))
    pane.selection.link = [{"atom": 1}]
    pane.object = chart(3.0)


def test_the_server_binds_loopback_unless_told(tmp_path):
    from tornado.ioloop import IOLoop

    engine = Session(linked_spec(tmp_path))
    loop = IOLoop(make_current=False)
    server = make_server(engine, port=0, loop=loop)  # made, not started
    try:
        assert server.address == DEFAULT_HOST == "127.0.0.1" and server.port > 0
    finally:
        server.stop()
        loop.close()
