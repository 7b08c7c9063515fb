"""benchmarks/gpu.py, the one call that measures everything on a lent GPU, run for real on the CPU at quick
sizes, so that none of the benchmarks it calls can rot unnoticed."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["icon_floor", "featurevis_autocast", "featurevis_batching", "fusion", "links", "atlas_collect",
         "atlas_end_to_end"]


@pytest.mark.slow
def test_every_benchmark_runs_and_prints_its_figures():
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "interpgram" / "numba"))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick"],
                       capture_output=True, text=True, timeout=1500, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    out = r.stdout
    assert "on cpu (" in out.splitlines()[0]
    summary = out[out.rindex("benchmark "):]
    for name in NAMES:
        m = re.search(rf"^{name}\s+ok\s+([0-9.]+)$", summary, re.M)
        assert m and float(m.group(1)) > 0, (name, summary)
    rows = json.loads(re.search(r"^RESULT (.*)$", out, re.M).group(1))["rows"]
    assert rows and all(math.isfinite(v) and v > 0 for row in rows
                        for k, v in row.items() if k.endswith("_s") or k in ("ratio", "icons_per_s"))
    ratio = lambda pat: float(re.search(pat, out, re.M).group(1))  # noqa: E731
    assert ratio(r"^per-element\s+8\s+11\s+[0-9.]+\s+([0-9.]+)×") > 0  # fusion (a ratio of times: not judged here)
    assert ratio(r"fused is ([0-9.]+)× faster") > 0  # links
    assert ratio(r"speed \(float32 s ÷ bfloat16 s\): ([0-9.]+)×") > 0  # autocast on / off
    assert ratio(r"speed-up: ([0-9.]+)×") > 0  # atlas collection vs a per-image loop
    assert ratio(r"collection rate: ([0-9.]+) images/s") > 0  # atlas end to end, by stage
