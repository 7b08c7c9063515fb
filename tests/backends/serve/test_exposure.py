"""Serving beyond loopback: the real `interpgram serve` in a subprocess on a free port, real HTTP.
Binding another address than loopback prints a warning; Panel's /components/<module> route, which
imports the module named in the URL, is closed (a plain Panel server, as the control, imports it)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from support import ROOT
from interpgram.backends.serve import exposure_warning, free_port, is_loopback

SPEC = """\
interpgram: 1
title: exposure test
model: builtin:shapes-cnn
input: builtin:shapes/10
execution: {{cache: {cache}}}
elements:
  logits: {{content: {{activation: {{layer: output}}}}, presentation: {{bars: {{top: 3}}}}}}
"""
CANARY = "ig_canary_mod"


class Served:
    def __init__(self, spec: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "interpgram.backends.cli", "serve", str(spec), "--port",
                                      str(self.port), "--no-show", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in l for l in self.lines):
                return
            assert self.proc.poll() is None, "\n".join(self.lines)
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} in {timeout} s:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


@pytest.fixture
def canary(tmp_path) -> tuple[Path, Path]:
    """A module that leaves a file behind when it is imported; its folder goes on PYTHONPATH."""
    mods, marker = tmp_path / "mods", tmp_path / "imported.marker"
    mods.mkdir()
    (mods / f"{CANARY}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nclass C:\n    __css__ = ['a.css']\n")
    return mods, marker


def _spec(tmp_path: Path) -> Path:
    p = tmp_path / "exposure.yaml"
    p.write_text(SPEC.format(cache=tmp_path / "cache"))
    return p


def test_the_components_route_imports_nothing(tmp_path, canary):
    mods, marker = canary
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(mods), os.environ.get("PYTHONPATH", "")]))
    s = Served(_spec(tmp_path), env=env)
    try:
        s.wait_for("ready in")
        base = f"http://127.0.0.1:{s.port}/"
        assert requests.get(base, timeout=60).status_code == 200
        for path in (f"components/{CANARY}/C/__css__/a.css", "components/panel/pane/Vega/__javascript__/x.js",
                     "components/antigravity/x/__css__/y"):
            r = requests.get(base + path, timeout=60)
            assert r.status_code == 404, (path, r.status_code)
        assert not marker.exists(), "the /components route imported a module named in the URL"
        assert "Traceback" not in "\n".join(s.lines)
    finally:
        s.stop()


def test_control_a_plain_panel_server_imports_the_module_in_the_url(canary, monkeypatch):
    """What the closed route prevents: Panel's own server imports the URL's module (in this process)."""
    import panel as pn

    mods, marker = canary
    monkeypatch.syspath_prepend(str(mods))
    port = free_port()
    server = pn.serve(lambda: pn.pane.Markdown("plain"), port=port, address="127.0.0.1", show=False, threaded=True,
                      verbose=False)
    try:
        end = time.monotonic() + 60
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/components/{CANARY}/C/__css__/a.css", timeout=30)
                break
            except requests.ConnectionError:
                assert time.monotonic() < end, "the plain Panel server did not start"
                time.sleep(0.2)
        assert marker.exists() and r.status_code in (403, 404)
    finally:
        server.stop()
        sys.modules.pop(CANARY, None)


def test_loopback_is_quiet_and_every_interface_warns(tmp_path):
    spec = _spec(tmp_path)
    quiet = Served(spec)
    try:
        quiet.wait_for("the input box opens images under")
        quiet.wait_for("ready in")
        assert not any("WARNING" in l for l in quiet.lines), quiet.lines
        assert f"images under {tmp_path.resolve()} (--input-root)" in "\n".join(quiet.lines)
    finally:
        quiet.stop()
    loud = Served(spec, "--host", "0.0.0.0", "--input-root", str(tmp_path / "cache"))
    try:
        # wait for interpgram's own line and the end of start-up: Bokeh prints a WARNING line of its own
        # (the wildcard origin) that can come first, and reading then raced interpgram's line
        loud.wait_for("WARNING: listening on")
        loud.wait_for("ready in")
        text = "\n".join(loud.lines)
        assert (f"WARNING: listening on 0.0.0.0:{loud.port} (every network interface): the dashboard is reachable "
                "from the network") in text
        assert "no login" in text and "--host 127.0.0.1" in text
        assert f"input folder {(tmp_path / 'cache').resolve()} (--input-root)" in text
        r = requests.get(f"http://127.0.0.1:{loud.port}/", timeout=60)
        assert r.status_code == 200
        assert requests.get(f"http://127.0.0.1:{loud.port}/components/{CANARY}/C/__css__/a.css",
                            timeout=60).status_code == 404
    finally:
        loud.stop()


def test_what_counts_as_loopback():
    for host in ("127.0.0.1", "127.0.0.5", "::1", "localhost"):
        assert is_loopback(host), host
        assert exposure_warning(host, 5006, Path("/x")) is None
    for host in ("0.0.0.0", "::", "", "192.168.1.20", "10.0.0.1", "no-such-host.invalid"):
        assert not is_loopback(host), host
        assert "reachable from the network" in exposure_warning(host, 5006, Path("/x"))


def test_a_missing_input_root_is_a_usage_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "serve", str(_spec(tmp_path)),
                        "--input-root", str(tmp_path / "nope"), "--no-show"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "--input-root" in r.stderr and "is not a folder (not found)" in r.stderr
    assert "Traceback" not in r.stderr
