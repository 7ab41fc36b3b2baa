"""Any torchvision classification model by name, adapted to small images and channel counts."""

from __future__ import annotations

import difflib
import inspect
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from litcompress.errors import ConfigError
from litcompress.models.utils import find_classifier, first_conv, rebuild_conv
from litcompress.spec import InputSpec


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
        small_input: adapt the stem for small images (default: ``image_size < 96`` for models
            that are not built for a size): first conv to stride 1 (kernel 3, padding 1 if it was
            larger) and a max-pool right after it removed. Models that take their input size
            (ViT: ``image_size``, MaxViT: ``input_size``) are built for ``image_size`` instead.
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
    sized = False  # built for this image size (ViT, MaxViT): its stem must stay as it is
    if weights_path is None:
        model, sized = _build_for(name, num_classes, image_size)
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
        _drop_auxiliary_heads(model)
        head_name, head = find_classifier(model)
        model.set_submodule(head_name, _new_head(head, num_classes))
    if small_input is None:
        small_input = image_size < 96 and not sized
    _adapt_stem(model, in_channels, small_input)
    _check_runs(model, name, in_channels, image_size)
    return model


def _build_for(name: str, num_classes: int, image_size: int) -> tuple[nn.Module, bool]:
    """The model with the fitting options its class takes; whether it was built for the size."""
    # Auxiliary heads off (a training forward would return a named tuple, and pruning would not
    # see them), and the input size for the models that build for one (ViT: image_size; MaxViT:
    # input_size). Options the class refuses are dropped one by one.
    options = {"aux_logits": False, "image_size": image_size, "input_size": (image_size,) * 2}
    while True:
        try:
            with warnings.catch_warnings():
                # GoogLeNet and Inception warn that their default initialisation will change.
                warnings.filterwarnings("ignore", message=".*default weight initialization")
                model = torchvision.models.get_model(
                    name, weights=None, num_classes=num_classes, **options
                )
            # Some classes swallow unknown options (ConvNeXt's **kwargs): only named ones count.
            named = inspect.signature(type(model).__init__).parameters
            return model, any(
                key in named for key in ("image_size", "input_size") if key in options
            )
        except TypeError as error:
            refused = [key for key in options if f"'{key}'" in str(error)]
            if not refused:
                raise _cannot_run(name, image_size, error) from error
            del options[refused[0]]
        except Exception as error:  # e.g. ViT: a size its patches do not divide
            raise _cannot_run(name, image_size, error) from error


def _drop_auxiliary_heads(model: nn.Module) -> None:
    """Turn off the auxiliary classifiers of a model loaded with them (GoogLeNet, Inception)."""
    if getattr(model, "aux_logits", False):
        model.aux_logits = False
        for child in [n for n, _ in model.named_children() if n.lower().startswith("aux")]:
            setattr(model, child, None)


def _new_head(head: nn.Module, num_classes: int) -> nn.Module:
    if isinstance(head, nn.Linear):
        return nn.Linear(head.in_features, num_classes)
    return rebuild_conv(head, out_channels=num_classes)


def _cannot_run(name: str, image_size: int, error: Exception) -> ConfigError:
    first_line = (str(error).strip().splitlines() or ["no message"])[0]
    return ConfigError(
        f"torchvision model {name!r} cannot run on {image_size}x{image_size} images "
        f"({type(error).__name__}: {first_line}). Use a larger data.image_size (where the data "
        f"module resizes; torchvision's weights are for 224), or another model."
    )


def _check_runs(model: nn.Module, name: str, in_channels: int, image_size: int) -> None:
    """Run one image through ``model`` now, so that a size it cannot take fails before training."""
    try:
        with torch.no_grad():
            logits = model.eval()(*InputSpec.image(in_channels, image_size).example(1, zeros=True))
    except Exception as error:
        raise _cannot_run(name, image_size, error) from error
    finally:
        model.train()
    if not torch.is_tensor(logits) or logits.ndim != 2:
        raise ConfigError(
            f"torchvision model {name!r} returns {type(logits).__name__} instead of a tensor of "
            f"logits; litcompress trains classifiers whose forward returns logits."
        )


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
