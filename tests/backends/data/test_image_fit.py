"""Input images as they come from cameras and tools, on real files: 16-bit PNGs by their range, grayscale,
transparency, EXIF orientation, a 20,000 px wide JPEG in bounded memory, and the resize policies
(shorter + centre crop, stretch, pad) with the note each input gets."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from interpgram.backends.data.images import Fit, fit_tensor, read_fitted
from interpgram.backends.data.inputs import load_inputs


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1)


# ----------------------------------------------------------------------------- pixel formats
def test_a_16_bit_png_is_read_by_its_range_not_as_white(tmp_path):
    """A 16-bit gradient (0…65535): PIL's 8-bit conversion clips every value over 255 to white; the
    analysed pixels must be the values / 65535 in all three channels."""
    g = (np.arange(48 * 64).reshape(48, 64) * (65535 / (48 * 64 - 1))).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "depth.png")
    with Image.open(tmp_path / "depth.png") as im:
        assert im.mode == "I;16"  # really a 16-bit file
    inp = load_inputs(["depth.png"], (48, 64), tmp_path)
    want = torch.from_numpy(g.astype(np.float32) / 65535.0)
    for c in range(3):
        torch.testing.assert_close(inp.images[0, c], want, rtol=0, atol=1e-6)
    assert float(inp.images.mean()) == pytest.approx(0.5, abs=0.01)  # not all white
    assert "16-bit grayscale: 0…65535 scaled to [0, 1]" in inp.notes[0]


def test_a_16_bit_png_reduced_keeps_its_values(tmp_path):
    """A large 16-bit image goes through the reduced decode: the box mean of the scaled values."""
    g = np.tile(np.linspace(0, 65535, 1024).astype(np.uint16), (1024, 1))
    Image.fromarray(g).save(tmp_path / "ramp.png")
    img, note = read_fitted(tmp_path / "ramp.png", Fit((64, 64)))
    want = torch.nn.functional.interpolate(torch.from_numpy(g.astype(np.float32) / 65535)[None, None], size=(64, 64),
                                           mode="bilinear", antialias=True)[0, 0]
    assert (img[0] - want).abs().max() < 0.01
    assert "16-bit" in note and float(img.max()) < 1.0


def test_grayscale_images_become_three_equal_channels(tmp_path):
    g = (np.add.outer(np.arange(32), np.arange(40)) * 3).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    inp = load_inputs(["g.png"], (32, 40), tmp_path)
    for c in range(3):
        torch.testing.assert_close(inp.images[0, c], torch.from_numpy(g / 255.0).float(), rtol=0, atol=1e-6)
    assert "grayscale, copied to R, G and B" in inp.notes[0]


def test_transparent_pixels_are_composited_on_white(tmp_path):
    """RGBA and a palette image with a transparent index: transparent means white, not the colour the
    file happens to store under alpha 0 (PIL's convert("RGB") drops the alpha and shows it)."""
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0] = 200
    alpha = np.zeros((20, 20), np.uint8)
    alpha[:, 10:] = 255
    alpha[:5, :10] = 128
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "a.png")
    inp = load_inputs(["a.png"], (20, 20), tmp_path)
    a = alpha[..., None] / 255.0
    want = rgb / 255.0 * a + (1 - a)
    torch.testing.assert_close(inp.images[0], _chw(want), rtol=0, atol=1e-6)
    assert "composited on white" in inp.notes[0]

    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(0, (0, 0, 5, 10))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    img, note = read_fitted(tmp_path / "p.png", Fit((10, 10)))
    assert torch.all(img[:, :, :5] == 1.0)  # the transparent half: white (its stored colour is black)
    torch.testing.assert_close(img[:, :, 5:], torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 10, 5))
    assert "composited on white" in note


def test_an_exif_rotated_photo_is_read_upright(tmp_path):
    """A camera JPEG stored sideways with EXIF orientation 6: analysed as PIL's exif_transpose shows it."""
    arr = np.zeros((30, 60, 3), np.uint8)
    arr[:, :20] = (250, 10, 10)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "cam.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "cam.jpg") as f:
        up = np.asarray(ImageOps.exif_transpose(f).convert("RGB"), dtype=np.float32) / 255
    assert up.shape == (60, 30, 3)
    img, note = read_fitted(tmp_path / "cam.jpg", Fit((60, 30)))
    torch.testing.assert_close(img, _chw(up), rtol=0, atol=1e-6)
    assert note == "turned upright (EXIF orientation 6); JPEG 30×60, used as is"


# ----------------------------------------------------------------------------- resize policies
def test_a_wide_photo_is_centre_cropped_and_the_note_says_so(tmp_path):
    rng = np.random.default_rng(0)
    arr = (rng.random((48, 96, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    inp = load_inputs(["wide.png"], (32, 32), tmp_path)
    crop = _chw(arr[:, 24:72] / 255.0)
    want = torch.nn.functional.interpolate(crop[None], size=(32, 32), mode="bilinear", antialias=True)[0].clamp(0, 1)
    torch.testing.assert_close(inp.images[0], want, rtol=0, atol=1e-6)
    assert inp.notes == ["PNG 96×48 → centre crop 48×48 at (24, 0) (50% of the width kept) → resized to 32×32"]


def test_stretch_keeps_the_whole_image(tmp_path):
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :10] = 255  # a white band at the left edge: a centre crop would cut it
    Image.fromarray(arr).save(tmp_path / "band.png")
    img, note = read_fitted(tmp_path / "band.png", Fit((20, 20), "stretch"))
    assert img.shape == (3, 20, 20) and float(img[:, :, 0].min()) > 0.9
    assert "stretched to 20×20 (aspect 2.00 → 1.00, nothing cut)" in note
    shorter, _ = read_fitted(tmp_path / "band.png", Fit((20, 20)))
    assert float(shorter.max()) == 0.0  # the crop lost the band


def test_pad_letterboxes_with_the_fill_colour(tmp_path):
    arr = np.full((40, 80, 3), 255, np.uint8)
    Image.fromarray(arr).save(tmp_path / "w.png")
    fill = (0.25, 0.5, 0.75)
    img, note = read_fitted(tmp_path / "w.png", Fit((20, 20), "pad", fill))
    assert img.shape == (3, 20, 20)
    torch.testing.assert_close(img[:, 5:15], torch.ones(3, 10, 20))  # the image: 20×10 in the middle
    for rows in (img[:, :5], img[:, 15:]):
        torch.testing.assert_close(rows, torch.tensor(fill).view(3, 1, 1).expand(3, 5, 20))
    assert note == "PNG 80×40 → resized to 20×10, padded to 20×20 with the model's mean colour (nothing cut)"
    t, tnote = fit_tensor(_chw(arr / 255.0), Fit((20, 20), "pad", fill))  # in memory: the same
    torch.testing.assert_close(t, img)
    assert tnote == note.removeprefix("PNG ")


# ----------------------------------------------------------------------------- bounded memory
_PEAK = """
import json, resource, sys
from pathlib import Path
import torch  # imported before the baseline: only the decode is measured
from interpgram.backends.data.images import Fit, read_fitted
from interpgram.backends.data.inputs import load_inputs
p, mode = Path(sys.argv[1]), sys.argv[2]


def peak_kib():
    # Linux: VmHWM, the peak resident set, which writing 5 to clear_refs resets (so the imports' own peak
    # is not the baseline); elsewhere the process's peak RSS so far
    try:
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
before = peak_kib()
if mode == "inputs":
    inp = load_inputs([p.name], (224, 224), p.parent)
    shape, note = list(inp.images.shape[1:]), inp.notes[0]
else:
    img, note = read_fitted(p, Fit((224, 224), mode))
    shape = list(img.shape)
after = peak_kib()
print(json.dumps({"delta_mib": (after - before) / 1024, "shape": shape, "note": note}))
"""


@pytest.mark.parametrize("mode", ["inputs", "stretch", "pad"])
def test_a_20000_px_wide_jpeg_is_read_in_bounded_memory(tmp_path, mode):
    """20,000×300 (6 M pixels; 72 MB as float32, 144 MB with the tensor copy a full decode makes): only the
    part the fit keeps is converted, so the peak stays near the 8-bit decode (18 MB); measured as the
    growth of the process's peak RSS in a fresh interpreter."""
    x = np.linspace(0, 1, 20000, dtype=np.float32)
    row = (np.stack([x, 1 - x, 0.5 + 0 * x], -1) * 255).astype(np.uint8)
    Image.fromarray(np.repeat(row[None], 300, 0)).save(tmp_path / "pano.jpg", quality=90)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_PEAK), str(tmp_path / "pano.jpg"), mode],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["shape"] == [3, 224, 224]
    print(f"{mode}: peak RSS grew {r['delta_mib']:.1f} MiB")
    assert r["delta_mib"] < 60, r  # a full float decode alone would add 72+ MiB (the old code: 117 MiB)
    assert "20000×300" in r["note"]


def test_pil_images_given_in_python_are_converted_as_files_are(tmp_path):
    """The Python API's PIL inputs: a 16-bit image by its range, transparency on white, with the note."""
    from interpgram.backends.api.inputs import to_inputs

    g = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        im.load()
        inp = to_inputs([im, Image.new("RGBA", (16, 16), (255, 0, 0, 0))], (16, 16))
    torch.testing.assert_close(inp.images[0, 1], torch.from_numpy(g / 65535.0).float(), rtol=0, atol=1e-6)
    assert torch.all(inp.images[1] == 1.0)  # fully transparent red: white
    assert inp.notes[0].startswith("16-bit grayscale") and "PIL I;16 16×16, used as is" in inp.notes[0]
    assert "composited on white" in inp.notes[1]
