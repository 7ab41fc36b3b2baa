"""Tests of the data modules: digits, the torchvision datasets (on tiny real-format files) and
user image folders. Nothing here touches the network."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from litcompress.data.digits import DigitsData
from litcompress.data.imagefolder import ImageFolderData
from litcompress.data.torchvision_data import (
    CIFAR10Data,
    CIFAR100Data,
    FashionMNISTData,
    MNISTData,
    TorchvisionData,
)
from litcompress.errors import ConfigError


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any accidental download fail at once instead of reaching the network."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def first_batch(dm: TorchvisionData | DigitsData | ImageFolderData, split: str = "train"):
    """Return the first ``(images, labels)`` batch of a split's DataLoader."""
    return next(iter(getattr(dm, f"{split}_dataloader")()))


# ---------------------------------------------------------------- digits


def test_digits_shapes_and_split_sizes() -> None:
    dm = DigitsData(batch_size=32)
    assert (dm.num_classes, dm.input_shape) == (10, (1, 8, 8))
    dm.setup("fit")
    sizes = [len(dm.train_set), len(dm.val_set), len(dm.test_set)]
    assert sum(sizes) == 1797
    assert sizes[2] == pytest.approx(0.2 * 1797, abs=1)
    assert sizes[1] == pytest.approx(0.1 * 1797, abs=1)
    images, labels = first_batch(dm)
    assert images.shape == (32, 1, 8, 8) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() < 10


def test_digits_normalised_stratified_and_seeded() -> None:
    dm = DigitsData(seed=3)
    dm.setup()
    train_images, train_labels = dm.train_set.tensors
    assert abs(train_images.mean().item()) < 1e-4
    assert train_images.std().item() == pytest.approx(1.0, abs=1e-3)
    overall = (
        np.bincount(
            np.concatenate([d.tensors[1].numpy() for d in (dm.train_set, dm.val_set, dm.test_set)]),
            minlength=10,
        )
        / 1797
    )
    for split in (dm.train_set, dm.val_set, dm.test_set):
        share = np.bincount(split.tensors[1].numpy(), minlength=10) / len(split)
        assert np.abs(share - overall).max() < 0.02

    again = DigitsData(seed=3)
    again.setup()
    other = DigitsData(seed=4)
    other.setup()
    assert torch.equal(again.val_set.tensors[1], dm.val_set.tensors[1])
    assert torch.equal(again.train_set.tensors[0], train_images)
    assert not torch.equal(other.val_set.tensors[0], dm.val_set.tensors[0])


@pytest.mark.parametrize(
    "kwargs",
    [{"val_fraction": 0.0}, {"test_fraction": 1.2}, {"val_fraction": 0.5, "test_fraction": 0.5}],
)
def test_digits_bad_fractions(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        DigitsData(**kwargs)


# ---------------------------------------------------------------- tiny torchvision files


class _Py2Pickler(pickle._Pickler):
    """Pickle ``bytes`` as Python 2 ``str`` (BINSTRING), as the real CIFAR files were written.

    Loaded with ``encoding="latin1"`` (as torchvision does) they become ``str`` keys; with
    ``encoding="bytes"`` they stay ``b"data"`` etc., exactly like the published batches.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _write_py2_pickle(path: Path, obj: object) -> str:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue())
    return hashlib.md5(buffer.getvalue()).hexdigest()


def _cifar_batch(rng: np.random.Generator, n: int, num_classes: int, cifar100: bool) -> dict:
    labels = [int(x) for x in rng.integers(0, num_classes, n)]
    batch = {
        b"batch_label": b"tiny batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if cifar100:
        batch[b"fine_labels"] = labels
        batch[b"coarse_labels"] = [label // 5 for label in labels]
    else:
        batch[b"labels"] = labels
    return batch


PER_CIFAR10_BATCH, CIFAR_TEST = 4, 6


@pytest.fixture
def tiny_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write a tiny CIFAR-10 (5 train batches of 4, a test batch of 6) in the real format."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train_list = [
        [name, _write_py2_pickle(folder / name, _cifar_batch(rng, PER_CIFAR10_BATCH, 10, False))]
        for name in (f"data_batch_{i}" for i in range(1, 6))
    ]
    test_list = [
        [
            "test_batch",
            _write_py2_pickle(folder / "test_batch", _cifar_batch(rng, CIFAR_TEST, 10, False)),
        ]
    ]
    meta = {
        b"num_cases_per_batch": PER_CIFAR10_BATCH,
        b"num_vis": 3072,
        b"label_names": [f"class{i}".encode() for i in range(10)],
    }
    meta_md5 = _write_py2_pickle(folder / "batches.meta", meta)
    # Only the checksums are swapped for the tiny files' ones: torchvision's checks still run.
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(datasets.CIFAR10, "test_list", test_list)
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": meta_md5})
    return tmp_path


@pytest.fixture
def tiny_cifar100(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write a tiny CIFAR-100 (train of 20, test of 6) in the real format."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    train_md5 = _write_py2_pickle(folder / "train", _cifar_batch(rng, 20, 100, True))
    test_md5 = _write_py2_pickle(folder / "test", _cifar_batch(rng, CIFAR_TEST, 100, True))
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    meta_md5 = _write_py2_pickle(folder / "meta", meta)
    monkeypatch.setattr(datasets.CIFAR100, "train_list", [["train", train_md5]])
    monkeypatch.setattr(datasets.CIFAR100, "test_list", [["test", test_md5]])
    monkeypatch.setattr(datasets.CIFAR100, "meta", {**datasets.CIFAR100.meta, "md5": meta_md5})
    return tmp_path


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write an uncompressed big-endian idx file of uint8 (magic 0x08 type, then ndim)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


MNIST_TRAIN, MNIST_TEST = 20, 6


def _write_tiny_mnist(root: Path, folder_name: str) -> Path:
    """Write ``<root>/<folder_name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``."""
    raw = root / folder_name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for prefix, n in (("train", MNIST_TRAIN), ("t10k", MNIST_TEST)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return root


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    return _write_tiny_mnist(tmp_path, "MNIST")


@pytest.fixture
def tiny_fashion(tmp_path: Path) -> Path:
    return _write_tiny_mnist(tmp_path, "FashionMNIST")


def _check_module(dm: TorchvisionData, n_train_total: int, n_test: int, shape: tuple) -> None:
    dm.prepare_data()
    dm.setup("fit")
    n_val = round(n_train_total * dm.val_fraction)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (
        n_train_total - n_val,
        n_val,
        n_test,
    )
    assert dm.input_shape == shape
    for split in ("train", "val", "test"):
        images, labels = first_batch(dm, split)
        assert images.shape[1:] == shape and images.dtype == torch.float32
        assert type(images) is torch.Tensor
        assert labels.dtype == torch.int64
        assert labels.min() >= 0 and labels.max() < dm.num_classes


def _expected_eval_image(dm: TorchvisionData, raw_hwc_or_hw: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(np.asarray(raw_hwc_or_hw)).float() / 255.0
    if pixels.ndim == 2:
        pixels = pixels.unsqueeze(-1)
    pixels = pixels.permute(2, 0, 1)
    mean, std = torch.tensor(dm.mean).view(-1, 1, 1), torch.tensor(dm.std).view(-1, 1, 1)
    return (pixels - mean) / std


def test_cifar10_tiny_real_format(tiny_cifar10: Path) -> None:
    dm = CIFAR10Data(
        data_dir=str(tiny_cifar10), download=False, batch_size=4, num_workers=0, val_fraction=0.2
    )
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 3, 32)
    _check_module(dm, 5 * PER_CIFAR10_BATCH, CIFAR_TEST, (3, 32, 32))
    # Val is the un-augmented, normalised training image, even though train is augmented.
    raw = datasets.CIFAR10(str(tiny_cifar10), train=True).data
    index = dm.val_set.indices[0]
    image, label = dm.val_set[0]
    assert torch.allclose(image, _expected_eval_image(dm, raw[index]), atol=1e-5)
    assert torch.equal(dm.val_set[0][0], image)
    # Train and val are disjoint and together the official train split.
    assert sorted(dm.train_set.indices + dm.val_set.indices) == list(range(20))


def test_torchvision_split_is_seeded(tiny_cifar10: Path) -> None:
    def val_indices(seed: int) -> list[int]:
        dm = CIFAR10Data(
            data_dir=str(tiny_cifar10), download=False, num_workers=0, val_fraction=0.25, seed=seed
        )
        dm.setup()
        return dm.val_set.indices

    assert val_indices(0) == val_indices(0)
    assert val_indices(0) != val_indices(1)


def test_cifar100_tiny_real_format(tiny_cifar100: Path) -> None:
    dm = CIFAR100Data(data_dir=str(tiny_cifar100), download=False, batch_size=4, num_workers=0)
    assert dm.num_classes == 100
    _check_module(dm, 20, CIFAR_TEST, (3, 32, 32))


@pytest.mark.parametrize(
    ("cls", "fixture", "torchvision_cls"),
    [
        (MNISTData, "tiny_mnist", datasets.MNIST),
        (FashionMNISTData, "tiny_fashion", datasets.FashionMNIST),
    ],
)
def test_mnist_like_tiny_idx_files(
    cls: type[TorchvisionData], fixture: str, torchvision_cls: type, request: pytest.FixtureRequest
) -> None:
    root = request.getfixturevalue(fixture)
    dm = cls(data_dir=str(root), download=False, batch_size=4, num_workers=0, val_fraction=0.25)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 28)
    assert not dm.flip
    _check_module(dm, MNIST_TRAIN, MNIST_TEST, (1, 28, 28))
    raw = torchvision_cls(str(root), train=False).data.numpy()
    assert torch.allclose(dm.test_set[2][0], _expected_eval_image(dm, raw[2]), atol=1e-5)


ALL_TORCHVISION = [
    (CIFAR10Data, "cifar-10-batches-py", "torchvision.datasets.cifar.download_and_extract_archive"),
    (CIFAR100Data, "cifar-100-python", "torchvision.datasets.cifar.download_and_extract_archive"),
    (MNISTData, "MNIST/raw", "torchvision.datasets.mnist.download_and_extract_archive"),
    (
        FashionMNISTData,
        "FashionMNIST/raw",
        "torchvision.datasets.mnist.download_and_extract_archive",
    ),
]


@pytest.mark.parametrize(("cls", "layout", "_"), ALL_TORCHVISION)
def test_missing_data_without_download(
    cls: type[TorchvisionData], layout: str, _: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "nothing here"
    dm = cls(data_dir=str(data_dir), download=False, num_workers=0)
    with pytest.raises(ConfigError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(data_dir.resolve()) in message and layout in message
    assert dm.name in message and "data=digits" in message
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(ConfigError):
        dm.setup()


@pytest.mark.parametrize(("cls", "layout", "download_fn"), ALL_TORCHVISION)
def test_missing_data_download_fails(
    cls: type[TorchvisionData],
    layout: str,
    download_fn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download_fn, offline)
    dm = cls(data_dir=str(tmp_path), download=True, num_workers=0)
    with pytest.raises(ConfigError) as info:
        dm.prepare_data()
    assert calls, "the download should have been attempted"
    message = str(info.value)
    assert str(tmp_path.resolve()) in message and layout in message
    assert "downloading them failed" in message
    assert "\n" not in message, "the message should be one paragraph"
    assert info.value.__cause__ is not None


def test_corrupt_cifar_is_reported(tiny_cifar10: Path) -> None:
    (tiny_cifar10 / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(ConfigError, match="missing or corrupt"):
        CIFAR10Data(data_dir=str(tiny_cifar10), download=False).prepare_data()


def test_torchvision_bad_val_fraction() -> None:
    with pytest.raises(ConfigError, match="val_fraction=1.0"):
        CIFAR10Data(val_fraction=1.0)


# ---------------------------------------------------------------- image folders


def _write_images(folder: Path, classes: list[str], per_class: int = 6, size: int = 12) -> None:
    rng = np.random.default_rng(len(classes) + per_class)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")


CLASSES = ["cat", "dog", "fox"]


def test_imagefolder_single_folder_split(tmp_path: Path) -> None:
    _write_images(tmp_path, CLASSES)
    dm = ImageFolderData(
        str(tmp_path), image_size=16, val_fraction=1 / 3, batch_size=4, num_workers=0
    )
    assert (dm.num_classes, dm.input_shape, dm.classes) == (3, (3, 16, 16), CLASSES)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (12, 6)
    assert dm.test_set is dm.val_set
    assert sorted(dm.train_set.indices + dm.val_set.indices) == list(range(18))
    images, labels = first_batch(dm)
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert labels.min() >= 0 and labels.max() < 3
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])


def test_imagefolder_grayscale(tmp_path: Path) -> None:
    _write_images(tmp_path, CLASSES)
    dm = ImageFolderData(str(tmp_path), image_size=8, channels=1, num_workers=0, augment=False)
    dm.setup()
    image, _ = dm.train_set[0]
    assert image.shape == (1, 8, 8) and dm.input_shape == (1, 8, 8)


def test_imagefolder_train_val_test_layout(tmp_path: Path) -> None:
    _write_images(tmp_path / "train", CLASSES, per_class=5)
    _write_images(tmp_path / "val", CLASSES, per_class=2)
    dm = ImageFolderData(str(tmp_path), image_size=12, num_workers=0)
    dm.setup()
    assert dm.num_classes == 3
    assert (len(dm.train_set), len(dm.val_set)) == (15, 6)
    assert dm.test_set is dm.val_set

    _write_images(tmp_path / "test", CLASSES, per_class=1)
    dm = ImageFolderData(str(tmp_path), image_size=12, num_workers=0)
    dm.setup()
    assert len(dm.test_set) == 3
    image, label = dm.test_set[0]
    assert image.shape == (3, 12, 12) and isinstance(label, int)


def _expect_config_error(data_dir: Path, match: str, named: Path | None = None) -> None:
    """Check that the module refuses ``data_dir`` with a message naming ``named`` (or it)."""
    with pytest.raises(ConfigError, match=match) as info:
        ImageFolderData(str(data_dir))
    assert str(named or data_dir) in str(info.value)


def test_imagefolder_errors(tmp_path: Path) -> None:
    _expect_config_error(tmp_path / "missing", "does not exist")

    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_config_error(empty, "No class subfolders")

    one = tmp_path / "one"
    _write_images(one, ["only"])
    _expect_config_error(one, "at least 2")

    no_images = tmp_path / "no_images"
    _write_images(no_images, CLASSES)
    (no_images / "empty_class").mkdir()
    (no_images / "empty_class" / "notes.txt").write_text("not an image")
    _expect_config_error(
        no_images, "no image with a supported extension", no_images / "empty_class"
    )

    mismatch = tmp_path / "mismatch"
    _write_images(mismatch / "train", CLASSES)
    _write_images(mismatch / "val", ["cat", "dog"])
    _expect_config_error(mismatch, "differ", mismatch / "val")

    good = tmp_path / "good"
    _write_images(good, CLASSES)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="val_fraction"):
            ImageFolderData(str(good), val_fraction=bad)
