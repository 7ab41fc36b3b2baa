"""A small, fast CNN for smoke tests and tiny datasets."""

from __future__ import annotations

import torch
import torch.nn as nn


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class SmallCNN(nn.Module):
    """Five conv-BN-ReLU blocks (widths w, w, 2w, 2w, 4w), two max-pools, avg pool, linear head.

    Args:
        num_classes: number of output logits.
        in_channels: image channels.
        image_size: image side; unused (global pooling makes it size-agnostic); works from 8x8 up.
        width: channels of the first block.

    Forward maps ``(N, in_channels, H, W)`` to ``(N, num_classes)`` logits.
    """

    def __init__(
        self, num_classes: int, in_channels: int, image_size: int, width: int = 32
    ) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(in_channels, w),
            *_block(w, w),
            nn.MaxPool2d(2),
            *_block(w, 2 * w),
            *_block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *_block(2 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
