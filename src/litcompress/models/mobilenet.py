"""torchvision MobileNetV2 adapted to small (CIFAR-sized) images."""

from __future__ import annotations

import torch.nn as nn
from torchvision.models import MobileNetV2

from litcompress.models.utils import first_conv, rebuild_conv

# torchvision's default setting (t, c, n, s) with the 24-channel stage at stride 1, the usual
# CIFAR adaptation: together with a stride-1 stem, 32x32 inputs reach 4x4, not 1x1, at the end.
_CIFAR_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def mobilenet_v2(
    num_classes: int,
    in_channels: int,
    image_size: int,
    width_mult: float = 1.0,
    dropout: float = 0.2,
) -> nn.Module:
    """Build a torchvision MobileNetV2 with a stride-1 stem and stride-1 second stage.

    Args:
        num_classes: number of output logits.
        in_channels: image channels (the stem conv is rebuilt for them).
        image_size: image side; unused (global pooling), works from 8x8 up.
        width_mult: channel multiplier of torchvision's MobileNetV2.
        dropout: dropout before the classifier.

    Returns:
        A ``torchvision.models.MobileNetV2`` mapping ``(N, in_channels, H, W)`` to logits; its head
        is ``classifier[1]``.
    """
    model = MobileNetV2(
        num_classes=num_classes,
        width_mult=width_mult,
        inverted_residual_setting=[list(row) for row in _CIFAR_SETTING],
        dropout=dropout,
    )
    name, stem = first_conv(model)
    model.set_submodule(name, rebuild_conv(stem, in_channels=in_channels, stride=1))
    return model
