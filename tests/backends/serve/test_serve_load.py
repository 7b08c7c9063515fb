"""Concurrent clients against a real served dashboard, with every answer checked: the suite runs
benchmarks/serve_load.py with small numbers (6 HTTP clients, 4 websocket sessions); the full load
(24 and 16) is `python benchmarks/serve_load.py`."""
from __future__ import annotations
from support import ROOT

import json
import subprocess
import sys



def test_http_clients_and_websocket_sessions_at_once_have_no_errors():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--http", "6", "--ws", "4",
                        "--seconds", "8", "--timeout", "180", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["errors"] == 0 and r.returncode == 0, out["error_samples"]
    assert out["ws"]["n"] == 4  # every session drew, re-planned for its class, took its input, saw the refusal
    assert out["page"]["n"] >= 6 and out["static"]["n"] == out["page"]["n"]
    assert out["closed_route"]["n"] == out["page"]["n"]  # /components answered 404 every time
