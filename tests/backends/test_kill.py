"""Nothing lost on a kill: real processes, real SIGKILL, at seeded moments of ``interpgram render`` (the
demo spec and an atlas spec) and of an atlas collection. After every kill no half-written report or store
reads as valid (every cache entry on disk reads back whole, the store's done chunks read, no report
appears before it is whole); the next run resumes and gives the same report (and arrays) as a run that
was never interrupted.

The kill moments come from the progress the process reports, never from sleeps: the parent draws N
(seeded) and kills once the child has written N cache entries or stored N chunks, while the child goes on
working; the child holds (waits to be killed) only once it has written one more, so the kill always
lands inside the next entry's or chunk's work and never after the run is over. One more kill lands inside
the report's write window (its temporary file is whole, the rename has not happened).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from support import ROOT as REPO
from interpgram.backends.execute.cache import ResultCache
from interpgram.backends.kernels.atlas.store import MANIFEST, AtlasStore
from support.reports import report_core

SEED = int(os.environ.get("INTERPGRAM_KILL_SEED", "11"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "INTERPGRAM_CACHE_MAX_SIZE": "none"}

# The child: the real CLI, with hooks that only wait (they change nothing the CLI does).
#   HOLD_PUTS=k: after its k-th cache write, wait to be killed;  HOLD_CHUNKS=k: after its k-th stored chunk;
#   HOLD_REPORT=1: once index.html's temporary file is whole, just before the rename.
#   Every cache write appends one line to $PUTS_LOG (what was written before the kill).
CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from interpgram.backends.execute import cache as C
    from interpgram.backends.kernels.atlas import store as S
    hook = Path(os.environ["HOOK"])

    def hold(why):
        hook.write_text(why)
        while True:
            time.sleep(0.05)

    puts, chunks = [0], [0]
    hold_puts, hold_chunks = int(os.environ.get("HOLD_PUTS", 0)), int(os.environ.get("HOLD_CHUNKS", 0))
    put, write_chunk, replace = C.ResultCache.put, S.AtlasStore.write_chunk, os.replace

    def put_and_count(self, key, value):
        put(self, key, value)
        puts[0] += 1
        with open(os.environ["PUTS_LOG"], "a") as f:
            f.write(key + "\\n")
        if puts[0] == hold_puts:
            hold("puts")

    def chunk_and_count(self, i, arrays):
        write_chunk(self, i, arrays)
        chunks[0] += 1
        if chunks[0] == hold_chunks:
            hold("chunks")

    def replace_report(src, dst, *a, **k):
        if os.environ.get("HOLD_REPORT") and str(dst).endswith("index.html"):
            hold("report")
        return replace(src, dst, *a, **k)

    C.ResultCache.put, S.AtlasStore.write_chunk, os.replace = put_and_count, chunk_and_count, replace_report
    from interpgram.backends.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def wait_for(cond, what: str, proc: subprocess.Popen, timeout: float = 900.0):
    end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the child ended (rc {proc.returncode}) before {what}:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def count_lines(p: Path) -> int:
    return len(p.read_text().splitlines()) if p.exists() else 0


def check_cache_whole(cache_dir: Path) -> int:
    """Every entry on disk reads back whole (the checksum holds); returns how many there are."""
    c = ResultCache(cache_dir, max_bytes=None)
    entries = list(cache_dir.glob("??/*.ig"))
    for p in entries:
        assert c.get(p.stem) is not None, f"a cache entry left by the kill does not read as valid: {p}"
    assert c.stats.corrupt == 0
    return len(entries)


def check_stores_valid(cache_dir: Path) -> list[int]:
    """Every atlas store's done chunks read back (zstd checksums, shapes); returns done chunks per store."""
    done = []
    for m in (cache_dir / "atlas").glob(f"*/{MANIFEST}"):
        st = AtlasStore.load(m.parent)
        for f in st.fields:
            st.read(f, partial=True)
        done.append(len(st.done_chunks))
    return done


class Runs:
    """Kill-and-resume a render of one spec; keeps the figures the test reports."""

    def __init__(self, tmp: Path, spec: Path, extra: list[str]):
        self.tmp, self.spec, self.extra = tmp, spec, extra
        self.cache, self.out = tmp / "cache", tmp / "out"
        self.runs = self.kills = self.lost_entries = self.written = 0
        self.notes: list[str] = []

    def start(self, **hold) -> tuple[subprocess.Popen, Path, Path]:
        self.runs += 1
        hook, log = self.tmp / f"hook{self.runs}", self.tmp / f"puts{self.runs}"
        env = {**ENV, "HOOK": str(hook), "PUTS_LOG": str(log), **{k: str(v) for k, v in hold.items()}}
        cmd = [sys.executable, "-c", CHILD, "render", str(self.spec), "-o", str(self.out), "--cache-dir",
               str(self.cache), "-q", *self.extra]
        return subprocess.Popen(cmd, env=env, cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True), hook, log

    def kill_after_puts(self, n: int) -> None:
        """SIGKILL once this run has written n entries (it holds after n + 1)."""
        before = check_cache_whole(self.cache) if self.cache.exists() else 0
        report_before = (self.out / "index.html").read_bytes() if (self.out / "index.html").exists() else None
        proc, hook, log = self.start(HOLD_PUTS=n + 1)
        wait_for(lambda: count_lines(log) >= n, f"{n} cache writes", proc)
        self._kill(proc)
        written = count_lines(log)
        after = check_cache_whole(self.cache)
        # every entry whose write returned is on disk and whole; only the one in flight (if any) is lost
        new_keys = set(log.read_text().split())
        on_disk = {p.stem for p in self.cache.glob("??/*.ig")}
        self.lost_entries += len(new_keys - on_disk)
        self.written += written
        assert new_keys <= on_disk, "an entry whose write had returned was lost"
        self.notes.append(f"killed after {written} write(s) (drawn {n}): {before} → {after} entries")
        self._check_report_untouched(report_before)

    def kill_in_report_write(self) -> None:
        report_before = (self.out / "index.html").read_bytes() if (self.out / "index.html").exists() else None
        proc, hook, log = self.start(HOLD_REPORT=1)
        wait_for(lambda: hook.exists(), "the report's write window", proc)
        self._kill(proc)
        check_cache_whole(self.cache)
        self._check_report_untouched(report_before)
        self.notes.append("killed inside the report's write window: no report")

    def finish(self) -> Path:
        proc, _, _ = self.start()
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err
        return self.out / "index.html"

    def _kill(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        self.kills += 1

    def _check_report_untouched(self, before) -> None:
        report = self.out / "index.html"
        # no half-written report: either none yet, or the previous whole one, byte for byte
        assert (report.read_bytes() if report.exists() else None) == before


def _same(a, b) -> bool:
    """Equal values: exactly, except float tensors within 1e-5 (an icon optimised in a batch of another
    size — the resumed run renders only the icons still missing — differs in the last float32 bits; the
    report's 8-bit images are identical, which the report comparison checks)."""
    import torch
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape):
            return False
        if a.is_floating_point():
            return bool(torch.allclose(a, b, rtol=0, atol=1e-5))
        return bool(torch.equal(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_entries(cache_dir: Path, ref_dir: Path) -> None:
    """Every entry of the resumed cache is in the uninterrupted run's cache with equal values (a resumed
    run may skip an entry whose dependents were already cached)."""
    got, ref = ResultCache(cache_dir, max_bytes=None), ResultCache(ref_dir, max_bytes=None)
    for p in cache_dir.glob("??/*.ig"):
        a, b = got.get(p.stem), ref.get(p.stem)
        assert b is not None, f"the resumed run wrote an entry the uninterrupted one did not: {p.name}"
        assert _same(a, b), f"entry {p.name} differs from the uninterrupted run's"


def reference(tmp: Path, spec: Path, extra: list[str]) -> Path:
    out = tmp / "reference"
    p = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "render", str(spec), "-o", str(out),
                        "--cache-dir", str(tmp / "reference-cache"), "-q", *extra], env=ENV, cwd=tmp,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return out / "index.html"


def test_render_demo_killed_at_random_moments_resumes_to_the_same_report(tmp_path):
    rng = random.Random(SEED)
    spec = REPO / "specs" / "shapes" / "demo.yaml"
    extra = ["--icon-steps", "2"]
    ref = reference(tmp_path, spec, extra)
    total = len(list((tmp_path / "reference-cache").glob("??/*.ig")))
    runs = Runs(tmp_path, spec, extra)
    runs.kill_after_puts(rng.randrange(1, total // 2))
    left = total - check_cache_whole(runs.cache)  # what the next run still writes
    runs.kill_after_puts(rng.randrange(1, max(2, left)))
    runs.kill_in_report_write()
    report = runs.finish()
    assert report_core(report) == report_core(ref)
    check_cache_whole(runs.cache)
    assert_same_entries(runs.cache, tmp_path / "reference-cache")
    print(f"\nkill test, demo render (seed {SEED}): {runs.runs} runs, {runs.kills} SIGKILLs, "
          f"{runs.written} entries written before the kills, {runs.lost_entries} lost; "
          + "; ".join(runs.notes) + "; the resumed report equals the uninterrupted one")


ATLAS_SPEC = """\
interpgram: 1
title: "kill test atlas"
model: builtin:shapes-cnn
dataset: {{source: builtin:shapes, n: {n}, split: train, positions: random, chunk: {chunk}, batch_size: 32}}
elements:
  atlas:
    content: {{activation: {{layer: conv4, atom: spatial}}}}
    presentation:
      atlas:
        grid: 4
        min_count: 2
        layout: {{n_neighbors: 8, min_dist: 0.1, metric: cosine}}
        icon: {{size: 16, steps: 2, attempts: 1}}
"""


def test_render_atlas_killed_in_collection_and_after_resumes_to_the_same_report(tmp_path):
    rng = random.Random(SEED + 1)
    n, chunk = 256, 32
    spec = tmp_path / "atlas.yaml"
    spec.write_text(ATLAS_SPEC.format(n=n, chunk=chunk))
    ref = reference(tmp_path, spec, [])
    runs = Runs(tmp_path, spec, [])
    seen = []
    for _ in range(2):  # two kills inside the collection, at seeded chunk counts
        done_before = max(check_stores_valid(runs.cache), default=0) if runs.cache.exists() else 0
        left = n // chunk - done_before
        k = rng.randrange(1, max(2, left // 2))  # at most half of what is left: the next kill still has chunks
        proc, hook, log = runs.start(HOLD_CHUNKS=k + 1)
        wait_for(lambda k=k, done_before=done_before: max([len(json.loads(m.read_text()).get("done", []))
                              for m in (runs.cache / "atlas").glob(f"*/{MANIFEST}")] or [0]) >= done_before + k,
                 f"{k} stored chunks", proc)
        runs._kill(proc)
        seen.append(check_stores_valid(runs.cache)[0])
        assert not (runs.out / "index.html").exists()
    assert seen[0] < seen[1] < n // chunk  # each run resumed, none finished
    runs.kill_after_puts(1)  # the collection done: killed after the layout
    report = runs.finish()
    assert report_core(report) == report_core(ref)
    check_cache_whole(runs.cache)
    assert_same_entries(runs.cache, tmp_path / "reference-cache")
    (store,) = (runs.cache / "atlas").iterdir()
    (ref_store,) = (tmp_path / "reference-cache" / "atlas").iterdir()
    a, b = AtlasStore.load(store), AtlasStore.load(ref_store)
    assert a.complete and b.complete
    for f in a.fields:
        assert a.read(f).tobytes() == b.read(f).tobytes(), f
    print(f"\nkill test, atlas render (seed {SEED}): {runs.runs} runs, {runs.kills} SIGKILLs; chunks stored at the "
          f"kills {seen} of {n // chunk}, each kept by the next run (lost: only the chunk in flight); "
          + "; ".join(runs.notes) + "; resumed arrays and report equal the uninterrupted ones")


COLLECT_CHILD = textwrap.dedent("""
    import os, sys, time
    from interpgram.backends.models import load_model
    from interpgram.backends.kernels.atlas.collect import CollectSpec, collect
    n, chunk, hold_at = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    def progress(stage, done, total):  # images stored so far; hold (wait to be killed) at hold_at chunks
        while hold_at and done >= hold_at * chunk:
            time.sleep(0.05)

    spec = CollectSpec("builtin:shapes", n, layers=("conv3", "conv4"), positions="all", chunk=chunk, batch_size=16,
                       seed=3)
    collect(load_model("builtin:shapes-cnn"), spec, sys.argv[1], progress=progress)
""")


def test_atlas_collection_killed_three_times_gives_the_uninterrupted_arrays(tmp_path):
    rng = random.Random(SEED + 2)
    n, chunk = 96, 8
    n_chunks = n // chunk
    root = tmp_path / "killed"

    def done() -> int:
        ms = list(root.glob(f"*/{MANIFEST}"))
        try:
            return len(json.loads(ms[0].read_text())["done"]) if ms else 0
        except (OSError, ValueError):
            return 0  # mid-replace is impossible (atomic), but a first creation may still be under way

    stored, lost = [], 0
    for _ in range(3):
        before = done()
        k = rng.randrange(1, max(2, (n_chunks - before) // 2))
        proc = subprocess.Popen([sys.executable, "-c", COLLECT_CHILD, str(root), str(n), str(chunk),
                                 str(before + k + 1)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda before=before, k=k: done() >= before + k, f"{k} more chunks", proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        (store_dir,) = root.iterdir()
        st = AtlasStore.load(store_dir)
        assert not st.complete
        for f in st.fields:  # what the manifest calls done reads whole
            st.read(f, partial=True)
        assert len(st.done_chunks) >= before + k
        lost += 1 if len(st.done_chunks) == before + k else 0  # the chunk in flight, when the kill beat its mark
        stored.append(len(st.done_chunks))
    p = subprocess.run([sys.executable, "-c", COLLECT_CHILD, str(root), str(n), str(chunk), "0"], env=ENV,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    p = subprocess.run([sys.executable, "-c", COLLECT_CHILD, str(tmp_path / "whole"), str(n), str(chunk), "0"],
                       env=ENV, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    (a_dir,), (b_dir,) = root.iterdir(), (tmp_path / "whole").iterdir()
    a, b = AtlasStore.load(a_dir), AtlasStore.load(b_dir)
    assert a_dir.name == b_dir.name and a.complete and b.complete
    for f in a.fields:
        assert a.read(f).tobytes() == b.read(f).tobytes(), f
    assert stored == sorted(stored) and stored[-1] < n_chunks
    print(f"\nkill test, atlas collection (seed {SEED}): 5 runs, 3 SIGKILLs; chunks stored at each kill {stored} "
          f"of {n_chunks}; {lost} kill(s) landed mid-chunk and lost only that chunk, the others none; resumed "
          "arrays equal the uninterrupted ones bit for bit")
