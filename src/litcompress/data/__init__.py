"""Data modules: each supplies ``num_classes`` and what its inputs are to the model (images:
``in_channels`` and ``image_size``; text: the tokenizer's ``vocab_size`` and ``max_length``)."""

from litcompress.data.base import ClassificationData
from litcompress.data.digits import DigitsData
from litcompress.data.imagefolder import ImageFolderData
from litcompress.data.reviews import ReviewsData
from litcompress.data.shapes import ShapesData
from litcompress.data.text import TextClassificationData
from litcompress.data.text_files import TextFilesData
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
    "ReviewsData",
    "ShapesData",
    "TextClassificationData",
    "TextFilesData",
]
