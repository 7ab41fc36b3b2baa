"""The LightningModule of litcompress: an image classifier that compression callbacks reshape."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from litcompress.checkpoint import (
    CHECKPOINT_KEY,
    form_of,
    form_record,
    rebuild_network,
    restore_architecture,
)
from litcompress.compat import rewrap_ddp
from litcompress.errors import ConfigError
from litcompress.spec import InputSpec

# Checkpoint entry of the best validation accuracy so far (``val/acc_best``).
BEST_KEY = "val_acc_best"


class LossTerm(Protocol):
    """An extra training-loss term: ``term(inputs, logits, targets) -> scalar tensor``."""

    def __call__(self, inputs: Tensor, logits: Tensor, targets: Tensor) -> Tensor: ...


class ClassifierModule(L.LightningModule):
    """Trains ``net`` with cross-entropy and reports accuracy.

    Compression callbacks use two documented entry points:

    * :meth:`replace_network` (or an in-place reshape of ``self.net`` followed by
      :meth:`rebuild_optimizers`) swaps the network at any point, also mid-training and under DDP;
      optimizers and schedulers are rebuilt over the new parameters and keep their position.
    * :meth:`add_loss_term` adds a term to the training loss, logged as ``train/<name>``;
      :attr:`ce_weight` scales the cross-entropy term (e.g. ``1 - alpha`` for distillation). A
      term that is an ``nn.Module`` with parameters (e.g. distillation adapters) is trained with
      the network and saved in checkpoints so that a run resumes, but is no part of the network
      that is measured and deployed. If it has a ``follow(net) -> bool`` method, that is called
      whenever the network changes form (pruning, quantization, a checkpoint's architecture) to
      fit the term to it; ``False`` removes the term.

    Args:
        net: the network, mapping images to logits.
        optimizer: a partial optimizer, completed with the parameter groups.
        scheduler: ``None``, or a mapping with ``scheduler`` (a partial scheduler, completed with
            the optimizer and, if it takes one, ``total_steps``) and ``interval`` (``"step"`` or
            ``"epoch"``).
        num_classes: number of classes (for the accuracy metrics).
        label_smoothing: cross-entropy label smoothing.
        no_decay_norm_and_bias: exclude biases and normalisation weights (all 1-d parameters) from
            weight decay.
        model_config: the network's config, recorded in checkpoints so that they reload without
            unpickling anything (:func:`litcompress.checkpoint.load_network`).
        pretrained: the network enters the run trained (``init_from``): compression may start at
            once.
        macro_f1: also log the macro-averaged F1 score (``val/f1``, ``test/f1``): the mean over
            classes, which an imbalanced text set needs beside accuracy.

    A batch is ``(*inputs, targets)``: ``(images, targets)``, or ``(input_ids, attention_mask,
    targets)`` for text; the network is called as ``net(*inputs)``.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Mapping[str, Any] | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        no_decay_norm_and_bias: bool = False,
        model_config: Mapping[str, Any] | None = None,
        pretrained: bool = False,
        macro_f1: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_config = dict(scheduler) if scheduler else None
        self.num_classes = num_classes
        self.no_decay_norm_and_bias = no_decay_norm_and_bias
        self.model_config = dict(model_config) if model_config else None
        self.pretrained = pretrained
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.macro_f1 = macro_f1
        self.val_f1 = MulticlassF1Score(num_classes, average="macro") if macro_f1 else None
        self.test_f1 = MulticlassF1Score(num_classes, average="macro") if macro_f1 else None
        # Saved in checkpoints beside the weights: a resumed run keeps the best of the epochs
        # before.
        self.val_acc_best = MaxMetric()
        self.loss_terms: dict[str, LossTerm] = {}
        # The loss terms that are modules (trainable ones): registered so that they are optimized,
        # moved to the device, synchronized under DDP and checkpointed.
        self.loss_modules = nn.ModuleDict()
        self.ce_weight = 1.0
        # Prefix of test metrics: "test", or "before" when evaluating the network as it enters.
        self.test_prefix = "test"
        # The network's form: each compression technique's entry (pruning history, quantization),
        # recorded in checkpoints so that they rebuild the same network.
        self.form: dict[str, Any] = {}
        # Other entries recorded in checkpoints under CHECKPOINT_KEY (e.g. the teacher's path).
        self.checkpoint_extras: dict[str, Any] = {}

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.net(*inputs)

    @property
    def input_spec(self) -> InputSpec:
        """What the network takes: the spec recorded for its checkpoints (the data module's), or
        the one its network config implies."""
        return InputSpec.of_record({**self.checkpoint_extras, "model_config": self.model_config})

    # -- training loop --------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x, y = _inputs(batch)
        logits = self.net(*x)
        ce = self.criterion(logits, y)
        loss = ce * self.ce_weight if self.ce_weight != 1.0 else ce
        if self.loss_terms:
            self.log("train/ce_loss", ce, on_step=False, on_epoch=True)
            for name, term in self.loss_terms.items():
                value = term(x[0] if len(x) == 1 else x, logits, y)
                self.log(f"train/{name}", value, on_step=False, on_epoch=True)
                loss = loss + value
        self.train_acc.update(logits, y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def add_loss_term(self, name: str, term: LossTerm) -> None:
        """Add ``term`` to the training loss, logged as ``train/<name>``."""
        self.loss_terms[name] = term
        if isinstance(term, nn.Module):
            self.loss_modules[name] = term

    def remove_loss_term(self, name: str) -> None:
        """Remove a loss term (and its parameters, if it has any) from the module."""
        self.loss_terms.pop(name, None)
        if name in self.loss_modules:
            del self.loss_modules[name]

    def follow_network(self) -> None:
        """Fit the loss modules to the network's current form (see the class docstring)."""
        for name, term in list(self.loss_modules.items()):
            if hasattr(term, "follow") and not term.follow(self.net):
                self.remove_loss_term(name)

    def configure_model(self) -> None:
        # Called after every callback's setup (which may have pruned or quantized the network),
        # before a checkpoint is restored, DDP wraps the module and the optimizers are built: the
        # loss modules take their shapes for this network now.
        self.follow_network()

    def restart_best(self) -> None:
        """Start ``val/acc_best`` afresh (the network changed form: the old best is not its own)."""
        self.val_acc_best.reset()

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        x, y = _inputs(batch)
        logits = self.net(*x)
        self.val_acc(logits, y)
        if self.val_f1 is not None:
            self.val_f1(logits, y)
            self.log("val/f1", self.val_f1, on_epoch=True)
        self.log("val/loss", self.criterion(logits, y), on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # a few batches: no part of the best accuracy
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        x, y = _inputs(batch)
        logits = self.net(*x)
        self.test_acc(logits, y)
        if self.test_f1 is not None:
            self.test_f1(logits, y)
            self.log(f"{self.test_prefix}/f1", self.test_f1, on_epoch=True)
        self.log(f"{self.test_prefix}/loss", self.criterion(logits, y), on_epoch=True)
        self.log(f"{self.test_prefix}/acc", self.test_acc, on_epoch=True)

    # -- optimizers -------------------------------------------------------------------------------
    def parameters_to_train(self) -> Iterator[nn.Parameter]:
        """The network's parameters, then those of the loss modules."""
        yield from self.net.parameters()
        yield from self.loss_modules.parameters()

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters, split into decayed and non-decayed groups if configured."""
        params = [p for p in self.parameters_to_train() if p.requires_grad]
        if not self.no_decay_norm_and_bias:
            return [{"params": params}]
        return [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameter_groups())
        if not self.scheduler_config:
            return optimizer
        make_scheduler = self.scheduler_config["scheduler"]
        kwargs = {}
        if _accepts(make_scheduler, "total_steps"):
            kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": make_scheduler(optimizer, **kwargs),
                "interval": self.scheduler_config.get("interval", "epoch"),
            },
        }

    def replace_network(self, net: nn.Module) -> None:
        """Swap in a new network and rebuild optimizers and schedulers over its parameters."""
        self.net = net.to(self.device)
        self.rebuild_optimizers()

    def rebuild_optimizers(self, state: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """Rebuild optimizers and schedulers after the network's parameters were replaced.

        Before fitting starts (e.g. in ``Callback.setup``) there is nothing to do: Lightning calls
        :meth:`configure_optimizers` later. Mid-training the old optimizers hold stale tensors, so
        new ones are built; learning rates and scheduler positions carry over. Per-parameter state
        (momentum, Adam's moments) is taken from ``state`` (parameter name in ``self.net`` -> the
        optimizer's state entries for it, already reshaped); parameters that are still the same
        objects keep theirs; others start afresh. Under DDP the model is wrapped again so that
        gradients reach the new parameters. Loss modules follow the network first.
        """
        self.follow_network()
        trainer = self._trainer
        if trainer is None or not trainer.optimizers:
            return
        old_optimizers = trainer.optimizers
        kept = {id(p): entry for o in old_optimizers for p, entry in o.state.items()}
        old_schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        strategy = trainer.strategy
        if strategy.model is not self and hasattr(strategy, "configure_ddp"):
            rewrap_ddp(strategy, self)
        strategy.setup_optimizers(trainer)
        for new, old in zip(trainer.optimizers, old_optimizers, strict=True):
            for new_group, old_group in zip(new.param_groups, old.param_groups, strict=True):
                new_group.update({k: v for k, v in old_group.items() if k != "params"})
        for config, old in zip(trainer.lr_scheduler_configs, old_schedulers, strict=True):
            config.scheduler.load_state_dict(old.state_dict())
        names = {id(p): name for name, p in self.net.named_parameters()}
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    entry = (state or {}).get(names.get(id(param), "")) or kept.get(id(param))
                    if entry is not None:
                        # Per-weight tensors to the weight's device; step counts stay put.
                        optimizer.state[param] = {
                            k: v.to(param.device) if _shaped_like(v, param) else v
                            for k, v in entry.items()
                        }

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "model_config": self.model_config,
            "num_classes": self.num_classes,
            **form_record(self.form),
            **self.checkpoint_extras,
        }
        checkpoint[BEST_KEY] = self.val_acc_best.max_value.detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs before the weights are loaded: give the network the checkpoint's form.
        meta = checkpoint.get(CHECKPOINT_KEY, {})
        try:
            self.net = restore_architecture(self.net, self.form, meta, self.input_spec)
        except ConfigError:
            if not self.model_config:
                raise
            # Compressed in this process in another way (e.g. a run resumed without telling its
            # callbacks, as SLURM's requeue does): rebuild it in the checkpoint's form.
            self.net = rebuild_network(self.model_config, meta)
            self.form = form_of(meta)
        self.follow_network()
        # Loss modules load their saved state when they exist (a resumed run); a run that has
        # none (testing, or the loss ended) ignores theirs, and new ones start afresh.
        self.val_acc_best.reset()
        if BEST_KEY in checkpoint:  # older checkpoints lack it
            self.val_acc_best.update(checkpoint[BEST_KEY].to(self.val_acc_best.device))
        weights = checkpoint["state_dict"]
        own = {f"loss_modules.{k}": v for k, v in self.loss_modules.state_dict().items()}
        for key in [k for k in weights if k.startswith("loss_modules.") and k not in own]:
            del weights[key]
        for key, value in own.items():
            weights.setdefault(key, value)


def _shaped_like(value: Any, param: Tensor) -> bool:
    return torch.is_tensor(value) and value.shape == param.shape


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """True if ``fn`` takes keyword ``name`` that is not already bound (works on partials)."""
    if name in getattr(fn, "keywords", {}):
        return False
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _inputs(batch: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], Tensor]:
    """``(the network's inputs, the targets)`` of a batch ``(*inputs, targets)``."""
    return tuple(batch[:-1]), batch[-1]
