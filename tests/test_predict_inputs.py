"""predict reads every image file Pillow opens as a viewer shows it (16- and 32-bit images scaled
to 8 bits, the first frame of several), and nothing in a folder that looks like an image is left
out in silence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from litcompress.deploy.images import read_image, to_8bit
from litcompress.deploy.metadata import Preprocessing
from litcompress.deploy.predict import gather_images
from tests.conftest import ROOT

# 8-bit grey levels of a small test image (every level appears in some pixel of some test).
LEVELS = np.array([[0, 1, 2, 127], [128, 129, 254, 255]], dtype=np.uint8)


def grey(levels: np.ndarray = LEVELS) -> Image.Image:
    return Image.fromarray(levels, mode="L")


# -- 16- and 32-bit images ----------------------------------------------------------------------
def test_a_16_bit_png_is_scaled_by_257_not_clipped_to_white(tmp_path):
    values = np.array([[0, 257, 32896, 65535], [1000, 2000, 40000, 65000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "scan.png")
    with Image.open(tmp_path / "scan.png") as image:
        assert image.mode == "I;16"
    got = np.asarray(read_image(tmp_path / "scan.png"))
    np.testing.assert_array_equal(got, np.rint(values / 257).astype(np.uint8))


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2")])
def test_16_bit_images_of_either_byte_order_span_their_whole_range(mode, dtype):
    values = LEVELS.astype(np.uint32) * 257
    image = Image.frombytes(mode, (4, 2), values.astype(dtype).tobytes())
    np.testing.assert_array_equal(np.asarray(to_8bit(image)), LEVELS)


def test_32_bit_integer_images_span_the_range_of_int32():
    values = np.array([[-(2**31), 0, 2**31 - 1]], dtype=np.int32)
    image = Image.fromarray(values)
    assert image.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_8bit(image)), [[0, 128, 255]])


def test_float_images_in_0_1_keep_their_levels_and_others_span_their_own_range():
    inside = Image.fromarray(LEVELS.astype(np.float32) / 255)
    np.testing.assert_array_equal(np.asarray(to_8bit(inside)), LEVELS)
    outside = Image.fromarray(np.array([[-4.0, 0.0, 4.0, np.nan]], dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(to_8bit(outside)), [[0, 128, 255, 0]])
    constant = Image.fromarray(np.full((2, 2), 3.0, dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(to_8bit(constant)), np.full((2, 2), 255))


def same_picture_in_every_format(folder: Path) -> list[Path]:
    """One grey picture saved in 8-bit formats, as 16-bit PNG, 32-bit integer and float TIFF."""
    folder.mkdir(parents=True, exist_ok=True)
    picture = grey()
    paths = []
    for name in ("grey.png", "grey.gif", "grey.bmp", "grey.tif", "grey.tga", "grey.qoi"):
        # QOI holds RGB(A) only: the same grey levels in three equal channels.
        (picture.convert("RGB") if name.endswith(".qoi") else picture).save(folder / name)
        paths.append(folder / name)
    wide = {
        "grey16.png": LEVELS.astype(np.uint16) * 257,
        "grey32.tif": (LEVELS.astype(np.int64) * 16843009 - 2**31).astype(np.int32),
        "greyf.tif": LEVELS.astype(np.float32) / 255,
    }
    for name, values in wide.items():
        Image.fromarray(values).save(folder / name)
        paths.append(folder / name)
    return paths


def test_every_format_prepares_to_the_same_input_as_the_8_bit_png(tmp_path):
    preprocessing = Preprocessing(image_size=4, channels=1, mean=[0.5], std=[0.25])
    paths = same_picture_in_every_format(tmp_path)
    with Image.open(tmp_path / "grey16.png") as wide, Image.open(tmp_path / "greyf.tif") as f:
        assert (wide.mode, f.mode) == ("I;16", "F")
    reference = preprocessing.load(tmp_path / "grey.png")
    for path in paths:
        torch.testing.assert_close(preprocessing.load(path), reference, msg=path.name)


# -- several frames -----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".gif", ".tif", ".webp", ".png"])
def test_a_file_of_several_frames_gives_its_first(tmp_path, suffix):
    frames = [Image.new("RGB", (6, 6), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    with Image.open(path) as image:
        assert image.n_frames == 2
        image.seek(1)  # a reader left on another frame does not change what is read
    assert read_image(path).convert("RGB").getpixel((3, 3)) == (255, 0, 0)


# -- folders ------------------------------------------------------------------------------------
def test_a_folder_gives_every_file_pillow_knows_by_suffix_or_content(tmp_path):
    same_picture_in_every_format(tmp_path / "photos")
    grey().save(tmp_path / "photos" / "no_suffix", format="PNG")  # an image by its content
    grey().save(tmp_path / "photos" / "scan.pdf")  # a suffix Pillow knows: read, then refused
    (tmp_path / "photos" / "broken.jpg").write_text("not a JPEG")  # its suffix says image
    (tmp_path / "photos" / "notes.txt").write_text("an image of nothing")
    (tmp_path / "photos" / "labels.csv").write_text("file,class\n")
    found = {path.name for path in gather_images([str(tmp_path / "photos")])}
    assert found == {
        "grey.png",
        "grey.gif",
        "grey.bmp",
        "grey.tif",
        "grey.tga",
        "grey.qoi",
        "grey16.png",
        "grey32.tif",
        "greyf.tif",
        "no_suffix",
        "scan.pdf",
        "broken.jpg",
    }


def test_predict_predicts_every_format_alike_and_lists_what_it_cannot_read(
    trained_resnet8, tmp_path
):
    folder = tmp_path / "photos"
    paths = same_picture_in_every_format(folder)
    frames = [grey(), grey(255 - LEVELS)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    grey().save(folder / "no_suffix", format="PNG")
    grey().save(folder / "scan.pdf")
    (folder / "notes.txt").write_text("an image of nothing")
    output = tmp_path / "predictions.json"
    result = subprocess.run(
        [sys.executable, "-m", "litcompress", "predict", str(trained_resnet8), str(folder)]
        + ["--output", str(output), "--top-k", "3"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 3, result.stderr[-3000:]  # one file skipped
    rows = {Path(row["file"]).name: row["predictions"] for row in json.loads(output.read_text())}
    assert set(rows) == {path.name for path in paths} | {"anim.gif", "no_suffix"}
    for name, top in rows.items():  # the same picture: the same classes and probabilities
        assert [p["class"] for p in top] == [p["class"] for p in rows["grey.png"]], name
        for got, wanted in zip(top, rows["grey.png"], strict=True):
            assert got["probability"] == pytest.approx(wanted["probability"], abs=1e-6), name
    skipped = [line for line in result.stderr.splitlines() if line.startswith("Skipped")]
    assert len(skipped) == 1 and "scan.pdf" in skipped[0]
    assert "Pillow writes PDF files but does not read them" in skipped[0]
    assert f"1 of {len(rows) + 1} files were skipped" in result.stderr
    left_out = [line for line in result.stderr.splitlines() if "that are not images" in line]
    assert len(left_out) == 1 and "left out 1 file(s)" in left_out[0] and "notes.txt" in left_out[0]
