"""Tests of the procedural shapes dataset."""

from __future__ import annotations

import math

import pytest
import torch

from litcompress.data.shapes import MIN_CONTRAST, SHAPE_NAMES, generate_shapes
from litcompress.errors import ConfigError

# Shape areas in each shape's own frame (circumscribed by the unit disk), worked out by hand.
_D, _R = 0.45, 0.8  # crescent: unit disk minus a disk of radius _R centred _D away
_LENS = (
    math.acos((_D**2 + 1 - _R**2) / (2 * _D))
    + _R**2 * math.acos((_D**2 + _R**2 - 1) / (2 * _D * _R))
    - 0.5 * math.sqrt((-_D + 1 + _R) * (_D + 1 - _R) * (_D - 1 + _R) * (_D + 1 + _R))
)
_AREAS = {
    "circle": math.pi,
    "square": 2.0,
    "triangle": 3 * math.sqrt(3) / 4,
    "plus": 2 * 2 * 0.6 - 0.6**2,
    "ring": math.pi * (1 - 0.4**2),
    "star": 10 * 0.5 * 0.45 * math.sin(math.pi / 5),
    "hexagon": 3 * math.sqrt(3) / 2,
    "half_disk": math.pi * 0.9**2 / 2,
    "ellipse": math.pi * 0.5,
    "crescent": math.pi - _LENS,
}


def _coverage(images: torch.Tensor) -> torch.Tensor:
    """Per-pixel shape coverage of noise-free, clutter-free images, shape ``(N, H, W)``.

    The corner pixel is background (the shape stays inside its unit disk); the pixel farthest
    from it is pure foreground, and every pixel lies on the line between the two.
    """
    bg = images[:, :, :1, :1]
    diff = (images - bg).flatten(2)
    far = diff.norm(dim=1).argmax(dim=1)
    fg_dir = diff[torch.arange(len(images)), :, far][:, :, None]
    cov = (diff * fg_dir).sum(1) / (fg_dir * fg_dir).sum(1)
    return cov.view(images.shape[0], *images.shape[2:])


def test_shapes_dtypes_and_range() -> None:
    images, labels = generate_shapes(37, image_size=24, clutter=2)
    assert images.shape == (37, 3, 24, 24) and images.dtype == torch.float32
    assert labels.shape == (37,) and labels.dtype == torch.int64
    assert images.min() >= 0 and images.max() <= 1
    assert len(SHAPE_NAMES) == len(set(SHAPE_NAMES)) == 10


def test_deterministic_per_seed() -> None:
    a_img, a_lab = generate_shapes(50, seed=3, clutter=2)
    b_img, b_lab = generate_shapes(50, seed=3, clutter=2)
    c_img, c_lab = generate_shapes(50, seed=4, clutter=2)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert not torch.equal(a_img, c_img) and not torch.equal(a_lab, c_lab)


def test_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate_shapes(10)
    assert torch.equal(torch.rand(3), expected)


def test_classes_balanced_and_shuffled() -> None:
    _, labels = generate_shapes(1003, num_classes=10)
    counts = torch.bincount(labels, minlength=10)
    assert counts.max() - counts.min() <= 1
    assert not torch.equal(labels, torch.arange(1003) % 10)


def test_num_classes_limits_labels() -> None:
    _, labels = generate_shapes(90, num_classes=3)
    assert set(labels.tolist()) == {0, 1, 2}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, r"num_classes=1 .*2\.\.10"),
        ({"num_classes": 11}, r"num_classes=11 .*2\.\.10"),
        ({"image_size": 7}, r"image_size=7 .*8 or more"),
        ({"scale_range": (0.0, 0.5)}, r"scale_range=\(0\.0, 0\.5\) .*0 < lo <= hi <= 1"),
        ({"scale_range": (0.6, 0.5)}, r"scale_range=\(0\.6, 0\.5\)"),
        ({"scale_range": (0.5, 1.2)}, r"scale_range=\(0\.5, 1\.2\)"),
        ({"noise_std": -0.1}, r"noise_std=-0\.1 "),
        ({"clutter": -1}, r"clutter=-1 "),
    ],
)
def test_bad_config_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        generate_shapes(4, **kwargs)


def test_every_class_is_visible() -> None:
    images, labels = generate_shapes(200, noise_std=0.0, seed=5)
    bg = images[:, :, :1, :1]
    far = (images - bg).norm(dim=1).flatten(1)
    # Fully covered pixels sit at the foreground colour, at least MIN_CONTRAST from the corner.
    solid = (far >= MIN_CONTRAST - 1e-4).sum(1)
    background = (far == 0).sum(1)
    for k in range(10):
        assert solid[labels == k].min() >= 4, SHAPE_NAMES[k]
        assert background[labels == k].min() >= 100, SHAPE_NAMES[k]


def test_noise_and_clutter_only_add_to_the_same_scene() -> None:
    clean, labels = generate_shapes(100, noise_std=0.0, seed=2)
    noisy, noisy_labels = generate_shapes(100, noise_std=0.08, seed=2)
    cluttered, cluttered_labels = generate_shapes(100, noise_std=0.0, clutter=3, seed=2)
    assert torch.equal(labels, noisy_labels) and torch.equal(labels, cluttered_labels)
    assert 0.05 < (noisy - clean).std() < 0.09
    changed = (cluttered != clean).flatten(1).any(1)
    assert changed.float().mean() > 0.9


@pytest.mark.parametrize("name", SHAPE_NAMES)
def test_shape_area_matches_its_geometry(name: str) -> None:
    k = SHAPE_NAMES.index(name)
    scale = 0.8
    images, labels = generate_shapes(200, image_size=64, noise_std=0.0, scale_range=(scale, scale))
    fraction = _coverage(images[labels == k]).mean()
    # The shape frame's unit disk spans `scale` of the image side [-1, 1].
    expected = _AREAS[name] * scale**2 / 4
    assert fraction == pytest.approx(expected, rel=0.03)


def test_classes_are_distinguishable_by_rotation_invariant_profile() -> None:
    """A nearest-centroid classifier on radial coverage profiles tells all classes apart."""

    def profiles(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = generate_shapes(
            400, image_size=48, noise_std=0.0, scale_range=(0.8, 0.8), seed=seed
        )
        cov = _coverage(images)
        axis = torch.arange(48.0)
        mass = cov.sum((1, 2))
        cy = (cov.sum(2) * axis).sum(1) / mass
        cx = (cov.sum(1) * axis).sum(1) / mass
        r = torch.hypot(
            axis[None, :, None] - cy[:, None, None], axis[None, None] - cx[:, None, None]
        )
        bins = (r / 1.5).long().clamp(max=15).flatten(1)
        prof = torch.zeros(len(images), 16).scatter_add_(1, bins, cov.flatten(1))
        count = torch.zeros(len(images), 16).scatter_add_(1, bins, torch.ones_like(cov.flatten(1)))
        return prof / count.clamp(min=1), labels

    train_x, train_y = profiles(seed=0)
    test_x, test_y = profiles(seed=1)
    centroids = torch.stack([train_x[train_y == k].mean(0) for k in range(10)])
    pred = torch.cdist(test_x, centroids).argmin(1)
    accuracy = (pred == test_y).float().mean()
    assert accuracy > 0.9
