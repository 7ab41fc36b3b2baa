"""Lightning callbacks of the run itself (the compression techniques are in :mod:`compress`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from litcompress.compat import save_last_if_skipped
from litcompress.errors import OutputError
from litcompress.seeding import GLOBAL_STREAM, epoch_seed, seed_global_generators


class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is always the last completed epoch.

    The best checkpoints (``save_top_k`` by ``monitor``) are kept as Lightning keeps them; with
    ``save_last=True``, ``last.ckpt`` is rewritten at every save point (end of each validation, or
    of each training epoch without validation), whatever the monitored metric did, so that
    ``ckpt_path=<run>/checkpoints/last.ckpt`` resumes where the run stopped. A run that trains no
    epoch saves the network it delivers as ``last.ckpt`` at the end of fitting.

    Every save is verified: Lightning 2.6 ignores a ``PermissionError`` while writing, so a run
    could train to its end and keep nothing. A checkpoint that did not reach the disk stops the
    run at once (the previous checkpoints are left as they were).
    """

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        started = time.time()
        super()._save_checkpoint(trainer, filepath)
        if not trainer.is_global_zero:
            return
        path = Path(filepath)
        if not path.is_file() or path.stat().st_mtime < started - 1:
            raise OutputError(
                f"The checkpoint {path} could not be written (the folder is not writable or the "
                f"disk is full): the run stops here rather than train on without keeping "
                f"anything. Its earlier checkpoints in {path.parent} are intact; free space or "
                f"fix the folder, then resume with ckpt_path=<the last of them>."
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        save_last_if_skipped(self, trainer, train_epoch_end=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        save_last_if_skipped(self, trainer, train_epoch_end=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run that trained no epoch (init_from=... trainer.max_epochs=0: one-shot pruning, PTQ)
        # still delivers a network: keep it as last.ckpt, which export and init_from take.
        if self.save_last and not self.last_model_path and not trainer.ckpt_path:
            path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
            self._save_checkpoint(trainer, path)
            self.last_model_path = path


class EpochSeed(L.Callback):
    """Seeds torch, numpy and ``random`` at the start of every training epoch from the run's
    ``seed`` and the epoch alone, so that what draws from them in training (dropout, stochastic
    depth, a technique's random choices) is the same in a resumed run as in the uninterrupted
    one (:mod:`litcompress.seeding`). Runs after the other callbacks' epoch-start hooks."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed_global_generators(epoch_seed(self.seed, trainer.current_epoch, GLOBAL_STREAM))


class ReportCallback(Callback):
    """Keeps the ``before`` figures and the form of the network as it entered the run in
    checkpoints, so that a resumed run reports the same (and times the same network)."""

    def __init__(self) -> None:
        self.before: dict[str, Any] | None = None
        self.before_form: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"before": self.before, "before_form": self.before_form}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = state_dict["before"]
        self.before_form = state_dict.get("before_form") or {}
