"""Network factories for Hydra configs (``_target_`` + ``_partial_: true``).

Each image factory takes ``num_classes``, ``in_channels`` and ``image_size`` (supplied by the
data module) plus its own config options, and returns an ``nn.Module`` mapping
``(N, in_channels, image_size, image_size)`` images to ``(N, num_classes)`` logits. Text networks
(:mod:`litcompress.models.text`) take ``num_classes``, ``vocab_size`` and ``max_length`` and map
``(input_ids, attention_mask)`` to logits.
"""

from litcompress.models.cnn import SmallCNN
from litcompress.models.mobilenet import mobilenet_v2
from litcompress.models.resnet import CifarResNet
from litcompress.models.tv import torchvision_classifier
from litcompress.models.utils import find_classifier, resolve_layers
from litcompress.models.vit import vit

__all__ = [
    "CifarResNet",
    "SmallCNN",
    "find_classifier",
    "resolve_layers",
    "mobilenet_v2",
    "torchvision_classifier",
    "vit",
]
