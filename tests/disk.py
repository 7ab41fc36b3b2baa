"""Callbacks that make a run's disk fill or fail, for the tests of a run stopped by its disk (used
from the command line: ``+callbacks.fill._target_=tests.disk.FillDisk +callbacks.fill.epoch=1``)."""

from __future__ import annotations

import errno
import os

import lightning as L


class FillDisk(L.Callback):
    """Fills the filesystem of ``path`` (a file it writes) at the end of training epoch ``epoch``,
    after that epoch's checkpoints were written: every later write finds the disk full."""

    def __init__(self, path: str, epoch: int = 1) -> None:
        self.path = path
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch != self.epoch:
            return
        with open(self.path, "wb", buffering=0) as file:
            for chunk in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        file.write(bytes(chunk))
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise


class FailWriting(L.Callback):
    """Raises the error a writer gets from a full (``ENOSPC``) or failing (``EIO``) disk at the end
    of training epoch ``epoch``, naming ``filename`` as the file written (none: as TensorBoard's
    event writer, which does not say)."""

    def __init__(self, epoch: int = 1, code: str = "ENOSPC", filename: str | None = None) -> None:
        self.epoch = epoch
        self.code = getattr(errno, code)
        self.filename = filename

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise OSError(self.code, os.strerror(self.code), self.filename)
