"""benchmarks/gpu.py, the one run that fills the performance table on a GPU, kept from rotting: its quick
mode on the CPU runs every benchmark the full run does (the full run's InceptionV1 collection aside,
which is the same script with other arguments) and each must report real, positive figures.

About a minute on 2 CPU cores with numba's UMAP compilation cached (gpu.py keeps it in
NUMBA_CACHE_DIR, default ~/.cache/interpgram/numba); the first run on a machine adds ~40 s.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from support import ROOT

GPU = ROOT / "benchmarks" / "gpu.py"

# the figures each benchmark's RESULT must hold, all finite and positive
FIGURES = {
    "fusion": ("fused_s", "per_element_s", "captum_s", "per_element_ratio", "captum_ratio"),
    "links": ("fused_s", "one_by_one_s", "ratio", "live_first_ms", "live_again_ms", "live_ratio"),
    "featurevis_batching": ("batched_s", "single_s", "batched_icons_per_s", "single_icons_per_s", "ratio"),
    "featurevis_autocast": ("float32_s", "bfloat16_s", "speed_ratio"),
    "icon_floor": (),  # per row, below
    "atlas_collect": ("collect_s", "naive_s", "collect_images_per_s", "naive_images_per_s", "speedup"),
    "atlas_end_to_end": ("total_s", "collection_images_per_s", "again_s", "cached_speedup"),
}
ICON_ROW = ("step_s", "floor_s", "ratio", "icons_per_s")


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _result(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, "gpu.py printed no RESULT line"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_quick_cpu_run_measures_every_benchmark():
    run = subprocess.run([sys.executable, str(GPU), "--device", "cpu", "--quick"], capture_output=True, text=True,
                         timeout=400, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    summary = _result(run.stdout)
    assert summary["device"] == "cpu" and summary["quick"] is True
    assert summary["torch"] == torch.__version__ and summary["threads"] >= 1
    assert set(summary["benchmarks"]) == set(FIGURES)

    table = run.stdout[run.stdout.index("\nsummary: "):]
    for name, keys in FIGURES.items():
        b = summary["benchmarks"][name]
        assert b["error"] is None and b["rc"] == 0 and _positive(b["wall_s"]), (name, b)
        r = b["result"]
        assert r["device"] == "cpu", (name, r)
        for k in keys:
            assert _positive(r.get(k)), (name, k, r.get(k))
        row = next(ln for ln in table.splitlines() if ln.startswith(name + " "))  # its line of the summary
        wall = float(row[len(name):].split()[0])
        assert abs(wall - b["wall_s"]) < 0.06 and "FAILED" not in row, row

    rows = summary["benchmarks"]["icon_floor"]["result"]["rows"]
    assert {r["size"] for r in rows} == {128, 224}, rows
    for r in rows:
        for k in ICON_ROW:
            assert _positive(r[k]), (k, r)
        assert math.isclose(r["icons_per_s"], r["batch"] / r["step_s"], rel_tol=1e-9)

    atlas = summary["benchmarks"]["atlas_end_to_end"]["result"]
    for stage in ("collection", "layout", "grid", "icons"):
        assert _positive(atlas["stages"].get(stage)), (stage, atlas["stages"])
    assert atlas["total_s"] >= sum(atlas["stages"].values()) - 1e-6
    assert "atlas_collect_k1008" in table and "the full run only" in table


def test_a_missing_device_is_one_line_naming_the_fix():
    """An unknown device (and, where torch sees no GPU, cuda) fails at once with exit status 2 and one line."""
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "links.py"), "--device", "gpu"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout + bad.stderr
    assert bad.stderr.count("\n") == 1 and "use --device cpu" in bad.stderr, bad.stderr
    if not torch.cuda.is_available():
        for script, args in ((GPU, []), (ROOT / "benchmarks" / "fusion.py", [])):
            run = subprocess.run([sys.executable, str(script), "--device", "cuda", *args], capture_output=True,
                                 text=True, timeout=120, cwd=ROOT)
            assert run.returncode == 2 and run.stdout == "", run.stdout + run.stderr
            assert run.stderr.count("\n") == 1 and "no CUDA device" in run.stderr and "--device cpu" in run.stderr
