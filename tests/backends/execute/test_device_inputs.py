"""Device choice, out-of-memory batch halving, and input resolution."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from interpgram.backends.data.inputs import InputError, expand_refs, load_inputs
from interpgram.backends.execute.device import is_oom, pick_device, run_batched


def test_auto_device_is_cpu_without_accelerators():
    if torch.cuda.is_available():
        assert pick_device("auto").type == "cuda"
    else:
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(RuntimeError, match="has no CUDA device"):
            pick_device("cuda")


def test_out_of_memory_halves_the_batch_and_retries():
    # A CUDA out-of-memory cannot be provoked on a CPU-only machine; this raises the very exception
    # type torch raises on the GPU whenever a slice is larger than the "memory" allows.
    calls = []

    def fn(start, stop):
        calls.append((start, stop))
        if stop - start > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return list(range(start, stop))

    halvings = []
    parts = run_batched(fn, 23, 16, on_halve=halvings.append)
    assert [x for p in parts for x in p] == list(range(23))
    assert halvings == [8, 4]
    assert calls[:3] == [(0, 16), (0, 8), (0, 4)]


def test_other_errors_are_not_retried():
    def fn(start, stop):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError):
        run_batched(fn, 4, 4)
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("size mismatch"))


def test_oom_at_batch_one_is_raised():
    def fn(start, stop):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_batched(fn, 3, 2)


def test_builtin_refs_and_ranges():
    assert expand_refs(["builtin:shapes/3-5", "x.png"]) == ["builtin:shapes/3", "builtin:shapes/4", "builtin:shapes/5", "x.png"]
    inp = load_inputs(["builtin:shapes/2", "builtin:shapes/train/2"], (64, 64))
    assert inp.images.shape == (2, 3, 64, 64)
    assert inp.truth[0]["mask"].shape == (64, 64) and inp.truth[0]["mask"].any()
    assert not torch.equal(inp.images[0], inp.images[1])  # test and train splits differ
    assert inp.digest == load_inputs(["builtin:shapes/2", "builtin:shapes/train/2"], (64, 64)).digest


def test_image_files_are_cropped_and_resized(tmp_path):
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, 20:60] = (255, 0, 0)  # the centre square is red; the sides are cropped away
    Image.fromarray(arr).save(tmp_path / "wide.png")
    inp = load_inputs(["wide.png"], (32, 32), tmp_path)
    img = inp.images[0]
    assert img.shape == (3, 32, 32)
    assert img[0].mean() > 0.95 and img[1].mean() < 0.05


@pytest.mark.parametrize("ref,fragment", [
    ("missing.png", "input image not found"),
    ("builtin:cifar/3", "unknown built-in input"),
    ("builtin:shapes/9-2", "a range is a-b with a <= b"),
    ("notes.txt", "is not an image file"),
])
def test_bad_inputs_say_what_is_accepted(ref, fragment, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=fragment):
        load_inputs([ref], (64, 64), tmp_path)


def test_corrupt_image_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match="cannot be read as an image"):
        load_inputs(["bad.png"], (64, 64), tmp_path)
