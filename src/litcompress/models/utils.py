"""Generic helpers to find and replace layers in classifiers without per-architecture code."""

from __future__ import annotations

import torch.nn as nn

from litcompress.errors import ConfigError


def find_classifier(model: nn.Module) -> tuple[str, nn.Linear]:
    """Find the final ``nn.Linear`` layer, the one producing the logits.

    Torchvision and litcompress models register the head last, so the last ``nn.Linear`` in
    ``named_modules()`` order is the head (attention and MLP Linears come earlier).

    Args:
        model: a classifier.

    Returns:
        ``(qualified_name, module)`` of the head, usable with ``model.get_submodule(name)``.

    Raises:
        ConfigError: the model has no ``nn.Linear`` (e.g. squeezenet's convolutional head).
    """
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear classifier head; litcompress needs one "
            "(to replace it and to keep it unpruned). Pick a model with a Linear head."
        )
    return linears[-1]


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """Return ``(qualified_name, module)`` of the first ``nn.Conv2d`` (the stem)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ConfigError(f"{type(model).__name__} has no nn.Conv2d stem to adapt to the input images.")


def rebuild_conv(conv: nn.Conv2d, **overrides: object) -> nn.Conv2d:
    """Build a fresh ``nn.Conv2d`` like ``conv`` with some constructor arguments overridden.

    Weights are Kaiming-initialised (fan_out, as torchvision CNNs do), not copied.
    """
    kwargs = dict(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    kwargs.update(overrides)
    new = nn.Conv2d(**kwargs)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new
