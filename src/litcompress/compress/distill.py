"""Knowledge distillation: the student learns from a frozen teacher's softened predictions.

The loss becomes ``(1 - alpha) * CE + alpha * T^2 * KL(p_teacher || p_student)`` with both sides
softened by ``softmax(logits / T)`` (Hinton et al., 2015). The teacher is a trained litcompress
network: ``teacher_checkpoint``, or by default the network as it enters the run (``init_from``),
copied before pruning or quantization change the student. It runs in eval mode without gradients
on the student's device, is never in the optimizer and never saved in the student's checkpoints:
they record where it came from.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from litcompress.errors import ConfigError
from litcompress.module import ClassifierModule

log = logging.getLogger(__name__)


class DistillCallback(Callback):
    """``compress=distill``: train the student against a frozen teacher's logits.

    Args:
        teacher_checkpoint: a litcompress checkpoint (pruned ones included) whose network teaches;
            ``None``: the network as it enters the run, which needs ``init_from``.
        alpha: weight of the distillation term; the cross-entropy gets ``1 - alpha``.
        temperature: softmax temperature ``T`` of both sides; the term is scaled by ``T^2`` so that
            its gradients keep their size as ``T`` changes.
        init_from: the run's ``init_from`` (set by the config, not by hand): where the default
            teacher comes from, recorded in checkpoints and reloaded when a run resumes.
        ckpt_path: the run's ``ckpt_path`` (set by the config): a resumed run without a teacher
            option finds its teacher in the checkpoint's record.
    """

    # First: the default teacher is the student before pruning or quantization change it.
    order = 5

    def __init__(
        self,
        teacher_checkpoint: str | None = None,
        alpha: float = 0.5,
        temperature: float = 4.0,
        init_from: str | None = None,
        ckpt_path: str | None = None,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(
                f"compress.distill.alpha={alpha} must be in (0, 1]: the weight of the "
                f"distillation term (0.5 weighs it equal to the cross-entropy)."
            )
        if temperature <= 0:
            raise ConfigError(
                f"compress.distill.temperature={temperature} must be > 0 (typical: 2 to 8)."
            )
        from litcompress.checkpoint import read_checkpoint, require_file

        if teacher_checkpoint is None and init_from is None and ckpt_path is not None:
            # Resuming: the checkpoint says where its teacher came from.
            meta = read_checkpoint(ckpt_path, "ckpt_path")["litcompress"]
            teacher_checkpoint = meta.get("distill_teacher")
        if teacher_checkpoint is None and init_from is None:
            raise ConfigError(
                "compress.distill needs a trained teacher: set compress.distill.teacher_checkpoint "
                "to a litcompress checkpoint, or start the run from one with init_from=... (the "
                "network as it enters the run then teaches its compressed self)."
            )
        option = "compress.distill.teacher_checkpoint" if teacher_checkpoint else "init_from"
        self.teacher_path = str(require_file(teacher_checkpoint or init_from, option))
        self.from_checkpoint = teacher_checkpoint is not None
        self.alpha = alpha
        self.temperature = temperature
        self.teacher: nn.Module | None = None
        self.teacher_val_acc: float | None = None

    # -- the teacher ------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: ClassifierModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.from_checkpoint or trainer.ckpt_path:
            # Resuming, the student has moved on: the teacher comes back from its file.
            teacher = self._load_teacher(pl_module)
        else:
            teacher = copy.deepcopy(pl_module.net)
        self.teacher = teacher.eval().requires_grad_(False)
        pl_module.loss_terms["kd_loss"] = self.distillation_loss
        pl_module.ce_weight = 1.0 - self.alpha
        pl_module.checkpoint_extras["distill_teacher"] = self.teacher_path

    def _load_teacher(self, pl_module: ClassifierModule) -> nn.Module:
        from litcompress.checkpoint import load_network, read_checkpoint

        meta = read_checkpoint(self.teacher_path, "compress.distill.teacher_checkpoint")
        config = meta["litcompress"]["model_config"]
        student = pl_module.model_config or {}
        for key in ("num_classes", "in_channels", "image_size"):
            if config.get(key) != student.get(key):
                raise ConfigError(
                    f"The teacher {self.teacher_path} was trained for {key}={config.get(key)}, "
                    f"the student has {key}={student.get(key)}: distil from a network trained on "
                    f"the same data."
                )
        return load_network(self.teacher_path)

    def on_fit_start(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        self.teacher.to(pl_module.device)

    def on_train_start(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        if self.teacher_val_acc is None and trainer.datamodule is not None:
            self.teacher_val_acc = self._evaluate(trainer, pl_module)
            log.info("Teacher validation accuracy: %.4f", self.teacher_val_acc)
            for logger in trainer.loggers:
                logger.log_metrics({"teacher/val_acc": self.teacher_val_acc}, step=0)

    @torch.no_grad()
    def _evaluate(self, trainer: L.Trainer, pl_module: ClassifierModule) -> float:
        accuracy = MulticlassAccuracy(pl_module.num_classes, average="micro").to(pl_module.device)
        batches = trainer.num_val_batches[0] if trainer.num_val_batches else float("inf")
        for index, (x, y) in enumerate(trainer.datamodule.val_dataloader()):
            if index >= batches:
                break
            accuracy.update(self.teacher(x.to(pl_module.device)), y.to(pl_module.device))
        # Every rank saw the whole validation split: nothing to gather.
        return float(accuracy.compute()) if accuracy.update_count else float("nan")

    # -- the loss ---------------------------------------------------------------------------------
    def distillation_loss(self, inputs: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        """``alpha * T^2 * KL(teacher || student)`` on softened logits (a ClassifierModule term)."""
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        t = self.temperature
        kl = F.kl_div(
            F.log_softmax(logits / t, dim=1),
            F.log_softmax(teacher_logits / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return self.alpha * t * t * kl

    # -- checkpoints and report -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"teacher_path": self.teacher_path, "teacher_val_acc": self.teacher_val_acc}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.teacher_val_acc = state_dict["teacher_val_acc"]
        if Path(state_dict["teacher_path"]) != Path(self.teacher_path):
            log.warning(
                "The checkpoint was distilled from %s; this run distils from %s.",
                state_dict["teacher_path"],
                self.teacher_path,
            )

    def report_entries(self) -> dict[str, Any]:
        """What this technique adds to report.json."""
        return {
            "distill": {
                "teacher": self.teacher_path,
                "teacher_val_acc": self.teacher_val_acc,
                "alpha": self.alpha,
                "temperature": self.temperature,
            }
        }
