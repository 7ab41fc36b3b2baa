"""Learning-rate schedules torch does not ship ready-made."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from litcompress.errors import ConfigError


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.0
) -> LRScheduler:
    """Linear warm-up from ~0 for ``warmup_fraction`` of ``total_steps``, then cosine decay.

    Args:
        optimizer: the optimizer to schedule.
        total_steps: all optimizer steps of the run (Lightning's ``estimated_stepping_batches``).
        warmup_fraction: share of the steps spent warming up, in [0, 1).
        min_lr_ratio: final learning rate as a fraction of the initial one.
    """
    if not 0.0 <= warmup_fraction < 1.0:
        raise ConfigError(
            f"scheduler.scheduler.warmup_fraction={warmup_fraction} must be in [0, 1), e.g. 0.05."
        )
    warmup_steps = int(total_steps * warmup_fraction)
    min_lrs = [group["lr"] * min_lr_ratio for group in optimizer.param_groups]
    cosine = CosineAnnealingLR(
        optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=min(min_lrs)
    )
    if warmup_steps == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])
