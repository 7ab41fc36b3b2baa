"""Residual blocks that a network can lose whole (depth pruning), found by their layout.

A block can go when the network still computes without it: its output is its input plus what it
adds (an identity shortcut), so that without the block the input passes on unchanged. Found:

* blocks with an identity shortcut: litcompress's CIFAR ResNet (``shortcut`` an ``nn.Identity``),
  torchvision's ResNet ``BasicBlock``/``Bottleneck`` without ``downsample``, RegNet blocks
  without ``proj``, and every block that says so with ``use_res_connect`` (MobileNetV2/V3's
  inverted residuals and EfficientNet's MBConv where input and output shapes match);
* Vision Transformer and ConvNeXt blocks (torchvision's ``EncoderBlock``, ``CNBlock``), which are
  residual throughout;
* Transformer encoder layers: the items of an ``nn.ModuleList`` that each hold one attention
  module (:mod:`litcompress.models.attention`), as ``transformers``' BERT family stacks them.

A removed block is replaced by :class:`Skipped`, which passes its first input on (as a 1-tuple
where the block returned a tuple): the other modules keep their names, so pruning histories and
``ignored_layers`` stay valid, and exports trace through it to nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from litcompress.errors import ConfigError
from litcompress.models.attention import attention_modules
from litcompress.models.utils import resolve_layers, run_with_hooks
from litcompress.spec import Inputs


@dataclass(frozen=True)
class Block:
    """One removable block: its name in the network and the module."""

    name: str
    module: nn.Module


class Skipped(nn.Module):
    """What a removed block leaves: its first input, passed on (as a 1-tuple if ``as_tuple``)."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return (x,) if self.as_tuple else x

    def extra_repr(self) -> str:
        return "removed block"


def _identity_shortcut(module: nn.Module) -> bool:
    """Whether ``module`` is a block of a known family whose shortcut is the identity."""
    from torchvision.models.convnext import CNBlock
    from torchvision.models.regnet import ResBottleneckBlock
    from torchvision.models.resnet import BasicBlock as TvBasic
    from torchvision.models.resnet import Bottleneck
    from torchvision.models.vision_transformer import EncoderBlock

    from litcompress.models.resnet import BasicBlock

    if isinstance(module, EncoderBlock | CNBlock):
        return True
    if isinstance(module, BasicBlock):
        return isinstance(module.shortcut, nn.Identity)
    if isinstance(module, TvBasic | Bottleneck):
        return module.downsample is None
    if isinstance(module, ResBottleneckBlock):
        return module.proj is None
    return getattr(module, "use_res_connect", None) is True


def _layer_stacks(net: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The ``nn.ModuleList``s of Transformer encoder layers: each item holds one attention
    module (removed items, :class:`Skipped`, hold none)."""
    stacks = []
    for name, module in net.named_modules():
        if type(module) is not nn.ModuleList or len(module) < 2:
            continue
        items = [m for m in module if not isinstance(m, Skipped)]
        if items and all(len(attention_modules(m)) == 1 for m in items):
            stacks.append((name, module))
    return stacks


def residual_blocks(net: nn.Module) -> list[Block]:
    """The blocks of ``net`` that depth pruning may remove, in module order."""
    layers = {
        id(m): f"{name}.{i}" for name, stack in _layer_stacks(net) for i, m in enumerate(stack)
    }
    found = []
    for name, module in net.named_modules():
        if isinstance(module, Skipped):
            continue
        removable = id(module) in layers or (name and _identity_shortcut(module))
        if removable and not any(name.startswith(f"{b.name}.") for b in found):  # not nested
            found.append(Block(name, module))
    return found


def stack_of(net: nn.Module, name: str) -> str | None:
    """The name of the Transformer layer stack that holds block ``name`` (``None``: none)."""
    return stacks_of(net, [name])[name]


def stacks_of(net: nn.Module, names: Sequence[str]) -> dict[str, str | None]:
    """Block name -> the Transformer layer stack that holds it (``None``: none), for ``names``
    (the stacks are found once)."""
    stacks = dict(_layer_stacks(net))
    parents = {name: name.rpartition(".")[0] for name in names}
    return {name: parent if parent in stacks else None for name, parent in parents.items()}


def check_removable(net: nn.Module, names: Sequence[str], inputs: Inputs, option: str) -> None:
    """Refuse ``names`` (given by ``option``) that are not modules of ``net`` or not blocks whose
    removal leaves it computing: a found residual block, or a module whose output has its input's
    shape (a user's own residual block; checked by running one example)."""
    modules = resolve_layers(net, names, option)
    known = {b.name for b in residual_blocks(net)}
    unknown = [(n, m) for n, m in zip(names, modules, strict=True) if n not in known]
    if not unknown:
        return
    shapes: dict[str, tuple[Any, Any]] = {}

    def recorder(name: str):
        def record(module: nn.Module, args: tuple, output: Any) -> None:
            first = args[0] if args else None
            out = output[0] if isinstance(output, tuple) and output else output
            shapes[name] = (
                getattr(first, "shape", None),
                getattr(out, "shape", None),
            )

        return record

    run_with_hooks(net, inputs, {m: recorder(n) for n, m in unknown})
    for name, _ in unknown:
        first, out = shapes.get(name, (None, None))
        if first is None or first != out:
            why = "it does not run" if name not in shapes else f"it maps {first} to {out}"
            raise ConfigError(
                f"{option} names {name!r}, which cannot be removed: {why}, so the network would "
                f"not compute without it. Name residual blocks whose output has their input's "
                f"shape (found automatically: {', '.join(sorted(known)[:4]) or 'none'}"
                f"{', ...' if len(known) > 4 else ''})."
            )


def remove_block(net: nn.Module, name: str, inputs: Inputs) -> None:
    """Replace block ``name`` of ``net`` (taking ``inputs``) by a :class:`Skipped` that passes
    its input on."""
    block = net.get_submodule(name)
    as_tuple = stack_of(net, name) is not None and _returns_tuple(net, block, inputs)
    net.set_submodule(name, Skipped(as_tuple))


def _returns_tuple(net: nn.Module, block: nn.Module, inputs: Inputs) -> bool:
    """Whether ``block`` returns a tuple (the layers of some ``transformers`` versions do),
    found by running one example of ``net``."""
    seen: list[bool] = []
    run_with_hooks(net, inputs, {block: lambda m, a, out: seen.append(isinstance(out, tuple))})
    return bool(seen and seen[0])


@contextlib.contextmanager
def bypassed(module: nn.Module) -> Iterator[None]:
    """``module`` passes its first input on while inside, as if removed (to measure the cost of
    removing it without copying the network)."""

    def skip(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        x = args[0] if args else kwargs["hidden_states"]
        return (x, *output[1:]) if isinstance(output, tuple) else x

    hook = module.register_forward_hook(skip, with_kwargs=True)
    try:
        yield
    finally:
        hook.remove()
