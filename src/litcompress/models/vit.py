"""torchvision Vision Transformer sized for small images."""

from __future__ import annotations

import math

import torch.nn as nn
from torchvision.models.vision_transformer import VisionTransformer

from litcompress.errors import ConfigError


def vit(
    num_classes: int,
    in_channels: int,
    image_size: int,
    patch_size: int = 4,
    depth: int = 6,
    heads: int = 4,
    dim: int = 192,
    mlp_dim: int = 384,
    dropout: float = 0.0,
) -> nn.Module:
    """Build a torchvision ``VisionTransformer`` for ``image_size`` x ``image_size`` inputs.

    Args:
        num_classes: number of output logits.
        in_channels: image channels (the patch embedding is rebuilt if not 3).
        image_size: image side; the model only accepts exactly this size.
        patch_size: side of the square patches; must divide ``image_size``.
        depth: number of encoder layers.
        heads: attention heads; must divide ``dim``.
        dim: token (hidden) dimension.
        mlp_dim: hidden size of each encoder MLP.
        dropout: dropout in the encoder.

    Returns:
        A ``VisionTransformer`` mapping ``(N, in_channels, image_size, image_size)`` to logits; its
        head is ``heads.head``.

    Raises:
        ConfigError: ``patch_size`` does not divide ``image_size``, or ``heads`` ``dim``.
    """
    if image_size % patch_size != 0:
        divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
        raise ConfigError(
            f"vit patch_size={patch_size} does not divide image_size={image_size}; "
            f"set model.patch_size to one of {divisors}."
        )
    if dim % heads != 0:
        raise ConfigError(
            f"vit heads={heads} does not divide dim={dim}; set model.dim to a multiple of {heads} "
            f"or model.heads to a divisor of {dim}."
        )
    model = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=depth,
        num_heads=heads,
        hidden_dim=dim,
        mlp_dim=mlp_dim,
        dropout=dropout,
        num_classes=num_classes,
    )
    if in_channels != 3:
        proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        # same init as torchvision's patch embedding
        nn.init.trunc_normal_(proj.weight, std=math.sqrt(1 / (in_channels * patch_size**2)))
        nn.init.zeros_(proj.bias)
        model.conv_proj = proj
    return model
