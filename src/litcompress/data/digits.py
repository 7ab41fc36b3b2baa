"""scikit-learn's bundled handwritten digits: a real dataset that needs no download."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset, TensorDataset

from litcompress.data.base import ClassificationData
from litcompress.errors import ConfigError


class DigitsData(ClassificationData):
    """The 1,797 8x8 grayscale digits (10 classes) that ship with scikit-learn, held in memory.

    Pixels are scaled to [0, 1], then normalised with the mean and standard deviation of the
    training split. The train/val/test split is stratified by class and fixed by ``seed``.

    Args:
        batch_size: images per batch, for every split.
        num_workers: DataLoader worker processes (0 is best: the data is already in memory).
        pin_memory: pin host memory for faster copies to a GPU.
        val_fraction: share of all images used for validation.
        test_fraction: share of all images used for testing.
        seed: seed of the split.
    """

    num_classes = 10
    in_channels = 1
    image_size = 8
    classes = [str(digit) for digit in range(10)]

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 1.0:
                raise ConfigError(
                    f"data.{name}={value!r} is not a fraction strictly between 0 and 1. Set it to "
                    f"the share of the 1797 digits to hold out, e.g. 0.1 or 0.2."
                )
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(
                f"data.val_fraction={val_fraction!r} and data.test_fraction={test_fraction!r} "
                f"add up to {val_fraction + test_fraction:g}, which leaves no digits for "
                f"training. Make their sum less than 1, e.g. val_fraction=0.1 and "
                f"test_fraction=0.2."
            )
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed

    def split_indices(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Split the item indices into stratified ``(train, val, test)`` index arrays.

        Args:
            labels: the class of every item, used to stratify.

        Returns:
            Three disjoint index arrays covering every item.
        """
        indices = np.arange(len(labels))
        rest, test = train_test_split(
            indices, test_size=self.test_fraction, stratify=labels, random_state=self.seed
        )
        # val_fraction is a share of all images, so rescale it to the share of what is left.
        train, val = train_test_split(
            rest,
            test_size=self.val_fraction / (1.0 - self.test_fraction),
            stratify=labels[rest],
            random_state=self.seed,
        )
        return train, val, test

    def build_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        """Return in-memory ``(train, val, test)`` datasets of normalised 1x8x8 float images.

        Returns:
            Three :class:`TensorDataset` of ``(float32 image 1x8x8, int64 label)``.
        """
        digits = load_digits()
        # The bundled pixels are counts of 0..16 set bits per 4x4 block of the original scan.
        images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)
        labels = torch.from_numpy(digits.target).long()
        train, val, test = self.split_indices(digits.target)
        mean, std = images[train].mean(), images[train].std()
        images = (images - mean) / std
        # Ink is bright (a count of set bits), as in MNIST: image files must be light on dark.
        self.mean, self.std = (float(mean),), (float(std),)
        return tuple(
            TensorDataset(images[torch.from_numpy(idx)], labels[torch.from_numpy(idx)])
            for idx in (train, val, test)
        )
