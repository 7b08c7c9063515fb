"""The result cache's size limit (LRU eviction of entries and whole atlas stores), its info/clear, and
a cache folder that cannot be written (read-only, full): real files, real processes, real mounts."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from interpgram.backends.execute.cache import (DEFAULT_MAX_BYTES, MAX_SIZE_ENV, ResultCache, cache_key,
                                               default_max_bytes, format_size, parse_size)
from interpgram.backends.kernels.atlas.store import AtlasStore

EXE = [sys.executable, "-m", "interpgram.backends.cli"]


def entry(i: int, nbytes: int = 40_000) -> dict:
    return {"i": i, "t": torch.full((nbytes // 4,), float(i))}


def set_age(path: Path, seconds_ago: float) -> None:
    t = os.stat(path).st_mtime - seconds_ago
    os.utime(path, (t, t))


# ------------------------------------------------------------------ sizes
@pytest.mark.parametrize("text, n", [("500M", 500 << 20), ("2G", 2 << 30), ("2GiB", 2 << 30), ("1.5g", 3 << 29),
                                     ("800k", 800 << 10), ("800KB", 800 << 10), ("123", 123), (" 7 MiB ", 7 << 20),
                                     ("none", None), ("unlimited", None)])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text, msg", [("5x", "not a size"), ("-3M", "not a size"), ("", "not a size"),
                                       ("0", "--no-cache"), ("M", "not a size")])
def test_parse_size_refuses_with_a_hint(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_size(text)


def test_default_limit_and_env(monkeypatch):
    monkeypatch.delenv(MAX_SIZE_ENV, raising=False)
    assert default_max_bytes() == DEFAULT_MAX_BYTES == 2 << 30
    monkeypatch.setenv(MAX_SIZE_ENV, "300M")
    assert ResultCache("x").max_bytes == 300 << 20
    monkeypatch.setenv(MAX_SIZE_ENV, "lots")
    with pytest.raises(ValueError, match=r"\$INTERPGRAM_CACHE_MAX_SIZE: 'lots' is not a size"):
        default_max_bytes()
    assert format_size(2 << 30) == "2.0 GiB" and format_size(None) == "no limit" and format_size(900) == "900 B"


# ------------------------------------------------------------------ LRU
def test_lru_eviction_keeps_the_recently_used(tmp_path):
    one = len((lambda c: (c.put(cache_key(i=-1), entry(-1)), c.path(cache_key(i=-1)).read_bytes())[1])(
        ResultCache(tmp_path / "probe", max_bytes=None)))
    cache = ResultCache(tmp_path / "c", max_bytes=int(one * 5.5))  # room for 5 entries
    keys = [cache_key(i=i) for i in range(5)]
    for age, (i, k) in zip(range(50, 0, -10), enumerate(keys)):  # entry 0 the oldest
        cache.put(k, entry(i))
        set_age(cache.path(k), age)
    assert cache.evicted == 0 and abs(cache.size() - 5 * one) < 100
    assert cache.get(keys[0])["i"] == 0  # a hit: entry 0 is now the most recently used
    cache.put(cache_key(i=5), entry(5))  # 6 entries > the limit: down to 90% (4 entries)
    present = [i for i, k in enumerate(keys) if cache.path(k).exists()]
    assert present == [0, 3, 4] and cache.path(cache_key(i=5)).exists()
    assert cache.evicted == 2 and cache.size() <= cache.max_bytes * 0.9
    for i in present:  # what stays is whole
        assert torch.equal(cache.get(keys[i])["t"], entry(i)["t"])


def test_the_entry_just_written_is_never_evicted(tmp_path):
    cache = ResultCache(tmp_path / "c", max_bytes=1000)  # smaller than one entry
    cache.put(cache_key(i=0), entry(0))
    cache.put(cache_key(i=1), entry(1))
    assert not cache.path(cache_key(i=0)).exists()
    assert cache.get(cache_key(i=1))["i"] == 1


def _small_store(root: Path, name: str, n: int = 64) -> AtlasStore:
    st = AtlasStore.open(root / "atlas" / name, meta={"name": name}, fields={"x": ((256,), "float32")},
                         rows_per_image={}, n_images=n, chunk=16)
    for i in range(st.n_chunks):
        st.write_chunk(i, {"x": np.random.default_rng(i).random((16, 256), dtype=np.float32)})
    return st


def test_atlas_stores_count_and_go_whole(tmp_path):
    root = tmp_path / "c"
    old, new = _small_store(root, "a" * 64), _small_store(root, "b" * 64)
    set_age(old.path / "manifest.json", 100)
    os.utime(old.path, (os.stat(old.path).st_mtime - 100,) * 2)
    store_bytes = old.disk_bytes()
    cache = ResultCache(root, max_bytes=int(store_bytes * 2.5))
    info = cache.info()
    assert info["atlas_stores"] == 2 and info["atlas_bytes"] == old.disk_bytes() + new.disk_bytes()
    AtlasStore.load(new.path)  # using a store makes it recent
    cache.put(cache_key(i=0), entry(0, nbytes=int(store_bytes * 0.8)))
    assert not old.path.exists() and new.path.exists()  # the old store went whole, the used one stays
    assert AtlasStore.load(new.path).complete
    assert not any((root / "_trash").iterdir())
    cache.pin(new.path)  # a store this process is using is never evicted by it
    cache.put(cache_key(i=1), entry(1, nbytes=int(store_bytes * 2)))
    assert new.path.exists()


def test_concurrent_writers_stay_bounded_and_readers_never_see_a_part(tmp_path):
    """Two processes fill a small cache at once (each evicting) while this one reads: every read is a
    miss or a whole entry, the folder ends within the limit plus what was in flight."""
    root, go = tmp_path / "c", tmp_path / "go"
    child = textwrap.dedent("""
        import sys, time, torch
        from pathlib import Path
        from interpgram.backends.execute.cache import ResultCache, cache_key
        root, go, w = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
        cache = ResultCache(root, max_bytes=2_000_000)
        while not go.exists():
            time.sleep(0.005)
        for i in range(60):
            cache.put(cache_key(i=i % 30), {"i": i % 30, "t": torch.full((25_000,), float(i % 30))})
        print(cache.evicted)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", child, str(root), str(go), str(w)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in (0, 1)]
    reader = ResultCache(root, max_bytes=None)
    go.touch()
    reads = 0
    while any(p.poll() is None for p in procs):
        for i in range(30):
            v = reader.get(cache_key(i=i))
            if v is not None:
                reads += 1
                assert torch.equal(v["t"], torch.full((25_000,), float(i)))
    evicted = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        evicted.append(int(out.strip()))
    assert reader.stats.corrupt == 0
    assert sum(evicted) > 0
    assert ResultCache(root).size() <= 2_000_000 + 2 * 100_500  # at most one entry in flight per writer
    assert not list(root.glob("*/.*.tmp"))


# ------------------------------------------------------------------ the command line
def cli(*args, cwd, env=None, check=True):
    e = dict(os.environ, **(env or {}))
    p = subprocess.run([*EXE, *args], capture_output=True, text=True, cwd=cwd, env=e, timeout=600)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_cache_info_and_clear(tmp_path):
    root = tmp_path / "rel"
    cache = ResultCache(root, max_bytes=None)
    for i in range(3):
        cache.put(cache_key(i=i), entry(i))
    _small_store(root, "c" * 64)
    p = cli("cache", "info", "--cache-dir", "rel", cwd=tmp_path, env={MAX_SIZE_ENV: "1M"})
    lines = p.stdout.splitlines()
    assert lines[0] == f"cache: {root}"
    assert lines[1].strip() == f"entries: 3 ({format_size(sum(cache.path(cache_key(i=i)).stat().st_size for i in range(3)))})"
    assert lines[2].strip().startswith("atlas collections: 1 (")
    assert "of 1.0 MiB ($INTERPGRAM_CACHE_MAX_SIZE)" in lines[3]
    p = cli("cache", "clear", "--cache-dir", str(root), cwd=tmp_path)
    assert p.stdout.startswith(f"cleared {root}: 4 item(s)")
    assert ResultCache(root).info()["bytes"] == 0
    p = cli("cache", "info", cwd=tmp_path, env={MAX_SIZE_ENV: "lots"}, check=False)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: $INTERPGRAM_CACHE_MAX_SIZE: 'lots'")
    assert "Traceback" not in p.stderr


SMALL_SPEC = """\
interpgram: 1
title: small
model: builtin:shapes-cnn
input: builtin:shapes/10
elements:
  where:
    content: {attribution: {from: {layer: conv3, atom: spatial}, to: {layer: output, select: [star]}}}
    presentation: heatmap
  groups:
    content: {attribution: {from: {layer: conv4, atom: {group: nmf, k: 3}}, to: {layer: output, select: [star]}}}
    presentation: groups
"""


def test_relative_cache_dir_is_relative_to_the_current_folder(tmp_path):
    spec_dir, cwd = tmp_path / "specs", tmp_path / "work"
    spec_dir.mkdir()
    cwd.mkdir()
    (spec_dir / "s.yaml").write_text(SMALL_SPEC)
    cli("render", str(spec_dir / "s.yaml"), "-o", "out", "--cache-dir", "mycache", "-q", cwd=cwd)
    assert any((cwd / "mycache").glob("*/*.ig")) and not (spec_dir / "mycache").exists()
    assert (cwd / "out" / "index.html").is_file()


def _as_root_in_own_mounts() -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


ATLAS_SPEC = """\
interpgram: 1
model: builtin:shapes-cnn
dataset: {source: builtin:shapes, n: 64, split: train, chunk: 32, batch_size: 32}
elements:
  atlas:
    content: {activation: {layer: conv4, atom: spatial}}
    presentation: {atlas: {grid: 3, min_count: 2, layout: {n_neighbors: 6}, icon: {size: 16, steps: 2, attempts: 1}}}
"""


@pytest.mark.parametrize("kind, spec_text", [("read-only", SMALL_SPEC), ("full", SMALL_SPEC), ("full", ATLAS_SPEC)],
                         ids=["read-only", "full", "full-atlas"])
def test_unwritable_cache_degrades_to_no_cache_and_says_so(tmp_path, kind, spec_text):
    """A render into a read-only or full cache folder completes, prints one line saying the results are not
    cached, and the report says it too; no traceback. As root a private mount makes the folder truly
    read-only (a read-only bind) or full (a 16 KiB tmpfs); otherwise file permissions do it (read-only only)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text)  # the atlas: its collection store cannot be written either (zarr on a full disk)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    render = [*EXE, "render", str(spec), "-o", str(tmp_path / "out"), "--cache-dir", str(cache_dir), "-q"]
    if _as_root_in_own_mounts():
        import shlex
        mount = (f"mount --bind {cache_dir} {cache_dir} && mount -o remount,ro,bind {cache_dir}" if kind == "read-only"
                 else f"mount -t tmpfs -o size=16k tmpfs {cache_dir}")
        cmd = ["unshare", "-m", "sh", "-c", f"{mount} && exec {shlex.join(render)}"]
    elif kind == "read-only":
        cache_dir.chmod(0o555)
        cmd = render
    else:
        pytest.skip("a full folder needs a private tmpfs mount (root); read-only is tested without it")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    why = "the folder is read-only" if kind == "read-only" and os.geteuid() == 0 else (
        "the disk is full" if kind == "full" else "no permission")
    warned = [l for l in p.stderr.splitlines() if "cannot write to" in l]
    assert len(warned) == 1 and why in warned[0] and str(cache_dir) in warned[0], p.stderr
    assert f"cache: cannot write to {cache_dir}" in p.stdout
    html = (tmp_path / "out" / "index.html").read_text()
    assert "results are computed but not cached" in html
