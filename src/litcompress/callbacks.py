"""Lightning callbacks of the run itself (the compression techniques are in :mod:`compress`)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from litcompress.compat import save_last_if_skipped


class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is always the last completed epoch.

    The best checkpoints (``save_top_k`` by ``monitor``) are kept as Lightning keeps them; with
    ``save_last=True``, ``last.ckpt`` is rewritten at every save point (end of each validation, or
    of each training epoch without validation), whatever the monitored metric did, so that
    ``ckpt_path=<run>/checkpoints/last.ckpt`` resumes where the run stopped.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        save_last_if_skipped(self, trainer, train_epoch_end=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        save_last_if_skipped(self, trainer, train_epoch_end=True)
