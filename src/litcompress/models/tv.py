"""Any torchvision classification model by name, adapted to small images and channel counts."""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from litcompress.errors import ConfigError
from litcompress.models.utils import find_classifier, first_conv, rebuild_conv


def torchvision_classifier(
    num_classes: int,
    in_channels: int,
    image_size: int,
    name: str = "resnet18",
    small_input: bool | None = None,
    weights_path: str | None = None,
) -> nn.Module:
    """Build ``torchvision.models.get_model(name, weights=None)`` for the given data.

    Args:
        num_classes: number of output logits.
        in_channels: image channels; the stem conv is rebuilt (fresh weights) if they differ from 3.
        image_size: image side; decides ``small_input`` when that is None.
        name: a name in ``torchvision.models.list_models(module=torchvision.models)``.
        small_input: adapt the stem for small images (default ``image_size < 96``): first conv to
            stride 1 (kernel 3, padding 1 if it was larger) and a max-pool right after it removed.
            Meant for CNNs; torchvision ViTs need ``small_input=False`` and their native size.
        weights_path: optional local torchvision ImageNet state_dict (``torch.save``d). It is loaded
            strictly into the 1000-class model before the head is replaced for ``num_classes`` and
            the stem adapted (a rebuilt stem conv loses its pretrained weights).

    Returns:
        The torchvision model mapping ``(N, in_channels, image_size, image_size)`` to logits.

    Raises:
        ConfigError: unknown ``name``, missing or mismatching ``weights_path``.
    """
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"Unknown torchvision model name={name!r}.{hint} See "
            "torchvision.models.list_models(module=torchvision.models) for the valid names."
        )
    if weights_path is None:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    else:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"weights_path={weights_path!r} is not a file; point it at a local torchvision "
                "state_dict saved with torch.save, or set it to null to train from scratch."
            )
        model = torchvision.models.get_model(name, weights=None)  # 1000 classes, like the file
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except RuntimeError as e:
            raise ConfigError(
                f"weights_path={weights_path!r} does not fit torchvision model {name!r}: {e}"
            ) from e
        head_name, head = find_classifier(model)
        model.set_submodule(head_name, nn.Linear(head.in_features, num_classes))
    _adapt_stem(model, in_channels, image_size < 96 if small_input is None else small_input)
    return model


def _adapt_stem(model: nn.Module, in_channels: int, small_input: bool) -> None:
    """Rebuild the first conv for ``in_channels``; for small inputs: stride 1, no pool."""
    stem_name, stem = first_conv(model)
    overrides: dict[str, object] = {}
    if in_channels != stem.in_channels:
        overrides["in_channels"] = in_channels
    if small_input:
        # In place, so pretrained stem weights survive when nothing else changes.
        stem.stride = (1, 1)
        if max(stem.kernel_size) > 3:
            overrides.update(kernel_size=3, padding=1)
        _drop_pool_after(model, stem_name)
    if overrides:
        model.set_submodule(stem_name, rebuild_conv(stem, **overrides))


def _drop_pool_after(model: nn.Module, stem_name: str) -> None:
    """Replace a MaxPool2d that comes after the stem conv, before any other conv, with Identity."""
    after_stem = False
    # registration order follows execution order in torchvision stems (conv, bn, relu, maxpool)
    for name, module in model.named_modules():
        if name == stem_name:
            after_stem = True
        elif after_stem and isinstance(module, nn.MaxPool2d):
            model.set_submodule(name, nn.Identity())
            return
        elif after_stem and isinstance(module, nn.Conv2d):
            return
