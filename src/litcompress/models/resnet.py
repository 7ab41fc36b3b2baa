"""The CIFAR ResNet of He et al. 2016 (arXiv:1512.03385, section 4.2) with projection shortcuts."""

from __future__ import annotations

import torch
import torch.nn as nn

from litcompress.errors import ConfigError


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (1x1 conv + BN where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()  # one ReLU per use: PT2E quantizers annotate per module call
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            # option B: a projection keeps the residual add prunable by dependency graphs
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet-``depth``: 3x3 stem, 3 stages of widths w, 2w, 4w, global avg pool, linear head.

    Args:
        num_classes: number of output logits.
        in_channels: image channels.
        image_size: image side; unused (global pooling), works from 4x4 up.
        depth: 6n+2 layers with n BasicBlocks per stage (20, 32, 44, 56, 110, ...).
        width: channels of the stem and first stage (16 in the paper).

    Forward maps ``(N, in_channels, H, W)`` to ``(N, num_classes)`` logits.

    Raises:
        ConfigError: ``depth`` is not of the form 6n+2 with n >= 1.
    """

    def __init__(
        self, num_classes: int, in_channels: int, image_size: int, depth: int = 20, width: int = 16
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ConfigError(
                f"CifarResNet depth={depth} is invalid: depth must be 6n+2 with n >= 1 "
                "(e.g. 20, 32, 44, 56, 110)."
            )
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                # stages 2 and 3 halve the resolution in their first block
                blocks.append(BasicBlock(cin, cout, stride=2 if i > 0 and j == 0 else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
