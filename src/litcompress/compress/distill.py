"""Knowledge distillation: the student learns from a frozen teacher's softened predictions.

The loss becomes ``(1 - alpha) * CE + alpha * T^2 * KL(p_teacher || p_student)`` with both sides
softened by ``softmax(logits / T)`` (Hinton et al., 2015). The teacher is a trained litcompress
network: ``teacher_checkpoint``, or by default the network as it enters the run (``init_from``),
copied before pruning or quantization change the student. It runs in eval mode without gradients
on the student's device, is never in the optimizer and never saved in the student's checkpoints:
they record where it came from.

Optionally the student also learns the teacher's intermediate features at named layers (FitNets,
Romero et al., 2015): a small trained adapter (a 1x1 convolution, or a linear layer for tokens)
maps each student feature to the teacher's width, and ``feature_weight`` times their mean squared
error is added to the loss. The adapters are dropped when training ends.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from litcompress.checkpoint import CHECKPOINT_KEY, load_network, read_checkpoint, require_file
from litcompress.compress.base import CompressionCallback
from litcompress.errors import ConfigError
from litcompress.module import ClassifierModule
from litcompress.spec import Inputs, InputSpec

log = logging.getLogger(__name__)


class DistillCallback(CompressionCallback):
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
        features: layers whose features the student learns: names present in both networks
            (``[layer2, layer3]``), or a mapping from student layer to teacher layer.
        feature_weight: weight of the feature term (mean squared error after the adapters).
    """

    name = "distill"
    # First: the default teacher is the student before pruning or quantization change it.
    order = 5

    def __init__(
        self,
        teacher_checkpoint: str | None = None,
        alpha: float = 0.5,
        temperature: float = 4.0,
        init_from: str | None = None,
        ckpt_path: str | None = None,
        features: Sequence[str] | Mapping[str, str] | str | None = None,
        feature_weight: float = 1.0,
    ) -> None:
        self.features = _layer_pairs(features)
        if self.features and feature_weight <= 0:
            raise ConfigError(
                f"compress.distill.feature_weight={feature_weight} must be > 0 (1.0 weighs the "
                f"features' mean squared error like the cross-entropy)."
            )
        self.feature_weight = feature_weight
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(
                f"compress.distill.alpha={alpha} must be in (0, 1]: the weight of the "
                f"distillation term (0.5 weighs it equal to the cross-entropy)."
            )
        if temperature <= 0:
            raise ConfigError(
                f"compress.distill.temperature={temperature} must be > 0 (typical: 2 to 8)."
            )
        if teacher_checkpoint is None and init_from is None and ckpt_path is not None:
            # Resuming: the checkpoint says where its teacher came from.
            meta = read_checkpoint(ckpt_path, "ckpt_path")[CHECKPOINT_KEY]
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
        self.feature_loss: FeatureDistillation | None = None
        self._taught: tuple[Tensor, Tensor] | None = None  # (inputs, teacher logits) of the step

    # -- the teacher ------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: ClassifierModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.from_checkpoint:
            # Named, or recorded by the checkpoint a run resumes from (the student has moved on).
            teacher = self._load_teacher(pl_module)
        else:
            teacher = copy.deepcopy(pl_module.net)
        self.teacher = teacher.eval().requires_grad_(False)
        pl_module.add_loss_term("kd_loss", self.distillation_loss)
        pl_module.ce_weight = 1.0 - self.alpha
        pl_module.checkpoint_extras["distill_teacher"] = self.teacher_path
        if self.features:
            # The adapters are made in ClassifierModule.configure_model, for the network as the
            # other techniques' setup leaves it.
            self.feature_loss = FeatureDistillation(
                self.features, self.feature_weight, self.teacher, self._teach, pl_module.input_spec
            )
            pl_module.add_loss_term("feature_loss", self.feature_loss)

    def _load_teacher(self, pl_module: ClassifierModule) -> nn.Module:
        meta = read_checkpoint(self.teacher_path, "compress.distill.teacher_checkpoint")
        config = meta[CHECKPOINT_KEY]["model_config"]
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

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: ClassifierModule, batch: Any, batch_idx: int
    ) -> None:
        if self.feature_loss is not None:
            self.feature_loss.capture()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: ClassifierModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if self.feature_loss is not None:
            self.feature_loss.release()
        self._taught = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        # The adapters served training only: the network that is tested and deployed has none.
        if self.feature_loss is not None:
            self.feature_loss.end()
            pl_module.remove_loss_term("feature_loss")

    # -- the loss ---------------------------------------------------------------------------------
    def _teach(self, inputs: Tensor) -> Tensor:
        """The teacher's logits for ``inputs``, computed once per training step."""
        if self._taught is None or self._taught[0] is not inputs:
            with torch.no_grad():
                self._taught = (inputs, self.teacher(inputs))
        return self._taught[1]

    def distillation_loss(self, inputs: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        """``alpha * T^2 * KL(teacher || student)`` on softened logits (a ClassifierModule term)."""
        teacher_logits = self._teach(inputs)
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
                **(
                    {"features": self.features, "feature_weight": self.feature_weight}
                    if self.features
                    else {}
                ),
            }
        }


def _layer_pairs(features: Sequence[str] | Mapping[str, str] | str | None) -> dict[str, str]:
    """``features`` as student layer -> teacher layer."""
    if not features:
        return {}
    if isinstance(features, str):
        features = [features]
    if isinstance(features, Mapping):
        return {str(k): str(v) for k, v in features.items()}
    return {str(name): str(name) for name in features}


class FeatureDistillation(nn.Module):
    """The feature term: adapters from student to teacher features, and their mean squared error.

    A trainable loss term of :class:`ClassifierModule` (optimized with the student, saved in its
    checkpoints so that a run resumes). It follows the student's form: when pruning changes the
    width of a layer, that layer's adapter starts afresh at the new width; when the student loses
    its named layers (prepared for quantization-aware training), the term ends.

    Args:
        layers: student layer name -> teacher layer name.
        weight: factor of the mean (over layers) of the squared errors.
        teacher: the frozen teacher; hooks on its layers record their outputs.
        teach: runs the teacher on a batch, once per step (the features are recorded then).
        inputs: ``(channels, height, width)`` of one image, to probe the feature shapes.
    """

    def __init__(
        self,
        layers: dict[str, str],
        weight: float,
        teacher: nn.Module,
        teach: Callable[[Tensor], Tensor],
        inputs: Inputs,
    ) -> None:
        super().__init__()
        self.layers = layers
        self.weight = weight
        self.teach = teach
        self.inputs = inputs
        self.adapters = nn.ModuleList()
        self._teacher_features: dict[str, Tensor] = {}
        self._student_features: dict[str, Tensor] = {}
        self._student_layers: dict[str, nn.Module] = {}
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self.teacher_shapes = _probe(teacher, list(layers.values()), inputs, "teacher")
        for name in layers.values():
            teacher.get_submodule(name).register_forward_hook(
                _recorder(self._teacher_features, name)
            )

    def follow(self, net: nn.Module) -> bool:
        """Fit the adapters to the student ``net``; ``False`` once it has no such layers."""
        missing = [name for name in self.layers if not _has_layer(net, name)]
        if missing:
            if not self.adapters:  # before training: a wrong name, or QAT from the start
                _require_layers(
                    net,
                    missing,
                    "student",
                    " A network prepared for quantization-aware training has no named layers: "
                    "start QAT later (compress.qat.start_epoch) so that features are distilled "
                    "before it.",
                )
            log.info(
                "Feature distillation ends: the student has no layer %s any more (quantization-"
                "aware networks have no named layers); distillation from the logits goes on.",
                ", ".join(missing),
            )
            self.end()
            return False
        shapes = _probe(net, list(self.layers), self.inputs, "student")
        device = next(net.parameters()).device
        for index, (name, teacher_name) in enumerate(self.layers.items()):
            adapter = _adapter(name, shapes[name], teacher_name, self.teacher_shapes[teacher_name])
            if index == len(self.adapters):
                self.adapters.append(adapter.to(device))
            elif _in_width(self.adapters[index]) != _in_width(adapter):
                log.info("Feature adapter of %s restarts at width %d", name, _in_width(adapter))
                self.adapters[index] = adapter.to(device)
        self._student_layers = {name: net.get_submodule(name) for name in self.layers}
        return True

    def capture(self) -> None:
        """Record the student's features during the next forward pass."""
        self._hooks = [
            layer.register_forward_hook(_recorder(self._student_features, name))
            for name, layer in self._student_layers.items()
        ]

    def end(self) -> None:
        """Stop for good: no layers to record any more."""
        self.release()
        self._student_layers = {}

    def release(self) -> None:
        """Stop recording the student's features."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._student_features.clear()

    def forward(self, inputs: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        self.teach(inputs)
        student, teacher = self._student_features, self._teacher_features
        pairs = zip(self.adapters, self.layers.items(), strict=True)
        errors = [F.mse_loss(adapter(student[s]), teacher[t]) for adapter, (s, t) in pairs]
        return self.weight * torch.stack(errors).mean()


def _has_layer(net: nn.Module, name: str) -> bool:
    try:
        net.get_submodule(name)
    except AttributeError:
        return False
    return True


def _require_layers(net: nn.Module, missing: list[str], role: str, hint: str = "") -> None:
    """Raise ConfigError naming the ``missing`` layers of ``net`` and listing those it has."""
    if missing:
        layers = [n for n, _ in net.named_modules() if n]
        raise ConfigError(
            f"compress.distill.features: the {role} has no layer {', '.join(missing)}. Its "
            f"layers: {', '.join(layers[:40])}{' ...' if len(layers) > 40 else ''}.{hint}"
        )


def _recorder(store: dict[str, Tensor], name: str) -> Callable[..., None]:
    def record(module: nn.Module, args: Any, output: Any) -> None:
        store[name] = output

    return record


def _probe(net: nn.Module, names: list[str], inputs: Inputs, role: str) -> dict[str, torch.Size]:
    """The output shapes of ``net``'s layers ``names`` for a batch of 2 (in eval mode)."""
    _require_layers(net, [name for name in names if not _has_layer(net, name)], role)
    outputs: dict[str, Any] = {}
    hooks = [net.get_submodule(n).register_forward_hook(_recorder(outputs, n)) for n in names]
    modes = {module: module.training for module in net.modules()}
    try:
        with torch.no_grad():
            net.eval()(*InputSpec.of(inputs).example(2, next(net.parameters()).device, zeros=True))
    finally:
        for hook in hooks:
            hook.remove()
        for module, mode in modes.items():
            module.training = mode
    for name, output in outputs.items():
        if not torch.is_tensor(output):
            raise ConfigError(
                f"compress.distill.features: the {role}'s layer {name} outputs a "
                f"{type(output).__name__}, not a tensor. Name a layer (or block) whose output is "
                f"a tensor of features."
            )
    return {name: output.shape for name, output in outputs.items()}


def _adapter(
    name: str, shape: torch.Size, teacher_name: str, teacher_shape: torch.Size
) -> nn.Module:
    """A 1x1 convolution (images) or linear layer (vectors, tokens) from student to teacher."""
    same_layout = len(shape) == len(teacher_shape) and (
        shape[2:] == teacher_shape[2:] if len(shape) == 4 else shape[:-1] == teacher_shape[:-1]
    )
    if len(shape) not in (2, 3, 4) or not same_layout:
        raise ConfigError(
            f"compress.distill.features: the student's {name} gives features of shape "
            f"{tuple(shape[1:])}, the teacher's {teacher_name} of shape "
            f"{tuple(teacher_shape[1:])}: "
            f"only the channels (the last dimension of tokens) may differ. Pair layers at the "
            f"same resolution."
        )
    if len(shape) == 4:
        return nn.Conv2d(shape[1], teacher_shape[1], kernel_size=1)
    return nn.Linear(shape[-1], teacher_shape[-1])


def _in_width(adapter: nn.Module) -> int:
    return adapter.in_channels if isinstance(adapter, nn.Conv2d) else adapter.in_features
