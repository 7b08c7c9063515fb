"""A warning raised while a command runs reaches the user as one line (``warning: …``), not as Python's
``file:line: Category: message`` followed by the source line that raised it."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_warning_is_one_line_without_python_source(tmp_path):
    (tmp_path / "warnmodel.py").write_text(textwrap.dedent("""
        import warnings
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3, padding=1)
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                return self.fc(self.conv(x).mean(dim=(2, 3)))

        def build():
            warnings.warn("these weights are random: the class names are placeholders", UserWarning)
            return Net(), {"size": 16, "classes": ["a", "b"]}
    """))
    (tmp_path / "spec.yaml").write_text(textwrap.dedent("""
        interpgram: 1
        model: python:warnmodel:build
        input: img.png
        elements:
          where:
            content: {activation: {layer: conv, atom: spatial}}
            presentation: heatmap
    """))
    from PIL import Image
    Image.new("RGB", (16, 16), (120, 30, 200)).save(tmp_path / "img.png")
    out = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "check", "spec.yaml", "--allow-code"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "warning: these weights are random: the class names are placeholders" in out.stderr
    assert "UserWarning" not in out.stderr and "warnings.warn(" not in out.stderr and "warnmodel.py" not in out.stderr
