"""The config's own interpolations (``${name:...}`` in ``conf/``), registered with OmegaConf.

``train.py``, :mod:`litcompress.run` and the benchmarks import this module before a config is
resolved. It imports nothing but OmegaConf, so that registering costs nothing at start-up.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

SCRATCH_OR_FINETUNE = "scratch_or_finetune"


def scratch_or_finetune(init_from: Any, scratch: Any, finetune: Any) -> Any:
    """``scratch`` for a run that trains a new network, ``finetune`` for one that starts from a
    trained checkpoint (``init_from`` set).

    The optimizers' learning rates and the warm-up use it (``conf/optim``, ``conf/scheduler``):
    compressing a trained network fine-tunes it, at a learning rate ten times lower and without
    a fresh warm-up, which a short QAT or pruning fine-tune would not recover from. A value set
    on the command line (``optim.lr=1e-4``) replaces the interpolation, as any override does.
    """
    return finetune if init_from else scratch


def register() -> None:
    """Register litcompress's resolvers (again: a no-op)."""
    if not OmegaConf.has_resolver(SCRATCH_OR_FINETUNE):
        OmegaConf.register_new_resolver(SCRATCH_OR_FINETUNE, scratch_or_finetune)


register()
