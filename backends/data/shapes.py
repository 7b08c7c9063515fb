"""``builtin:shapes``: a procedural 10-class shape data set with a planted shortcut.

Every image is a pure function of ``(seed, split, index)``: nothing is stored on disk and any
number of images can be generated.  Each image shows one shape (the class) of a random colour,
size, rotation and position on a textured background (colour noise, a gradient, stripes or
blotches), with pixel noise on top.  Ground truth comes with it: the label, the object mask, the
object's bounding box, and whether the shortcut patch is present and where.

The planted shortcut: in a fraction ``SHORTCUT_PREVALENCE`` of the images of class
``SHORTCUT_CLASS`` ("star") a small white patch with a red curved stitched seam (like the seam of
a baseball) is pasted at a random position away from the object.  No other class ever carries it.
``paste_patch`` pastes the same patch, or a same-size random-noise patch as the control, onto any
images, which is how the shortcut is measured.

Randomness.  Each image draws one fixed-length vector of uniforms from a CPU ``torch.Generator``
seeded with a 64-bit hash of ``(seed, split, index)``; all rendering after that is vectorised over
the batch.  The layout of that vector is fixed (see ``_U_*``), and whether the patch is present is
decided by its own entry, so ``shortcut_prevalence=0.0`` gives the very same images minus the
patch.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "CLASSES",
    "SHORTCUT_CLASS",
    "SHORTCUT_PREVALENCE",
    "IMAGE_SIZE",
    "SPLITS",
    "BACKGROUNDS",
    "PATCH_SIZES",
    "ShapesBatch",
    "generate",
    "ShapesDataset",
    "paste_patch",
    "render_patch",
    "channel_stats",
]

CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "stripes",
    "crescent",
    "ellipse",
    "frame",
)
SHORTCUT_CLASS: str = "star"
SHORTCUT_PREVALENCE: float = 0.9
IMAGE_SIZE: int = 64
SPLITS: tuple[str, ...] = ("train", "test")
BACKGROUNDS: tuple[str, ...] = ("noise", "gradient", "stripes", "blotches")
PATCH_SIZES: tuple[int, ...] = (8, 9, 10)  # side of the shortcut patch, in pixels at IMAGE_SIZE

_SHORTCUT_LABEL = CLASSES.index(SHORTCUT_CLASS)
_SPLIT_IDS = {"train": 1, "test": 2}
_SEAM_RED = (0.86, 0.08, 0.10)
_N_BLOTCHES = 6
_NOISE_GRID = 8  # the colour-noise background is an 8x8 field upsampled bilinearly
_PATCH_GAP = 2  # the patch keeps at least this many pixels away from the object mask

# Layout of each image's vector of uniforms.
_U_CLASS, _U_PATCH, _U_CX, _U_CY, _U_R, _U_ROT, _U_A, _U_B = range(8)
_U_POLARITY, _U_OBJ_H, _U_OBJ_S, _U_OBJ_V, _U_SHADE_ANGLE, _U_SHADE = range(8, 14)
_U_BG_KIND = 14
_U_BG1 = slice(15, 18)  # hue, saturation, value
_U_BG2 = slice(18, 21)
_U_BG_ANGLE, _U_BG_PERIOD, _U_BG_PHASE, _U_NOISE = range(21, 25)
_U_PATCH_SIZE, _U_PATCH_VARIANT, _U_PATCH_POS = range(25, 28)
_U_BLOTCH = slice(28, 28 + 3 * _N_BLOTCHES)  # (x, y, radius) per blotch
_N_PARAMS = 64
_N_FIELD = 3 * _NOISE_GRID * _NOISE_GRID


@dataclass
class ShapesBatch:
    """A batch of generated images and their ground truth."""

    images: torch.Tensor  # (N,3,H,W) float32 in [0,1]
    labels: torch.Tensor  # (N,) int64, index into CLASSES
    masks: torch.Tensor  # (N,H,W) bool, object pixels
    boxes: torch.Tensor  # (N,4) int64 x0,y0,x1,y1 (inclusive-exclusive) of the object mask
    patched: torch.Tensor  # (N,) bool, the shortcut patch is present
    patch_boxes: torch.Tensor  # (N,4) int64 x0,y0,x1,y1 of the patch (zeros where no patch)
    indices: torch.Tensor | None = None  # (N,) int64, the indices the images were generated from

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, item) -> "ShapesBatch":
        """Select images by int, slice, index tensor or bool mask; returns a ShapesBatch."""
        if isinstance(item, int):
            item = slice(item, item + 1) if item != -1 else slice(-1, None)
        pick = lambda t: None if t is None else t[item]  # noqa: E731
        return ShapesBatch(
            images=self.images[item],
            labels=self.labels[item],
            masks=self.masks[item],
            boxes=self.boxes[item],
            patched=self.patched[item],
            patch_boxes=self.patch_boxes[item],
            indices=pick(self.indices),
        )

    @property
    def class_names(self) -> list[str]:
        return [CLASSES[i] for i in self.labels.tolist()]


# --------------------------------------------------------------------------------------------
# randomness: one seeded draw per image


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _image_key(seed: int, split: str, index: int) -> int:
    """A 63-bit generator seed that depends on (seed, split, index) only."""
    h = _splitmix64(seed & _MASK64)
    h = _splitmix64(h ^ _SPLIT_IDS[split])
    h = _splitmix64(h ^ (index & _MASK64))
    return h >> 1


def _draw_uniforms(indices: list[int], split: str, seed: int, size: int) -> torch.Tensor:
    n_draw = _N_PARAMS + _N_FIELD + 3 * size * size
    out = torch.empty(len(indices), n_draw)
    g = torch.Generator(device="cpu")
    for row, index in enumerate(indices):
        g.manual_seed(_image_key(seed, split, index))
        torch.rand(n_draw, generator=g, out=out[row])
    return out


# --------------------------------------------------------------------------------------------
# small rendering helpers


def _hsv(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0,1] -> RGB in [0,1], shape (..., 3)."""
    h6 = h.unsqueeze(-1) * 6.0
    hue = torch.cat(
        [
            (h6 - 3.0).abs() - 1.0,
            2.0 - (h6 - 2.0).abs(),
            2.0 - (h6 - 4.0).abs(),
        ],
        dim=-1,
    ).clamp(0.0, 1.0)
    return v.unsqueeze(-1) * (1.0 - s.unsqueeze(-1) * (1.0 - hue))


def _lerp(lo: float, hi: float, u: torch.Tensor) -> torch.Tensor:
    return lo + (hi - lo) * u


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (H,W) in pixels: x to the right, y down."""
    c = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return xx, yy


def _col(t: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n,1,1) so that it broadcasts against (n,H,W)."""
    return t.view(-1, 1, 1)


def _sd_box(px: torch.Tensor, py: torch.Tensor, hx: torch.Tensor, hy: torch.Tensor) -> torch.Tensor:
    qx = px.abs() - hx
    qy = py.abs() - hy
    outside = torch.hypot(qx.clamp(min=0), qy.clamp(min=0))
    inside = torch.maximum(qx, qy).clamp(max=0)
    return outside + inside


def _sd_polygon(px: torch.Tensor, py: torch.Tensor, n: int, radius: torch.Tensor) -> torch.Tensor:
    """Regular n-gon with circumradius ``radius`` and a vertex on the +x axis."""
    sector = 2.0 * math.pi / n
    phi = torch.atan2(py, px)
    folded = torch.remainder(phi, sector) - sector / 2.0
    rho = torch.hypot(px, py)
    return rho * torch.cos(folded) - radius * math.cos(math.pi / n)


def _sd_star(px: torch.Tensor, py: torch.Tensor, m: int, outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """m-pointed star polygon: signed distance to the edge line of the folded sector."""
    half = math.pi / m
    phi = torch.atan2(py, px)
    a = (torch.remainder(phi + half, 2.0 * half) - half).abs()  # 0 at an outer vertex, half at inner
    rho = torch.hypot(px, py)
    qx, qy = rho * torch.cos(a), rho * torch.sin(a)
    # edge from P1 = (outer, 0) to P2 = inner * (cos half, sin half); outward normal
    ex = inner * math.cos(half) - outer
    ey = inner * math.sin(half)
    length = torch.hypot(ex, ey)
    nx, ny = ey / length, -ex / length
    return (qx - outer) * nx + qy * ny


def _sd_ellipse(px: torch.Tensor, py: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    k0 = torch.hypot(px / a, py / b)
    k1 = torch.hypot(px / (a * a), py / (b * b)).clamp(min=1e-6)
    return k0 * (k0 - 1.0) / k1


def _shape_sdf(label: int, px: torch.Tensor, py: torch.Tensor, r: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Signed distance (pixels, negative inside) of class ``label``; r is the outer radius."""
    name = CLASSES[label]
    rho = torch.hypot(px, py)
    if name == "circle":
        return rho - r * (0.75 + 0.25 * a)
    if name == "square":
        h = r * math.sqrt(0.5) * (0.85 + 0.15 * a)
        return _sd_box(px, py, h, h)
    if name == "triangle":
        return _sd_polygon(px, py, 3, r)
    if name == "star":
        return _sd_star(px, py, 5, r, r * (0.38 + 0.12 * a))
    if name == "cross":
        w = r * (0.22 + 0.10 * a)
        arm = r * 0.95
        return torch.minimum(_sd_box(px, py, arm, w), _sd_box(px, py, w, arm))
    if name == "ring":
        t = r * (0.22 + 0.13 * a)
        return (rho - (r - t / 2.0)).abs() - t / 2.0
    if name == "stripes":
        h = r * math.sqrt(0.5) * (0.9 + 0.1 * a)
        n_bars = torch.where(b < 0.5, 3.0, 4.0)
        period = 2.0 * h / n_bars
        local = torch.remainder(px + h, period) - period / 2.0
        bars = local.abs() - period * 0.27
        return torch.maximum(_sd_box(px, py, h, h), bars)
    if name == "crescent":
        inner = r * (0.80 + 0.10 * a)
        offset = r * (0.30 + 0.15 * b)
        return torch.maximum(rho - r, -(torch.hypot(px - offset, py) - inner))
    if name == "ellipse":
        return _sd_ellipse(px, py, r, r * (0.40 + 0.20 * a))
    if name == "frame":
        h = r * math.sqrt(0.5) * (0.9 + 0.1 * a)
        t = h * (0.22 + 0.12 * b)
        return torch.maximum(_sd_box(px, py, h, h), -_sd_box(px, py, h - t, h - t))
    raise AssertionError(f"no renderer for class {name!r}")


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight (x0,y0,x1,y1) boxes of (N,H,W) bool masks; zeros for an empty mask."""
    n, h, w = masks.shape
    cols = masks.any(dim=1).to(torch.int8)  # (N,W)
    rows = masks.any(dim=2).to(torch.int8)  # (N,H)
    x0 = cols.argmax(dim=1)
    x1 = w - cols.flip(1).argmax(dim=1)
    y0 = rows.argmax(dim=1)
    y1 = h - rows.flip(1).argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.int64)
    boxes[~masks.flatten(1).any(dim=1)] = 0
    return boxes


# --------------------------------------------------------------------------------------------
# backgrounds


def _background(u: torch.Tensor, light_object: torch.Tensor, size: int, field: torch.Tensor) -> torch.Tensor:
    """(n,3,H,W) textured backgrounds whose brightness keeps away from the object's."""
    n = u.shape[0]
    xx, yy = _grid(size)

    def value(v_u: torch.Tensor) -> torch.Tensor:  # dark behind light objects and vice versa
        return torch.where(light_object, _lerp(0.08, 0.48, v_u), _lerp(0.55, 0.95, v_u))

    c1 = _hsv(u[:, _U_BG1][:, 0], u[:, _U_BG1][:, 1] * 0.8, value(u[:, _U_BG1][:, 2]))
    c2 = _hsv(u[:, _U_BG2][:, 0], u[:, _U_BG2][:, 1] * 0.8, value(u[:, _U_BG2][:, 2]))
    c1 = c1.view(n, 3, 1, 1)
    c2 = c2.view(n, 3, 1, 1)
    kind = (u[:, _U_BG_KIND] * len(BACKGROUNDS)).long().clamp(max=len(BACKGROUNDS) - 1)
    angle = u[:, _U_BG_ANGLE] * 2.0 * math.pi
    proj = _col(torch.cos(angle)) * xx + _col(torch.sin(angle)) * yy  # (n,H,W)

    out = torch.empty(n, 3, size, size)
    sel = kind == BACKGROUNDS.index("noise")
    if sel.any():
        low = field[sel].view(-1, 3, _NOISE_GRID, _NOISE_GRID) - 0.5
        up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        out[sel] = c1[sel] + 0.45 * up
    sel = kind == BACKGROUNDS.index("gradient")
    if sel.any():
        t = proj[sel] / (size * math.sqrt(2.0)) + 0.5
        t = t.clamp(0, 1).unsqueeze(1)
        out[sel] = c1[sel] * (1 - t) + c2[sel] * t
    sel = kind == BACKGROUNDS.index("stripes")
    if sel.any():
        period = _col(_lerp(5.0, 16.0, u[sel, _U_BG_PERIOD])) * (size / IMAGE_SIZE)
        phase = _col(u[sel, _U_BG_PHASE]) * 2.0 * math.pi
        t = torch.sigmoid(4.0 * torch.sin(2.0 * math.pi * proj[sel] / period + phase)).unsqueeze(1)
        out[sel] = c1[sel] * (1 - t) + c2[sel] * t
    sel = kind == BACKGROUNDS.index("blotches")
    if sel.any():
        blot = u[sel][:, _U_BLOTCH].view(-1, _N_BLOTCHES, 3)
        bx = blot[..., 0].view(-1, _N_BLOTCHES, 1, 1) * size
        by = blot[..., 1].view(-1, _N_BLOTCHES, 1, 1) * size
        br = _lerp(0.06, 0.18, blot[..., 2]).view(-1, _N_BLOTCHES, 1, 1) * size
        d2 = (xx - bx) ** 2 + (yy - by) ** 2
        t = torch.exp(-d2 / (2.0 * br * br)).amax(dim=1).unsqueeze(1)
        out[sel] = c1[sel] * (1 - t) + c2[sel] * t
    return out


# --------------------------------------------------------------------------------------------
# the shortcut patch


def _patch_side(size: int, base: int) -> int:
    return max(3, int(round(base * size / IMAGE_SIZE)))


def _stitch_template(side: int) -> torch.Tensor:
    """(3,side,side) white square with a red curved seam and slanted stitches (4x supersampled)."""
    ss = 4
    c = (torch.arange(side * ss, dtype=torch.float32) + 0.5) / (side * ss)  # patch units (0,1)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    # the seam: an arc of radius 0.95 around (-0.45, 0.5); it bulges to the right through (0.5,0.5)
    cx, cy, r0 = -0.45, 0.5, 0.95
    rho = torch.hypot(xx - cx, yy - cy)
    along = torch.atan2(yy - cy, xx - cx) * r0 * side  # arc length in pixels
    across = (rho - r0) * side  # signed distance from the seam in pixels
    seam = across.abs() < 0.55
    period = max(2.5, side / 3.3)
    # stitches on both sides, slanted away from the seam: a row of small chevrons
    slant = (along + 0.8 * across.abs()) / period
    stitches = (across.abs() < 2.2) & (torch.remainder(slant, 1.0) < 0.38)
    red = (seam | stitches).to(torch.float32)
    red = F.avg_pool2d(red.view(1, 1, side * ss, side * ss), ss).view(side, side)
    white = torch.ones(3, side, side)
    seam_rgb = torch.tensor(_SEAM_RED).view(3, 1, 1)
    return white * (1 - red) + seam_rgb * red


def _orient(patch: torch.Tensor, variant: int) -> torch.Tensor:
    """One of 8 orientations (4 rotations x mirror) of a (3,s,s) patch."""
    if variant >= 4:
        patch = patch.flip(-1)
    return torch.rot90(patch, variant % 4, dims=(-2, -1))


def render_patch(side: int, *, kind: str = "stitch", variant: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The (3,side,side) patch: the stitched shortcut patch, or a uniform-noise control patch.

    ``variant`` (0..7) picks one of 8 orientations of the stitch patch; ``generator`` draws the
    noise patch's pixels.
    """
    if side < 3:
        raise ValueError(f"patch side must be at least 3 pixels, got {side}")
    if kind == "stitch":
        if not 0 <= variant < 8:
            raise ValueError(f"variant must be in 0..7, got {variant}")
        return _orient(_stitch_template(side), variant)
    if kind == "noise":
        return torch.rand(3, side, side, generator=generator)
    raise ValueError(f"unknown patch kind {kind!r} (kinds: 'stitch', 'noise')")


def _free_positions(masks: torch.Tensor | None, n: int, size_hw: tuple[int, int], side: int) -> torch.Tensor:
    """(n, H-side+1, W-side+1) count of (dilated) object pixels under a patch at each top-left."""
    h, w = size_hw
    if masks is None:
        return torch.zeros(n, h - side + 1, w - side + 1)
    m = masks.to(torch.float32).unsqueeze(1)
    if _PATCH_GAP > 0:
        m = F.max_pool2d(m, 2 * _PATCH_GAP + 1, stride=1, padding=_PATCH_GAP)
    return F.avg_pool2d(m, side, stride=1).squeeze(1) * (side * side)


def _choose_positions(overlap: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick, per image, a uniformly random top-left among the positions of least overlap."""
    n, ph, pw = overlap.shape
    flat = overlap.reshape(n, -1).round()
    best = flat == flat.min(dim=1, keepdim=True).values
    counts = best.sum(dim=1)
    k = (u * counts).long().clamp(max=counts - 1)  # the k-th best position (0-based)
    idx = (best.cumsum(dim=1) > k.unsqueeze(1)).to(torch.int8).argmax(dim=1)
    return idx // pw, idx % pw


def _paste(images: torch.Tensor, patches: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> None:
    side = patches.shape[-1]
    for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist())):
        images[i, :, y : y + side, x : x + side] = patches[i]


def paste_patch(
    images: torch.Tensor,
    at: torch.Tensor | Sequence[int] | None = None,
    *,
    masks: torch.Tensor | None = None,
    kind: str = "stitch",
    size: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the shortcut patch (``kind="stitch"``) or a same-size noise patch (``kind="noise"``).

    images: (N,3,H,W) float in [0,1]; not modified, a patched copy is returned.
    at: None to choose a random position per image, or boxes (N,4) / (4,) of int x0,y0,x1,y1
        (square, inside the image) saying where to paste.
    masks: (N,H,W) bool object masks; with ``at=None`` the patch goes where it keeps at least
        2 px away from the object (where no such place exists, where it overlaps the least).
    size: patch side in pixels when ``at`` is None; default 9 px at 64x64, scaled to the image.
    generator: draws the positions, the stitch orientations (one of 8) and the noise pixels;
        default: a generator seeded with 0, so calls are reproducible.

    Returns ``(patched_images, boxes)`` with boxes (N,4) int64 x0,y0,x1,y1.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N,3,H,W) tensor, got {shape}")
    if kind not in ("stitch", "noise"):
        raise ValueError(f"unknown patch kind {kind!r} (kinds: 'stitch', 'noise')")
    n, _, h, w = images.shape
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(0)
    out = images.detach().clone()

    if at is None:
        side = _patch_side(min(h, w), 9) if size is None else int(size)
        if not 3 <= side <= min(h, w):
            raise ValueError(f"patch size must be between 3 and {min(h, w)} pixels, got {side}")
        if masks is not None:
            if masks.shape != (n, h, w):
                raise ValueError(f"masks must have shape {(n, h, w)}, got {tuple(masks.shape)}")
            masks = masks.to(device="cpu", dtype=torch.bool)
        u = torch.rand(n, generator=generator)
        ys, xs = _choose_positions(_free_positions(masks, n, (h, w), side), u)
        boxes = torch.stack([xs, ys, xs + side, ys + side], dim=1).to(torch.int64)
    else:
        if masks is not None:
            raise ValueError("give either `at` (explicit boxes) or `masks` (choose a free place), not both")
        boxes = torch.as_tensor(at, dtype=torch.int64).reshape(-1, 4)
        if boxes.shape[0] == 1 and n != 1:
            boxes = boxes.expand(n, 4)
        if boxes.shape[0] != n:
            raise ValueError(f"`at` must hold one box per image: {n} images, {boxes.shape[0]} boxes")
        sides = boxes[:, 2] - boxes[:, 0]
        if not torch.equal(sides, boxes[:, 3] - boxes[:, 1]) or not bool((sides == sides[0]).all()):
            raise ValueError("`at` boxes must be squares of one common side (x1-x0 == y1-y0)")
        side = int(sides[0])
        if side < 3 or bool((boxes[:, :2] < 0).any()) or bool((boxes[:, 2] > w).any()) or bool((boxes[:, 3] > h).any()):
            raise ValueError(f"`at` boxes must lie inside the {w}x{h} image with a side of at least 3 px")
        xs, ys = boxes[:, 0], boxes[:, 1]

    if kind == "stitch":
        variants = torch.randint(0, 8, (n,), generator=generator).tolist()
        template = _stitch_template(side)
        patches = torch.stack([_orient(template, v) for v in variants])
    else:
        patches = torch.rand(n, 3, side, side, generator=generator)
    _paste(out, patches.to(dtype=out.dtype, device=out.device), ys, xs)
    return out, boxes


# --------------------------------------------------------------------------------------------
# generation


def _as_index_list(indices) -> list[int]:
    if isinstance(indices, int) and not isinstance(indices, bool):
        return [indices]
    if isinstance(indices, torch.Tensor):
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise TypeError(f"indices must be integers, got a {indices.dtype} tensor")
        return [int(i) for i in indices.reshape(-1).tolist()]
    if isinstance(indices, Iterable):
        out = []
        for i in indices:
            if isinstance(i, torch.Tensor) and i.numel() == 1 and not (i.dtype.is_floating_point or i.dtype == torch.bool):
                i = int(i)
            if isinstance(i, bool) or not hasattr(i, "__index__"):
                raise TypeError(f"indices must be integers, got {i!r}")
            out.append(operator.index(i))
        return out
    raise TypeError(f"indices must be an int or an iterable of ints, got {type(indices).__name__}")


def generate(
    indices,
    *,
    split: str = "test",
    seed: int = 0,
    size: int = IMAGE_SIZE,
    shortcut_prevalence: float | None = None,
) -> ShapesBatch:
    """Generate the images ``indices`` of ``split``; each is a pure function of (seed, split, index).

    shortcut_prevalence: the fraction of star images that carry the patch (default
    ``SHORTCUT_PREVALENCE`` for both splits; 0.0 for clean images). Changing it changes only
    whether a star image carries the patch, never anything else in the image.
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown split {split!r} (splits: {', '.join(SPLITS)})")
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an int of at least 32 pixels, got {size!r}")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    prevalence = SHORTCUT_PREVALENCE if shortcut_prevalence is None else float(shortcut_prevalence)
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"shortcut_prevalence must be in [0, 1], got {shortcut_prevalence!r}")
    index_list = _as_index_list(indices)
    if any(i < 0 for i in index_list):
        raise ValueError(f"indices must be non-negative, got {min(index_list)}")
    n = len(index_list)
    if n == 0:
        z4 = torch.zeros(0, 4, dtype=torch.int64)
        return ShapesBatch(
            images=torch.zeros(0, 3, size, size),
            labels=torch.zeros(0, dtype=torch.int64),
            masks=torch.zeros(0, size, size, dtype=torch.bool),
            boxes=z4,
            patched=torch.zeros(0, dtype=torch.bool),
            patch_boxes=z4.clone(),
            indices=torch.zeros(0, dtype=torch.int64),
        )

    draws = _draw_uniforms(index_list, split, seed, size)
    u = draws[:, :_N_PARAMS]
    field = draws[:, _N_PARAMS : _N_PARAMS + _N_FIELD]
    pixel_noise = draws[:, _N_PARAMS + _N_FIELD :].view(n, 3, size, size)
    scale = size / IMAGE_SIZE
    labels = (u[:, _U_CLASS] * len(CLASSES)).long().clamp(max=len(CLASSES) - 1)

    # the object: outer radius, centre (the whole circumscribed circle stays inside), rotation
    radius = _lerp(9.0, 22.0, u[:, _U_R]) * scale
    margin = radius + 2.0 * scale
    cx = margin + u[:, _U_CX] * (size - 2.0 * margin)
    cy = margin + u[:, _U_CY] * (size - 2.0 * margin)
    theta = u[:, _U_ROT] * 2.0 * math.pi
    xx, yy = _grid(size)
    dx, dy = xx - _col(cx), yy - _col(cy)
    cos_t, sin_t = _col(torch.cos(theta)), _col(torch.sin(theta))
    px = cos_t * dx + sin_t * dy
    py = -sin_t * dx + cos_t * dy
    sdf = torch.empty(n, size, size)
    for label in labels.unique().tolist():
        sel = labels == label
        sdf[sel] = _shape_sdf(label, px[sel], py[sel], _col(radius[sel]), _col(u[sel, _U_A]), _col(u[sel, _U_B]))
    masks = sdf < 0
    alpha = (0.5 - sdf).clamp(0.0, 1.0).unsqueeze(1)  # one-pixel anti-aliased edge

    # colours: object and background differ in brightness (light on dark or dark on light)
    light = u[:, _U_POLARITY] < 0.5
    obj_v = torch.where(light, _lerp(0.72, 1.0, u[:, _U_OBJ_V]), _lerp(0.04, 0.36, u[:, _U_OBJ_V]))
    obj_rgb = _hsv(u[:, _U_OBJ_H], _lerp(0.25, 1.0, u[:, _U_OBJ_S]), obj_v).view(n, 3, 1, 1)
    shade_angle = u[:, _U_SHADE_ANGLE] * 2.0 * math.pi
    ramp = (_col(torch.cos(shade_angle)) * dx + _col(torch.sin(shade_angle)) * dy) / _col(radius)
    shade = 1.0 + 0.15 * _col(u[:, _U_SHADE]) * ramp.clamp(-1, 1)
    obj = obj_rgb * shade.unsqueeze(1)
    images = _background(u, light, size, field)
    images = images * (1.0 - alpha) + obj * alpha

    # the shortcut patch: star images only, decided by its own uniform, away from the object
    patched = (labels == _SHORTCUT_LABEL) & (u[:, _U_PATCH] < prevalence)
    patch_boxes = torch.zeros(n, 4, dtype=torch.int64)
    if patched.any():
        sides = torch.tensor([_patch_side(size, s) for s in PATCH_SIZES])
        side_idx = (u[:, _U_PATCH_SIZE] * len(PATCH_SIZES)).long().clamp(max=len(PATCH_SIZES) - 1)
        variant = (u[:, _U_PATCH_VARIANT] * 8).long().clamp(max=7)
        for s_i, side in enumerate(sides.tolist()):
            sel = patched & (side_idx == s_i)
            if not sel.any():
                continue
            rows = sel.nonzero().squeeze(1)
            overlap = _free_positions(masks[rows], len(rows), (size, size), side)
            ys, xs = _choose_positions(overlap, u[rows, _U_PATCH_POS])
            template = _stitch_template(side)
            patches = torch.stack([_orient(template, v) for v in variant[rows].tolist()])
            sub = images[rows]
            _paste(sub, patches, ys, xs)
            images[rows] = sub
            patch_boxes[rows] = torch.stack([xs, ys, xs + side, ys + side], dim=1).to(torch.int64)

    sigma = _lerp(0.01, 0.06, u[:, _U_NOISE]).view(n, 1, 1, 1)
    images = (images + sigma * math.sqrt(3.0) * (2.0 * pixel_noise - 1.0)).clamp(0.0, 1.0)

    return ShapesBatch(
        images=images.contiguous(),
        labels=labels,
        masks=masks,
        boxes=_mask_boxes(masks),
        patched=patched,
        patch_boxes=patch_boxes,
        indices=torch.tensor(index_list, dtype=torch.int64),
    )


def channel_stats(n: int = 4000, *, split: str = "train", seed: int = 0, batch: int = 500) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation over images 0..n-1 of ``split`` (the default
    distribution, patch included)."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, n, batch):
        x = generate(range(start, min(n, start + batch)), split=split, seed=seed).images.double()
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class ShapesDataset(torch.utils.data.Dataset):
    """Images ``offset .. offset+length-1`` of a split, generated on demand.

    ``ds[i]`` gives ``(image, label)``, or a dict of the ground truth with ``return_dict=True``.
    ``ds.batch(indices)`` (and the DataLoader hook ``__getitems__``) generate many at once, which
    is far faster than item by item.
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 10_000,
        seed: int = 0,
        *,
        size: int = IMAGE_SIZE,
        shortcut_prevalence: float | None = None,
        offset: int = 0,
        return_dict: bool = False,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"unknown split {split!r} (splits: {', '.join(SPLITS)})")
        if length < 0 or offset < 0:
            raise ValueError(f"length and offset must be non-negative, got length={length}, offset={offset}")
        self.split = split
        self.length = int(length)
        self.seed = int(seed)
        self.size = int(size)
        self.shortcut_prevalence = shortcut_prevalence
        self.offset = int(offset)
        self.return_dict = return_dict
        self.classes = CLASSES

    def __len__(self) -> int:
        return self.length

    def _absolute(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a data set of length {self.length}")
        return self.offset + i

    def batch(self, indices) -> ShapesBatch:
        return generate(
            [self._absolute(i) for i in _as_index_list(indices)],
            split=self.split,
            seed=self.seed,
            size=self.size,
            shortcut_prevalence=self.shortcut_prevalence,
        )

    def _item(self, b: ShapesBatch, k: int):
        if not self.return_dict:
            return b.images[k], int(b.labels[k])
        return {
            "image": b.images[k],
            "label": int(b.labels[k]),
            "mask": b.masks[k],
            "box": b.boxes[k],
            "patched": bool(b.patched[k]),
            "patch_box": b.patch_boxes[k],
            "index": int(b.indices[k]),
        }

    def __getitem__(self, i: int):
        return self._item(self.batch([i]), 0)

    def __getitems__(self, indices: list[int]) -> list:
        b = self.batch(indices)
        return [self._item(b, k) for k in range(len(b))]
