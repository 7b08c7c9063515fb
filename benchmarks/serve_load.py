"""Load on a real `interpgram serve`: HTTP clients and websocket sessions at once, every answer checked.

    python benchmarks/serve_load.py                  # 24 HTTP clients for 25 s + 16 websocket sessions
    python benchmarks/serve_load.py --http 6 --ws 4 --seconds 8 --json   # what tests/backends/serve runs

The server is the CLI in a subprocess (`interpgram serve SPEC --port P --no-show`, loopback, a free
port) over a small linked spec on the built-in shapes model (its own result cache in a temporary
folder). While the HTTP clients run,

* each HTTP client loops until the time is up: the page (200, a Bokeh page with the dashboard's
  title), one of the page's own scripts under /static (200, non-empty), and the closed
  /components/<module> route (404);
* each websocket session is a Bokeh client session (what a browser tab holds): it waits for the
  dashboard to be drawn, picks a class in the class picker (waits for the server to re-plan and
  redraw for it), types another input (waits for that input's page) and types a path outside the
  input folder (waits for the refusal).

Anything else (a status, a missing text, an exception, no answer within --timeout) is an error.
It prints one line per kind, or with --json one JSON object; the exit status is 1 when any error
was seen.
"""
from __future__ import annotations

import argparse
import html
import importlib
import json
import pkgutil
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
interpgram: 1
title: load test
model: builtin:shapes-cnn
input: builtin:shapes/10
execution: {{cache: {cache}}}
elements:
  where:
    content: {{attribution: {{from: {{layer: conv4, atom: spatial}}, to: {{layer: output, select: [star]}}}}}}
    presentation: heatmap
  upstream:
    content: {{attribution: {{from: {{layer: conv2, atom: spatial}}, to: {{layer: conv4, atom: spatial}}}}}}
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
TITLE = "<h1>load test</h1>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`interpgram serve` in a subprocess; its output lines are collected."""

    def __init__(self, spec: Path, port: int):
        self.url = f"http://127.0.0.1:{port}/"
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "interpgram.backends.cli", "serve", str(spec),
                                      "--port", str(port), "--no-show"], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "ready in" in line:
                self.ready.set()
        self.ready.set()  # exited: wait() below sees it

    def wait_ready(self, timeout: float) -> None:
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            raise RuntimeError("interpgram serve did not get ready:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.seconds: dict[str, list[float]] = {}
        self.errors: list[str] = []

    def ok(self, kind: str, s: float) -> None:
        with self.lock:
            self.seconds.setdefault(kind, []).append(s)

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


def http_client(url: str, until: float, timeout: float, tally: Tally, started: threading.Barrier) -> None:
    import requests

    started.wait()
    with requests.Session() as http:
        while time.monotonic() < until:
            try:
                t0 = time.perf_counter()
                r = http.get(url, timeout=timeout)
                if r.status_code != 200 or "bokeh" not in r.text or "interpgram: " not in r.text:
                    tally.error(f"page: status {r.status_code}, {len(r.text)} bytes")
                    continue
                tally.ok("page", time.perf_counter() - t0)
                scripts = re.findall(r'src="(static/[^"]+)"', r.text)
                if not scripts:
                    tally.error("page: no /static script in it")
                    continue
                t0 = time.perf_counter()
                s = http.get(url + scripts[-1], timeout=timeout)
                if s.status_code != 200 or not s.content:
                    tally.error(f"{scripts[-1]}: status {s.status_code}")
                else:
                    tally.ok("static", time.perf_counter() - t0)
                t0 = time.perf_counter()
                c = http.get(url + "components/json/JSONDecoder/__css__/x.css", timeout=timeout)
                if c.status_code != 404:
                    tally.error(f"/components route: status {c.status_code}, expected 404 (closed)")
                else:
                    tally.ok("closed", time.perf_counter() - t0)
            except requests.RequestException as e:
                tally.error(f"http: {type(e).__name__}: {e}")


def _import_panel_models() -> None:
    """The page's Panel models, so a Bokeh client can read the documents the server sends."""
    import panel.models

    for m in pkgutil.iter_modules(panel.models.__path__):
        try:
            importlib.import_module(f"panel.models.{m.name}")
        except ImportError:  # an optional extra's model (its package is not installed)
            pass


def page_text(doc) -> str:
    return "\n".join(html.unescape(html.unescape(m.text)) for m in doc.models if isinstance(getattr(m, "text", None), str))


def ws_session(url: str, index: int, timeout: float, tally: Tally, started: threading.Barrier) -> None:
    try:
        _ws_session(url, index, timeout, tally, started)
    except Exception as e:  # noqa: BLE001 - counted and shown as an error of this session
        tally.error(f"ws {index}: {type(e).__name__}: {e}")


def _ws_session(url: str, index: int, timeout: float, tally: Tally, started: threading.Barrier) -> None:
    """One browser-like session: drawn page → class picker → typed input → refused path."""
    from bokeh.client import pull_session
    from bokeh.models import Select, TextInput

    started.wait()
    t0 = time.perf_counter()
    state = {"step": 0, "error": None, "deadline": time.monotonic() + timeout}
    try:
        session = pull_session(url=url)
    except (OSError, RuntimeError) as e:
        tally.error(f"ws {index}: cannot open a session: {e}")
        return
    doc = session.document
    # what the server sent since the pull, as text: the client does not apply Panel's patches to its
    # copy of the document (their new models do not always resolve there), it reads them
    received: list[str] = [page_text(doc)]

    def on_patch(message) -> None:
        received.append(html.unescape(html.unescape(json.dumps(message.content, ensure_ascii=False))))

    session._handle_patch = on_patch
    selects = {m.title: m for m in doc.models if isinstance(m, Select)}
    texts = [m for m in doc.models if isinstance(m, TextInput)]
    cls_opts = [o for o in selects["class"].options if o[0] != "-1"] if "class" in selects else []
    if not cls_opts or not texts:
        tally.error(f"ws {index}: no class picker or input box in the page")
        session.close()
        return
    value, label = cls_opts[index % len(cls_opts)]
    cls_name = label.split(": ", 1)[1]
    image = 20 + index
    steps = [
        ("the drawn page", lambda t: TITLE in t, lambda: setattr(selects["class"], "value", value)),
        (f"the page for class {cls_name}", lambda t: f"class {cls_name}: " in t and "re-planned" in t,
         lambda: setattr(texts[0], "value", f"builtin:shapes/{image}")),
        (f"the page for input {image}", lambda t: f"input shapes/test/{image} " in t,
         lambda: setattr(texts[0], "value", f"../../outside-{index}.png")),
        ("the refusal of a path outside the input folder", lambda t: "inside the input folder only" in t, None),
    ]

    def check() -> None:
        if session.connected is False or state["step"] >= len(steps):
            return  # closing: the loop may call once more
        name, cond, act = steps[state["step"]]
        if cond("\n".join(received)):
            tally.ok(f"ws step {state['step']}", time.perf_counter() - state.setdefault("t", t0))
            state["t"] = time.perf_counter()
            state["step"] += 1
            if act is None:
                session.close()
            else:
                received.clear()
                act()
        elif time.monotonic() > state["deadline"]:
            state["error"] = f"ws {index}: no {name} within {timeout:.0f} s"
            session.close()

    doc.add_periodic_callback(check, 50)
    # run the client's loop, which applies the server's patches, until a step closes the session
    # (Bokeh 3 keeps only the private name; force_roundtrip would drop the patches it meets)
    session._loop_until_closed()
    if state["error"]:
        tally.error(state["error"])
    elif state["step"] != len(steps):
        tally.error(f"ws {index}: the session closed at step {state['step']} ({steps[state['step']][0]})")
    else:
        tally.ok("ws session", time.perf_counter() - t0)


def run(n_http: int, n_ws: int, seconds: float, timeout: float) -> dict:
    _import_panel_models()
    with tempfile.TemporaryDirectory(prefix="interpgram-load-") as tmp:
        folder = Path(tmp) / "spec"  # the input folder; ../../outside-N.png leaves it
        folder.mkdir()
        spec = folder / "load.yaml"
        spec.write_text(SPEC.format(cache=Path(tmp) / "cache"))
        server = Server(spec, free_port())
        try:
            server.wait_ready(300)
            tally = Tally()
            started = threading.Barrier(n_http + n_ws)
            until = time.monotonic() + seconds
            threads = [threading.Thread(target=http_client, args=(server.url, until, timeout, tally, started), daemon=True)
                       for _ in range(n_http)]
            threads += [threading.Thread(target=ws_session, args=(server.url, i, timeout, tally, started), daemon=True)
                        for i in range(n_ws)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join(seconds + 4 * timeout)
            wall = time.perf_counter() - t0
            if any(t.is_alive() for t in threads):
                tally.error("a client did not finish")
            done = len(tally.seconds.get("ws session", []))
            if done != n_ws and not tally.errors:
                tally.error(f"{done} of {n_ws} websocket sessions finished")
            if server.proc.poll() is not None:
                tally.error(f"the server exited with {server.proc.returncode}")
            tracebacks = [l for l in server.lines if "Traceback" in l or l.startswith("ERROR")]
            for l in tracebacks:
                tally.error(f"server printed: {l}")
        finally:
            server.stop()

    def stat(kind: str) -> dict:
        xs = sorted(tally.seconds.get(kind, []))
        if not xs:
            return {"n": 0}
        return {"n": len(xs), "median_s": round(statistics.median(xs), 3),
                "p95_s": round(xs[min(len(xs) - 1, int(0.95 * len(xs)))], 3), "max_s": round(xs[-1], 3)}

    return {"http_clients": n_http, "ws_sessions": n_ws, "seconds": seconds, "wall_s": round(wall, 1),
            "page": stat("page"), "static": stat("static"), "closed_route": stat("closed"),
            "ws": stat("ws session"), "ws_steps": {name: stat(f"ws step {i}") for i, name in
                                                   enumerate(("drawn", "class", "input", "refusal"))},
            "errors": len(tally.errors), "error_samples": tally.errors[:10]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--http", type=int, default=24, help="HTTP clients (default 24)")
    p.add_argument("--ws", type=int, default=16, help="websocket sessions (default 16)")
    p.add_argument("--seconds", type=float, default=25.0, help="how long the HTTP clients run (default 25)")
    p.add_argument("--timeout", type=float, default=120.0, help="the most one answer may take (default 120 s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    out = run(a.http, a.ws, a.seconds, a.timeout)
    if a.json:
        print(json.dumps(out))
    else:
        print(f"{a.http} HTTP clients for {a.seconds:.0f} s + {a.ws} websocket sessions at once "
              f"(wall {out['wall_s']} s): {out['errors']} errors")
        for k in ("page", "static", "closed_route", "ws"):
            print(f"  {k:13s} {out[k]}")
        for k, v in out["ws_steps"].items():
            print(f"    ws step {k:8s} {v}")
        for e in out["error_samples"]:
            print(f"  error: {e}")
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
