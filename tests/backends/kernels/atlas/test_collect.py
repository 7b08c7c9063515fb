"""Atlas collection (backends/atlas/collect.py) and its chunked store (backends/atlas/store.py).

Real model (builtin:shapes-cnn), real data set, real files: attribution against captum, resume
after SIGKILL bit for bit, store errors, positions, ``python:`` data sets and bounded memory.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import LayerGradientXActivation  # a test dependency: missing captum fails, never skips

from support import ROOT as REPO
from interpgram.backends.kernels.atlas.collect import (CollectSpec, _collect_chunk, _plan, attribution_rule, collect,
                                               grid_xy, sample_uv)
from interpgram.backends.kernels.atlas.store import MANIFEST, AtlasStore, StoreError
from interpgram.backends.data.datasets import DatasetError, check_dataset_ref, open_dataset
from interpgram.backends.data.shapes import generate
from interpgram.backends.models import LoadedModel, Preprocess, load_model, state_digest
from interpgram.backends.models.inceptionv1 import InceptionV1



# One torch thread here and in the children: on a busy 2-core machine OpenMP's spinning threads make
# small batches 30× slower, and the resume test compares a child's numbers with this process's bit for bit.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return load_model("builtin:shapes-cnn")


_FLOAT64: dict = {}  # model digest -> its float64 copy (captum's oracle for cancelling float32 sums)


def captum_attr(model, layer: str, x01: torch.Tensor, k: int, *, double: bool = False) -> torch.Tensor:
    """Σ_c h_c·∂logit_k/∂h_c at every position of ``layer``: (B, H, W), or (B, 1, 1) for a 1-d layer.
    ``double``: captum on a float64 copy of the model (made once per model; returned as float32)."""
    if double and model.digest not in _FLOAT64:
        _FLOAT64[model.digest] = copy.deepcopy(model.module).double()
    module = _FLOAT64[model.digest] if double else model.module
    x01 = x01.double() if double else x01
    fwd = lambda x: module(model.preprocess(x))  # noqa: E731
    a = LayerGradientXActivation(fwd, module.get_submodule(layer)).attribute(x01, target=k).float()
    a = a.sum(1)
    return a[:, None, None] if a.dim() == 1 else a


def plain_acts(model, layers, x01):
    out = {}
    hs = [model.module.get_submodule(l).register_forward_hook(lambda m, i, o, l=l: out.__setitem__(l, o.detach()))
          for l in layers]
    try:
        with torch.no_grad():
            logits = model.module(model.preprocess(x01))
    finally:
        for h in hs:
            h.remove()
    return {l: (a[:, :, None, None] if a.dim() == 2 else a) for l, a in out.items()}, logits


# ----------------------------------------------------------------------------- attribution and activations
def test_random_positions_match_captum_and_a_forward_hook(model, tmp_path):
    layers = ("conv2", "conv3", "pool3", "conv5", "gap", "flatten")
    n = 12
    spec = CollectSpec("builtin:shapes", n, layers=layers, chunk=8, batch_size=5, seed=3)  # 2 chunks, batches of 5 within them
    st = collect(model, spec, tmp_path, progress=False)
    assert st.complete and st.n_images == n and st.path.parent == tmp_path
    x01 = generate(range(n), split="train").images
    acts, logits = plain_acts(model, layers, x01)
    assert np.array_equal(st.read("image"), np.arange(n))
    assert np.array_equal(st.read("label"), generate(range(n), split="train").labels.numpy())
    torch.testing.assert_close(torch.from_numpy(st.read("logits")), logits, rtol=1e-5, atol=1e-5)
    b = torch.arange(n)
    for l in layers:
        xy = torch.from_numpy(st.read(f"{l}/xy").astype(np.int64))
        a = acts[l]
        torch.testing.assert_close(torch.from_numpy(st.read(f"{l}/act")), a[b, :, xy[:, 1], xy[:, 0]],
                                   rtol=1e-5, atol=1e-5)
        attr = st.read(f"{l}/attr")
        assert attr.shape == (n, 10)
        for k in range(10):  # every class, at each image's sampled position
            want = captum_attr(model, l, x01, k)[b, xy[:, 1], xy[:, 0]]
            torch.testing.assert_close(torch.from_numpy(attr[:, k]), want, rtol=1e-4, atol=1e-5)
    # the whole-vector attribution at the last hidden layer sums to the logit minus the bias
    fc_bias = model.module.fc.bias.detach()
    torch.testing.assert_close(torch.from_numpy(st.read("flatten/attr")), logits - fc_bias, rtol=1e-5, atol=1e-5)


def test_all_positions_match_captum_with_both_rules(model, tmp_path):
    """positions: all; conv4 (64 positions) and conv5 (16) take the K reverse passes, gap (1) forward mode;
    conv5 forced through 16 forward-mode passes gives the same numbers."""
    assert attribution_rule(16, 10) == "reverse" and attribution_rule(1, 10) == "jvp" and attribution_rule(9, 10) == "jvp"
    layers = ("conv4", "conv5", "gap")
    n = 6
    spec = CollectSpec("builtin:shapes", n, layers=layers, positions="all", chunk=4, batch_size=3)
    st = collect(model, spec, tmp_path, progress=False)
    x01 = generate(range(n), split="train").images
    acts, _ = plain_acts(model, layers, x01)
    ks = (0, 3, 6, 9)
    for l in layers:
        c, h, w = acts[l].shape[1:]
        assert st.n_rows(f"{l}/act") == n * h * w == st.read(f"{l}/attr").shape[0]
        torch.testing.assert_close(torch.from_numpy(st.read(f"{l}/act")),
                                   acts[l].flatten(2).transpose(1, 2).reshape(n * h * w, c), rtol=1e-5, atol=1e-5)
        attr = st.read(f"{l}/attr").reshape(n, h * w, 10)
        for k in ks:
            torch.testing.assert_close(torch.from_numpy(attr[:, :, k]), captum_attr(model, l, x01, k).flatten(1),
                                       rtol=1e-4, atol=1e-5)
    plan = _plan(model, spec)
    assert [p.mode for p in plan] == ["reverse", "reverse", "jvp"]
    forced = [dataclasses.replace(p, mode="jvp") if p.name == "conv5" else p for p in plan]
    ds = open_dataset("builtin:shapes", n=n, split="train", size=64)
    out = _collect_chunk({"model": model, "spec": spec, "dataset": ds, "device": "cpu", "plan": forced}, 1)
    assert np.array_equal(out["image"], [4, 5])
    np.testing.assert_allclose(out["conv5/attr"], st.read("conv5/attr", slice(4 * 16, 6 * 16)), rtol=1e-4, atol=1e-5)


def _loaded(name: str, module: torch.nn.Module, size: int, k: int, value_range=(0.0, 1.0)) -> LoadedModel:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return LoadedModel(name, module, Preprocess((size, size), value_range=value_range), [f"c{i}" for i in range(k)],
                       state_digest(module))


def test_inceptionv1_forward_mode_matches_captum(tmp_path):
    """InceptionV1 (random weights, 96 px): SAME padding, local response norm, concatenation, 1,008 logits.
    random: one forward-mode pass per layer; all: mixed5b's 3×3 = 9 positions < 1,008 → 9 forward-mode passes."""
    torch.manual_seed(0)
    model = _loaded("inceptionv1-random", InceptionV1(), 96, 1008, (-117.0, 138.0))
    x01 = open_dataset("builtin:shapes", n=3, split="train", size=96).load(range(3))  # shapes resized to 96
    ks = (0, 17, 500, 1007)
    st = collect(model, CollectSpec("builtin:shapes", 3, layers=("conv2d2", "mixed3b", "mixed5b"), chunk=2), tmp_path,
                 progress=False)
    b = torch.arange(3)
    for l in ("conv2d2", "mixed3b", "mixed5b"):
        xy = torch.from_numpy(st.read(f"{l}/xy").astype(np.int64))
        attr = torch.from_numpy(st.read(f"{l}/attr"))
        for k in ks:
            # the oracle in float64: on random weights these sums cancel to a small part of their terms, and
            # captum's own float32 value moved by 2% between CPUs (one Xeon, one thread); ours is within 1e-5
            want = captum_attr(model, l, x01, k, double=True)[b, xy[:, 1], xy[:, 0]]
            torch.testing.assert_close(attr[:, k], want, rtol=1e-3, atol=1e-4 * float(want.detach().abs().max()))
    spec = CollectSpec("builtin:shapes", 2, layers=("mixed5b",), positions="all", chunk=2)
    assert [l.mode for l in _plan(model, spec)] == ["jvp"]
    st = collect(model, spec, tmp_path, progress=False)
    attr = torch.from_numpy(st.read("mixed5b/attr")).reshape(2, 9, 1008)
    for k in ks:
        want = captum_attr(model, "mixed5b", x01[:2], k, double=True).flatten(1)
        torch.testing.assert_close(attr[:, :, k], want, rtol=1e-3, atol=1e-4 * float(want.detach().abs().max()))


class _NoJvp(torch.autograd.Function):
    """A ReLU with a backward formula but no forward-mode (jvp) one."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0)


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(_NoJvp.apply(self.conv(x)).mean((2, 3)))


def test_an_op_without_forward_mode_falls_back_to_reverse(tmp_path):
    torch.manual_seed(1)
    model = _loaded("tiny", _Tiny(), 16, 4)
    with pytest.warns(RuntimeWarning, match="forward-mode AD fails .* after layer conv.*reverse rule"):
        st = collect(model, CollectSpec("builtin:shapes", 5, layers=("conv",), chunk=3), tmp_path, progress=False)
    x01 = open_dataset("builtin:shapes", n=5, split="train", size=16).load(range(5))
    xy = torch.from_numpy(st.read("conv/xy").astype(np.int64))
    for k in range(4):
        want = captum_attr(model, "conv", x01, k)[torch.arange(5), xy[:, 1], xy[:, 0]]
        torch.testing.assert_close(torch.from_numpy(st.read("conv/attr")[:, k]), want, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- positions
def test_positions_random_are_aligned_across_layers_centre_and_all(model, tmp_path):
    layers = ("conv1", "pool2", "conv4", "conv5", "gap")  # 32, 16, 8, 4 and 1 positions a side
    n = 20
    st = collect(model, CollectSpec("builtin:shapes", n, layers=layers, seed=7, chunk=6, attribution=False),
                 tmp_path, progress=False)
    assert "conv1/attr" not in st.fields
    uv = sample_uv(7, range(n))
    assert uv.shape == (n, 2) and (uv >= 0).all() and (uv < 1).all()
    sides = {"conv1": 32, "pool2": 16, "conv4": 8, "conv5": 4, "gap": 1}
    xy = {l: st.read(f"{l}/xy").astype(np.int64) for l in layers}
    for l, s in sides.items():  # x = floor(u·W), y = floor(v·H): the same (u, v) in every layer
        gx, gy = grid_xy(uv, s, s)
        assert np.array_equal(xy[l][:, 0], gx) and np.array_equal(xy[l][:, 1], gy)
        assert np.array_equal(xy[l], np.floor(uv * s).astype(np.int64))
    for fine, coarse, f in (("conv1", "pool2", 2), ("conv1", "conv4", 4), ("pool2", "conv5", 4)):
        assert np.array_equal(xy[fine] // f, xy[coarse])  # the coarse cell covers the fine one
    assert (xy["gap"] == 0).all() and len({tuple(p) for p in xy["conv1"]}) > n // 2
    # per image, not a stream: another chunking, a later start, another seed
    assert np.array_equal(sample_uv(7, [13, 4]), uv[[13, 4]])
    assert not np.array_equal(sample_uv(8, range(n)), uv)

    st = collect(model, CollectSpec("builtin:shapes", 5, layers=layers, positions="centre", attribution=False),
                 tmp_path, progress=False)
    for l, s in sides.items():
        assert (st.read(f"{l}/xy") == s // 2).all() and st.n_rows(f"{l}/act") == 5

    st = collect(model, CollectSpec("builtin:shapes", 3, layers=("conv4", "gap"), positions="all", attribution=False),
                 tmp_path, progress=False)
    assert st.n_rows("conv4/act") == 3 * 64 and st.n_rows("gap/act") == 3 and st.n_rows("image") == 3
    assert st.rows_per_image["conv4/xy"] == 64
    assert st.read("conv4/xy")[:10].tolist() == [[x, 0] for x in range(8)] + [[0, 1], [1, 1]]


# ----------------------------------------------------------------------------- resume
RESUME_CHILD = """
import sys, time
from interpgram.backends.models import LoadedModel, Preprocess, load_model, state_digest
from interpgram.backends.models.inceptionv1 import InceptionV1
from interpgram.backends.kernels.atlas.collect import CollectSpec, collect
spec = CollectSpec("builtin:shapes", {n}, layers=("conv3", "conv5"), chunk={chunk}, batch_size=7, seed=5)

def hold(stage, done, total):  # after two stored chunks, wait to be killed (no timing involved)
    while done >= 2 * {chunk}:
        time.sleep(0.05)

collect(load_model("builtin:shapes-cnn"), spec, sys.argv[1], progress=hold)
"""


def _done(root: Path) -> list[int]:
    for m in root.glob(f"*/{MANIFEST}"):
        try:
            return json.loads(m.read_text())["done"]
        except (OSError, ValueError):
            return []
    return []


def test_resume_after_sigkill_is_bit_identical(model, tmp_path):
    n, chunk = 80, 16
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", RESUME_CHILD.format(n=n, chunk=chunk), str(killed)], cwd=REPO, env=CHILD_ENV)
    try:
        deadline = time.monotonic() + 120
        while len(_done(killed)) < 2:
            assert proc.poll() is None, "the collecting child exited before it could be killed"
            assert time.monotonic() < deadline, "the child made no progress"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (store_dir,) = killed.iterdir()
    st = AtlasStore.load(store_dir)
    done = st.done_chunks
    assert 2 <= len(done) < st.n_chunks and not st.complete
    with pytest.raises(StoreError, match=r"incomplete \(\d of 5 chunks done\).*partial=True"):
        st.read("conv3/act")
    assert np.array_equal(st.read("image", partial=True), st.done_rows("image"))
    # a half-written chunk: garbage in a chunk file that the manifest does not list
    todo = st.missing_chunks()[-1]
    garbage = store_dir / "conv3" / "act" / "c" / str(todo) / "0"
    garbage.parent.mkdir(parents=True, exist_ok=True)
    garbage.write_bytes(b"\x00garbage, not zstd" * 50)
    assert st.read("conv3/act", partial=True).shape == (16 * len(done), 128)  # never read
    with pytest.raises(StoreError, match="not collected yet"):
        st.read("conv3/act", rows=[todo * chunk], partial=True)

    seen = []
    resumed = collect(model, CollectSpec("builtin:shapes", n, layers=("conv3", "conv5"), chunk=chunk, batch_size=7, seed=5),
                      killed, progress=lambda s, d, t: seen.append(d))
    assert resumed.path == store_dir and resumed.complete
    assert seen[0] == chunk * len(done) and seen[-1] == n and len(seen) == 1 + 5 - len(done)  # only the missing chunks
    whole = collect(model, CollectSpec("builtin:shapes", n, layers=("conv3", "conv5"), chunk=chunk, batch_size=7, seed=5),
                    tmp_path / "whole", progress=False)
    assert whole.path.name == store_dir.name and set(whole.fields) == set(resumed.fields)
    for f in whole.fields:
        a, b = resumed.read(f), whole.read(f)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), f
    # complete: returned at once, no model work (an engine that would fail if asked to run anything)
    class NoWork:
        name = "no-work"

        def map(self, *a, **k):
            raise AssertionError("a complete store ran the model again")

    again = collect(model, CollectSpec("builtin:shapes", n, layers=("conv3", "conv5"), chunk=chunk, batch_size=64, seed=5),
                    killed, progress=False, engine=NoWork())
    assert again.path == store_dir and again.complete
    # a done chunk that is damaged on disk reads as an error that says to delete the folder
    victim = store_dir / "logits" / "c" / "0" / "0"
    victim.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="damaged: delete"):
        AtlasStore.load(store_dir).read("logits")


def test_keyboard_interrupt_leaves_a_resumable_store(model, tmp_path):
    spec = CollectSpec("builtin:shapes", 30, layers=("conv5",), chunk=10, seed=1)

    def stop(stage, done, total):
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect(model, spec, tmp_path, progress=stop)
    (d,) = tmp_path.iterdir()
    assert AtlasStore.load(d).done_chunks == [0, 1]
    st = collect(model, spec, tmp_path, progress=False)
    assert st.complete and np.array_equal(st.read("image"), np.arange(30))


# ----------------------------------------------------------------------------- the store
FIELDS = {"image": ((), "int64"), "l/act": ((3,), "float32")}


def test_store_errors_say_what_differs_and_partial_reads(tmp_path):
    meta = {"model": "abc", "seed": 0, "layers": ["l"]}
    st = AtlasStore.open(tmp_path / "s", meta=meta, fields=FIELDS, rows_per_image={"l/act": 2}, n_images=5, chunk=2)
    assert st.missing_chunks() == [0, 1, 2] and not st.complete and st.n_rows("l/act") == 10
    assert st.nbytes == 5 * 8 + 10 * 3 * 4
    st.write_chunk(2, {"image": np.array([4]), "l/act": np.full((2, 3), 4, np.float32)})  # the short last chunk
    with pytest.raises(StoreError, match=r"field 'l/act' has shape \(3, 3\), expected \(4, 3\)"):
        st.write_chunk(0, {"image": np.arange(2), "l/act": np.zeros((3, 3), np.float32)})
    with pytest.raises(StoreError, match="is float64, expected float32"):
        st.write_chunk(0, {"image": np.arange(2), "l/act": np.zeros((4, 3))})
    with pytest.raises(StoreError, match="missing l/act"):
        st.write_chunk(0, {"image": np.arange(2)})
    with pytest.raises(StoreError, match="incomplete .*1 of 3 chunks"):
        st.read("image")
    assert st.read("image", partial=True).tolist() == [4] and st.done_rows("l/act").tolist() == [8, 9]
    with pytest.raises(StoreError, match="no field 'l/acts'"):
        st.read("l/acts", partial=True)

    # reopening: same → the same state; other meta or fields → what differs, and to delete the folder
    again = AtlasStore.open(tmp_path / "s", meta=dict(meta), fields=FIELDS, rows_per_image={"l/act": 2}, n_images=5, chunk=2)
    assert again.done_chunks == [2] and again.meta == meta
    with pytest.raises(StoreError, match=r"meta\.seed: stored 0, asked 1.*delete .*/s and collect again"):
        AtlasStore.open(tmp_path / "s", meta={**meta, "seed": 1}, fields=FIELDS, rows_per_image={"l/act": 2},
                        n_images=5, chunk=2)
    with pytest.raises(StoreError, match=r"fields\.l/act\.shape: stored \[3\], asked \[4\]"):
        AtlasStore.open(tmp_path / "s", meta=meta, fields={**FIELDS, "l/act": ((4,), "float32")},
                        rows_per_image={"l/act": 2}, n_images=5, chunk=2)
    with pytest.raises(StoreError, match="n_images: stored 5, asked 6"):
        AtlasStore.open(tmp_path / "s", meta=meta, fields=FIELDS, rows_per_image={"l/act": 2}, n_images=6, chunk=2)

    for i, lo in ((0, 0), (1, 2)):
        again.write_chunk(i, {"image": np.arange(lo, lo + 2), "l/act": np.arange(lo * 6, lo * 6 + 12, dtype=np.float32).reshape(4, 3)})
    assert again.complete and again.read("image").tolist() == [0, 1, 2, 3, 4]
    assert again.read("l/act", [5, 0, 9]).tolist() == [[15, 16, 17], [0, 1, 2], [4, 4, 4]]
    assert again.read("l/act", slice(2, 4)).tolist() == [[6, 7, 8], [9, 10, 11]]
    assert AtlasStore.load(tmp_path / "s").complete  # the manifest on disk says so too
    assert json.loads((tmp_path / "s" / MANIFEST).read_text())["done"] == [0, 1, 2]

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty and is not an atlas store"):
        AtlasStore.open(tmp_path / "other", meta=meta, fields=FIELDS, rows_per_image={}, n_images=5, chunk=2)
    with pytest.raises(StoreError, match="no manifest.json"):
        AtlasStore.load(tmp_path / "other")
    with pytest.raises(StoreError, match="clashes"):
        AtlasStore.open(tmp_path / "x", meta=meta, fields={"l": ((), "int64"), "l/act": ((3,), "float32")},
                        rows_per_image={}, n_images=5, chunk=2)


# ----------------------------------------------------------------------------- python: data sets
def test_python_dataset_needs_allow_code(model, tmp_path):
    mod = f"atlas_ds_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text(textwrap.dedent("""
        import torch

        class Tiny(torch.utils.data.Dataset):
            def __init__(self, split):
                self.offset = 100 if split == "test" else 0

            def __len__(self):
                return 7

            def __getitem__(self, i):
                g = torch.Generator().manual_seed(i + self.offset)
                return torch.rand(3, 48, 40, generator=g), i % 3

        def build(split="train"):
            return Tiny(split)
        """))
    ref = f"python:{mod}:build"
    with pytest.raises(DatasetError, match="--allow-code"):
        open_dataset(ref, n=5, base_dir=tmp_path)
    with pytest.raises(DatasetError, match="--allow-code"):
        collect(model, CollectSpec(ref, 5, layers=("conv5",)), tmp_path / "atlas", base_dir=tmp_path, progress=False)
    with pytest.raises(DatasetError, match="python:MODULE:CALLABLE"):
        check_dataset_ref("python:nocallable")
    with pytest.raises(DatasetError, match="has no 'nope'"):
        open_dataset(f"python:{mod}:nope", n=5, base_dir=tmp_path, allow_code=True)

    ds = open_dataset(ref, n=10, split="train", size=64, base_dir=tmp_path, allow_code=True)
    imgs, labels = ds.load_labeled(range(len(ds)))
    assert len(ds) == 7 and imgs.shape == (7, 3, 64, 64) and labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert ds.name(2) == f"{ref}/2" and ds.identity["code"] and ds.identity["n"] == 7
    test_split = open_dataset(ref, n=10, split="test", size=64, base_dir=tmp_path, allow_code=True)
    assert not torch.equal(test_split.load([0]), imgs[:1])

    st = collect(model, CollectSpec(ref, 10, layers=("conv5",), chunk=4), tmp_path / "atlas", base_dir=tmp_path,
                 allow_code=True, progress=False)
    assert st.n_images == 7 and st.read("label").tolist() == [0, 1, 2, 0, 1, 2, 0]
    acts, logits = plain_acts(model, ["conv5"], imgs)
    torch.testing.assert_close(torch.from_numpy(st.read("logits")), logits, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- memory
MEMORY_CHILD = """
import resource, sys
from interpgram.backends.models import LoadedModel, Preprocess, load_model, state_digest
from interpgram.backends.models.inceptionv1 import InceptionV1
from interpgram.backends.kernels.atlas.collect import CollectSpec, collect
spec = CollectSpec("builtin:shapes", int(sys.argv[2]), layers=("conv3",), positions="all", attribution=False,
                   chunk=16, batch_size=16)
st = collect(load_model("builtin:shapes-cnn"), spec, sys.argv[1], progress=False)
assert st.complete
print(st.nbytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_does_not_grow_with_n(tmp_path):
    """300 vs 1,200 images × 256 rows (conv3, every position; no attribution, to keep it quick): 40 MB vs
    160 MB of arrays in chunks of 16 images. Holding them would raise the peak by ~120 MB over a ~300 MB
    baseline (measured: 293 vs 294 MiB for 400 vs 1,600 images with conv5 as well)."""
    peaks = {}
    for n in (300, 1200):
        out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tmp_path / str(n)), str(n)], cwd=REPO, env=CHILD_ENV,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        nbytes, rss_kb = map(int, out.stdout.split())
        peaks[n] = (nbytes, rss_kb * 1024)
    (small_bytes, small), (big_bytes, big) = peaks[300], peaks[1200]
    print(f"peak RSS: {small / 2**20:.1f} MiB (300 images, {small_bytes / 1e6:.0f} MB of arrays), "
          f"{big / 2**20:.1f} MiB (1200 images, {big_bytes / 1e6:.0f} MB), ratio {big / small:.3f}")
    assert big_bytes == 4 * small_bytes and big_bytes - small_bytes > 100e6
    assert big <= small * 1.10, f"peak RSS {small / 2**20:.0f} MiB at 300 images, {big / 2**20:.0f} MiB at 1200"
