"""Depth pruning, part of ``compress=prune``: how many residual blocks go, and which.

``compress.prune.depth`` asks for a fraction (in (0, 1)) or a count (a whole number >= 1) of the
removable blocks (:func:`litcompress.models.blocks.residual_blocks`); ``compress.prune.blocks``
names them instead. The blocks are chosen by their **bypass cost**: the rise of the mean
cross-entropy on ``depth_batches`` validation batches when that block alone passes its input on,
all the others in place; the cheapest go. A Transformer keeps one encoder layer of each stack at
least. With ``iterative_steps`` > 1 the blocks go in shares at each step (their costs measured
again on the network as it is then), before that step's channel pruning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from litcompress.errors import ConfigError
from litcompress.models.blocks import Block, Skipped, bypassed, residual_blocks, stacks_of

Batch = tuple[torch.Tensor, ...]  # (*inputs, targets)


def check_depth(depth: float | None) -> None:
    """Refuse a ``compress.prune.depth`` that is neither a fraction nor a count."""
    if depth is None:
        return
    if isinstance(depth, bool) or not (0 < depth < 1 or (depth >= 1 and float(depth).is_integer())):
        raise ConfigError(
            f"compress.prune.depth={depth} must be a fraction of the removable blocks in (0, 1) "
            f"(e.g. 0.3) or a whole number of blocks (e.g. 3), or null to keep every block."
        )


def candidates(net: nn.Module, ignored: Sequence[str]) -> list[Block]:
    """The removable blocks of ``net`` that hold none of the ``ignored`` module names."""
    return [
        b
        for b in residual_blocks(net)
        if not any(i == b.name or i.startswith(f"{b.name}.") for i in ignored)
    ]


def _layers_left(net: nn.Module, stack: str) -> int:
    return sum(1 for m in net.get_submodule(stack) if not isinstance(m, Skipped))


def budget(net: nn.Module, blocks: Sequence[Block]) -> int:
    """How many of ``blocks`` can go: all, but one layer of each Transformer stack they empty."""
    of = stacks_of(net, [b.name for b in blocks])
    stacks = set(of.values()) - {None}
    full = [s for s in stacks if list(of.values()).count(s) >= _layers_left(net, s)]
    return len(blocks) - len(full)


def blocks_to_remove(depth: float, blocks: Sequence[Block], net: nn.Module) -> int:
    """How many of the removable ``blocks`` of ``net`` ``depth`` (fraction or count) removes."""
    found, most = len(blocks), budget(net, blocks)
    count = round(depth * found) if depth < 1 else int(depth)
    what = (
        "residual blocks with an identity shortcut or Transformer encoder layers, one of each "
        "stack kept"
    )
    if count > most:
        raise ConfigError(
            f"compress.prune.depth={depth} asks for {count} blocks, but {type(net).__name__} has "
            f"{most} removable blocks ({what}). Ask for at most {most}, or name the blocks with "
            f"compress.prune.blocks=[...]."
        )
    if count == 0:
        least = f": ask for at least {1 / found:.2f} or a count" if found else ""
        raise ConfigError(
            f"compress.prune.depth={depth} removes no block of the {found} removable ones of "
            f"{type(net).__name__} ({what}){least}."
        )
    return count


def due_now(total: int, done_steps: int, steps: int, removed: int) -> int:
    """Blocks the pruning step after ``done_steps`` of ``steps`` removes, ``removed`` gone: so
    that step k has removed round(total x k / steps) of ``total``."""
    return max(0, round(total * (done_steps + 1) / steps) - removed)


def bypass_costs(net: nn.Module, blocks: Sequence[Block], batches: Iterable[Batch]) -> dict:
    """Block name -> the rise of the mean cross-entropy on ``batches`` when that block alone is
    bypassed (negative: the network does better without it). Runs ``net`` in eval mode."""
    batches = list(batches)
    training = net.training
    net.eval()

    def loss() -> float:
        total, count = 0.0, 0
        for *inputs, targets in batches:
            logits = net(*inputs)
            total += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            count += len(targets)
        return total / max(count, 1)

    try:
        with torch.no_grad():
            base = loss()
            costs = {}
            for block in blocks:
                with bypassed(block.module):
                    costs[block.name] = loss() - base
    finally:
        net.train(training)
    return costs


def cheapest(net: nn.Module, costs: dict[str, float], count: int) -> list[str]:
    """The ``count`` blocks of lowest cost, in that order, leaving each Transformer layer stack
    one layer."""
    left: dict[str, int] = {}
    chosen = []
    of = stacks_of(net, list(costs))
    for name in sorted(costs, key=lambda n: costs[n]):
        if len(chosen) == count:
            break
        stack = of[name]
        if stack is not None:
            left.setdefault(stack, _layers_left(net, stack))
            if left[stack] <= 1:
                continue
            left[stack] -= 1
        chosen.append(name)
    return chosen


def describe(costs: dict[str, float], chosen: Sequence[str]) -> str:
    """The blocks removed and their costs, for the log."""
    shown = ", ".join(f"{name} ({costs[name]:+.4f})" for name in chosen)
    return f"removing {len(chosen)} blocks (cross-entropy rise when bypassed): {shown}"
