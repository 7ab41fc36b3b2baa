"""Post-training quantization: int8 from the trained network and a few hundred images, no
training (torchao PT2E with the x86 inductor quantizer).

At the end of the run the trained float network is exported, observed on
``calibration_batches`` training batches and converted; the int8 model is saved, reloaded and
measured exactly as QAT's (:func:`litcompress.deploy.int8.deliver_int8`): the report's
``after`` entry is the int8 model. ``init_from=<ckpt> compress=ptq trainer.max_epochs=0``
quantizes a trained checkpoint without training; ``compress=[prune,ptq]`` prunes, fine-tunes,
then calibrates the pruned network. When PTQ loses too much accuracy, ``compress=qat`` trains
the ranges instead.
"""

from __future__ import annotations

import copy
import logging
import os
from itertools import islice
from typing import Any

import lightning as L

from litcompress.checkpoint import cpu_twin
from litcompress.compat import cpu_has_vnni
from litcompress.compress.base import CompressionCallback
from litcompress.deploy.int8 import ARTIFACTS, deliver_int8
from litcompress.errors import ConfigError
from litcompress.measure import ModelStats
from litcompress.module import ClassifierModule
from litcompress.quant.backends import (
    OBSERVERS,
    check_backend,
    export_float,
    quantize_post_training,
)

log = logging.getLogger(__name__)


class PTQCallback(CompressionCallback):
    """``compress=ptq``: static (or dynamic) int8 post-training quantization at the end of the run.

    Args:
        calibration_batches: training batches whose activations set the int8 ranges (static).
        observer: how calibration sets each activation range: ``histogram`` (torchao's default:
            minimises the quantization error, ignores outliers) or ``minmax`` (the full range).
        dynamic: quantize activations at run time instead (linear layers only, no calibration):
            for linear-heavy networks such as ``vit``.
        reduce_range: 7-bit activations, for deployment CPUs without VNNI instructions; ``None``:
            decided by this machine's CPU.
        attention: a Transformer's attention matmuls (query x key, probabilities x value) are
            int8 too (static only), through eager attention: faster in ONNX Runtime and torch,
            slower in OpenVINO, which runs fused attention best (bench/text.py); ``False`` keeps
            fused fp32 attention.
    """

    name = "ptq"
    order = 30  # last: it quantizes whatever pruning and distillation made of the network
    delivers_int8 = True

    def __init__(
        self,
        calibration_batches: int = 32,
        observer: str = "histogram",
        dynamic: bool = False,
        reduce_range: bool | None = None,
        attention: bool = False,
    ) -> None:
        if (
            isinstance(calibration_batches, bool)
            or not isinstance(calibration_batches, int)
            or (calibration_batches < 1)
        ):
            raise ConfigError(
                f"compress.ptq.calibration_batches={calibration_batches!r} must be a whole number "
                f"of training batches >= 1 (e.g. 32: a few hundred to a few thousand images)."
            )
        if observer not in OBSERVERS:
            raise ConfigError(
                f"compress.ptq.observer={observer!r} is unknown; choose one of "
                f"{', '.join(OBSERVERS)}."
            )
        self.calibration_batches = calibration_batches
        self.observer = observer
        self.dynamic = dynamic
        self.reduce_range = (not cpu_has_vnni()) if reduce_range is None else reduce_range
        self.attention = attention
        self.calibration_images: int | None = None
        self._examples = "images"  # what calibration saw: images, or texts

    def setup(self, trainer: L.Trainer, pl_module: ClassifierModule, stage: str) -> None:
        if stage != "fit":
            return
        check_backend("pt2e", "compress.ptq (backend pt2e)")
        for callback in trainer.callbacks:
            if isinstance(callback, CompressionCallback) and callback.form_needs_deploy:
                raise ConfigError(
                    f"compress=ptq and compress={callback.name} both make the int8 model: choose "
                    f"one (ptq: from the trained network, no training; {callback.name}: trained "
                    f"for it, when ptq loses too much accuracy)."
                )
        # A network torch.export cannot capture fails now, not after training.
        export_float(copy.deepcopy(pl_module.net), pl_module.input_spec, "compress=ptq")

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
        """Calibrate, convert, save and measure the int8 model of the trained network."""
        twin = cpu_twin(module.net, module.model_config, module.form)
        self._examples = "images" if module.input_spec.kind == "image" else "texts"
        # Batches are (*inputs, targets): images, or token ids and attention mask.
        batches = (tuple(b[:-1]) for b in islice(data.train_dataloader(), self.calibration_batches))
        log.info(
            "Post-training int8: %s on %d training batches",
            "dynamic activations" if self.dynamic else f"calibrating ({self.observer} observer)",
            0 if self.dynamic else self.calibration_batches,
        )
        int8, self.calibration_images = quantize_post_training(
            twin,
            module.input_spec,
            () if self.dynamic else batches,
            observer=self.observer,
            dynamic=self.dynamic,
            reduce_range=self.reduce_range,
            attention=self.attention,
        )
        return deliver_int8(
            int8,
            module,
            data,
            output_dir,
            "pt2e",
            module.form,
            evaluate,
            measure,
            min_run_time_s,
            method="ptq",
            time_torch=time_torch,
        )

    def report_entries(self) -> dict[str, Any]:
        """What this technique adds to report.json."""
        mode = "dynamic" if self.dynamic else f"static, {self.observer} observer"
        return {
            "ptq": {
                "dynamic": self.dynamic,
                "observer": None if self.dynamic else self.observer,
                "reduce_range": self.reduce_range,
                "calibration_batches": self.calibration_batches,
                "calibration_images": self.calibration_images,
                "artifact": ARTIFACTS["pt2e"],
                "summary": f"int8 after training ({mode}, calibrated on "
                f"{self.calibration_images or 0} training {self._examples}), {ARTIFACTS['pt2e']}",
            }
        }
