"""Quantization-aware training that ends in a real int8 model (torchao PT2E, or torch.ao FX).

Training runs on a fake-quantized copy of the network (:class:`FakeQuantNet`); at the end of the
run its weights are converted to int8 kernels, saved as a deployable artifact in the run folder
and measured: the report's ``after`` entry is the int8 model, not the fake-quantized one.

Backends:

* ``pt2e`` (default): ``torch.export`` + torchao's ``prepare_qat_pt2e`` with the x86 inductor
  quantizer (per-channel int8 weights, int8 activations); converted and compiled by inductor into
  oneDNN int8 kernels. Artifact: ``model_int8.pt2`` (``torch.export.save``). Needs a C++ compiler.
* ``fx``: torch.ao's ``prepare_qat_fx`` / ``convert_fx`` with the x86 qconfig; runs int8 fbgemm
  kernels in eager mode, no compiler needed. Artifact: ``model_int8.pt`` (a state dict plus the
  network's config, loaded with ``weights_only=True``).

:func:`load_int8` reloads either artifact in a fresh process, ready to run at int8 speed.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from litcompress.compress.common import reset_best_checkpoint
from litcompress.errors import ConfigError
from litcompress.module import CHECKPOINT_KEY, ClassifierModule
from litcompress.report import (
    ModelStats,
    atomic_path,
    count_macs,
    count_params,
    measure_latency_ms,
    state_dict_bytes,
)

log = logging.getLogger(__name__)

BACKENDS = ("pt2e", "fx")
ARTIFACTS = {"pt2e": "model_int8.pt2", "fx": "model_int8.pt"}
# Batch of the example input used to trace the network (> 1: BatchNorm trains on it).
_TRACE_BATCH = 4


# -- the fake-quantized network ---------------------------------------------------------------
class FakeQuantNet(nn.Module):
    """A network prepared for QAT, whose behaviour follows its ``training`` flag.

    An exported graph ignores ``.train()``/``.eval()``, and Lightning restores training modes by
    setting ``module.training`` directly, so the graph's BatchNorm and dropout are switched here,
    lazily, when the flag has changed since the last forward pass. Observers only update while
    training (not on validation data) and not once frozen; BatchNorm statistics stop updating once
    frozen.

    Args:
        graph: the prepared ``torch.fx.GraphModule``.
        backend: ``"pt2e"`` or ``"fx"``, the backend that prepared it.
    """

    def __init__(self, graph: torch.fx.GraphModule, backend: str) -> None:
        super().__init__()
        self.graph = graph
        self.backend = backend
        self.bn_frozen = False
        self.observers_frozen = False
        # The modes the graph is in now (prepared graphs start in training mode).
        self._bn_training = True
        self._dropout_training = True
        self._observing: bool | None = True
        self._has_dropout = any("dropout" in str(n.target) for n in graph.graph.nodes)
        self._fused_bn = [m for m in graph.modules() if hasattr(m, "freeze_bn")]
        # Loaded observer flags may differ from what this wrapper last applied.
        self.register_load_state_dict_post_hook(lambda module, _: module._forget_observing())

    def _forget_observing(self) -> None:
        self._observing = None

    def train(self, mode: bool = True) -> FakeQuantNet:
        if self.backend == "fx":
            return super().train(mode)
        # An exported graph refuses .train()/.eval(); forward() switches it when the flag changed.
        self.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        self.sync_mode()
        return self.graph(x)

    def sync_mode(self) -> None:
        """Bring the graph's BatchNorm, dropout and observers in line with the flags."""
        bn_training = self.training and not self.bn_frozen
        if bn_training != self._bn_training or self._fused_bn_out_of_step(bn_training):
            self._switch_batchnorm(bn_training)
            self._bn_training = bn_training
        if self.backend == "pt2e" and self._has_dropout and self.training != self._dropout_training:
            from torchao.quantization.pt2e.export_utils import _replace_dropout

            _replace_dropout(self.graph, train_to_eval=not self.training)
            self._dropout_training = self.training
        observing = self.training and not self.observers_frozen
        if observing != self._observing:
            self.graph.apply(_observer_switch(self.backend, observing))
            self._observing = observing

    def _fused_bn_out_of_step(self, training: bool) -> bool:
        # FX's fused conv-bn modules leave their BatchNorm's flag alone once frozen, and Lightning
        # restores flags module by module: check the flags themselves, not what was last applied.
        return any(m.bn.training != training for m in self._fused_bn)

    def _switch_batchnorm(self, training: bool) -> None:
        if self.backend == "pt2e":
            # torchao's own train/eval rewrite, limited to BatchNorm (dropout follows `training`).
            from torchao.quantization.pt2e.export_utils import _replace_batchnorm

            _replace_batchnorm(self.graph, train_to_eval=not training)
        else:
            from torch.ao.nn.intrinsic import qat

            self.graph.apply(qat.update_bn_stats if training else qat.freeze_bn_stats)


def _observer_switch(backend: str, enable: bool) -> Any:
    if backend == "pt2e":
        from torchao.quantization import pt2e
    else:
        from torch.ao import quantization as pt2e
    return pt2e.enable_observer if enable else pt2e.disable_observer


# -- prepare, convert, save, load -------------------------------------------------------------
def check_backend(backend: str) -> None:
    """Raise ConfigError if ``backend`` is unknown or cannot produce int8 kernels here."""
    if backend not in BACKENDS:
        raise ConfigError(
            f"compress.qat.backend={backend!r} is unknown; choose pt2e (torchao, compiled int8) or "
            f"fx (torch.ao, eager int8, no compiler needed)."
        )
    if backend == "pt2e":
        from torch._inductor import config as inductor_config
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except Exception as error:
            raise ConfigError(
                f"compress.qat.backend=pt2e compiles its int8 kernels with inductor, which needs a "
                f"C++ compiler, and none was found (looked for {inductor_config.cpp.cxx}; "
                f"{type(error).__name__}: {error}). Install one (e.g. apt install g++, or set "
                f"CXX), or use compress.qat.backend=fx, which runs int8 without compiling."
            ) from error
    if "x86" not in torch.backends.quantized.supported_engines:
        raise ConfigError(
            f"compress.qat targets x86 int8 kernels, which this torch build lacks (quantized "
            f"engines: {torch.backends.quantized.supported_engines}). Run on an x86-64 machine."
        )


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    # torch.ao's FX workflow and torch.export print deprecation notes at every call.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*deprecated")
        yield


def _batch_dim() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch", min=1, max=65536)},)


def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI int8 dot-product instructions (AVX512-VNNI; AMX implies it)."""
    return torch.cpu._is_vnni_supported()


def _x86_quantizer(reduce_range: bool) -> Any:
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    return X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_qat=True, reduce_range=reduce_range)
    )


def prepare(
    net: nn.Module, backend: str, input_shape: Sequence[int], reduce_range: bool = False
) -> FakeQuantNet:
    """Fake-quantize ``net`` for training with ``backend``, on ``net``'s device.

    ``net`` itself may be changed (FX fuses modules in place): pass a copy to keep it.
    ``reduce_range`` (pt2e) quantizes activations to 7 bits, so that int8 kernels on CPUs without
    VNNI do not saturate their 16-bit intermediate sums.

    Raises:
        ConfigError: the network cannot be traced; the message names the failing op or module.
    """
    device = next(net.parameters()).device
    example = (torch.randn(_TRACE_BATCH, *input_shape, device=device),)
    net.train()
    name = type(net).__name__
    with _quiet_deprecations():
        if backend == "pt2e":
            from torchao.quantization.pt2e import move_exported_model_to_train
            from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

            try:
                exported = torch.export.export(
                    net, example, dynamic_shapes=_batch_dim(), strict=True
                )
            except Exception as error:
                raise ConfigError(
                    f"torch.export cannot capture {name} for compress.qat.backend=pt2e: "
                    f"{type(error).__name__}: {_first_lines(error)} Make that module "
                    f"export-friendly, or try compress.qat.backend=fx."
                ) from error
            graph = prepare_qat_pt2e(exported.module(), _x86_quantizer(reduce_range))
            move_exported_model_to_train(graph)
        else:
            from torch.ao.quantization import get_default_qat_qconfig_mapping
            from torch.ao.quantization.quantize_fx import prepare_qat_fx

            try:
                graph = prepare_qat_fx(net, get_default_qat_qconfig_mapping("x86"), example)
            except Exception as error:
                raise ConfigError(
                    f"torch.fx cannot trace {name} for compress.qat.backend=fx: "
                    f"{type(error).__name__}: {_first_lines(error)} Make that module traceable, "
                    f"or try compress.qat.backend=pt2e."
                ) from error
    return FakeQuantNet(graph, backend).to(device)


def _first_lines(error: Exception, lines: int = 6) -> str:
    text = "\n".join(str(error).strip().splitlines()[:lines])
    return text if text.endswith(".") else text + "."


def convert(qat_net: FakeQuantNet) -> nn.Module:
    """The int8 model of a fake-quantized network on the CPU (``qat_net`` is consumed)."""
    qat_net.eval()
    qat_net.sync_mode()
    graph = qat_net.graph
    with _quiet_deprecations():
        if qat_net.backend == "pt2e":
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

            converted = convert_pt2e(graph)
            _drop_unused_tensors(converted)
            return converted
        from torch.ao.quantization.quantize_fx import convert_fx

        return convert_fx(graph)


def _drop_unused_tensors(graph: torch.fx.GraphModule) -> None:
    """Delete the fp32 weights that conversion replaced by int8 constants but left attached."""
    graph.graph.eliminate_dead_code()
    graph.recompile()
    used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name, _ in [*graph.named_parameters(), *graph.named_buffers()]:
        if name not in used:
            owner_name, _, attr = name.rpartition(".")
            delattr(graph.get_submodule(owner_name) if owner_name else graph, attr)


def save_int8(
    model: nn.Module,
    backend: str,
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    meta: dict[str, Any],
) -> Path:
    """Write the int8 ``model`` to ``path`` whole or not at all.

    ``pt2e``: an ExportedProgram (``torch.export.save``) with a dynamic batch dimension. ``fx``: a
    state dict plus ``meta`` (the network's config and architecture), which :func:`load_int8`
    needs to rebuild it.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if backend == "pt2e":
            example = (torch.randn(_TRACE_BATCH, *input_shape),)
            with _quiet_deprecations():
                program = torch.export.export(
                    model, example, dynamic_shapes=_batch_dim(), strict=True
                )
            buffer = io.BytesIO()  # the archive is named after the file: not after `tmp`
            torch.export.save(program, buffer)
            tmp.write_bytes(buffer.getbuffer())
        else:
            torch.save({CHECKPOINT_KEY: meta, "state_dict": model.state_dict()}, tmp)
    return path


def enable_int8_kernels() -> None:
    """Make this process able to load and compile torchao int8 programs at full speed.

    ``import torchao`` registers the quantize/dequantize ops a ``.pt2`` refers to; the x86
    quantizer module registers inductor's int8 fusion passes (without it the compile succeeds
    but runs reference kernels, ~5x slower); freezing lets inductor pack the int8 weights.
    """
    import torchao  # noqa: F401
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
    from torch._inductor import config as inductor_config

    inductor_config.freezing = True


def load_int8(path: str | os.PathLike[str], compile: bool = True) -> nn.Module:
    """Reload an int8 artifact written by a QAT run, in eval mode on the CPU.

    Args:
        path: ``model_int8.pt2`` (pt2e) or ``model_int8.pt`` (fx) from a run folder.
        compile: for ``.pt2``, compile with inductor (int8 kernels; the first call per batch size
            compiles, ~15 s). Without it the program runs slow reference ops.
    """
    from litcompress.checkpoint import require_file

    resolved = require_file(path, "path")
    if resolved.suffix == ".pt2":
        enable_int8_kernels()
        module = torch.export.load(resolved).module()
        return torch.compile(module, dynamic=False) if compile else module
    saved = torch.load(resolved, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or CHECKPOINT_KEY not in saved:
        raise ConfigError(f"{path} is not an int8 model written by litcompress (fx backend).")
    from litcompress.checkpoint import rebuild_network

    meta = saved[CHECKPOINT_KEY]
    twin = rebuild_network(meta["model_config"], meta).cpu()
    size = meta["model_config"]["image_size"]
    with torch.no_grad():  # conversion needs observed ranges; the saved state replaces them
        twin(torch.zeros(_TRACE_BATCH, meta["model_config"]["in_channels"], size, size))
    int8 = convert(twin)
    int8.load_state_dict(saved["state_dict"])
    return int8.eval()


# -- the callback -----------------------------------------------------------------------------
class QATCallback(Callback):
    """``compress=qat``: quantization-aware training, then a real int8 model.

    From ``start_epoch`` the network trains fake-quantized (weights per channel, activations per
    tensor, int8); at the end :meth:`deploy` converts it, saves the artifact in the run folder and
    measures it. Checkpoints record that the network is quantization-aware, so they resume and
    reload (``restore_architecture`` prepares a fresh network the same way before loading).

    Args:
        backend: ``pt2e`` (torchao + inductor, default) or ``fx`` (torch.ao, eager int8).
        start_epoch: epoch at which QAT starts; ``None``: 0 after ``init_from``, else the last
            third of training (``max_epochs - max(1, max_epochs // 3)``).
        freeze_bn_epoch: from this epoch on BatchNorm uses its running statistics (``None``:
            never). Usual: one or two epochs before the end.
        freeze_observer_epoch: from this epoch on the quantization ranges stay fixed (``None``:
            never).
        reduce_range: (pt2e) 7-bit activations, for deployment CPUs without VNNI instructions;
            ``None``: decided by this machine's CPU.
    """

    order = 30  # last: it quantizes whatever pruning and distillation made of the network

    def __init__(
        self,
        backend: str = "pt2e",
        start_epoch: int | None = None,
        freeze_bn_epoch: int | None = None,
        freeze_observer_epoch: int | None = None,
        reduce_range: bool | None = None,
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
        self.started_epoch: int | None = None

    @property
    def form(self) -> dict[str, Any]:
        """How the network is prepared: recorded in checkpoints, so that they rebuild the same."""
        if self.backend == "fx":  # torch.ao's x86 qconfig decides the activation range itself
            return {"backend": "fx"}
        return {"backend": self.backend, "reduce_range": self.reduce_range}

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
            self.start_epoch = 0 if trained else max_epochs - max(1, max_epochs // 3)
        if 0 <= max_epochs <= self.start_epoch:
            raise ConfigError(
                f"compress.qat.start_epoch={self.start_epoch} is not before trainer.max_epochs="
                f"{max_epochs}: QAT would never train. Lower start_epoch or raise max_epochs."
            )
        for option in ("freeze_bn_epoch", "freeze_observer_epoch"):
            value = getattr(self, option)
            if value is not None and value < self.start_epoch:
                raise ConfigError(
                    f"compress.qat.{option}={value} is before QAT starts (start_epoch="
                    f"{self.start_epoch}): set it between start_epoch and max_epochs."
                )
        self._check_after_pruning(trainer)
        if trainer.ckpt_path or prepared:  # resuming: the checkpoint restores the prepared net
            return
        if self.start_epoch == 0:
            self._start(trainer, pl_module)
        else:  # fail on a network that cannot be traced now, not after the float epochs
            prepare(copy.deepcopy(pl_module.net), input_shape=pl_module.input_shape, **self.form)

    def _check_after_pruning(self, trainer: L.Trainer) -> None:
        from litcompress.compress.prune import PruneCallback

        for callback in trainer.callbacks:
            if isinstance(callback, PruneCallback) and callback.schedule[-1] > self.start_epoch:
                raise ConfigError(
                    f"compress.qat.start_epoch={self.start_epoch} is before the last pruning step "
                    f"(epoch {callback.schedule[-1]}): a quantized network cannot be pruned. Set "
                    f"compress.qat.start_epoch >= {callback.schedule[-1]}, or prune earlier."
                )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        net = pl_module.net
        if not isinstance(net, FakeQuantNet) and trainer.current_epoch >= self.start_epoch:
            self._start(trainer, pl_module)
            net = pl_module.net
            reset_best_checkpoint(trainer)
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
            prepare(pl_module.net, input_shape=pl_module.input_shape, **self.form)
        )
        pl_module.checkpoint_extras["quantization"] = self.form
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
    ) -> ModelStats | None:
        """Convert the trained network to int8, save it in ``output_dir``, and measure it.

        Args:
            module: the trained module (its network fake-quantized).
            data: the data module; its test split is used when ``evaluate``.
            output_dir: the run folder, where the artifact goes.
            evaluate: measure the int8 model's test accuracy (on the CPU).
            measure: measure size and speed; return the report's ``after`` entry.
            min_run_time_s: timing budget per batch size.

        Returns:
            the int8 model's statistics; ``None`` when not ``measure``, or when the run stopped
            before QAT started (nothing to convert).
        """
        from litcompress.checkpoint import rebuild_network

        if not isinstance(module.net, FakeQuantNet):
            log.warning(
                "compress.qat never started (start_epoch=%s, the run stopped at epoch %d): no "
                "int8 model was made; the float network is reported.",
                self.start_epoch,
                module.current_epoch,
            )
            return None
        # Convert a CPU twin (traced on the CPU) of the trained network: training may be on a GPU.
        extras = module.checkpoint_extras
        twin = rebuild_network(module.model_config, extras)
        twin.load_state_dict({k: v.cpu() for k, v in module.net.state_dict().items()})
        log.info("Converting the network to int8 (%s)", self.backend)
        int8 = convert(twin)
        meta = {"model_config": module.model_config, **module.checkpoint_extras}
        path = save_int8(
            int8, self.backend, Path(output_dir) / ARTIFACTS[self.backend], module.input_shape, meta
        )
        log.info("Saved the int8 model to %s", path)
        # Measure what was saved, loaded the way a user loads it.
        deployed = load_int8(path)
        input_shape = module.input_shape
        test_acc = None
        if evaluate:
            # As many batches as trainer.test saw (limit_test_batches), for a like-for-like figure.
            batches = module.trainer.num_test_batches if module._trainer else []
            limit = batches[0] if batches else None
            test_acc = evaluate_cpu(deployed, data.test_dataloader(), module.num_classes, limit)
            log.info("int8 test accuracy: %.4f", test_acc)
            for logger in module.loggers:
                logger.log_metrics({"int8/test_acc": test_acc}, step=module.global_step)
        if not measure:
            return None
        float_net = rebuild_network(
            module.model_config, {k: v for k, v in extras.items() if k != "quantization"}
        ).eval()
        enable_int8_kernels()
        fp32_compiled = torch.compile(float_net, dynamic=False)
        return ModelStats(
            test_acc=test_acc,
            params=count_params(float_net),
            macs=count_macs(float_net, input_shape),
            file_bytes=path.stat().st_size,
            latency_ms_b1=measure_latency_ms(deployed, input_shape, 1, min_run_time_s),
            latency_ms_b32=measure_latency_ms(deployed, input_shape, 32, min_run_time_s),
            extra={
                "int8_backend": self.backend,
                "int8_artifact": path.name,
                # The artifact also holds the program; these are its tensors alone.
                "int8_weights_bytes": state_dict_bytes(int8),
                "fp32_file_bytes": state_dict_bytes(float_net),
                "fp32_compiled_latency_ms_b1": measure_latency_ms(
                    fp32_compiled, input_shape, 1, min_run_time_s
                ),
                "fp32_compiled_latency_ms_b32": measure_latency_ms(
                    fp32_compiled, input_shape, 32, min_run_time_s
                ),
            },
        )

    def report_entries(self) -> dict[str, Any]:
        """What this technique adds to report.json."""
        return {
            "qat": {
                "backend": self.backend,
                "reduce_range": self.form.get("reduce_range"),
                "start_epoch": self.started_epoch,
                "freeze_bn_epoch": self.freeze_bn_epoch,
                "freeze_observer_epoch": self.freeze_observer_epoch,
                "artifact": ARTIFACTS[self.backend],
            }
        }


def evaluate_cpu(
    net: nn.Module, loader: Any, num_classes: int, max_batches: float | None = None
) -> float:
    """Accuracy of ``net`` over (the first ``max_batches`` batches of) ``loader`` on the CPU.

    Short last batches are padded to the first batch's size, so that a model compiled for one
    batch size is not compiled again.
    """
    # Only this process evaluates, even under DDP: no syncing with the other ranks.
    accuracy = MulticlassAccuracy(num_classes, average="micro", sync_on_compute=False)
    batch_size = None
    with torch.no_grad():
        for x, y in islice(loader, None if max_batches in (None, math.inf) else int(max_batches)):
            batch_size = batch_size or len(x)
            n = len(x)
            if n < batch_size:
                x = torch.cat([x, x[-1:].expand(batch_size - n, *x.shape[1:])])
            accuracy.update(net(x)[:n], y)
    return float(accuracy.compute())
