"""`interpgram layers` on wrapped models, with the spec's model keys (--factory, --weights,
--labels, --base-dir); where python: modules are looked for; the cache folder the help describes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from interpgram.backends.cli import build_parser, main
from interpgram.backends.pipeline import prepare
from interpgram.grammar import SpecError

ROOT = Path(__file__).resolve().parents[2]

CODE = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


class Wrapper(nn.Module):
    """What people write around a network: a module whose only child holds it."""
    def __init__(self):
        super().__init__()
        self.net = build()

    def forward(self, x):
        return self.net(x)


def wrapped():
    return Wrapper(), {"size": 16}
'''


@pytest.fixture
def folder(tmp_path, request):
    mod = "cli_layers_" + re.sub(r"\W", "_", request.node.name)
    (tmp_path / f"{mod}.py").write_text(CODE)
    return tmp_path, mod


def test_a_wrapped_model_lists_the_network_it_wraps(folder, capsys):
    tmp, mod = folder
    assert main(["layers", f"python:{mod}:wrapped", "--allow-code", "--base-dir", str(tmp)]) == 0
    out = capsys.readouterr().out
    listed = [l.split()[0] for l in out.splitlines()[2:] if l.startswith("  ") and not l.startswith("  (")]
    assert listed[:1] == ["input"] and listed[-1] == "output"
    assert {"net", "net.0", "net.1", "net.2", "net.3", "net.4"} <= set(listed), out
    assert "'net' holds the whole network" in out


def test_factory_weights_and_labels_on_the_command_line(folder, capsys):
    tmp, mod = folder
    import importlib
    import sys
    sys.path.insert(0, str(tmp))
    try:
        net = importlib.import_module(mod).build()
    finally:
        sys.path.remove(str(tmp))
    torch.save(net.state_dict(), tmp / "w.pt")
    (tmp / "labels.txt").write_text("cat\ndog\nfox\n")
    assert main(["layers", "file:w.pt", "--factory", f"python:{mod}:build", "--labels", "labels.txt",
                 "--allow-code", "--base-dir", str(tmp)]) == 0
    out = capsys.readouterr().out
    assert "3 classes" in out and re.search(r"^  0 +\(4, ", out, re.M), out


def test_python_modules_say_where_they_were_looked_for(folder, capsys, monkeypatch, tmp_path_factory):
    tmp, mod = folder
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    assert main(["layers", f"python:{mod}:wrapped", "--allow-code"]) == 1
    err = capsys.readouterr().err
    assert f"looked in {elsewhere}" in err and "--base-dir" in err and "Traceback" not in err
    spec = tmp / "spec.yaml"
    spec.write_text("interpgram: 1\nmodel: python:not_a_module_here:build\ninput: builtin:shapes/1\n"
                    "elements: {a: {content: {activation: {layer: conv1}}, presentation: heatmap}}\n")
    with pytest.raises(SpecError, match=re.escape(f"looked in {tmp} first")):
        prepare(spec, allow_code=True)


def _help(command: str, dest: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a.help for a in sub._actions if a.dest == dest)


def test_render_serve_and_plan_describe_the_same_cache_folder(monkeypatch, tmp_path):
    from interpgram.backends.files import default_root  # the folder the help names
    monkeypatch.delenv("INTERPGRAM_CACHE", raising=False)
    assert default_root() == Path.home() / ".cache" / "interpgram" / "results"
    monkeypatch.setenv("INTERPGRAM_CACHE", str(tmp_path))
    assert default_root() == tmp_path
    assert _help("render", "cache_dir") == _help("serve", "cache_dir")
    text = _help("render", "cache_dir")
    assert "execution.cache" in text and "$INTERPGRAM_CACHE" in text and "~/.cache/interpgram/results" in text
    for cmd in ("sprites", "cache"):
        assert "$INTERPGRAM_CACHE or ~/.cache/interpgram/results" in _help(cmd, "cache_dir")


def test_docs_link_only_to_files_that_exist():
    missing = []
    for f in [*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("specs/**/*.yaml"), *ROOT.glob("specs/**/*.md")]:
        for ref in re.findall(r"\bdocs/[\w./-]+\.md\b", f.read_text()):
            if not (ROOT / ref).exists():
                missing.append(f"{f.relative_to(ROOT)} → {ref}")
    assert not missing, missing
