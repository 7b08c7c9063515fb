"""A TorchScript archive is a program: ``file:x.pt`` holding one loads only with --allow-code, like
``python:``; the refusal says why and what to pass, and comes before torch opens the archive (whose
``__setstate__`` runs on load). Once allowed, it loads and is refused with a clear message, since
PyTorch does not support the forward hooks every interpgram layer read goes through."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest
import torch
from torch import nn

from support import ROOT
from interpgram.backends.models import ModelSourceError, load_model
from interpgram.backends.models.sources.file import is_torchscript_archive



class Marked(nn.Module):
    """A scripted module whose ``__setstate__`` writes a file when the archive is loaded."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.w = torch.ones(4, 3)

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool, torch.Tensor]:
        return (self.marker, self.training, self.w)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool, torch.Tensor]) -> None:
        self.marker, self.training, self.w = state[0], state[1], state[2]
        torch.save(torch.zeros(1), self.marker)  # the archive's own code, run by torch.jit.load

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


@pytest.fixture
def scripted(tmp_path) -> Path:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    path = tmp_path / "net.pt"
    torch.jit.script(net).save(str(path))
    return path


def test_a_torchscript_archive_needs_allow_code(scripted):
    assert is_torchscript_archive(scripted)
    with pytest.raises(ModelSourceError) as e:
        load_model("file:net.pt", base_dir=scripted.parent)
    msg = str(e.value)
    assert "file:net.pt is a TorchScript archive, which is a program" in msg and "pass" in msg and "--allow-code" in msg
    with pytest.raises(ModelSourceError) as e:
        load_model("file:net.pt", base_dir=scripted.parent, allow_code=True)
    assert "loaded as TorchScript" in str(e.value) and "forward hooks" in str(e.value)
    assert "model.factory: python:MODULE:CALLABLE" in str(e.value)


def test_without_consent_the_archive_code_never_runs(tmp_path):
    marker = tmp_path / "ran.marker"
    torch.jit.script(Marked(str(marker))).save(str(tmp_path / "marked.pt"))
    marker.unlink(missing_ok=True)
    with pytest.raises(ModelSourceError, match="--allow-code"):
        load_model("file:marked.pt", base_dir=tmp_path)
    assert not marker.exists()
    with pytest.raises(ModelSourceError, match="forward hooks"):
        load_model("file:marked.pt", base_dir=tmp_path, allow_code=True)
    assert marker.exists()  # why consent is asked for: loading ran the archive's code


def test_other_files_are_not_mistaken_for_torchscript(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "sd.pt")  # torch.save writes a zip too, without constants.pkl
    (tmp_path / "junk.pt").write_bytes(b"not a zip at all")
    for name in ("sd.pt", "junk.pt"):
        assert not is_torchscript_archive(tmp_path / name)
        for allow in (False, True):
            with pytest.raises(ModelSourceError, match="is not a TorchScript archive"):
                load_model(f"file:{name}", base_dir=tmp_path, allow_code=allow)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "interpgram.backends.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_check_and_layers_say_so_without_a_traceback(scripted):
    spec = scripted.parent / "s.yaml"
    spec.write_text("interpgram: 1\nmodel: file:net.pt\ninput: builtin:shapes/1\n"
                    "elements:\n  e: {content: {activation: {layer: '0'}}, presentation: heatmap}\n")
    r = _cli("check", spec)
    assert r.returncode == 1 and f"{spec}:2:8: file:net.pt is a TorchScript archive" in r.stderr, r.stderr
    assert "--allow-code" in r.stderr and "Traceback" not in r.stderr
    r = _cli("check", spec, "--allow-code")
    assert r.returncode == 1 and "forward hooks" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = _cli("layers", f"file:{scripted}")
    assert r.returncode == 1 and "--allow-code" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = _cli("layers", f"file:{scripted}", "--allow-code")
    assert r.returncode == 1 and "forward hooks" in r.stderr and "Traceback" not in r.stderr, r.stderr
