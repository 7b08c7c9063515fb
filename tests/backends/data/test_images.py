"""Image decoding at the edges, on real files: the pixel limit (decompression bombs), the reduced
decode of large images, FIFOs and symlink loops as inputs, and folders with unreadable files."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from interpgram.backends.data.datasets import DatasetError, open_dataset
from interpgram.backends.data.images import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, ImageError, read_image, resize
from interpgram.backends.data.inputs import InputError, load_inputs


def _full_decode(p, size):
    """What read_image + resize did before the reduced decode: every pixel to float32, then resize."""
    with Image.open(p) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return resize(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), size)


def _smooth(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(4 * (x + y))], -1) * 0.4 + 0.5
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- the pixel limit
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    """A 20,000² PNG of ~50 KB (400 M pixels): refused with the limit and how to raise it; never decoded
    (a decode would need 1.2 GB of RGB and more as float32)."""
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    with pytest.raises(ImageError) as err:
        read_image(tmp_path / "bomb.png", (64, 64))
    msg = str(err.value)
    assert "20000×20000 = 400,000,000 pixels" in msg and f"limit of {DEFAULT_MAX_PIXELS:,}" in msg
    assert f"{MAX_PIXELS_ENV}=400000000" in msg
    with pytest.raises(InputError, match="over the limit"):  # the same through a spec's input
        load_inputs(["bomb.png"], (64, 64), tmp_path)


@pytest.mark.parametrize("side", [15, 30])  # 225 px: our check; 900 px: over twice the limit, PIL's own refusal
def test_the_limit_follows_the_environment(tmp_path, monkeypatch, side):
    Image.fromarray(_smooth(side, side)).save(tmp_path / "a.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "200")
    with pytest.raises(ImageError, match=rf"{side}×{side} = {side * side:,} pixels, over the limit of 200 .*"
                                         rf"{MAX_PIXELS_ENV}={side * side}"):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, str(side * side))
    assert read_image(tmp_path / "a.png").shape == (3, side, side)
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")  # no limit
    assert read_image(tmp_path / "a.png").shape == (3, side, side)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ImageError, match=f"{MAX_PIXELS_ENV}='lots' is not a whole number"):
        read_image(tmp_path / "a.png")


# ----------------------------------------------------------------------------- the reduced decode
@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_a_large_image_decoded_reduced_matches_the_full_decode(tmp_path, fmt):
    p = tmp_path / f"big.{fmt}"
    Image.fromarray(_smooth(1800, 2400)).save(p, quality=95) if fmt == "jpeg" else Image.fromarray(
        _smooth(1800, 2400)).save(p)
    size = (64, 48)
    fast = resize(read_image(p, size), size)
    assert read_image(p, size).shape[1] < 1800 / 4  # really decoded reduced
    full = _full_decode(p, size)
    assert fast.shape == full.shape == (3, 64, 48)
    d = (fast - full).abs()
    assert d.mean() < 0.01 and d.max() < 0.06, (float(d.mean()), float(d.max()))


def test_small_images_decode_exactly_as_before(tmp_path):
    for name, arr in (("a.png", _smooth(90, 120)), ("b.png", _smooth(64, 64))):
        Image.fromarray(arr).save(tmp_path / name)
        torch.testing.assert_close(resize(read_image(tmp_path / name, (64, 64)), (64, 64)),
                                   _full_decode(tmp_path / name, (64, 64)), rtol=0, atol=0)


def test_palette_and_alpha_images_reduce_like_rgb(tmp_path):
    rgb = Image.fromarray(_smooth(800, 800))
    rgb.convert("P").save(tmp_path / "p.png")
    rgb.convert("RGBA").save(tmp_path / "a.png")
    rgb.convert("L").save(tmp_path / "l.png")
    for name in ("p.png", "a.png", "l.png"):
        d = (resize(read_image(tmp_path / name, (32, 32)), (32, 32)) - _full_decode(tmp_path / name, (32, 32))).abs()
        assert d.mean() < 0.01, (name, float(d.mean()))


# ----------------------------------------------------------------------------- inputs that are not files
def test_a_named_pipe_as_input_is_refused_not_waited_on(tmp_path):
    """In a child process with a generous limit, so a regression fails the test instead of hanging it."""
    os.mkfifo(tmp_path / "pipe.png")
    code = textwrap.dedent(f"""
        from interpgram.backends.data.inputs import InputError, load_inputs
        from interpgram.backends.data.images import ImageError, read_image
        try:
            load_inputs(["pipe.png"], (64, 64), {str(tmp_path)!r})
        except InputError as e:
            print("input:", e)
        try:
            read_image({str(tmp_path / "pipe.png")!r})
        except ImageError as e:
            print("image:", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"input: input image {tmp_path / 'pipe.png'} is a named pipe (FIFO), not a regular file" in r.stdout
    assert f"image: {tmp_path / 'pipe.png'} is a named pipe (FIFO)" in r.stdout


def test_a_symlink_loop_is_reported_as_a_loop(tmp_path):
    os.symlink("b.png", tmp_path / "a.png")
    os.symlink("a.png", tmp_path / "b.png")
    with pytest.raises(InputError, match=r"a\.png is a symlink loop"):
        load_inputs(["a.png"], (64, 64), tmp_path)
    with pytest.raises(InputError, match="input image not found"):  # a missing file is still "not found"
        load_inputs(["c.png"], (64, 64), tmp_path)
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(DatasetError, match="is a symlink loop"):
        open_dataset("loop", n=4, size=32, base_dir=tmp_path)


# ----------------------------------------------------------------------------- data-set folders
def _folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        Image.fromarray(_smooth(40, 40, seed=i)).save(d / f"ok{i}.png")
    return d


def test_every_unreadable_file_of_a_folder_is_named_in_one_error(tmp_path):
    d = _folder(tmp_path)
    (d / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (d / "empty.jpg").write_bytes(b"")
    (d / "sub").mkdir()
    (d / "sub" / "notes.png").write_text("hello")
    os.symlink("loop2.png", d / "loop1.png")
    os.symlink("loop1.png", d / "loop2.png")
    os.mkfifo(d / "pipe.png")
    Image.new("1", (20000, 20000)).save(d / "bomb.png")
    with pytest.raises(DatasetError) as err:
        open_dataset("imgs", n=100, size=32, base_dir=tmp_path)
    msg = str(err.value)
    assert "7 of 10 image files" in msg
    for name in ("garbage.png", "empty.jpg", "sub/notes.png", "loop1.png", "loop2.png", "pipe.png", "bomb.png"):
        assert name in msg, name
    assert "symlink loop" in msg and "named pipe" in msg and "over the limit" in msg
    for name in ("ok0.png", "ok1.png", "ok2.png"):
        assert name not in msg


def test_a_batch_with_damaged_pixel_data_names_all_its_bad_files(tmp_path):
    """Truncated pixel data passes the header check at open and fails when decoded: the batch's error
    names every such file, not only the first."""
    d = _folder(tmp_path)
    for i in (0, 2):
        b = (d / f"ok{i}.png").read_bytes()
        (d / f"cut{i}.png").write_bytes(b[: len(b) // 2])
    ds = open_dataset("imgs", n=100, size=32, base_dir=tmp_path)
    assert len(ds) == 5
    with pytest.raises(DatasetError) as err:
        ds.load(range(5))
    msg = str(err.value)
    assert "2 of 5 image files" in msg and "cut0.png, cut2.png" in msg and "truncated" in msg
    imgs = ds.load([2, 3, 4])  # the good ones still load
    assert imgs.shape == (3, 3, 32, 32)


def test_symlinked_files_keep_their_names(tmp_path):
    d = _folder(tmp_path)
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(_smooth(40, 40, seed=9)).save(outside)
    os.symlink(outside, d / "linked.png")
    ds = open_dataset("imgs", n=100, size=32, base_dir=tmp_path)
    assert [ds.name(i) for i in range(len(ds))] == ["linked.png", "ok0.png", "ok1.png", "ok2.png"]
    assert ds.load([0]).shape == (1, 3, 32, 32)
