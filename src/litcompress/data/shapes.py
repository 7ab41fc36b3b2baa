"""Procedurally rendered coloured-shape images: a small, fast, fully synthetic benchmark.

Every image holds one shape out of :data:`SHAPE_NAMES` at a random position, scale, rotation and
colour on a random plain background, plus Gaussian pixel noise and optional distractor blobs and
lines. Shapes are drawn from signed-distance functions evaluated on a pixel grid that is mapped
into each shape's own frame, vectorized over the batch with a local ``torch.Generator``, so a
seed always gives the same images.

In its own frame every shape is centred on the origin and fits in the unit disk; ``scale`` is the
fraction of the image side that this disk's diameter takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.utils.data import Dataset, TensorDataset

from litcompress.data.base import ClassificationData
from litcompress.errors import ConfigError

SHAPE_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "plus",
    "ring",
    "star",
    "hexagon",
    "half_disk",
    "ellipse",
    "crescent",
)

# Smallest Euclidean RGB distance between foreground and background, so every shape stays visible.
MIN_CONTRAST = 0.4

# Images rendered at once: bounds peak memory to a few (chunk, H, W) float tensors.
_CHUNK = 1024

# Foreground colour candidates per image; the chance that none reaches MIN_CONTRAST is ~1e-9.
_COLOUR_TRIES = 16

Tensor = torch.Tensor


def _regular_star(x: Tensor, y: Tensor, n: int, r_out: float, r_in: float) -> Tensor:
    """Approximate SDF of an ``n``-point star (or regular polygon) with a vertex on the +x axis.

    The angle is folded into one half-sector, where the boundary is the single segment from the
    outer vertex at radius ``r_out`` to the inner vertex at radius ``r_in``; a regular polygon is
    the case ``r_in = r_out * cos(pi / n)``. Exact inside, close enough outside for anti-aliasing.
    """
    half = math.pi / n
    angle = torch.remainder(torch.atan2(y, x) + half, 2 * half) - half
    r = torch.hypot(x, y)
    qx, qy = r * torch.cos(angle), r * torch.sin(angle).abs()
    ex, ey = r_in * math.cos(half) - r_out, r_in * math.sin(half)
    norm = math.hypot(ex, ey)
    # Outward normal of the edge: (ey, -ex) points away from the origin for both cases.
    return ((qx - r_out) * ey - qy * ex) / norm


def _polygon(n: int) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda x, y: _regular_star(x, y, n, 1.0, math.cos(math.pi / n))


def _box(x: Tensor, y: Tensor, half_w: float, half_h: float) -> Tensor:
    dx, dy = x.abs() - half_w, y.abs() - half_h
    outside = torch.hypot(dx.clamp(min=0), dy.clamp(min=0))
    return outside + torch.maximum(dx, dy).clamp(max=0)


def _circle(x: Tensor, y: Tensor) -> Tensor:
    return torch.hypot(x, y) - 1.0


def _plus(x: Tensor, y: Tensor) -> Tensor:
    return torch.minimum(_box(x, y, 1.0, 0.3), _box(x, y, 0.3, 1.0))


def _ring(x: Tensor, y: Tensor) -> Tensor:
    return (torch.hypot(x, y) - 0.7).abs() - 0.3


def _star(x: Tensor, y: Tensor) -> Tensor:
    # Inner radius a bit above a true pentagram's 0.38 so the arms survive small scales.
    return _regular_star(x, y, 5, 1.0, 0.45)


def _half_disk(x: Tensor, y: Tensor) -> Tensor:
    # Radius 0.9, shifted so its bounding box is centred and its corners stay in the unit disk.
    y = y + 0.45
    return torch.maximum(torch.hypot(x, y) - 0.9, -y)


def _ellipse(x: Tensor, y: Tensor) -> Tensor:
    # Quilez's first-order ellipse distance with semi-axes 1 and 0.5.
    k0 = torch.hypot(x, y / 0.5)
    k1 = torch.hypot(x, y / 0.25).clamp(min=1e-6)
    return k0 * (k0 - 1.0) / k1


def _crescent(x: Tensor, y: Tensor) -> Tensor:
    return torch.maximum(torch.hypot(x, y) - 1.0, 0.8 - torch.hypot(x - 0.45, y))


_SDFS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "circle": _circle,
    "square": _polygon(4),
    "triangle": _polygon(3),
    "plus": _plus,
    "ring": _ring,
    "star": _star,
    "hexagon": _polygon(6),
    "half_disk": _half_disk,
    "ellipse": _ellipse,
    "crescent": _crescent,
}


def _segment_sdf(x: Tensor, y: Tensor, seg: Tensor) -> Tensor:
    """SDF of capsules (``seg`` rows: x0, y0, x1, y1, radius), broadcast to ``(B, H, W)``."""
    x0, y0, x1, y1, rad = (seg[:, i, None, None] for i in range(5))
    dx, dy = x1 - x0, y1 - y0
    t = (((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy).clamp(min=1e-8)).clamp(0, 1)
    return torch.hypot(x - x0 - t * dx, y - y0 - t * dy) - rad


def _check(
    num_images: int,
    image_size: int,
    num_classes: int,
    scale_range: tuple[float, float],
    noise_std: float,
    clutter: int,
) -> None:
    if num_images < 0:
        raise ConfigError(f"num_images={num_images} is negative; use 0 or more.")
    if image_size < 8:
        raise ConfigError(f"image_size={image_size} is too small; use 8 or more pixels.")
    if not 2 <= num_classes <= len(SHAPE_NAMES):
        raise ConfigError(f"num_classes={num_classes} is out of range; use 2..{len(SHAPE_NAMES)}.")
    lo, hi = scale_range
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"scale_range={tuple(scale_range)} is invalid; need 0 < lo <= hi <= 1.")
    if noise_std < 0:
        raise ConfigError(f"noise_std={noise_std} is negative; use 0 or more.")
    if clutter < 0:
        raise ConfigError(f"clutter={clutter} is negative; use 0 or more.")


def _colours(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Return ``(background, foreground)`` RGB rows at least :data:`MIN_CONTRAST` apart."""
    bg = torch.rand(n, 3, generator=gen)
    cand = torch.rand(n, _COLOUR_TRIES, 3, generator=gen)
    ok = (cand - bg[:, None]).norm(dim=2) >= MIN_CONTRAST
    first = ok.float().argmax(dim=1)
    fg = cand[torch.arange(n), first]
    # Never reached in practice; the opposite corner of the cube is always >= 0.87 away.
    fallback = (bg < 0.5).float()
    fg = torch.where(ok.any(dim=1, keepdim=True), fg, fallback)
    return bg, fg


def generate_shapes(
    num_images: int,
    *,
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    scale_range: tuple[float, float] = (0.3, 0.8),
    noise_std: float = 0.08,
    clutter: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``num_images`` labelled images of random coloured shapes.

    Args:
        num_images: number of images N.
        image_size: side H = W of each square image, in pixels (8 or more).
        num_classes: use the first ``num_classes`` names of :data:`SHAPE_NAMES` (2..10).
        seed: seed of the local generator; the same arguments always give the same images.
        scale_range: ``(lo, hi)`` with ``0 < lo <= hi <= 1``; each shape's diameter is a uniform
            fraction of the image side from this range.
        noise_std: standard deviation of the Gaussian noise added to every pixel (0 or more).
        clutter: number of small random distractor blobs or lines drawn behind each shape.

    Returns:
        ``(images, labels)``: float32 ``(N, 3, H, W)`` in [0, 1], and int64 ``(N,)`` class indices
        into :data:`SHAPE_NAMES`, balanced to within one image per class and shuffled.

    Raises:
        ConfigError: if any argument is out of its range.
    """
    _check(num_images, image_size, num_classes, scale_range, noise_std, clutter)
    n, size = num_images, image_size
    gen = torch.Generator().manual_seed(seed)

    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    lo, hi = scale_range
    scale = lo + (hi - lo) * torch.rand(n, generator=gen)
    theta = 2 * math.pi * torch.rand(n, generator=gen)
    # Keeps the shape's unit disk inside the image.
    centre = (2 * torch.rand(n, 2, generator=gen) - 1) * (1 - scale[:, None])
    bg, fg = _colours(n, gen)
    if clutter:
        start = 2 * torch.rand(n, clutter, 2, generator=gen) - 1
        angle = 2 * math.pi * torch.rand(n, clutter, generator=gen)
        is_line = torch.rand(n, clutter, generator=gen) < 0.5
        half_len = torch.where(is_line, 0.15 + 0.2 * torch.rand(n, clutter, generator=gen), 0.0)
        radius = torch.where(
            is_line,
            0.02 + 0.02 * torch.rand(n, clutter, generator=gen),
            0.05 + 0.07 * torch.rand(n, clutter, generator=gen),
        )
        offset = half_len[..., None] * torch.stack([angle.cos(), angle.sin()], dim=-1)
        segments = torch.cat([start - offset, start + offset, radius[..., None]], dim=-1)
        clutter_rgb = torch.rand(n, clutter, 3, generator=gen)

    # Pixel centres in [-1, 1]; one pixel is 2 / size units wide.
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) * (2 / size) - 1
    grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
    images = torch.empty(n, 3, size, size)
    for begin in range(0, n, _CHUNK):
        sl = slice(begin, min(begin + _CHUNK, n))
        b = sl.stop - sl.start
        img = bg[sl, :, None, None].expand(b, 3, size, size).clone()
        for j in range(clutter):
            # Anti-aliased coverage: the SDF in pixels, clamped to [0, 1] around the edge.
            cov = (0.5 - _segment_sdf(grid_x, grid_y, segments[sl, j]) * (size / 2)).clamp(0, 1)
            img.lerp_(clutter_rgb[sl, j, :, None, None], cov[:, None])

        cov = torch.empty(b, size, size)
        lab = labels[sl]
        for k in range(num_classes):
            idx = (lab == k).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            s = scale[sl][idx, None, None]
            cos, sin = theta[sl][idx, None, None].cos(), theta[sl][idx, None, None].sin()
            dx = grid_x - centre[sl][idx, 0, None, None]
            dy = grid_y - centre[sl][idx, 1, None, None]
            # Inverse rotation and scale map image coordinates into the shape's own frame.
            x, y = (cos * dx + sin * dy) / s, (cos * dy - sin * dx) / s
            sdf = _SDFS[SHAPE_NAMES[k]](x, y)
            cov[idx] = (0.5 - sdf * (s * size / 2)).clamp(0, 1)
        img.lerp_(fg[sl, :, None, None], cov[:, None])

        if noise_std > 0:
            img.add_(noise_std * torch.randn(img.shape, generator=gen)).clamp_(0, 1)
        images[sl] = img
    return images, labels


class ShapesData(ClassificationData):
    """Generated shapes (:func:`generate_shapes`) as a data module: offline, learnable, not trivial.

    The three splits are rendered from different seeds derived from ``seed``, so they never share
    images, and are held in memory. Pixels are normalised to mean 0.5 / std 0.25 per channel.

    Args:
        num_train: training images.
        num_val: validation images.
        num_test: test images.
        image_size: image side in pixels.
        num_classes: number of shape classes (2..10).
        scale_range: ``(lo, hi)`` fraction of the image side a shape takes; smaller is harder.
        noise_std: Gaussian pixel noise.
        clutter: distractor blobs and lines per image.
        batch_size: images per batch.
        num_workers: DataLoader workers (0 is best for in-memory data).
        pin_memory: pin host memory for faster copies to a GPU.
        seed: base seed of the three splits.
    """

    in_channels = 3
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(
        self,
        num_train: int = 10000,
        num_val: int = 2000,
        num_test: int = 2000,
        image_size: int = 32,
        num_classes: int = 10,
        scale_range: tuple[float, float] = (0.3, 0.8),
        noise_std: float = 0.08,
        clutter: int = 0,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.num_classes = num_classes
        self.classes = list(SHAPE_NAMES[:num_classes])
        self.image_size = image_size
        self.render_args = dict(
            image_size=image_size,
            num_classes=num_classes,
            scale_range=tuple(scale_range),
            noise_std=noise_std,
            clutter=clutter,
        )
        # Check the arguments now (cheaply) rather than when the data is first needed.
        _check(1, image_size, num_classes, tuple(scale_range), noise_std, clutter)
        self.seed = seed

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        datasets = []
        for offset, count in enumerate(self.sizes.values()):
            images, labels = generate_shapes(count, seed=self.seed * 3 + offset, **self.render_args)
            datasets.append(TensorDataset((images - self.mean[0]) / self.std[0], labels))
        return tuple(datasets)
