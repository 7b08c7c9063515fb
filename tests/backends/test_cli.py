"""The `interpgram` command end to end, as a user runs it (a real subprocess for the key paths)."""
from __future__ import annotations

import json
import subprocess
import sys


from support import ROOT
from interpgram.backends.cli import main

DEMO = ROOT / "specs" / "shapes" / "demo.yaml"


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "interpgram.backends.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_shows_examples():
    r = cli("--help")
    assert r.returncode == 0
    assert "examples:" in r.stdout and "interpgram render specs/shapes/demo.yaml -o report" in r.stdout
    for cmd in ("check", "plan", "render", "layers", "schema"):
        assert cmd in r.stdout


def test_check_ok_and_error_without_traceback(tmp_path):
    r = cli("check", DEMO)
    assert r.returncode == 0, r.stderr
    assert "ok — 6 elements on builtin:shapes-cnn" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text().replace("layer: conv3, atom: spatial", "layer: conv33, atom: spatial"))
    r = cli("check", bad)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert f"{bad}:" in r.stderr and "unknown layer 'conv33'" in r.stderr and "did you mean 'conv3'" in r.stderr
    assert r.stderr.strip().endswith("1 problem found")


def test_plan_prints_the_fused_passes(capsys):
    assert main(["plan", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "passes  1 forward, 3 backward" in out
    assert "Capture      forward conv2, conv3, conv4 (+graph)" in out


def test_plan_json(capsys):
    assert main(["plan", str(DEMO), "--json"]) == 0
    ops = json.loads(capsys.readouterr().out)
    assert ops["fwd"]["op"] == "Capture"


def test_layers_lists_shapes(capsys):
    assert main(["layers", "builtin:shapes-cnn"]) == 0
    out = capsys.readouterr().out
    assert "conv3" in out and "(128, 16, 16)" in out and "output" in out and "(10,)" in out


def test_layers_unknown_source():
    r = cli("layers", "torchvison:resnet18")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "did you mean 'torchvision:'" in r.stderr


def test_torchvision_missing_names_the_extra():
    # torchvision cannot be imported next to this CPU build of torch: the error must say what to do
    r = cli("layers", "torchvision:resnet18")
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a binary mismatch with this torch build: the case here
        assert r.returncode == 1 and "pip install 'interpgram[torchvision]'" in r.stderr and "Traceback" not in r.stderr
    else:
        assert r.returncode == 0 and "layer4" in r.stdout


def test_schema_is_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "interpgram spec" and "elements" in schema["properties"]
    import jsonschema  # noqa: F401  (shipped with altair)
    from jsonschema import Draft202012Validator
    import yaml
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    demo = yaml.safe_load(DEMO.read_text())
    validator.validate(demo)
    demo["elements"]["where"]["presentation"] = "heatmapp"  # editors flag an unknown presentation too
    assert not validator.is_valid(demo)
    demo["elements"]["where"]["presentation"] = {"bars": {"tpo": 3}}
    assert not validator.is_valid(demo)
    # every spec in specs/ validates, nested icon options included (their $refs resolve from the root)
    for path in sorted((DEMO.parent.parent).rglob("*.yaml")):
        validator.validate(yaml.safe_load(path.read_text()))
    groups = yaml.safe_load((DEMO.parent / "neuron_groups.yaml").read_text())
    groups["elements"]["groups"]["presentation"] = {"groups": {"icon": {"stpes": 3}}}
    assert not validator.is_valid(groups)


def test_render_writes_report_and_reuses_cache(tmp_path):
    out, cache = tmp_path / "r", tmp_path / "cache"
    r = cli("render", DEMO, "-o", out, "--cache-dir", cache)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out / 'index.html'}" in r.stdout and "1 forward / 3 backward passes computed" in r.stdout
    assert (out / "index.html").stat().st_size > 100_000
    r2 = cli("render", DEMO, "-o", out, "--cache-dir", cache)
    assert "0 forward / 0 backward passes computed" in r2.stdout and " 0 misses" in r2.stdout


def test_python_source_needs_allow_code(tmp_path):
    (tmp_path / "mynet.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))\n"
        "    return m, {'size': 32, 'classes': ['a', 'b', 'c']}\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("interpgram: 1\nmodel: python:mynet:build\ninput: builtin:shapes/1\n"
                    "elements:\n  e: {content: {attribution: {from: {layer: '1'}, to: {layer: output, select: [b]}}}, presentation: heatmap}\n")
    r = cli("render", spec, "-o", tmp_path / "out", "--no-cache")
    assert r.returncode == 1 and "--allow-code" in r.stderr and not (tmp_path / "out").exists()
    r = cli("render", spec, "-o", tmp_path / "out", "--no-cache", "--allow-code")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "index.html").exists()


def test_file_source_refuses_pickled_modules(tmp_path):
    import torch
    from torch import nn
    torch.save(nn.Linear(2, 2), tmp_path / "whole.pt")
    spec = tmp_path / "s.yaml"
    spec.write_text("interpgram: 1\nmodel: file:whole.pt\ninput: builtin:shapes/1\n"
                    "elements:\n  e: {content: {activation: {layer: x}}, presentation: heatmap}\n")
    r = cli("check", spec)
    assert r.returncode == 1 and "not a TorchScript archive" in r.stderr and "Traceback" not in r.stderr


def test_render_exports_every_element_as_svg_and_png(tmp_path):
    import xml.etree.ElementTree as ET

    out = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "render", "specs/shapes/demo.yaml", "-o", str(out),
                        "--cache-dir", str(tmp_path / "cache"), "--icon-steps", "2", "--export", "svg,png", "-q"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    figs = sorted((out / "figures").iterdir())
    names = {f.name for f in figs}
    for el in ("where", "versus", "channels", "groups", "magnitude", "upstream"):
        assert f"{el}.svg" in names and f"{el}.png" in names
    for f in figs:
        if f.suffix == ".svg":
            root = ET.parse(f).getroot()
            assert root.tag.endswith("svg") and len(list(root.iter())) > 20
        else:
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 2000
    assert "figures: 12 file(s)" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "render", "specs/shapes/demo.yaml", "-o",
                          str(tmp_path / "x"), "--export", "pdf"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "formats are svg and png" in bad.stderr


QUIET_ATLAS = """\
interpgram: 1
model: builtin:shapes-cnn
dataset: {{source: builtin:shapes, n: {n}, split: train, chunk: 32, batch_size: 32}}
elements:
  atlas:
    content: {{activation: {{layer: conv4, atom: spatial}}}}
    presentation: {{atlas: {{grid: 3, min_count: 2, layout: {{n_neighbors: 6}}, icon: {{size: 16, steps: 2, attempts: 1}}}}}}
"""


def test_quiet_silences_the_atlas_collection_bar(tmp_path):
    """-q: nothing on stderr, the atlas collection's bar included; without it the collection shows a bar."""
    for n, quiet in ((64, True), (96, False)):  # two collections (a complete one would show no bar)
        spec = tmp_path / f"atlas{n}.yaml"
        spec.write_text(QUIET_ATLAS.format(n=n))
        r = cli("render", spec, "-o", tmp_path / f"out{n}", "--cache-dir", tmp_path / "cache", *(["-q"] if quiet else []))
        assert r.returncode == 0, r.stderr
        if quiet:
            assert "atlas collection" not in r.stderr and "%|" not in r.stderr, r.stderr
        else:
            assert "atlas collection" in r.stderr
