"""Every use of a private API of torch, torchao or Lightning, in one place.

Each function wraps one private name or internal attribute that litcompress relies on, pinned by
``pyproject.toml`` (torch 2.14.1, torchao 0.18, lightning 2.6). ``tests/test_compat.py`` checks
each one against the installed versions, so that an upgrade that moves or changes them fails
there, loudly, instead of somewhere in a training run.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint


# -- torchao PT2E: switching an exported graph between training and evaluation ---------------
def replace_batchnorm(graph: torch.fx.GraphModule, train_to_eval: bool) -> None:
    """Rewrite the BatchNorm ops of an exported graph for training or evaluation, in place.

    An exported graph ignores ``.train()``/``.eval()``; torchao's own ``move_exported_model_to_*``
    rewrites dropout and BatchNorm together, this one BatchNorm alone.
    """
    from torchao.quantization.pt2e.export_utils import _replace_batchnorm

    _replace_batchnorm(graph, train_to_eval=train_to_eval)


def replace_dropout(graph: torch.fx.GraphModule, train_to_eval: bool) -> None:
    """Rewrite the dropout ops of an exported graph for training or evaluation, in place."""
    from torchao.quantization.pt2e.export_utils import _replace_dropout

    _replace_dropout(graph, train_to_eval=train_to_eval)


# -- torch: what the CPU and the toolchain can do ----------------------------------------------
def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI int8 dot-product instructions (AVX512-VNNI; AMX implies it)."""
    return bool(torch.cpu._is_vnni_supported())


def cpp_compiler() -> str:
    """The C++ compiler inductor compiles with; raises if there is none."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    return get_cpp_compiler()


def cpp_compiler_setting() -> Any:
    """What inductor looks for as its C++ compiler (``torch._inductor.config.cpp.cxx``)."""
    from torch._inductor import config as inductor_config

    return inductor_config.cpp.cxx


def enable_inductor_freezing() -> None:
    """Let inductor fold weights into constants (it packs int8 weights for oneDNN then)."""
    from torch._inductor import config as inductor_config

    inductor_config.freezing = True


# -- Lightning: DDP and checkpoint bookkeeping -------------------------------------------------
def rewrap_ddp(strategy: Any, module: torch.nn.Module) -> None:
    """Wrap ``module`` in DDP again after its parameters were replaced mid-training.

    DDP registers its gradient hooks on the parameters it was given: new parameters (pruned,
    fake-quantized) would get no gradients averaged. Lightning has no public call for this.
    """
    strategy.model = module
    strategy.configure_ddp()


def forget_best_checkpoints(callback: ModelCheckpoint) -> list[str]:
    """Make ``callback`` forget its best checkpoints; returns their paths (the files stay).

    Lightning has no API for this: ModelCheckpoint's attributes are reset as its own
    ``__init__`` sets them.
    """
    paths = list(callback.best_k_models)
    callback.best_k_models = {}
    callback.best_model_score = None
    callback.best_model_path = ""
    callback.kth_best_model_path = ""
    callback.kth_value = torch.tensor(-math.inf if callback.mode == "max" else math.inf)
    return paths


# -- Lightning ModelCheckpoint: last.ckpt at every save point ----------------------------------
def save_last_if_skipped(callback: ModelCheckpoint, trainer: Any, train_epoch_end: bool) -> None:
    """Write ``last.ckpt`` now if ``callback`` saves at this point (the end of a training epoch
    if ``train_epoch_end``, else of a validation) and saved nothing at this step.

    Lightning 2.6 writes ``last.ckpt`` (``save_last=True``) only in a step where it also saved a
    top-k checkpoint, so with ``save_top_k=1`` on a metric that did not improve, ``last.ckpt``
    lags behind the last epoch.
    """
    if (
        callback.save_last
        and callback._should_save_on_train_epoch_end(trainer) == train_epoch_end
        and callback._last_global_step_saved != trainer.global_step
        and not callback._should_skip_saving_checkpoint(trainer)
    ):
        callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def epoch_to_resume(trainer: Any) -> int:
    """The epoch a run resumed from a checkpoint saved now starts with.

    A checkpoint saved at the end of an epoch's batches (after its validation, or at the end of
    the training epoch) resumes with the next epoch; one saved mid-epoch restarts that epoch.
    Lightning keeps this in its loops' progress counters, which have no public accessor.
    """
    finished = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    return trainer.current_epoch + int(bool(finished))
