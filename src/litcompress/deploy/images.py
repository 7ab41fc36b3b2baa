"""Reading image files as a viewer shows them: any format Pillow opens, at 8 bits per channel.

Pillow keeps 16- and 32-bit images in their own modes (``I;16``, ``I;16B``, ``I``, ``F``), which
its ``convert("RGB")`` clips to 255 (a 16-bit scan turns white). :func:`read_image` scales them to
8 bits first, as an image viewer does:

* integer images over the whole range of their type: 16-bit values ``v`` become
  ``round(v / 257)`` (65535 is white), 32-bit signed ones (mode ``I``) span -2**31 (black) to
  2**31 - 1 (white);
* float images (mode ``F``) over ``[0, 1]`` when their values lie in it (the usual convention),
  else over their own range, from their smallest (black) to their largest finite value (white);
  NaN is black, and an image of one value outside ``[0, 1]`` is clipped to it.

A file of several frames (an animated GIF, PNG or WebP, a multi-page TIFF) gives its first frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# Modes of one channel of 16-bit unsigned integers (byte orders), and their value range.
UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
UINT16_RANGE = (0, 2**16 - 1)
INT32_RANGE = (-(2**31), 2**31 - 1)

# What Pillow raises for a file it cannot read (DecompressionBombError: an image too large).
READ_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    NotImplementedError,
    Image.DecompressionBombError,
)


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """The first frame of the image file at ``path``, loaded, at 8 bits per channel.

    Images of 8 bits keep their mode (``L``, ``RGB``, ``P``, ``CMYK``...); 16- and 32-bit ones
    become ``L`` (see the module docstring).

    Raises:
        one of :data:`READ_ERRORS`: Pillow cannot read the file (the message says why).
    """
    with Image.open(path) as image:
        image.seek(0)
        image.load()
        return to_8bit(image)


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with its 16- or 32-bit values scaled to 8 bits (mode ``L``), as a viewer shows
    them; an 8-bit image as it is."""
    if image.mode in UINT16_MODES:
        values, (low, high) = np.asarray(image, dtype=np.float64), UINT16_RANGE
    elif image.mode == "I":
        values, (low, high) = np.asarray(image, dtype=np.float64), INT32_RANGE
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low, high = _float_range(values)
    else:
        return image.copy()
    with np.errstate(invalid="ignore"):
        scaled = np.nan_to_num(np.clip((values - low) / (high - low), 0.0, 1.0), nan=0.0)
    return Image.fromarray(np.rint(scaled * 255.0).astype(np.uint8), mode="L")


def _float_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if (low >= 0.0 and high <= 1.0) or low == high:
        return 0.0, 1.0
    return low, high


def image_suffixes() -> set[str]:
    """The file suffixes Pillow knows (lower case, with the dot), read or write."""
    return set(Image.registered_extensions())


def opens_as_image(path: Path) -> bool:
    """Whether Pillow recognises the content of ``path`` as an image (reads its header only)."""
    try:
        with Image.open(path):
            return True
    except READ_ERRORS:
        return False


def write_only_formats() -> set[str]:
    """The formats Pillow writes but does not read (PDF, PALM)."""
    known = set(Image.registered_extensions().values())  # registers every plugin first
    return known - set(Image.OPEN) - {"MPO"}  # MPO files are read by the JPEG reader


def unreadable_reason(path: Path, error: BaseException) -> str:
    """Why ``path`` could not be read, in words: Pillow's error, and for a format Pillow only
    writes, that it does not read it."""
    reason = f"{type(error).__name__}: {error}"
    registered = Image.registered_extensions().get(path.suffix.lower())
    if isinstance(error, Image.UnidentifiedImageError) and registered in write_only_formats():
        reason += f"; Pillow writes {registered} files but does not read them"
    return reason
