"""Data modules: each supplies ``num_classes``, ``in_channels`` and ``image_size`` to the model."""

from litcompress.data.base import ClassificationData
from litcompress.data.digits import DigitsData
from litcompress.data.imagefolder import ImageFolderData
from litcompress.data.shapes import ShapesData
from litcompress.data.torchvision_data import (
    CIFAR10Data,
    CIFAR100Data,
    FashionMNISTData,
    MNISTData,
)

__all__ = [
    "CIFAR10Data",
    "CIFAR100Data",
    "ClassificationData",
    "DigitsData",
    "FashionMNISTData",
    "ImageFolderData",
    "MNISTData",
    "ShapesData",
]
