"""`interpgram render --export npz` through the real CLI: the numbers read back with numpy alone, equal
the values the report's charts embed (parsed from the page) and what Interface.run() returns."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import interpgram
from support import ROOT
from interpgram.backends.render.charts import _SIG
from interpgram.backends.render.export import LABELS_KEY, iter_arrays

DEMO = ROOT / "specs" / "shapes" / "demo.yaml"
RTOL = 10.0 ** (1 - _SIG)  # the page rounds each value to _SIG significant digits


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    r = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "render", str(DEMO), "-o", str(tmp / "out"),
                        "--cache-dir", str(tmp / "cache"), "--icon-steps", "2", "--export", "npz", "-q"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert f"numbers: every element's, with their labels, in {(tmp / 'out' / 'numbers.npz').resolve()}" in r.stdout
    return tmp


def _rows(spec) -> list[list[dict]]:
    """Every inline data set of a Vega-Lite spec (``data.values`` and top-level ``datasets``)."""
    out = []

    def walk(x):
        if isinstance(x, dict):
            if isinstance(x.get("values"), list) and x["values"] and isinstance(x["values"][0], dict):
                out.append(x["values"])
            for k, v in x.items():
                if k == "datasets" and isinstance(v, dict):
                    out.extend(rows for rows in v.values() if rows and isinstance(rows[0], dict))
                else:
                    walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(spec)
    return out


def _page_specs(page: str) -> dict[str, dict]:
    return {m.group(1): json.loads(m.group(2)) for m in re.finditer(
        r'<section class="element" id="el-([^"]+)".*?<script type="application/json" class="spec">(.*?)</script>',
        page, flags=re.S)}


def test_npz_reads_with_numpy_alone_and_carries_its_labels(rendered):
    path = rendered / "out" / "numbers.npz"
    with zipfile.ZipFile(path) as z:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz[LABELS_KEY][()]))
        assert meta["format"] == "interpgram-numbers" and meta["inputs"] == ["shapes/test/10 (star)"]
        assert meta["classes"][3] == "star" and meta["model"] == "builtin:shapes-cnn"
        where = meta["elements"]["where"]["arrays"]["values"]
        assert where == {"dims": ["input", "cls", "y", "x"],
                         "coords": {"input": ["shapes/test/10 (star)"], "cls": ["star", "crescent"]}}
        assert npz["where/values"].shape == (1, 2, 16, 16) and npz["where/values"].dtype == np.float32
        names = set(npz.files)
    for key, m in meta["elements"].items():
        for name in m["arrays"]:
            assert f"{key}/{name}" in names


def test_npz_equals_the_values_drawn_in_the_report(rendered):
    numbers = interpgram.load_numbers(rendered / "out" / "numbers.npz")
    specs = _page_specs((rendered / "out" / "index.html").read_text())
    checked = 0
    # heatmaps: every cell of every panel is one (row, col, value) of one series' map
    for el in ("where", "versus", "magnitude", "upstream"):
        values = numbers[el].sel(input=0)  # (series|cls, y, x)
        maps = [values.numpy()[k] for k in range(values.shape[0])]
        if len(maps) == 2:  # two classes: each panel shows its evidence (> 0), one more the strongest of them
            maps = [np.maximum(m, 0) for m in maps]
            maps.append(np.maximum(*maps))
        panels = [rows for rows in _rows(specs[el]) if {"row", "col", "value"} <= set(rows[0])]
        assert panels, el
        for rows in panels:
            got = np.full(maps[0].shape, np.nan)
            for r in rows:
                got[r["row"], r["col"]] = r["value"]
            assert not np.isnan(got).any()
            assert any(np.allclose(got, m, rtol=RTOL, atol=1e-12) for m in maps), el
            checked += 1
        assert len(panels) >= len(maps)
    # bars: the top channels drawn, by channel index
    star = numbers["channels"].sel(input=0, cls="star")
    bars = [rows for rows in _rows(specs["channels"]) if {"atom", "value", "sign"} <= set(rows[0])]
    assert bars
    for r in bars[0]:
        assert r["value"] == pytest.approx(float(star.sel(channel=r["atom"])), rel=RTOL)
        checked += 1
    assert checked > 8


def test_npz_equals_interface_run(rendered):
    numbers = interpgram.load_numbers(rendered / "out" / "numbers.npz")
    res = interpgram.Interface(DEMO, cache=rendered / "cache", icon_steps=2).run()
    assert res.stats.cache_misses == 0  # the same numbers, read back from the render's cache
    ours = {(k, n): a for k, n, a in iter_arrays(res.numbers)}
    theirs = {(k, n): a for k, n, a in iter_arrays(numbers)}
    assert ours.keys() == theirs.keys()
    for key, a in ours.items():
        b = theirs[key]
        assert a.dims == b.dims and a.coords == b.coords, key
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # and an API user's own export reads back the same
    again = interpgram.load_numbers(res.to_npz(rendered / "api.npz"))
    assert [(k, n) for k, n, _ in iter_arrays(again)] == list(ours)


def test_a_file_that_is_not_numbers_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an interpgram numbers file"):
        interpgram.load_numbers(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not an interpgram numbers file"):
        interpgram.load_numbers(tmp_path / "text.npz")
