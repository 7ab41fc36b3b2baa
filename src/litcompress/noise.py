"""Lines that litcompress's dependencies print on this stack and that mean nothing to its user,
filtered in one place.

Each entry of :data:`NOISE` names one line, who prints it and why it is harmless here; every
other line a dependency prints (a real problem, a hint about the user's settings) goes through.
:func:`install` is called first thing by ``train.py`` and the ``litcompress`` command, before
they import torch (some of these lines are printed while it is imported). ``LITCOMPRESS_VERBOSE=1``
(or ``litcompress --verbose``) installs nothing: every line shows again.

This module imports nothing but the standard library, so that installing the filters costs
nothing at start-up.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass

VERBOSE_ENV = "LITCOMPRESS_VERBOSE"

# Lightning's rank_zero_info()/rank_zero_warn() log through one of these (set when imported).
_LIGHTNING_RANK_ZERO = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


@dataclass(frozen=True)
class Noise:
    """One known-harmless line.

    Attributes:
        name: a short name for it.
        why: who prints it, and why a litcompress user can ignore it on this stack.
        message: a regular expression that the start of the message matches.
        example: the line as it is printed on this stack (its message).
        loggers: the loggers that log it; empty: it is a Python warning (``warnings.warn``).
        category: the warning's category (warnings only).
    """

    name: str
    why: str
    message: str
    example: str
    loggers: tuple[str, ...] = ()
    category: type[Warning] = Warning


NOISE: tuple[Noise, ...] = (
    Noise(
        "cuda-home",
        "torch warns while importing its C++-extension helpers when it finds a CUDA toolkit "
        "folder (CUDA_HOME) but no usable GPU; litcompress builds no extension, and a run that "
        "asks for a GPU it lacks still fails with Lightning's own error.",
        r"No CUDA runtime is found, using CUDA_HOME",
        "No CUDA runtime is found, using CUDA_HOME='/usr/local'",
        loggers=("torch.utils.cpp_extension",),
    ),
    Noise(
        "torchao-enum-constant",
        "torchao 0.18 registers its enums (KernelPreference, ...) as pytree constants when "
        "imported, which torch 2.14 deprecates for enums (it handles them natively); nothing to "
        "do until torchao drops the call.",
        r"<enum '\w+'> is an Enum subclass and is now natively supported",
        "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by "
        "torch.compile as an opaque value type. Calling register_constant() on Enum subclasses "
        "is deprecated and will be an error in a future release.",
        loggers=("torch.utils._pytree",),
    ),
    Noise(
        "lightning-leafspec",
        "Lightning 2.6 builds torch's deprecated LeafSpec when it moves a batch to the device "
        "(lightning/pytorch/utilities/_pytree.py); internal to Lightning, with the same result.",
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
        "treespec.is_leaf()` instead.",
        category=FutureWarning,
    ),
    Noise(
        "litlogger-tip",
        "Lightning advertises its cloud logger (litlogger) in every Trainer; litcompress logs to "
        "TensorBoard and its own report.",
        r"💡 Tip: For seamless cloud logging",
        "💡 Tip: For seamless cloud logging and experiment tracking, try installing "
        "[litlogger](https://pypi.org/project/litlogger/) to enable LitLogger, which logs metrics "
        "and artifacts automatically to the Lightning Experiments platform.",
        loggers=_LIGHTNING_RANK_ZERO,
    ),
    Noise(
        "stepping-batches",
        "Lightning says it counts the training batches when the learning-rate schedule asks for "
        "the run's number of steps: an internal step, nothing to act on.",
        r"Loading `train_dataloader` to estimate number of stepping batches",
        "Loading `train_dataloader` to estimate number of stepping batches.",
        loggers=_LIGHTNING_RANK_ZERO,
    ),
    Noise(
        "no-gpu",
        "Lightning's 'GPU available: False, used: False' on a machine without a GPU says nothing "
        "(with a GPU, the line is kept, and Lightning warns when it goes unused).",
        r"GPU available: False",
        "GPU available: False, used: False",
        loggers=_LIGHTNING_RANK_ZERO,
    ),
    Noise(
        "no-tpu",
        "Lightning's 'TPU available: False' line: litcompress runs on CPUs and GPUs (Lightning "
        "warns separately when a TPU goes unused).",
        r"TPU available: False",
        "TPU available: False, using: 0 TPU cores",
        loggers=_LIGHTNING_RANK_ZERO,
    ),
)


class _Drop(logging.Filter):
    """Drops the records of one logger whose message starts as one of ``patterns``."""

    def __init__(self, patterns: list[re.Pattern[str]]) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in self.patterns)


def verbose_requested() -> bool:
    """Whether ``LITCOMPRESS_VERBOSE`` asks for every line (any value but empty, 0, false, no)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def install(verbose: bool | None = None) -> bool:
    """Filter the :data:`NOISE` lines out of this process (again: a no-op).

    Args:
        verbose: install nothing, so that every line shows (``None``: as ``LITCOMPRESS_VERBOSE``
            says).

    Returns:
        whether the filters are installed.
    """
    if verbose or (verbose is None and verbose_requested()):
        return False
    by_logger: dict[str, list[re.Pattern[str]]] = {}
    for noise in NOISE:
        if not noise.loggers:
            warnings.filterwarnings("ignore", message=noise.message, category=noise.category)
        for name in noise.loggers:
            by_logger.setdefault(name, []).append(re.compile(noise.message))
    for name, patterns in by_logger.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _Drop)]:
            logger.removeFilter(old)
        logger.addFilter(_Drop(patterns))
    return True
