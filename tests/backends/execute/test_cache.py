"""The content-addressed result cache: keys, round trips, atomic writes, corruption detection."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from interpgram.backends.execute import cache as cache_mod
from interpgram.backends.execute.cache import (
    KEEP_CORRUPT,
    ResultCache,
    cache_key,
    default_root,
    tensor_digest,
)

LOGGER = "interpgram.backends.execute.cache"


def run_py(code: str, *args: str, hashseed: str = "12345", timeout: float = 60) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def entry_files(root: Path) -> list[Path]:
    return [p for p in root.glob("??/*.ig")]


@pytest.fixture
def cache(tmp_path) -> ResultCache:
    return ResultCache(tmp_path / "results")


# ---------------------------------------------------------------------------------------------------
# Keys and digests


def test_tensor_digest_is_sha256_of_dtype_shape_bytes():
    t = torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)
    expected = hashlib.sha256(b"int32|2,2|" + np.array([[1, 2], [3, 4]], dtype="<i4").tobytes()).hexdigest()
    assert tensor_digest(t) == expected
    # Independent of strides, of NumPy vs torch, of byte order.
    assert tensor_digest(t.T.contiguous().T) == expected
    assert tensor_digest(t.numpy()) == expected
    assert tensor_digest(np.array([[1, 2], [3, 4]], dtype=">i4")) == expected
    # Sensitive to dtype and shape even with the same bytes.
    assert tensor_digest(t.view(torch.float32)) != expected
    assert tensor_digest(t.reshape(4)) != expected
    assert tensor_digest(torch.zeros(2, 3)) != tensor_digest(torch.zeros(3, 2))
    # Every dtype, including ones NumPy lacks.
    for dt in (torch.bfloat16, torch.bool, torch.float16, torch.complex64):
        assert len(tensor_digest(torch.ones(3, dtype=dt))) == 64
    with pytest.raises(TypeError):
        tensor_digest([1, 2])


def test_cache_key_order_independent_and_sensitive():
    x = torch.arange(12.0).reshape(3, 4)
    base = dict(model="m" * 64, input=x, op="nmf", params={"k": 6, "seed": 0, "of": "activation"})
    k = cache_key(**base)
    assert len(k) == 64 and int(k, 16) >= 0
    # Same content, different dict order and a copy of the tensor: same key.
    same = dict(params={"of": "activation", "seed": 0, "k": 6}, op="nmf", input=x.clone(), model="m" * 64)
    assert cache_key(**same) == k
    # A tuple and a list are the same key part; a different device-free copy is too.
    assert cache_key(a=(1, 2)) == cache_key(a=[1, 2])
    variants = [
        dict(base, params={"k": 7, "seed": 0, "of": "activation"}),
        dict(base, params={"k": 6, "seed": 0, "of": "attribution"}),
        dict(base, params={"k": 6.0, "seed": 0, "of": "activation"}),
        dict(base, op="nmf2"),
        dict(base, input=x.clone().index_put_((torch.tensor([1]), torch.tensor([2])), torch.tensor(99.0))),
        dict(base, input=x.double()),
        dict(base, input=x.reshape(4, 3)),
        dict(base, extra=None),
    ]
    keys = {cache_key(**v) for v in variants}
    assert len(keys) == len(variants) and k not in keys


def test_cache_key_includes_code_version(monkeypatch):
    k = cache_key(op="x")
    monkeypatch.setattr(cache_mod, "CODE_VERSION", "999")
    assert cache_key(op="x") != k


def test_cache_key_rejects_unhashable_parts():
    with pytest.raises(TypeError, match="set"):
        cache_key(p={1, 2})
    with pytest.raises(TypeError, match="dict keys must be str"):
        cache_key(p={1: "a"})
    with pytest.raises(TypeError, match="object"):
        cache_key(p=object())


GOLDEN_PARTS = """dict(op="nmf", params={"k": 6, "tol": 1e-4, "name": "é"}, dtype=torch.float32,
                x=torch.arange(6, dtype=torch.int64).reshape(2, 3), y=np.float32(0.5), flag=True, none=None)"""


def test_cache_key_stable_across_processes():
    here = cache_key(**eval(GOLDEN_PARTS))
    there = run_py(
        f"""
        import numpy as np, torch
        from interpgram.backends.execute.cache import cache_key
        print(cache_key(**{GOLDEN_PARTS.replace(chr(10), ' ')}))
        """,
        hashseed="987",
    ).strip()
    assert there == here
    # Pinned: a change here invalidates every user's cache, so it must be deliberate (then bump
    # this value together with CODE_VERSION's meaning).
    assert here == "3309f7274a924e190a71acd531b1790b87ffc7d19a23e9fe4039231a5e736330"


# ---------------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_tensors_arrays_and_metadata(cache):
    g = torch.Generator().manual_seed(0)
    value = {
        "f32": torch.randn(3, 4, generator=g),
        "f64": torch.randn(5, generator=g, dtype=torch.float64),
        "f16": torch.randn(2, 2, generator=g).half(),
        "bf16": torch.randn(7, generator=g).bfloat16(),
        "i64": torch.tensor([-(2**62), 0, 2**62], dtype=torch.int64),
        "u8": torch.arange(256, dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 5),
        "strided": torch.arange(20.0).reshape(4, 5).T[1:, ::2],  # non-contiguous view
        "grad": torch.ones(3, requires_grad=True) * 2,
        "np_f32": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
        "np_i64": np.arange(4, dtype=np.int64),
        "np_bool": np.array([True, False]),
        "np_big_endian": np.arange(3, dtype=">f8"),
        "meta": {
            "layer": "mixed4d",
            "k": 6,
            "ratio": 0.1,
            "nested": {"labels": ["kite", "fish", "ünïcødé"], "none": None, "ok": True},
            "pair": (1, 2),
            "np_scalar": np.float64(2.5),
        },
        "groups": [{"spatial": torch.ones(2, 2), "ids": np.array([1, 2])}, 3],
    }
    cache.put(cache_key(op="rt"), value)
    got = cache.get(cache_key(op="rt"))
    assert got is not None and set(got) == set(value)

    for name in ("f32", "f64", "f16", "bf16", "i64", "u8", "bool", "scalar", "empty", "strided", "grad"):
        a, b = value[name], got[name]
        assert isinstance(b, torch.Tensor) and b.device.type == "cpu"
        assert b.dtype == a.dtype and b.shape == a.shape and not b.requires_grad
        assert torch.equal(b, a.detach()), name
    for name in ("np_f32", "np_i64", "np_bool"):
        assert isinstance(got[name], np.ndarray) and got[name].dtype == value[name].dtype
        np.testing.assert_array_equal(got[name], value[name])
    # Arrays come back in native (little-endian) byte order with the same values.
    assert got["np_big_endian"].dtype == np.dtype("<f8")
    np.testing.assert_array_equal(got["np_big_endian"], value["np_big_endian"])

    meta = got["meta"]
    assert meta["nested"] == value["meta"]["nested"]
    assert meta["pair"] == [1, 2]  # tuples come back as lists
    assert meta["np_scalar"] == 2.5 and type(meta["np_scalar"]) is float
    assert type(meta["k"]) is int and type(meta["ratio"]) is float
    assert torch.equal(got["groups"][0]["spatial"], torch.ones(2, 2)) and got["groups"][1] == 3
    np.testing.assert_array_equal(got["groups"][0]["ids"], [1, 2])
    assert cache.stats.hits == 1 and cache.stats.misses == 0


def test_round_trip_special_floats_and_shared_storage(cache):
    t = torch.arange(6.0)
    value = {"nan": float("nan"), "inf": float("-inf"), "a": t, "same": t, "view": t[2:4]}
    key = cache_key(op="special")
    cache.put(key, value)
    got = cache.get(key)
    assert math.isnan(got["nan"]) and got["inf"] == float("-inf")
    assert torch.equal(got["a"], t) and torch.equal(got["same"], t) and torch.equal(got["view"], t[2:4])


def test_put_rejects_what_would_need_pickle_and_writes_nothing(cache):
    key = cache_key(op="bad")
    for bad, err in [
        ({"x": {1, 2}}, TypeError),
        ({"x": object()}, TypeError),
        ({"x": {3: "int key"}}, TypeError),
        ({"x": np.array(["a", "b"])}, TypeError),
        ({"x": np.array([object()])}, TypeError),
        ({"x": torch.eye(2).to_sparse()}, TypeError),
        ({"$ig:tensor": 0}, ValueError),
        ([torch.ones(1)], TypeError),
    ]:
        with pytest.raises(err):
            cache.put(key, bad)
    assert not cache.root.exists()
    assert cache.get(key) is None


def test_get_or_compute(cache):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.ones(3)}

    key = cache_key(op="goc")
    v1, hit1 = cache.get_or_compute(key, compute)
    v2, hit2 = cache.get_or_compute(key, compute)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert torch.equal(v1["x"], v2["x"])
    assert (cache.stats.hits, cache.stats.misses, cache.stats.corrupt) == (1, 1, 0)
    # Layout: root/<first two hex digits>/<key>.ig
    assert entry_files(cache.root) == [cache.root / key[:2] / f"{key}.ig"]


def test_disabled_cache_never_writes_or_reads_the_disk_and_reuses_only_its_own_puts(tmp_path, monkeypatch):
    root = tmp_path / "results"
    live = ResultCache(root)
    key = cache_key(op="d")
    live.put(key, {"x": torch.ones(1)})
    before = sorted(p for p in root.rglob("*"))

    off = ResultCache(root, enabled=False)
    assert off.get(key) is None and key not in off  # does not read the existing entry
    other = cache_key(op="other")
    off.put(other, {"x": torch.ones(3)})
    n = [0]
    for i in range(2):  # one run computes a piece once, then reuses its own copy
        value, hit = off.get_or_compute(cache_key(op="e"), lambda: (n.__setitem__(0, n[0] + 1), {"y": 1})[1])
        assert hit == (i == 1) and value == {"y": 1}
    assert n[0] == 1 and off.stats.reused == 1
    got = off.get(other)
    got["x"][0] = 9  # a hit is a fresh copy: changing it changes nothing kept
    assert off.get(other)["x"].tolist() == [1, 1, 1] and other in off and off.stats.reused == 3
    assert sorted(p for p in root.rglob("*")) == before  # the disk untouched
    assert not ResultCache(tmp_path / "never", enabled=False).root.exists()
    assert ResultCache(root, enabled=False).get(other) is None  # nothing outlives the object

    # bounded: least recently used out first, an entry over a quarter of the bound never kept
    import interpgram.backends.execute.cache as C
    monkeypatch.setattr(C, "RUN_MEMORY_BYTES", 4 * 2**20)
    small = ResultCache(root, enabled=False)
    keys = [cache_key(op="m", i=i) for i in range(6)]
    for k in keys:
        small.put(k, {"x": torch.zeros(2**18 - 512)})  # just under 1 MiB each
    assert [k in small for k in keys] == [False, False, True, True, True, True]
    small.put(cache_key(op="big"), {"x": torch.zeros(2**19)})  # 2 MiB: over a quarter
    assert cache_key(op="big") not in small and keys[2] in small
    ResultCache(tmp_path / "never", enabled=False).put(key, {"x": 1})
    assert not (tmp_path / "never").exists()


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERPGRAM_CACHE", str(tmp_path / "env"))
    assert ResultCache(None).root == tmp_path / "env" == default_root()
    monkeypatch.delenv("INTERPGRAM_CACHE")
    assert default_root() == Path.home() / ".cache" / "interpgram" / "results"


def test_bad_key_rejected(cache):
    for key in ("../../etc/passwd", "ABC", "a" * 63, "g" * 64):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            cache.get(key)


# ---------------------------------------------------------------------------------------------------
# Corruption


def _store(cache: ResultCache, op: str = "c") -> tuple[str, Path, torch.Tensor]:
    key = cache_key(op=op)
    t = torch.arange(10_000, dtype=torch.float32) * 1.5 + 7
    cache.put(key, {"t": t, "meta": {"n": 10_000}})
    return key, cache.path(key), t


def test_truncated_entry_is_a_miss_and_recomputed(cache, caplog):
    key, path, t = _store(cache)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        value, hit = cache.get_or_compute(key, lambda: {"t": t * 2})
    assert not hit and torch.equal(value["t"], t * 2)
    assert cache.stats.corrupt == 1 and cache.stats.misses == 1
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "corrupt" in warnings[0].getMessage()
    # Moved aside, and the recomputed value replaced it.
    quarantined = list((cache.root / "_corrupt").glob("*.ig"))
    assert len(quarantined) == 1 and quarantined[0].read_bytes() == data[: len(data) // 2]
    assert torch.equal(cache.get(key)["t"], t * 2) and cache.stats.hits == 1


def test_flipped_byte_inside_a_tensor_is_detected(cache, caplog):
    key, path, t = _store(cache)
    data = bytearray(path.read_bytes())
    start = bytes(data).find(t.numpy().tobytes())
    assert start > 0
    data[start + t.numel() * 2] ^= 0x01  # one bit, in the middle of the tensor
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert cache.get(key) is None
        assert cache.get(key) is None  # second read: a plain miss, no second warning
    assert cache.stats.corrupt == 1 and cache.stats.misses == 2
    assert sum(r.name == LOGGER for r in caplog.records) == 1
    assert not path.exists()


@pytest.mark.parametrize("where", ["header", "digest", "end"])
def test_flipped_byte_elsewhere_is_detected(cache, where):
    key, path, _ = _store(cache)
    data = bytearray(path.read_bytes())
    pos = {"header": bytes(data).find(b'"n":10000') + 5, "digest": len(data) - 20, "end": len(data) - 1}[where]
    data[pos] ^= 0x04
    path.write_bytes(bytes(data))
    assert cache.get(key) is None and cache.stats.corrupt == 1


def test_entry_under_the_wrong_key_is_not_served(cache):
    key, path, _ = _store(cache)
    other = cache_key(op="other")
    cache.path(other).parent.mkdir(parents=True, exist_ok=True)
    cache.path(other).write_bytes(path.read_bytes())
    assert cache.get(other) is None and cache.stats.corrupt == 1
    assert cache.get(key) is not None


def test_unreadable_entry_is_a_miss(cache):
    key, path, _ = _store(cache)
    path.unlink()
    path.mkdir()  # reading a directory fails with an OSError that is not "not found"
    assert cache.get(key) is None
    assert cache.stats.corrupt == 1


def test_corrupt_quarantine_is_bounded(cache):
    for i in range(KEEP_CORRUPT + 4):
        key, path, _ = _store(cache, op=f"q{i}")
        path.write_bytes(b"garbage")
        assert cache.get(key) is None
    assert cache.stats.corrupt == KEEP_CORRUPT + 4
    assert len(list((cache.root / "_corrupt").glob("*.ig"))) == KEEP_CORRUPT


# ---------------------------------------------------------------------------------------------------
# Interrupted and concurrent writes


def test_interrupted_write_leaves_no_entry_and_no_temp(cache, monkeypatch):
    key = cache_key(op="interrupt")
    seen_tmp = []

    def interrupted_replace(src, dst):
        seen_tmp.append(Path(src))
        assert Path(src).exists() and Path(src).stat().st_size > 0  # the temp file was written
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        cache.put(key, {"x": torch.ones(1000)})
    monkeypatch.undo()

    assert len(seen_tmp) == 1 and seen_tmp[0].parent == cache.path(key).parent
    assert tmp_files(cache.root) == []  # rule 1: removed before re-raising
    assert not cache.path(key).exists()
    assert cache.get(key) is None and cache.stats.corrupt == 0


def test_interrupted_overwrite_keeps_the_old_entry(cache, monkeypatch):
    key = cache_key(op="overwrite")
    cache.put(key, {"v": torch.tensor([1])})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    cache.put(key, {"v": torch.tensor([2])})  # a failed write degrades to no cache, it does not raise
    monkeypatch.undo()
    assert not cache.writable and "cannot write to" in cache.degraded
    assert torch.equal(cache.get(key)["v"], torch.tensor([1]))
    assert tmp_files(cache.root) == []


def test_hard_killed_writer_leaves_only_a_temp_that_cleanup_removes(tmp_path):
    root = tmp_path / "results"
    key = cache_key(op="killed")
    # The writer process dies (os._exit, no exception handlers run) right after writing and
    # fsyncing its temp file, before the rename.
    run_py(
        """
        import os, sys, torch
        from interpgram.backends.execute.cache import ResultCache
        os.replace = lambda src, dst: os._exit(0)
        ResultCache(sys.argv[1]).put(sys.argv[2], {"x": torch.ones(1000)})
        """,
        str(root),
        key,
    )
    cache = ResultCache(root)
    leftovers = tmp_files(root)
    assert len(leftovers) == 1 and leftovers[0].parent == cache.path(key).parent
    assert cache.get(key) is None and cache.stats.corrupt == 0  # never read as an entry

    # Rule 2: a put to the same directory removes it only once it is stale (not a live writer's).
    same_shard = next(
        k for k in (cache_key(op="killed", i=i) for i in range(5000)) if k[:2] == key[:2] and k != key
    )
    cache.put(same_shard, {"y": 1})
    assert tmp_files(root) == leftovers
    old = time.time() - 2 * cache.stale_tmp_s
    os.utime(leftovers[0], (old, old))
    cache.put(same_shard, {"y": 2})
    assert tmp_files(root) == []

    # And cleanup() sweeps the whole cache.
    run_py(
        """
        import os, sys, torch
        from interpgram.backends.execute.cache import ResultCache
        os.replace = lambda src, dst: os._exit(0)
        ResultCache(sys.argv[1]).put(sys.argv[2], {"x": torch.ones(10)})
        """,
        str(root),
        cache_key(op="killed again"),
    )
    assert len(tmp_files(root)) == 1
    assert cache.cleanup() == 0  # fresh: kept
    assert cache.cleanup(older_than_s=0) == 1
    assert tmp_files(root) == [] and cache.get(same_shard) == {"y": 2}


def test_concurrent_writers_of_one_key_end_with_a_valid_entry(tmp_path):
    root = tmp_path / "results"
    key = cache_key(op="race")
    go = tmp_path / "go"
    writer = """
        import sys, time, torch
        from pathlib import Path
        from interpgram.backends.execute.cache import ResultCache
        root, key, go, wid = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
        cache = ResultCache(root)
        value = {"who": wid, "t": torch.full((250_000,), float(wid))}  # 1 MB
        while not go.exists():
            time.sleep(0.005)
        for _ in range(25):
            cache.put(key, value)
        print("done")
    """
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(writer), str(root), key, str(go), str(w)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for w in (1, 2)
    ]
    reader = ResultCache(root)
    go.touch()
    seen = set()
    while any(p.poll() is None for p in procs):
        v = reader.get(key)  # while both write: a miss or a whole, valid entry, never corrupt
        if v is not None:
            assert torch.equal(v["t"], torch.full((250_000,), float(v["who"])))
            seen.add(v["who"])
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == "done", err
    final = reader.get(key)
    assert final is not None and final["who"] in (1, 2)
    assert torch.equal(final["t"], torch.full((250_000,), float(final["who"])))
    assert reader.stats.corrupt == 0
    assert tmp_files(root) == [] and entry_files(root) == [reader.path(key)]
