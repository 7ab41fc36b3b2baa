"""Data modules over torchvision's classic datasets: CIFAR-10/100, MNIST and Fashion-MNIST.

Each module reads torchvision's on-disk layout under ``data_dir`` and downloads it there only when
the files are missing and ``download`` is true. Missing files become a :class:`ConfigError` in
``prepare_data``, before any training starts, so an offline machine gets a clear message instead of
a network traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset, random_split
from torchvision import datasets
from torchvision.transforms import v2

from litcompress.data.base import ClassificationData
from litcompress.errors import ConfigError

# What a failed download raises: URLError / socket errors are OSErrors, torchvision wraps some in
# RuntimeError (MNIST mirrors, md5 mismatch), and a truncated archive fails in tarfile/gzip.
_DOWNLOAD_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, ValueError, EOFError)


class TransformedDataset(Dataset):
    """A view of some items of a dataset with its own transform.

    It lets the train and validation parts of one split share the loaded data while only the train
    part is augmented.

    Args:
        dataset: the underlying dataset of ``(image, label)`` pairs, images untransformed (PIL).
        indices: which items of ``dataset`` this view holds, in order.
        transform: applied to each image on access.
    """

    def __init__(
        self, dataset: Dataset, indices: Sequence[int], transform: Callable[[Any], torch.Tensor]
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        """Return the number of items in the view."""
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Return the transformed image and the integer label of item ``index`` of the view."""
        image, label = self.dataset[self.indices[index]]
        return self.transform(image), int(label)


def split_indices(
    n: int, val_fraction: float, seed: int, where: str
) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into seed-deterministic random train and validation indices.

    Args:
        n: number of items to split.
        val_fraction: share of the items that go to validation, in (0, 1).
        seed: seed of the generator that draws the split.
        where: what is being split, named in the error message.

    Returns:
        ``(train_indices, val_indices)``, each non-empty.

    Raises:
        ConfigError: when either part would be empty.
    """
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise ConfigError(
            f"Cannot split the {n} training images of {where} into train and validation with "
            f"val_fraction={val_fraction}: one part would be empty. Use a val_fraction between 0 "
            f"and 1 that leaves images on both sides, or add more images."
        )
    train, val = random_split(
        range(n), [n - n_val, n_val], generator=torch.Generator().manual_seed(seed)
    )
    return list(train.indices), list(val.indices)


def check_fraction(name: str, value: float, fix: str) -> None:
    """Raise :class:`ConfigError` unless ``0 < value < 1``.

    Args:
        name: the argument's name, as the message shows it.
        value: the value to check.
        fix: the sentence that tells the user what to set instead.
    """
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name}={value!r} is not a fraction strictly between 0 and 1. {fix}")


class TorchvisionData(ClassificationData):
    """A torchvision dataset with a seeded train/val split of its official training set.

    Subclasses only set the class attributes below. The validation part is a seed-deterministic
    random subset of the official training split and is never augmented; the test split is the
    official test split.

    Args:
        data_dir: root folder of torchvision's layout (e.g. ``<data_dir>/cifar-10-batches-py/``);
            relative paths are resolved against the working directory when the module is built.
        download: download the files into ``data_dir`` when they are missing (needs internet).
        batch_size: images per batch, for every split.
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory for faster copies to a GPU.
        val_fraction: share of the official training split held out for validation, in (0, 1).
        seed: seed of the train/val split.
        augment: augment the training part (random crop with padding, plus horizontal flips where
            ``flip`` is set); validation and test are never augmented.
    """

    dataset_cls: ClassVar[type[datasets.VisionDataset]]
    crop_padding: ClassVar[int]
    flip: ClassVar[bool]
    layout: ClassVar[str]
    """The files torchvision expects under ``data_dir``, as the missing-data message shows them."""

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        batch_size: int = 128,
        num_workers: int = 2,
        pin_memory: bool = False,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        check_fraction(
            "data.val_fraction",
            val_fraction,
            "Set data.val_fraction to the share of the training images to hold out, e.g. 0.1.",
        )
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.download = download
        self.val_fraction = val_fraction
        self.seed = seed
        self.augment = augment

    @property
    def name(self) -> str:
        """The torchvision dataset's class name, e.g. ``"CIFAR10"``."""
        return self.dataset_cls.__name__

    def eval_transform(self) -> v2.Compose:
        """Return the validation/test transform: PIL image to a normalised float tensor."""
        return v2.Compose(
            [
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
                v2.ToPureTensor(),
            ]
        )

    def train_transform(self) -> v2.Compose:
        """Return the training transform: the eval transform, after augmentation if enabled."""
        if not self.augment:
            return self.eval_transform()
        augmentations: list[Callable[[Any], Any]] = [
            v2.RandomCrop(self.image_size, padding=self.crop_padding)
        ]
        if self.flip:
            augmentations.append(v2.RandomHorizontalFlip())
        return v2.Compose(
            [
                v2.ToImage(),
                *augmentations,
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
                v2.ToPureTensor(),
            ]
        )

    def _missing_message(self, reason: str) -> str:
        return (
            f"The {self.name} dataset is not available in "
            f"data_dir={str(self.data_dir)!r}: {reason} torchvision expects it there in its own "
            f"layout: {self.layout}. To fix it, place the files there (or point data.data_dir at "
            f"the folder that holds them), or run once on a machine with internet with "
            f"data.download=true, or train offline on a bundled dataset with data=digits or "
            f"data=shapes."
        )

    def open_split(self, train: bool) -> datasets.VisionDataset:
        """Open one official split without transforms, downloading it first if allowed and needed.

        Args:
            train: the official training split if true, else the official test split.

        Returns:
            The torchvision dataset, yielding ``(PIL image, int label)``.

        Raises:
            ConfigError: when the files are missing or corrupt and cannot be downloaded.
        """
        try:
            return self.dataset_cls(str(self.data_dir), train=train, download=False)
        except RuntimeError as missing:
            if not self.download:
                raise ConfigError(
                    self._missing_message("its files are missing or corrupt and download=false.")
                ) from missing
        try:
            return self.dataset_cls(str(self.data_dir), train=train, download=True)
        except _DOWNLOAD_ERRORS as failed:
            raise ConfigError(
                self._missing_message(
                    f"its files are missing and downloading them failed "
                    f"({type(failed).__name__}: {' '.join(str(failed).split())[:300]})."
                )
            ) from failed

    def prepare_data(self) -> None:
        """Check that both official splits load, downloading them if allowed; runs on one process.

        Raises:
            ConfigError: when the data is missing and cannot be downloaded.
        """
        self.open_split(train=True)
        self.open_split(train=False)

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return ``(train, val, test)``: a seeded split of the official train split, and its test.

        Returns:
            Datasets of ``(float image tensor CxHxW, int label)``; only train is augmented.
        """
        full_train = self.open_split(train=True)
        test = self.open_split(train=False)
        self.classes = list(full_train.classes)
        train_idx, val_idx = split_indices(
            len(full_train), self.val_fraction, self.seed, f"{self.name} in {self.data_dir}"
        )
        eval_transform = self.eval_transform()
        return (
            TransformedDataset(full_train, train_idx, self.train_transform()),
            TransformedDataset(full_train, val_idx, eval_transform),
            TransformedDataset(test, range(len(test)), eval_transform),
        )


class CIFAR10Data(TorchvisionData):
    """CIFAR-10: 32x32 RGB photos in 10 classes (50,000 train, 10,000 test)."""

    dataset_cls = datasets.CIFAR10
    num_classes = 10
    in_channels = 3
    image_size = 32
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    crop_padding = 4
    flip = True
    layout = (
        "<data_dir>/cifar-10-batches-py/ holding data_batch_1 ... data_batch_5, test_batch and "
        "batches.meta"
    )


class CIFAR100Data(TorchvisionData):
    """CIFAR-100: 32x32 RGB photos in 100 fine classes (50,000 train, 10,000 test)."""

    dataset_cls = datasets.CIFAR100
    num_classes = 100
    in_channels = 3
    image_size = 32
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    crop_padding = 4
    flip = True
    layout = "<data_dir>/cifar-100-python/ holding train, test and meta"


class MNISTData(TorchvisionData):
    """MNIST: 28x28 grayscale handwritten digits in 10 classes (60,000 train, 10,000 test).

    Augmentation is a padded random crop only: flipping a digit can change its class.
    """

    dataset_cls = datasets.MNIST
    num_classes = 10
    in_channels = 1
    image_size = 28
    mean = (0.1307,)
    std = (0.3081,)
    crop_padding = 2
    flip = False
    layout = (
        "<data_dir>/MNIST/raw/ holding the uncompressed idx files train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte"
    )


class FashionMNISTData(TorchvisionData):
    """Fashion-MNIST: 28x28 grayscale clothing images in 10 classes (60,000 train, 10,000 test).

    Augmentation is a padded random crop only, like MNIST.
    """

    dataset_cls = datasets.FashionMNIST
    num_classes = 10
    in_channels = 1
    image_size = 28
    mean = (0.2860,)
    std = (0.3530,)
    crop_padding = 2
    flip = False
    layout = (
        "<data_dir>/FashionMNIST/raw/ holding the uncompressed idx files train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte"
    )
