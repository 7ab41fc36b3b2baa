"""A user's own images: one subfolder per class, read with torchvision's ``ImageFolder``."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension
from torchvision.transforms import v2

from litcompress.data.base import ClassificationData
from litcompress.data.torchvision_data import TransformedDataset, check_fraction, split_indices
from litcompress.errors import ConfigError

_LAYOUT_HINT = (
    "Expected either <data_dir>/<class_name>/<image> (split into train and val by "
    "data.val_fraction), or <data_dir>/train/<class_name>/<image> and "
    "<data_dir>/val/<class_name>/<image> (and optionally test/)."
)


def _has_image(folder: Path) -> bool:
    """Return whether ``folder`` or any folder below it holds a file ``ImageFolder`` would read."""
    return any(
        has_file_allowed_extension(name, IMG_EXTENSIONS)
        for _, _, files in os.walk(folder, followlinks=True)
        for name in files
    )


def scan_classes(folder: Path) -> list[str]:
    """Return the sorted class names of an ``ImageFolder`` root, checking each has an image.

    Args:
        folder: a folder of class subfolders.

    Returns:
        The class names, in the order ``ImageFolder`` numbers them.

    Raises:
        ConfigError: when there are no class subfolders, fewer than two, or an empty one.
    """
    try:
        classes, _ = find_classes(folder)
    except FileNotFoundError as err:
        raise ConfigError(
            f"No class subfolders found in {str(folder)!r}. {_LAYOUT_HINT} Create one subfolder "
            f"per class holding that class's images."
        ) from err
    for name in classes:
        if not _has_image(folder / name):
            raise ConfigError(
                f"The class folder {str(folder / name)!r} holds no image with a supported "
                f"extension ({', '.join(IMG_EXTENSIONS)}). Add images to it or remove the folder."
            )
    if len(classes) < 2:
        raise ConfigError(
            f"{str(folder)!r} has {len(classes)} class subfolder ({', '.join(classes)}), but a "
            f"classifier needs at least 2. {_LAYOUT_HINT}"
        )
    return classes


class ImageFolderData(ClassificationData):
    """Images from the user's own folder of class subfolders, resized to a square.

    If ``data_dir`` holds ``train/`` and ``val/``, they are the train and validation splits (and
    ``test/`` the test split if present, else validation doubles as test). If it holds ``train/``
    but no ``val/``, ``train/`` is split like a single folder (``test/`` is still used if present).
    Otherwise ``data_dir`` itself is the class
    folder root and is split randomly (seeded) into train and validation; test is validation.

    Normalisation uses mean 0.5 and std 0.5 per channel (to [-1, 1]): the statistics of arbitrary
    user data are unknown, and measuring them would read every image before training.

    Args:
        data_dir: the folder described above.
        image_size: side length every image is resized to.
        channels: 3 for RGB, or 1 to convert the images to grayscale.
        val_fraction: share of the images held out for validation when ``data_dir`` is a single
            folder, in (0, 1).
        batch_size: images per batch, for every split.
        num_workers: DataLoader worker processes (decoding images benefits from several).
        pin_memory: pin host memory for faster copies to a GPU.
        seed: seed of the train/val split.
        augment: augment the training images with a padded random crop and horizontal flips;
            turn it off when flipping changes the class (text, digits).
    """

    def __init__(
        self,
        data_dir: str,
        image_size: int = 32,
        channels: int = 3,
        val_fraction: float = 0.2,
        batch_size: int = 64,
        num_workers: int = 2,
        pin_memory: bool = False,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.data_dir = Path(data_dir).expanduser().resolve()
        if not self.data_dir.is_dir():
            raise ConfigError(
                f"data.data_dir={str(self.data_dir)!r} does not exist or is not a folder. Point "
                f"data.data_dir at your image folder. {_LAYOUT_HINT}"
            )
        if channels not in (1, 3):
            raise ConfigError(
                f"data.channels={channels!r} is not supported. Use 3 for RGB images or 1 to "
                f"convert them to grayscale."
            )
        if image_size < 1:
            raise ConfigError(
                f"data.image_size={image_size!r} must be a positive side length in pixels, e.g. 32."
            )
        check_fraction(
            "data.val_fraction",
            val_fraction,
            "Set it to the share of the images to hold out for validation, e.g. 0.2.",
        )
        self.image_size = image_size
        self.in_channels = channels
        self.mean = self.std = (0.5,) * channels
        self.val_fraction = val_fraction
        self.seed = seed
        self.augment = augment

        train_dir, val_dir, test_dir = (self.data_dir / name for name in ("train", "val", "test"))
        if train_dir.is_dir():
            self.train_dir: Path = train_dir
            self.val_dir: Path | None = val_dir if val_dir.is_dir() else None
            self.test_dir: Path | None = test_dir if test_dir.is_dir() else None
        elif val_dir.is_dir():
            raise ConfigError(
                f"{str(self.data_dir)!r} has a val/ subfolder but no train/ one. Add "
                f"{str(train_dir)!r} with the training images, or rename val/ if it is a class. "
                f"{_LAYOUT_HINT}"
            )
        else:
            self.train_dir, self.val_dir, self.test_dir = self.data_dir, None, None

        self.classes = scan_classes(self.train_dir)
        for other in (self.val_dir, self.test_dir):
            if other is not None and scan_classes(other) != self.classes:
                raise ConfigError(
                    f"The class subfolders of {str(other)!r} ({', '.join(scan_classes(other))}) "
                    f"differ from those of {str(self.train_dir)!r} ({', '.join(self.classes)}), "
                    f"so their labels would not match. Give every split the same class subfolders."
                )
        self.num_classes = len(self.classes)

    def _base_transforms(self) -> list[v2.Transform]:
        steps: list[v2.Transform] = [v2.ToImage()]
        if self.in_channels == 1:
            steps.append(v2.Grayscale(num_output_channels=1))
        steps.append(v2.Resize((self.image_size, self.image_size)))
        return steps

    def _finish(self, steps: list[v2.Transform]) -> v2.Compose:
        return v2.Compose(
            [
                *steps,
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(self.mean), list(self.std)),
                v2.ToPureTensor(),
            ]
        )

    def eval_transform(self) -> v2.Compose:
        """Return the validation/test transform: resize, then a normalised float tensor."""
        return self._finish(self._base_transforms())

    def train_transform(self) -> v2.Compose:
        """Return the training transform: the eval transform, after augmentation if enabled."""
        steps = self._base_transforms()
        if self.augment:
            steps += [
                v2.RandomCrop(self.image_size, padding=max(1, self.image_size // 8)),
                v2.RandomHorizontalFlip(),
            ]
        return self._finish(steps)

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return the ``(train, val, test)`` datasets described in the class docstring.

        Returns:
            Datasets of ``(float image tensor CxHxW, int label)``; only train is augmented.
        """
        train_transform, eval_transform = self.train_transform(), self.eval_transform()
        if self.val_dir is not None:
            train = ImageFolder(str(self.train_dir), transform=train_transform)
            val = ImageFolder(str(self.val_dir), transform=eval_transform)
        else:
            full = ImageFolder(str(self.train_dir))
            train_idx, val_idx = split_indices(
                len(full), self.val_fraction, self.seed, repr(str(self.train_dir))
            )
            train = TransformedDataset(full, train_idx, train_transform)
            val = TransformedDataset(full, val_idx, eval_transform)
        test = (
            ImageFolder(str(self.test_dir), transform=eval_transform)
            if self.test_dir is not None
            else val
        )
        return train, val, test
