"""Generic helpers to find and replace layers in classifiers without per-architecture code."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from litcompress.errors import ConfigError
from litcompress.spec import Inputs, InputSpec


def find_classifier(
    model: nn.Module, inputs: Inputs | None = None
) -> tuple[str, nn.Linear | nn.Conv2d]:
    """Find the layer producing the logits: a ``nn.Linear``, or a ``nn.Conv2d`` (SqueezeNet).

    With ``inputs`` (``(channels, height, width)``), the last such layer that runs in a
    forward pass of one image, whatever order the model registers its modules in. Without it,
    the last one registered (torchvision and litcompress models register the head last).

    Args:
        model: a classifier.
        inputs: shape of one input image, to find the head by running the model.

    Returns:
        ``(qualified_name, module)`` of the head, usable with ``model.get_submodule(name)``.

    Raises:
        ConfigError: the model has no ``nn.Linear`` or ``nn.Conv2d`` layer.
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer that could produce the "
            f"logits; litcompress needs one (it keeps the classifier head whole when pruning)."
        )
    if inputs is not None:
        ran: list[tuple[str, nn.Module]] = []
        run_with_hooks(model, inputs, {m: _recorder(ran, n) for n, m in layers})
        if ran:
            return ran[-1]
    linears = [(n, m) for n, m in layers if isinstance(m, nn.Linear)]
    return (linears or layers)[-1]


def run_with_hooks(net: nn.Module, inputs: Inputs, hooks: dict[nn.Module, Callable]) -> None:
    """Run one zero example of ``inputs`` through ``net`` (eval mode, no gradients) with each
    forward hook of ``hooks`` (module -> hook) on its module; ``net``'s training mode is kept and
    the hooks removed."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks.items()]
    training = net.training
    try:
        with torch.no_grad():
            device = next(net.parameters()).device
            net.eval()(*InputSpec.of(inputs).example(1, device, zeros=True))
    finally:
        net.train(training)
        for handle in handles:
            handle.remove()


def resolve_layers(net: nn.Module, names: Sequence[str], option: str) -> list[nn.Module]:
    """The modules of ``net`` named ``names``; a name that is not one is refused, naming
    ``option`` (e.g. ``compress.prune.ignored_layers``) and the closest module names."""
    modules = dict(net.named_modules())
    layers = []
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=5)
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise ConfigError(
                f"{option} names {name!r}, which is not a module of {type(net).__name__}.{hint} "
                f"Use module names as in net.named_modules(), e.g. 'layer1.0.conv1'."
            )
        layers.append(modules[name])
    return layers


def _recorder(ran: list, name: str):
    def record(module: nn.Module, args: object, output: object) -> None:
        ran.append((name, module))

    return record


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
