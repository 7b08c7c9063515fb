"""Image files → tensors, and the resize every image goes through (inputs and data sets alike).

Decoding is bounded: an image whose header claims more than :func:`max_image_pixels` pixels
(``$INTERPGRAM_MAX_IMAGE_PIXELS``, default 16384² ≈ 268 M) is refused before any pixel is decoded (a
decompression bomb: a few KB of PNG that would need gigabytes). An image much larger than the model's
input is decoded reduced: JPEG through its DCT scaling (``draft``), every format through PIL's box
``reduce`` on 8-bit pixels, so only the crop at about twice the target size ever becomes float32.
Only regular files are opened (a named pipe would block forever).

How an image is brought to the model's (H, W) is a :class:`Fit` (the model's ``resize``):

- ``shorter`` (the default): scale so the image covers H×W (a square model: its shorter side to the
  size), then cut the centre: ``crop: center``;
- ``stretch``: scale each side to the size, the aspect ratio changes, nothing is cut;
- ``pad``: scale so the whole image fits inside H×W and fill the rest (letterbox) with the model's
  mean colour (zero after normalisation), nothing is cut.

Pixels come to RGB by what they mean, not by PIL's 8-bit clipping: 16-bit images (PNG ``I;16``) by
their 0…65535 range, 32-bit integer and float images by their type's range or, past it, their own
min…max; grayscale is copied to the three channels; transparent pixels (RGBA, LA, palette with
transparency) are composited on white; an EXIF orientation is applied. :func:`read_fitted` returns
with the image a note saying each of these steps (``640×427 → centre crop 427×427 → 64×64``).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from interpgram.backends.files import open_regular, path_problem

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_PIXELS_ENV = "INTERPGRAM_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 16384 * 16384
#: the reduced image keeps at least this many pixels per output pixel (then an antialiased resize)
_KEEP = 2
#: how an image is brought to the model's size, and the crop each implies (see the module's doc)
RESIZE_MODES = ("shorter", "stretch", "pad")
CROP_MODES = ("center", "none")
CROP_OF = {"shorter": "center", "stretch": "none", "pad": "none"}


@dataclass(frozen=True)
class Fit:
    """How an image becomes the model's input size: ``size`` = (H, W), ``resize`` (one of
    :data:`RESIZE_MODES`) and ``fill``, the RGB colour in [0, 1] a ``pad`` fills with."""

    size: tuple[int, int]
    resize: str = "shorter"
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize {self.resize!r} is not one of {', '.join(RESIZE_MODES)}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    @property
    def crop(self) -> str:
        return CROP_OF[self.resize]

    def describe(self) -> str:
        """``shorter side to the size, then a centre crop`` and the like (``interpgram layers``)."""
        h, w = self.size
        return {"shorter": f"the image scaled to cover {w}×{h} (a square model: its shorter side), then its centre cut "
                           "(crop: center)",
                "stretch": f"each side scaled to {w}×{h}, the aspect ratio changes, nothing cut (crop: none)",
                "pad": f"the whole image scaled to fit inside {w}×{h}, the rest filled with the model's mean "
                       "colour (letterbox; crop: none)"}[self.resize]


def as_fit(size) -> Fit:
    """A :class:`Fit` from a Fit, or from (H, W) (``shorter``, as every caller did before fits)."""
    return size if isinstance(size, Fit) else Fit(tuple(size))


class ImageError(Exception):
    """An image file that cannot be read; the message names the file and why."""


def max_image_pixels() -> int:
    """The pixel limit: ``$INTERPGRAM_MAX_IMAGE_PIXELS`` (a whole number; ``0`` = no limit) or 16384²."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "").replace(",", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        n = int(raw)
    except ValueError:
        raise ImageError(f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r} is not a whole number of pixels "
                         f"(default {DEFAULT_MAX_PIXELS:,}; 0 means no limit)") from None
    if n < 0:
        raise ImageError(f"{MAX_PIXELS_ENV}={n} must be ≥ 0 (0 means no limit)")
    return n


def _too_big(p: Path, w: int, h: int, limit: int) -> ImageError:
    return ImageError(f"{p} is {w}×{h} = {w * h:,} pixels, over the limit of {limit:,} (a decompression bomb "
                      f"guard); if the image is legitimate, raise it: {MAX_PIXELS_ENV}={w * h}")


def crop_box(w: int, h: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the centre crop of a w×h image to the aspect ratio of ``size`` = (H, W),
    exactly the one :func:`resize` takes."""
    th, tw = size
    scale = max(th / h, tw / w)
    ch, cw = round(th / scale), round(tw / scale)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return x0, y0, x0 + cw, y0 + ch


def read_image(p: Path, size: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """The RGB image at ``p`` as (3, H, W) float32 in [0, 1] (pixels converted by what they mean: see
    the module's doc).

    With ``size`` = (H, W), the target :func:`resize` will bring it to, an image at least 4× larger
    (per side) is decoded reduced (centre-cropped, at ≥ 2× the target): the result differs from a full
    decode only by the box pre-filter, and memory and time stay bounded by the target, not the file."""
    arr, _ = _load(p, as_fit(size) if size is not None else None, always_crop=False)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def read_fitted(p: Path, fit: Fit | tuple[int, int]) -> tuple[torch.Tensor, str]:
    """The image at ``p`` brought to ``fit`` (a :class:`Fit`, or (H, W): ``shorter``) as (3, H, W) float32
    in [0, 1], and a note of what was done to it (``640×427 JPEG → centre crop 427×427 → 64×64``).

    Only the part of the image the fit keeps is ever converted to float (cut, or box-reduced first when
    it is ≥ 4× the target per side), so a 20,000 px wide photo costs about its 8-bit decode."""
    fit = as_fit(fit)
    arr, info = _load(p, fit, always_crop=True)
    img = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    img = _place(_scale(img, info["out"]), fit)
    return img, "; ".join(info["notes"] + [info["fit"]])


def _load(p: Path, fit: Optional[Fit], *, always_crop: bool) -> tuple[np.ndarray, dict]:
    limit = max_image_pixels()
    _quiet_pil_bomb_warning()
    # PIL's own guard warns at MAX_IMAGE_PIXELS and raises at twice it; ours refuses at the limit itself,
    # so PIL's is set to the same number (its warning only repeats what we check below)
    Image.MAX_IMAGE_PIXELS = limit or None
    try:
        fh = open_regular(p)
    except OSError as e:
        pr = path_problem(p)
        raise ImageError(f"{p} {pr[1]}" if pr else f"{p} cannot be read: {e.strerror or e}") from None
    try:
        with fh, Image.open(fh) as im:
            w, h = im.size
            if limit and w * h > limit:
                raise _too_big(p, w, h, limit)
            return _decode(im, fit, always_crop)
    except Image.DecompressionBombError:  # over twice the limit: PIL refuses in open(), from the header alone
        raise _too_big(p, *_header_size(p), limit) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        # OSError: unreadable or truncated data; ValueError/SyntaxError: plug-ins' "damaged header"
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise ImageError(f"{p} cannot be read as an image: {why}") from None


def _quiet_pil_bomb_warning() -> None:
    """Silence PIL's DecompressionBombWarning, process-wide (re-added if something reset the filters):
    :func:`read_image` checks the same limit itself and refuses with an error, so the warning would
    only be noise."""
    w = Image.DecompressionBombWarning
    if not any(f[0] == "ignore" and f[2] is w for f in warnings.filters):
        warnings.filterwarnings("ignore", category=w)


def _header_size(p: Path) -> tuple[int, int]:
    """The (w, h) of an image from its header, with PIL's bomb guard off (only to word the error)."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with open_regular(p) as fh, Image.open(fh) as im:
            return im.size
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _layout(w: int, h: int, fit: Fit) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """(box, (oh, ow)): the part of a w×h image ``fit`` keeps, and the size that part is scaled to."""
    th, tw = fit.size
    if fit.resize == "shorter":
        return crop_box(w, h, fit.size), (th, tw)
    if fit.resize == "stretch":
        return (0, 0, w, h), (th, tw)
    s = min(th / h, tw / w)  # pad: the whole image inside the target
    return (0, 0, w, h), (min(th, max(1, round(h * s))), min(tw, max(1, round(w * s))))


def describe_fit(w: int, h: int, fit: Fit) -> str:
    """What ``fit`` does to a w×h image, in words (``centre crop 427×427 (67% of the width) → 224×224``)."""
    th, tw = fit.size
    (x0, y0, x1, y1), (oh, ow) = _layout(w, h, fit)
    cw, ch = x1 - x0, y1 - y0
    if (w, h) == (tw, th):
        return f"{w}×{h}, used as is"
    if fit.resize == "shorter":
        if (cw, ch) == (w, h):
            return f"{w}×{h} → resized to {tw}×{th}"
        side = "width" if cw < w else "height"
        kept = cw / w if cw < w else ch / h
        return (f"{w}×{h} → centre crop {cw}×{ch} at ({x0}, {y0}) ({kept:.0%} of the {side} kept) "
                f"→ resized to {tw}×{th}")
    if fit.resize == "stretch":
        same = abs(w / h - tw / th) < 1e-9
        return f"{w}×{h} → " + (f"resized to {tw}×{th}" if same else
                                f"stretched to {tw}×{th} (aspect {w / h:.2f} → {tw / th:.2f}, nothing cut)")
    if (ow, oh) == (tw, th):
        return f"{w}×{h} → resized to {tw}×{th}"
    return f"{w}×{h} → resized to {ow}×{oh}, padded to {tw}×{th} with the model's mean colour (nothing cut)"


_SIXTEEN = ("I;16", "I;16L", "I;16B", "I;16N")


def _reducible(im):
    """``im`` in a mode PIL's ``reduce`` takes that loses nothing of what its pixels mean."""
    if im.mode in _SIXTEEN:
        return im.convert("I")  # lossless: 0…65535 as 32-bit integers
    if im.mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("PA", "LA", "RGBa", "La"):
        return im.convert("RGBA")
    if im.mode == "1":
        return im.convert("L")
    if im.mode not in ("L", "RGB", "RGBA", "I", "F"):
        return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    return im


def _to_rgb(im, src_mode: str, fmt: Optional[str], notes: list[str]) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] of an image in a :func:`_reducible` mode; ``notes`` gets each conversion
    a reader should know of."""
    mode = im.mode
    if mode == "RGB":
        if src_mode == "CMYK":
            notes.append("CMYK converted to RGB")
        return np.asarray(im, dtype=np.float32) / 255.0
    if mode == "L":
        g = np.asarray(im, dtype=np.float32) / 255.0
        notes.append("grayscale, copied to R, G and B")
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "RGBA":
        a = np.asarray(im, dtype=np.float32) / 255.0
        rgb, alpha = a[..., :3], a[..., 3:]
        if float(alpha.min()) < 1.0:
            notes.append(f"{float((alpha[..., 0] < 1).mean()):.0%} of the pixels (partly) transparent, composited "
                         "on white")
            rgb = rgb * alpha + (1.0 - alpha)
        return np.ascontiguousarray(rgb)
    v = np.asarray(im, dtype=np.float64)  # "I" (32-bit integers) or "F" (32-bit floats)
    v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if mode == "I" and (src_mode in _SIXTEEN or fmt == "PNG" or (lo >= 0 and hi <= 65535 and hi > 255)):
        g, what = v / 65535.0, "16-bit grayscale: 0…65535 scaled to [0, 1]"
    elif mode == "I" and lo >= 0 and hi <= 255:
        g, what = v / 255.0, "32-bit integer grayscale in 0…255: scaled by 255"
    elif mode == "F" and lo >= 0 and hi <= 1:
        g, what = v, "floating-point grayscale in [0, 1]"
    else:
        span = hi - lo
        g = (v - lo) / span if span > 0 else np.zeros_like(v)
        kind = "integer" if mode == "I" else "floating-point"
        what = f"{kind} grayscale past the 0…65535 / [0, 1] ranges: its own range {lo:g}…{hi:g} scaled to [0, 1]"
    notes.append(what)
    g = np.clip(g, 0.0, 1.0).astype(np.float32)
    return np.repeat(g[..., None], 3, axis=2)


def pil_to_rgb(im, notes: Optional[list[str]] = None) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] of a PIL image in memory, converted as files are (16-bit by its range,
    transparency on white, grayscale to three channels); ``notes`` gets what was done."""
    return _to_rgb(_reducible(im), im.mode, im.format, notes if notes is not None else [])


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except (ValueError, TypeError, OSError, SyntaxError):  # a damaged EXIF block: read the pixels as stored
        return 1


def _decode(im, fit: Optional[Fit], always_crop: bool) -> tuple[np.ndarray, dict]:
    """(H, W, 3) float32 in [0, 1] of an opened image and what was done: reduced when it is much larger
    than the fit's target; cut to the fit's box first when ``always_crop`` (else only when reducing)."""
    w0, h0 = im.size
    fmt, src_mode = im.format, im.mode
    notes: list[str] = []
    orient = _orientation(im)
    uw, uh = (h0, w0) if orient in (5, 6, 7, 8) else (w0, h0)  # the upright size
    info = {"notes": notes, "size": (uw, uh)}
    if fit is not None:
        info["fit"] = f"{fmt + ' ' if fmt else ''}" + describe_fit(uw, uh, fit)
        (x0, y0, x1, y1), (oh, ow) = _layout(uw, uh, fit)
        info["out"] = (oh, ow)
        k = min((x1 - x0) / ow, (y1 - y0) / oh) / _KEEP  # the reduction that keeps ≥ _KEEP× the target
        if k >= 2 and fmt == "JPEG":
            im.draft("RGB", (math.ceil(w0 / k), math.ceil(h0 / k)))  # DCT scaling by 1/2, 1/4 or 1/8
    if orient != 1:
        im = ImageOps.exif_transpose(im)
        notes.append(f"turned upright (EXIF orientation {orient})")
    im = _reducible(im)
    if fit is not None:
        w, h = im.size
        box, (oh, ow) = _layout(w, h, fit)
        x0, y0, x1, y1 = box
        kx, ky = max(1, int((x1 - x0) / ow / _KEEP)), max(1, int((y1 - y0) / oh / _KEEP))
        if max(kx, ky) >= 2:  # per axis: a stretched panorama reduces its width only
            im = im.reduce((kx, ky) if kx != ky else kx, box=box)
        elif always_crop and box != (0, 0, w, h):
            im = im.crop(box)
    return _to_rgb(im, src_mode, fmt, notes), info


def _scale(img: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
    """(3, h, w) → (3, *out), antialiased bilinear (the image's own pixels when already that size)."""
    if tuple(img.shape[1:]) == tuple(out):
        return img
    return torch.nn.functional.interpolate(img[None], size=tuple(out), mode="bilinear", antialias=True,
                                           align_corners=False)[0].clamp(0, 1)


def _place(img: torch.Tensor, fit: Fit) -> torch.Tensor:
    """A ``pad`` fit's scaled image centred on the target, the rest ``fit.fill``; others unchanged."""
    th, tw = fit.size
    _, h, w = img.shape
    if (h, w) == (th, tw):
        return img
    out = torch.tensor(fit.fill, dtype=img.dtype).view(3, 1, 1).expand(3, th, tw).clone()
    y0, x0 = (th - h) // 2, (tw - w) // 2
    out[:, y0:y0 + h, x0:x0 + w] = img
    return out


def fit_tensor(img: torch.Tensor, fit: Fit | tuple[int, int]) -> tuple[torch.Tensor, str]:
    """An image in memory, (3, H, W) in [0, 1], brought to ``fit`` as :func:`read_fitted` brings a file,
    with the note of what was done."""
    fit = as_fit(fit)
    _, h, w = img.shape
    (x0, y0, x1, y1), out = _layout(w, h, fit)
    if (h, w) == tuple(fit.size):
        return img, describe_fit(w, h, fit)
    return _place(_scale(img[:, y0:y1, x0:x1], out), fit), describe_fit(w, h, fit)


def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop to the target aspect ratio, then resize (antialiased) to ``size`` = (H, W)."""
    return fit_tensor(img, as_fit(size))[0]


def probe_image(p: Path) -> Optional[str]:
    """Why ``p`` cannot be an image we would read (not a regular file, unidentifiable, over the pixel
    limit), from its header alone, or None. Cheap: no pixel is decoded (truncated pixel data shows
    only when :func:`read_image` decodes it)."""
    pr = path_problem(p)
    if pr:
        return pr[1]
    limit = max_image_pixels()
    _quiet_pil_bomb_warning()
    Image.MAX_IMAGE_PIXELS = limit or None
    try:
        with open_regular(p) as fh, Image.open(fh) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        w, h = _header_size(p)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        if isinstance(e, UnidentifiedImageError):
            return "is not an image PIL can identify (damaged, empty or another format)"
        return f"cannot be read as an image: {why}"
    if limit and w * h > limit:
        return f"is {w}×{h} = {w * h:,} pixels, over the limit of {limit:,} ({MAX_PIXELS_ENV})"
    return None
