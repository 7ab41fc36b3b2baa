"""What the compression callbacks share: keeping Lightning's bookkeeping true to the network."""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


def reset_best_checkpoint(trainer: L.Trainer) -> None:
    """Forget the best checkpoint after the network changed form (pruned, fake-quantized).

    Earlier checkpoints hold another architecture and could not be tested as "best". Lightning
    has no API for this, so ModelCheckpoint's public attributes are reset (pinned: lightning 2.6).
    """
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback.best_k_models = {}
            callback.best_model_score = None
            callback.best_model_path = ""
            callback.kth_best_model_path = ""
            callback.kth_value = torch.tensor(-math.inf if callback.mode == "max" else math.inf)
