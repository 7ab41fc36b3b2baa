"""Quantization-aware training that ends in a real int8 model (torchao PT2E, or torch.ao FX).

From ``start_epoch`` the network trains fake-quantized (:class:`~litcompress.quant.fake_quant.
FakeQuantNet`); at the end of the run it is converted to int8 kernels, saved as a deployable
artifact in the run folder and measured (:mod:`litcompress.deploy.int8`): the report's
``after`` entry is the int8 model, not the fake-quantized one. Backends: ``pt2e`` (default, torchao
+ inductor, ``model_int8.pt2``) and ``fx`` (torch.ao, eager int8, ``model_int8.pt``); see
:mod:`litcompress.quant.backends`.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import lightning as L
from torch import nn

from litcompress.compat import cpu_has_vnni
from litcompress.compress.base import CompressionCallback
from litcompress.deploy.int8 import ARTIFACTS, deploy_int8
from litcompress.errors import ConfigError
from litcompress.measure import ModelStats
from litcompress.module import ClassifierModule
from litcompress.quant.backends import check_backend, prepare
from litcompress.quant.fake_quant import FakeQuantNet
from litcompress.spec import Inputs

log = logging.getLogger(__name__)


# -- the callback -----------------------------------------------------------------------------
class QATCallback(CompressionCallback):
    """``compress=qat``: quantization-aware training, then a real int8 model.

    From ``start_epoch`` the network trains fake-quantized (weights per channel, activations per
    tensor, int8); at the end :meth:`deploy` converts it, saves the artifact in the run folder and
    measures it. Checkpoints record that the network is quantization-aware, so they resume and
    reload (``restore_architecture`` prepares a fresh network the same way before loading).

    Args:
        backend: ``pt2e`` (torchao + inductor, default) or ``fx`` (torch.ao, eager int8).
        start_epoch: epoch at which QAT starts; ``None``: once the techniques before it stopped
            changing the network's form (they leave it the last third of the run when their own
            ends are ``None``); without them 0 after ``init_from``, else the last third of
            training (``max_epochs - max(1, max_epochs // 3)``).
        freeze_bn_epoch: from this epoch on BatchNorm uses its running statistics (``None``:
            never). Usual: one or two epochs before the end.
        freeze_observer_epoch: from this epoch on the quantization ranges stay fixed (``None``:
            never).
        reduce_range: (pt2e) 7-bit activations, for deployment CPUs without VNNI instructions;
            ``None``: decided by this machine's CPU.
        attention: (pt2e) a Transformer's attention matmuls (query x key, probabilities x value)
            are int8 too, through eager attention (as :class:`PTQCallback`'s ``attention``);
            ``False`` keeps fused fp32 attention.
    """

    name = "qat"
    order = 30  # last: it quantizes whatever pruning and distillation made of the network
    delivers_int8 = True
    form_key = "quantization"
    form_needs_deploy = True
    delivered_hint = "the run folder's model_int8.pt2, litcompress.deploy.int8.load_int8"

    def __init__(
        self,
        backend: str = "pt2e",
        start_epoch: int | None = None,
        freeze_bn_epoch: int | None = None,
        freeze_observer_epoch: int | None = None,
        reduce_range: bool | None = None,
        attention: bool = False,
    ) -> None:
        check_backend(backend)
        for option, value in (
            ("start_epoch", start_epoch),
            ("freeze_bn_epoch", freeze_bn_epoch),
            ("freeze_observer_epoch", freeze_observer_epoch),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"compress.qat.{option}={value} must be >= 0 (or null).")
        self.backend = backend
        self.start_epoch = start_epoch
        self.freeze_bn_epoch = freeze_bn_epoch
        self.freeze_observer_epoch = freeze_observer_epoch
        # Without VNNI, x86 int8 kernels sum u8 x s8 pairs in 16 bits and saturate on full-range
        # activations (measured: -0.8 point against the fake-quantized network on an AVX2 CPU).
        self.reduce_range = (not cpu_has_vnni()) if reduce_range is None else reduce_range
        self.attention = attention
        self.started_epoch: int | None = None

    @property
    def quantization(self) -> dict[str, Any]:
        """How the network is prepared: recorded in checkpoints, so that they rebuild the same."""
        if self.backend == "fx":  # torch.ao's x86 qconfig decides the activation range itself
            return {"backend": "fx"}
        return {
            "backend": self.backend,
            "reduce_range": self.reduce_range,
            # Checkpoints prepared without it lack the key (prepare's default is False).
            **({"attention": True} if self.attention else {}),
        }

    @classmethod
    def restore_form(
        cls, net: nn.Module, done: Any, wanted: dict[str, Any], inputs: Inputs
    ) -> nn.Module:
        return prepare(net, inputs=inputs, **wanted)

    def last_form_change_epoch(self) -> int | None:
        return self.start_epoch

    def epochs_needed_at_end(self, max_epochs: int) -> int:
        if max_epochs < 0:
            return 0
        if self.start_epoch is not None:
            return max(max_epochs - self.start_epoch, 0)
        return max(1, max_epochs // 3)

    def state_dict(self) -> dict[str, Any]:
        return {"started_epoch": self.started_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.started_epoch = state_dict["started_epoch"]

    # -- hooks ------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: ClassifierModule, stage: str) -> None:
        if stage != "fit":
            return
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
        prepared = isinstance(pl_module.net, FakeQuantNet)
        if self.start_epoch is None:
            if max_epochs < 0 and not (pl_module.pretrained or prepared):
                raise ConfigError(
                    "compress.qat.start_epoch is needed when trainer.max_epochs is unbounded."
                )
            trained = pl_module.pretrained or prepared
            alone = 0 if trained else max_epochs - max(1, max_epochs // 3)
            # After the techniques before it stopped changing the form (they left it room).
            self.start_epoch = max(alone, 0 if prepared else self.earlier_forms_done_epoch(trainer))
        if 0 <= max_epochs <= self.start_epoch:
            late = self.forms_changed_after(trainer, -1) if not prepared else []
            because = (
                " (after the last change of form of "
                + ", ".join(f"compress.{c.name}, at epoch {last}" for c, last in late)
                + ")"
                if late
                else ""
            )
            raise ConfigError(
                f"compress.qat.start_epoch={self.start_epoch}{because} is not before "
                f"trainer.max_epochs={max_epochs}: QAT would never train. Raise "
                f"trainer.max_epochs to at least {self.start_epoch + 1}, or lower start_epoch."
            )
        for option in ("freeze_bn_epoch", "freeze_observer_epoch"):
            value = getattr(self, option)
            if value is not None and value < self.start_epoch:
                raise ConfigError(
                    f"compress.qat.{option}={value} is before QAT starts (start_epoch="
                    f"{self.start_epoch}): set it between start_epoch and max_epochs."
                )
            if value is not None and 0 <= max_epochs <= value:
                raise ConfigError(
                    f"compress.qat.{option}={value} is not before trainer.max_epochs="
                    f"{max_epochs}: it would never take effect. Set it between start_epoch "
                    f"({self.start_epoch}) and {max_epochs - 1}, or null."
                )
        self._check_after_structural_changes(trainer)
        if trainer.ckpt_path or prepared:  # resuming: the checkpoint restores the prepared net
            return
        if self.start_epoch == 0:
            self._start(trainer, pl_module)
        else:  # fail on a network that cannot be traced now, not after the float epochs
            prepare(copy.deepcopy(pl_module.net), inputs=pl_module.input_spec, **self.quantization)

    def _check_after_structural_changes(self, trainer: L.Trainer) -> None:
        """A quantized network is frozen: every technique before it must be done by start_epoch."""
        late = self.forms_changed_after(trainer, self.start_epoch)
        if late:
            last = max(epoch for _, epoch in late)
            max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
            longer = f" with trainer.max_epochs >= {last + 1}" if 0 <= max_epochs <= last else ""
            raise ConfigError(
                f"compress.qat.start_epoch={self.start_epoch} is before the last change of form of "
                + ", ".join(f"compress.{c.name} (epoch {epoch})" for c, epoch in late)
                + f": a quantized network cannot change form any more. Set "
                f"compress.qat.start_epoch={last}{longer}, or leave it null (QAT then starts "
                f"when they are done), or end them earlier."
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        net = pl_module.net
        if not isinstance(net, FakeQuantNet) and trainer.current_epoch >= self.start_epoch:
            self._start(trainer, pl_module)
            net = pl_module.net
            self.network_changed(trainer, pl_module)
        if isinstance(net, FakeQuantNet):
            epoch = trainer.current_epoch
            net.bn_frozen = self.freeze_bn_epoch is not None and epoch >= self.freeze_bn_epoch
            net.observers_frozen = (
                self.freeze_observer_epoch is not None and epoch >= self.freeze_observer_epoch
            )

    def _start(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        # Every rank prepares its own copy: tracing is deterministic and the weights are in sync.
        log.info("Quantization-aware training starts (backend %s)", self.backend)
        # Optimizers and schedulers follow (before fitting, Lightning builds them later).
        pl_module.replace_network(
            prepare(pl_module.net, inputs=pl_module.input_spec, **self.quantization)
        )
        pl_module.form[self.form_key] = self.quantization
        self.started_epoch = trainer.current_epoch

    # -- the int8 model ---------------------------------------------------------------------------
    def deploy(
        self,
        module: ClassifierModule,
        data: L.LightningDataModule,
        output_dir: str | os.PathLike[str],
        evaluate: bool,
        measure: bool,
        min_run_time_s: float = 1.0,
        time_torch: bool = True,
    ) -> ModelStats | None:
        """Convert the trained network to int8, save it in ``output_dir``, and measure it.

        Returns ``None`` when not ``measure``, or when the run stopped before QAT started
        (nothing to convert); see :func:`litcompress.deploy.int8.deploy_int8`.
        """
        if not isinstance(module.net, FakeQuantNet):
            log.warning(
                "compress.qat never started (start_epoch=%s, the run stopped at epoch %d): no "
                "int8 model was made; the float network is reported.",
                self.start_epoch,
                module.current_epoch,
            )
            return None
        return deploy_int8(
            module,
            data,
            output_dir,
            self.backend,
            self.form_key,
            evaluate=evaluate,
            measure=measure,
            min_run_time_s=min_run_time_s,
            time_torch=time_torch,
        )

    def report_entries(self) -> dict[str, Any]:
        """What this technique adds to report.json."""
        return {
            "qat": {
                "backend": self.backend,
                "reduce_range": self.quantization.get("reduce_range"),
                "start_epoch": self.started_epoch,
                "freeze_bn_epoch": self.freeze_bn_epoch,
                "freeze_observer_epoch": self.freeze_observer_epoch,
                "artifact": ARTIFACTS[self.backend],
            }
        }
