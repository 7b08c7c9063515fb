"""The spec fuzzer (tests/support/fuzz.py) in the normal suite: a seeded run of ~300 mutants of the
specs in specs/, each through the in-process path of ``interpgram check`` (pipeline.prepare), must give
only valid specs and positioned SpecErrors, never another exception, never a hang.
``INTERPGRAM_FUZZ_MUTANTS=10000`` (and ``INTERPGRAM_FUZZ_SEED``) run more. Every distinct crash the
fuzzer found before the fixes is replayed from tests/grammar/spec/hostile/ (one file per crash)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import fuzz

HOSTILE = sorted((Path(__file__).parent / "hostile").glob("*.yaml"))
# a generous bound: the fixed loader answers each of these in milliseconds; the old one ran for minutes
BOUND = 30.0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    env = {k: os.environ.get(k) for k in ("INTERPGRAM_INCEPTIONV1_WEIGHTS", "INTERPGRAM_INCEPTIONV1_LABELS")}
    root = fuzz.make_workdir(tmp_path_factory.mktemp("fuzz"))
    yield root
    for k, v in env.items():  # make_workdir points InceptionV1 at its random weights: undo it
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_the_mutants_are_the_same_for_the_same_seed(workdir):
    originals = [(p, p.read_text(), __import__("yaml").safe_load(p.read_text()))
                 for p in sorted(workdir.glob("*/*.yaml")) if not p.name.startswith("mutant-")]
    a = [fuzz.make_mutant(7, i, originals)[1] for i in range(40)]
    assert a == [fuzz.make_mutant(7, i, originals)[1] for i in range(40)]
    assert len(set(a)) > 30 and a != [fuzz.make_mutant(8, i, originals)[1] for i in range(40)]


@pytest.mark.parametrize("case", HOSTILE, ids=[p.stem for p in HOSTILE])
def test_every_crash_the_fuzzer_found_is_a_positioned_error_now(case, workdir):
    folder, _, _ = case.stem.partition("--")
    target = workdir / folder / f"hostile-{case.name}"
    shutil.copy(case, target)
    out = fuzz.run_one(target, bound=BOUND)
    assert out.kind == "user", (out.kind, out.detail)


def test_fuzz_run_has_no_crash_and_no_hang(workdir):
    n = int(os.environ.get("INTERPGRAM_FUZZ_MUTANTS", "300"))
    seed = int(os.environ.get("INTERPGRAM_FUZZ_SEED", "0"))
    report = fuzz.fuzz(n, seed, bound=BOUND, workdir=workdir)
    assert report.mutants == n
    assert report.counts["valid"] + report.counts["user"] == n, report.line() + "\n" + "\n".join(
        f"{len(v)} × {k}: {report.details[k]} (e.g. mutant #{v[0]} of seed {seed}; replay: "
        f"python tests/support/fuzz.py --seed {seed} --only {v[0]})" for k, v in report.crashes.items())
    assert report.counts["valid"] > 0 and report.counts["user"] > 0  # the mutants reach both outcomes
