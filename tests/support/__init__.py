"""Helpers shared by the tests (imported as ``support.<module>``; tests never import each other)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
SPECS = ROOT / "specs"
