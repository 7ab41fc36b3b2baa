"""Knowledge distillation: the student learns from a frozen teacher's softened predictions.

The loss becomes ``(1 - alpha) * CE + alpha * T^2 * KL(p_teacher || p_student)`` with both sides
softened by ``softmax(logits / T)`` (Hinton et al., 2015). The teacher is a trained litcompress
network: ``teacher_checkpoint``, or by default the network as it enters the run (``init_from``),
copied before pruning or quantization change the student. It runs in eval mode without gradients
on the student's device, is never in the optimizer and never saved in the student's checkpoints:
they record where it came from.

Optionally the student also learns the teacher's intermediate features at named layers (FitNets,
Romero et al., 2015; a Transformer layer's hidden states, TinyBERT): a small trained adapter (a 1x1
convolution, or a linear layer for tokens) maps each student feature to the teacher's width, and
``feature_weight`` times their mean squared error (over the tokens the attention mask keeps) is
added to the loss. The adapters are dropped when training ends. A Transformer student can also
learn the teacher's attention maps (MiniLM, Wang et al., 2020): the KL divergence between the
teacher's and the student's attention distributions of paired attention modules, averaged over
heads (a pruned student has fewer), weighted by ``attention_weight``.

The teacher is a litcompress checkpoint, or for text a local folder of a ``transformers``
sequence classifier fine-tuned for the same classes; a text teacher must tokenize as the student
does (the same tokenizer), which is checked.
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
from litcompress.models.attention import attention_modules, restore_attention, use_eager_attention
from litcompress.module import ClassifierModule
from litcompress.quant.fake_quant import FakeQuantNet
from litcompress.spec import Examples, Inputs, InputSpec, as_tuple

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
            (``[layer2, layer3]``, a Transformer's ``[model.bert.encoder.layer.1]``), or a
            mapping from student layer to teacher layer.
        feature_weight: weight of the feature term (mean squared error after the adapters).
        attention: Transformer attention modules whose attention maps the student learns
            (names in both networks, or a mapping student -> teacher); ``None``: none.
        attention_weight: weight of the attention term (KL divergence of the head-averaged
            attention distributions).
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
        attention: Sequence[str] | Mapping[str, str] | str | None = None,
        attention_weight: float = 1.0,
    ) -> None:
        self.features = _layer_pairs(features)
        self.attention = _layer_pairs(attention)
        if self.attention and attention_weight <= 0:
            raise ConfigError(
                f"compress.distill.attention_weight={attention_weight} must be > 0 (1.0 weighs "
                f"the attention maps' KL divergence like the cross-entropy)."
            )
        self.attention_weight = attention_weight
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
        if teacher_checkpoint and Path(teacher_checkpoint).expanduser().is_dir():
            self.teacher_path = str(_pretrained_folder(teacher_checkpoint))
        else:
            self.teacher_path = str(require_file(teacher_checkpoint or init_from, option))
        self.from_checkpoint = teacher_checkpoint is not None
        self.alpha = alpha
        self.temperature = temperature
        self.teacher: nn.Module | None = None
        self.teacher_val_acc: float | None = None
        self.feature_loss: FeatureDistillation | None = None
        self.attention_loss: AttentionDistillation | None = None
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
        if self.attention:
            self.attention_loss = AttentionDistillation(
                self.attention, self.attention_weight, self.teacher, self._teach
            )
            pl_module.add_loss_term("attention_loss", self.attention_loss)

    def _load_teacher(self, pl_module: ClassifierModule) -> nn.Module:
        if Path(self.teacher_path).is_dir():
            return self._load_pretrained_teacher(pl_module)
        student = pl_module.model_config or {}
        meta = read_checkpoint(self.teacher_path, "compress.distill.teacher_checkpoint")
        record = meta[CHECKPOINT_KEY]
        config = record["model_config"]
        theirs = (record.get("inputs") or {}).get("tokenizer")
        ours = (pl_module.checkpoint_extras.get("inputs") or {}).get("tokenizer")
        if theirs != ours:
            raise ConfigError(
                f"The teacher {self.teacher_path} tokenizes texts with another tokenizer than the "
                f"student: its token ids would mean other words. Train the student with the "
                f"teacher's tokenizer (the same data options, or data.tokenizer=<the teacher's "
                f"run>/tokenizer)."
            )
        for key in ("num_classes", "in_channels", "image_size", "vocab_size"):
            if config.get(key) != student.get(key):
                raise ConfigError(
                    f"The teacher {self.teacher_path} was trained for {key}={config.get(key)}, "
                    f"the student has {key}={student.get(key)}: distil from a network trained on "
                    f"the same data."
                )
        return load_network(self.teacher_path)

    def _load_pretrained_teacher(self, pl_module: ClassifierModule) -> nn.Module:
        """The sequence classifier of a local ``transformers`` folder, fine-tuned for the
        student's classes and vocabulary."""
        from litcompress.models.text import pretrained_classifier

        student = pl_module.model_config or {}
        option = "compress.distill.teacher_checkpoint"
        if "vocab_size" not in student:
            raise ConfigError(
                f"{option}={self.teacher_path} is a folder of a transformers model, which teaches "
                f"text networks only; this student takes images: give a litcompress checkpoint."
            )
        labels = _folder_labels(self.teacher_path)
        if labels != student["num_classes"]:
            raise ConfigError(
                f"{option}={self.teacher_path} classifies into {labels} classes, the student "
                f"into {student['num_classes']}: a teacher must be fine-tuned for the same "
                f"classes (a litcompress run with model=hf model.path=<folder> makes one)."
            )
        return pretrained_classifier(
            student["num_classes"], student["vocab_size"], student["max_length"], self.teacher_path
        )

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
        for index, batch in enumerate(trainer.datamodule.val_dataloader()):
            if index >= batches:
                break
            *x, y = (t.to(pl_module.device) for t in batch)
            accuracy.update(self.teacher(*x), y)
        # Every rank saw the whole validation split: nothing to gather.
        return float(accuracy.compute()) if accuracy.update_count else float("nan")

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: ClassifierModule, batch: Any, batch_idx: int
    ) -> None:
        if self.feature_loss is not None:
            self.feature_loss.capture()
        if self.attention_loss is not None:
            self.attention_loss.capture(pl_module.net)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: ClassifierModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if self.feature_loss is not None:
            self.feature_loss.release()
        if self.attention_loss is not None:
            self.attention_loss.release()
        self._taught = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        # The adapters served training only: the network that is tested and deployed has none.
        if self.feature_loss is not None:
            self.feature_loss.end()
            pl_module.remove_loss_term("feature_loss")
        if self.attention_loss is not None:
            self.attention_loss.end()
            pl_module.remove_loss_term("attention_loss")

    # -- the loss ---------------------------------------------------------------------------------
    def _teach(self, inputs: Examples) -> Tensor:
        """The teacher's logits for ``inputs`` (a batch of images, or of token ids and attention
        mask), computed once per training step."""
        if self._taught is None or self._taught[0] is not inputs:
            with torch.no_grad():
                self._taught = (inputs, self.teacher(*as_tuple(inputs)))
        return self._taught[1]

    def distillation_loss(self, inputs: Examples, logits: Tensor, targets: Tensor) -> Tensor:
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
                **(
                    {"attention": self.attention, "attention_weight": self.attention_weight}
                    if self.attention
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

    def forward(self, inputs: Examples, logits: Tensor, targets: Tensor) -> Tensor:
        self.teach(inputs)
        student, teacher = self._student_features, self._teacher_features
        mask = _token_mask(inputs)
        pairs = zip(self.adapters, self.layers.items(), strict=True)
        errors = [_mse(adapter(student[s]), teacher[t], mask) for adapter, (s, t) in pairs]
        return self.weight * torch.stack(errors).mean()


class AttentionDistillation(nn.Module):
    """The attention term: KL(teacher || student) of the attention maps of paired Transformer
    attention modules, averaged over heads and over the query tokens the mask keeps.

    Both networks compute attention with ``transformers``' eager implementation while the term
    records (the fused kernels give no attention probabilities): the teacher for good, the
    student during its training steps only, so that the network that is exported is unchanged.
    The term ends when the student has no such modules any more (quantization-aware training).

    Args:
        layers: student attention module name -> teacher attention module name.
        weight: factor of the mean (over pairs) of the divergences.
        teacher: the frozen teacher; hooks on its attention modules record their maps.
        teach: runs the teacher on a batch, once per step.
    """

    def __init__(
        self,
        layers: dict[str, str],
        weight: float,
        teacher: nn.Module,
        teach: Callable[[Examples], Tensor],
    ) -> None:
        super().__init__()
        self.layers = layers
        self.weight = weight
        self.teach = teach
        self._teacher_maps: dict[str, Tensor] = {}
        self._student_maps: dict[str, Tensor] = {}
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._implementations: list[tuple[nn.Module, Any]] = []
        self._ended = False
        _require_attention(teacher, list(layers.values()), "teacher")
        use_eager_attention(teacher)
        for name in layers.values():
            teacher.get_submodule(name).register_forward_hook(
                _map_recorder(self._teacher_maps, name)
            )

    def follow(self, net: nn.Module) -> bool:
        """``False`` once the student is a network prepared for quantization-aware training
        (no attention modules any more): the term ends."""
        if isinstance(net, FakeQuantNet):
            log.info(
                "Attention distillation ends: a network prepared for quantization-aware training "
                "has no attention modules; distillation from the logits goes on."
            )
            self.end()
            return False
        _require_attention(net, list(self.layers), "student")
        return True

    def capture(self, net: nn.Module) -> None:
        """Record the student's attention maps during the next forward pass."""
        if self._ended:
            return
        self._implementations = use_eager_attention(net)
        self._hooks = [
            net.get_submodule(name).register_forward_hook(_map_recorder(self._student_maps, name))
            for name in self.layers
        ]

    def release(self) -> None:
        """Stop recording; the student computes attention as it did before."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._student_maps.clear()
        restore_attention(self._implementations)
        self._implementations = []

    def end(self) -> None:
        """Stop for good (the student has no attention modules any more)."""
        self.release()
        self._ended = True

    def forward(self, inputs: Examples, logits: Tensor, targets: Tensor) -> Tensor:
        self.teach(inputs)
        mask = _token_mask(inputs)
        divergences = [
            _attention_kl(self._teacher_maps[t], self._student_maps[s], mask)
            for s, t in self.layers.items()
        ]
        return self.weight * torch.stack(divergences).mean()


def _token_mask(inputs: Examples) -> Tensor | None:
    """The attention mask of a batch of token inputs (``N x L``), ``None`` for images."""
    parts = as_tuple(inputs)
    if len(parts) == 2 and parts[1].dim() == 2 and not parts[1].is_floating_point():
        return parts[1]
    return None


def _mse(student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
    """Mean squared error; of token features (``N x L x C``), over the tokens ``mask`` keeps."""
    if mask is None or student.dim() != 3 or student.shape[:2] != mask.shape:
        return F.mse_loss(student, teacher)
    keep = mask.to(student.dtype).unsqueeze(-1)
    squared = (student - teacher).pow(2) * keep
    return squared.sum() / (keep.sum() * student.shape[-1]).clamp_min(1)


def _attention_kl(teacher: Tensor, student: Tensor, mask: Tensor | None) -> Tensor:
    """KL(teacher || student) of head-averaged attention maps (``N x heads x L x L``), summed
    over keys and averaged over the query tokens ``mask`` keeps."""
    p = teacher.float().mean(1).clamp_min(1e-12)
    q = student.float().mean(1).clamp_min(1e-12)
    rows = (p * (p.log() - q.log())).sum(-1)  # N x L
    if mask is None:
        return rows.mean()
    keep = mask.to(rows.dtype)
    return (rows * keep).sum() / keep.sum().clamp_min(1)


def _require_attention(net: nn.Module, names: list[str], role: str) -> None:
    found = [a.name for a in attention_modules(net)]
    missing = [name for name in names if name not in found]
    if missing:
        raise ConfigError(
            f"compress.distill.attention: the {role} has no attention module "
            f"{', '.join(missing)}. Its attention modules: {', '.join(found) or 'none'}."
        )


def _map_recorder(store: dict[str, Tensor], name: str) -> Callable[..., None]:
    def record(module: nn.Module, args: Any, output: Any) -> None:
        # transformers' attention modules return (output, attention probabilities).
        store[name] = output[1]

    return record


def _pretrained_folder(path: str) -> Path:
    folder = Path(path).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"compress.distill.teacher_checkpoint={path} is a folder without config.json: give "
            f"a litcompress checkpoint (.ckpt), or the folder of a transformers sequence "
            f"classifier (as save_pretrained writes it)."
        )
    return folder


def _folder_labels(folder: str) -> int:
    """The number of classes the ``transformers`` model of ``folder`` was fine-tuned for (as
    ``transformers`` reads its config: ``id2label``, 2 when it names none)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True).num_labels
    except Exception as error:  # transformers raises OSError, ValueError, ...
        raise ConfigError(
            f"compress.distill.teacher_checkpoint={folder}: its config.json cannot be read by "
            f"transformers ({type(error).__name__}: {str(error).splitlines()[0]})."
        ) from None


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
        # A transformers block may return (hidden states, ...): its features come first.
        if isinstance(output, tuple | list) and output and torch.is_tensor(output[0]):
            output = output[0]
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
