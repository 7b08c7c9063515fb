"""Image files → tensors, and the resize every image goes through (inputs and data sets alike).

Decoding is bounded: an image whose header claims more than :func:`max_image_pixels` pixels
(``$INTERPGRAM_MAX_IMAGE_PIXELS``, default 16384² ≈ 268 M) is refused before any pixel is decoded (a
decompression bomb: a few KB of PNG that would need gigabytes). An image much larger than the model's
input is decoded reduced: JPEG through its DCT scaling (``draft``), every format through PIL's box
``reduce`` on 8-bit pixels, so only the crop at about twice the target size ever becomes float32.
Only regular files are opened (a named pipe would block forever).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from interpgram.backends.files import open_regular, path_problem

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_PIXELS_ENV = "INTERPGRAM_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 16384 * 16384
#: the reduced image keeps at least this many pixels per output pixel (then an antialiased resize)
_KEEP = 2


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
    """The RGB image at ``p`` as (3, H, W) float32 in [0, 1].

    With ``size`` = (H, W), the target :func:`resize` will bring it to, an image at least 4× larger
    (per side) is decoded reduced (centre-cropped, at ≥ 2× the target): the result differs from a full
    decode only by the box pre-filter, and memory and time stay bounded by the target, not the file."""


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
            arr = _decode(im, size)
    except Image.DecompressionBombError:  # over twice the limit: PIL refuses in open(), from the header alone
        raise _too_big(p, *_header_size(p), limit) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        # OSError: unreadable or truncated data; ValueError/SyntaxError: plug-ins' "damaged header"
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise ImageError(f"{p} cannot be read as an image: {why}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


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


def _decode(im, size: Optional[tuple[int, int]]) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] of an opened image, reduced when it is much larger than ``size``."""
    if size is not None:
        th, tw = size
        w, h = im.size
        x0, y0, x1, y1 = crop_box(w, h, size)
        k = min((x1 - x0) / tw, (y1 - y0) / th) / _KEEP  # the reduction that keeps ≥ _KEEP× the target
        if k >= 2 and im.format == "JPEG":
            im.draft("RGB", (math.ceil(w / k), math.ceil(h / k)))  # DCT scaling by 1/2, 1/4 or 1/8
        w, h = im.size
        x0, y0, x1, y1 = crop_box(w, h, size)
        k = int(min((x1 - x0) / tw, (y1 - y0) / th) / _KEEP)
        if k >= 2:
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")  # palette, alpha, 16-bit: as a full decode would convert them
            im = im.reduce(k, box=(x0, y0, x1, y1))
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop to the target aspect ratio, then resize (antialiased) to ``size`` = (H, W)."""
    _, h, w = img.shape
    th, tw = size
    if (h, w) == (th, tw):
        return img
    x0, y0, x1, y1 = crop_box(w, h, size)
    img = img[:, y0:y1, x0:x1]
    return torch.nn.functional.interpolate(img[None], size=size, mode="bilinear", antialias=True,
                                           align_corners=False)[0].clamp(0, 1)


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
