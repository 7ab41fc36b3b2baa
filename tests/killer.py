"""A callback that kills its own training process, for the resume tests (used from the command
line: ``+callbacks.kill._target_=tests.killer.KillAt +callbacks.kill.epoch=2``)."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAt(L.Callback):
    """Sends ``signal`` (a name: SIGKILL, SIGINT, SIGTERM) to this process when ``epoch`` starts,
    after the checkpoint of the epoch before was written."""

    def __init__(self, epoch: int, signal: str = "SIGKILL") -> None:
        self.epoch = epoch
        self.signal = signal

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            if self.signal == "SIGINT":
                # As Ctrl+C in a terminal: a process started by a test worker may inherit SIGINT
                # ignored, which Python then leaves ignored.
                signal.signal(signal.SIGINT, signal.default_int_handler)
            os.kill(os.getpid(), getattr(signal, self.signal))
