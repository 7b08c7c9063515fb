"""The house keeps its shape: no import cycles, no back-arrows between layers (the grammar imports
nothing of the backends), no private or relative imports across packages."""
from __future__ import annotations

import subprocess
import sys

from support import ROOT


def test_the_import_graph_has_no_cycles_back_arrows_or_private_imports():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "cycles: 0" in run.stdout and "back-arrows (a lower layer importing a higher one): 0" in run.stdout


def test_the_checker_sees_a_back_arrow(tmp_path):
    """The check can fail: a copy of the grammar that imports a backend module is refused."""
    import shutil
    for folder in ("grammar", "backends", "scripts"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    bad = tmp_path / "grammar" / "spec" / "errors.py"
    bad.write_text(bad.read_text() + "\nfrom interpgram.backends.files import fsync_path  # noqa\n")
    run = subprocess.run([sys.executable, str(tmp_path / "scripts" / "import_graph.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "interpgram.grammar.spec.errors → interpgram.backends.files" in run.stdout
