"""Image files → tensors, and the resize every image goes through (inputs and data sets alike)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageError(Exception):
    """An image file that cannot be read; the message names the file and why."""


def read_image(p: Path) -> torch.Tensor:
    """The RGB image at ``p`` as (3, H, W) float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"{p} cannot be read as an image: {e}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop to the target aspect ratio, then resize (antialiased) to ``size`` = (H, W)."""
    _, h, w = img.shape
    th, tw = size
    if (h, w) == (th, tw):
        return img
    scale = max(th / h, tw / w)
    ch, cw = round(th / scale), round(tw / scale)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    img = img[:, y0:y0 + ch, x0:x0 + cw]
    return torch.nn.functional.interpolate(img[None], size=size, mode="bilinear", antialias=True,
                                           align_corners=False)[0].clamp(0, 1)
