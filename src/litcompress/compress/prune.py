"""Structured pruning that really removes channels, neurons, attention heads and whole residual
blocks (torch-pruning; depth: :mod:`litcompress.compress.depth`).

Transformer attention (``transformers``' BERT family, :mod:`litcompress.models.attention`) loses
whole heads: a layer at ``ratio`` keeps ``int(heads x (1 - ratio))`` of its heads, one at least
(its head count attributes updated so that the model runs and reloads), its FFN keeps
``int(neurons x (1 - ratio))`` neurons, and the hidden width (embeddings, residual stream) stays
unless ``hidden`` is set. ``nn.MultiheadAttention`` (torchvision's ViT) is narrowed in equal
shares per head: its head count stays, each head gets narrower.

Depth pruning removes whole residual blocks and Transformer encoder layers (``depth`` or
``blocks``), before the channels of the same step.

The pruned network is smaller and faster as it is: no masks. Its architecture is recorded in every
checkpoint as torch-pruning's pruning history (module names and channel indices, plain values),
with an entry ``[block name, "remove_block", []]`` for each block removed, so checkpoints reload
with ``torch.load(weights_only=True)`` into a fresh network replayed to the same shapes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import re
import traceback
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch_pruning as tp
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchvision.models.maxvit import RelativePositionalMultiHeadAttention
from torchvision.models.swin_transformer import ShiftedWindowAttentionV2
from torchvision.models.vision_transformer import VisionTransformer

from litcompress.compat import GroupRoundingPruner, channel_groups, round_kept_per_group
from litcompress.compress import depth as depth_pruning
from litcompress.compress.base import CompressionCallback, fingerprint
from litcompress.errors import ConfigError
from litcompress.measure import count_macs, count_params
from litcompress.models import find_classifier, resolve_layers
from litcompress.models.attention import attention_modules, head_counts, update_head_counts
from litcompress.models.blocks import check_removable, remove_block, residual_blocks
from litcompress.module import ClassifierModule
from litcompress.pictures import has_tensorboard, layer_bars, log_figure
from litcompress.spec import Inputs, InputSpec

log = logging.getLogger(__name__)

# [[module name, prunes out-channels?, [channel indices]], ...]; a removed block:
# [block name, REMOVE_BLOCK, []].
History = list[list[Any]]
REMOVE_BLOCK = "remove_block"

IMPORTANCES: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "taylor": tp.importance.GroupTaylorImportance,
    "bn_scale": tp.importance.BNScaleImportance,
    "lamp": tp.importance.LAMPImportance,
    "fpgm": tp.importance.FPGMImportance,
    "random": tp.importance.RandomImportance,
}

# Layers with which torch-pruning 1.6's get_all_groups() expands index mappings without bound
# (_FlattenIndexMapping, _SplitIndexMapping): the process is killed for memory. Measured by
# bench/coverage.py: Swin V2 at 32x32 and MaxViT at 224x224, killed at 20-23 GB after 4-8 minutes.
_UNBOUNDED_LAYERS = (ShiftedWindowAttentionV2, RelativePositionalMultiHeadAttention)

# Small pruning steps per schedule step when pruning towards a MACs target (`speedup`).
_PROGRESSIVE_STEPS = 100
# Small steps of a global pruning step limited by max_layer_ratio.
_CAPPED_STEPS = 20
# Channel counts that int8 kernels run at full speed: a ResNet-20 pruned to 11/22/44 channels ran
# slower in int8 than unpruned, at 8/16/32 faster (docs/sweeps.md).
INT8_WIDTH = 8
# How far below the requested ratio the channels removed may fall before it counts as not
# honoured (the per-layer rounding of torch-pruning is a channel or so per layer).
_RATIO_TOLERANCE = 0.05


def graph_options(
    net: nn.Module,
    head_ratio: float = 0.0,
    head_ratios: dict[str, float] | None = None,
    global_pruning: bool = False,
) -> dict[str, Any]:
    """What torch-pruning needs beyond the modules: how attention is pruned.

    ``nn.MultiheadAttention`` is narrowed head by head (its head count stays). Transformer
    attention modules lose whole heads: ``int(heads x (1 - ratio))`` are kept (one at least),
    ``ratio`` being ``head_ratios[module name]`` or ``head_ratio`` (with ``global_pruning``,
    heads are ranked across layers and ``head_ratio`` of all of them go).
    """
    options: dict[str, Any] = {}
    groups = {m: m.num_heads for m in net.modules() if isinstance(m, nn.MultiheadAttention)}
    # nn.MultiheadAttention keeps its head count: the embedding shrinks by the same share per head.
    if groups:
        options["out_channel_groups"] = groups
    attentions = attention_modules(net)
    if attentions:
        options["num_heads"] = {p: a.heads for a in attentions for p in a.projections}
        options["prune_num_heads"] = True
        options["prune_head_dims"] = False  # whole heads go; the head size stays
        if global_pruning:
            options["head_pruning_ratio"] = head_ratio
        else:
            ratios = head_ratios or {}
            options["head_pruning_ratio_dict"] = {
                p: _exact_head_ratio(a.heads, ratios.get(a.name, head_ratio))
                for a in attentions
                for p in a.projections
            }
    return options


def _exact_head_ratio(heads: int, ratio: float) -> float:
    """The ratio that makes torch-pruning 1.6 remove exactly ``heads - int(heads x (1 - ratio))``
    heads, one head kept at least (it removes ``ceil(ratio x heads)``, which overshoots: 0.3 of 4
    heads removed 2, and 0.9 of 4 all of them)."""
    removed = heads - max(1, int(heads * (1 - ratio) + 1e-9))
    return (removed - 0.5) / heads if removed > 0 else 0.0


def hidden_layers(net: nn.Module) -> list[nn.Module]:
    """The token embeddings of ``net``: ignoring them keeps a Transformer's hidden width (the
    residual stream they feed), which torch-pruning would otherwise narrow with them."""
    return [m for m in net.modules() if isinstance(m, nn.Embedding)]


def after_pruning(net: nn.Module) -> None:
    """Update attributes that mirror pruned widths but that torch-pruning does not know about."""
    if isinstance(net, VisionTransformer):
        net.hidden_dim = net.conv_proj.out_channels
    for module in net.modules():
        if isinstance(module, nn.MultiheadAttention):
            module.head_dim = module.embed_dim // module.num_heads
    update_head_counts(net)


@contextlib.contextmanager
def quiet_unwrapped_parameters():
    # Bare parameters (ViT embeddings, ConvNeXt layer scales) are pruned along their last
    # non-singleton dim, which is right for every built-in model: no need to warn each time.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        yield


def dependency_graph(net: nn.Module, inputs: Inputs) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``net``; keeps ``net``'s training mode."""
    training = net.training
    device = next(net.parameters()).device
    with quiet_unwrapped_parameters():
        graph = tp.DependencyGraph().build_dependency(
            net, example_inputs=InputSpec.of(inputs).example(1, device, zeros=True)
        )
    net.train(training)  # building the graph switches to eval() and never back
    return graph


def replay_pruning_history(net: nn.Module, history: History, inputs: Inputs) -> None:
    """Prune a network built fresh exactly as ``history`` says (exact shapes, same channels, the
    same blocks removed): each run of channel entries on a dependency graph of the network as the
    blocks removed before it left it."""
    channels: list[tuple[str, bool, list[int]]] = []
    for name, out, idxs in [*history, [None, REMOVE_BLOCK, []]]:
        if out != REMOVE_BLOCK:
            channels.append((name, out, list(idxs)))
            continue
        if channels:
            dependency_graph(net, inputs).load_pruning_history(channels)
            after_pruning(net)
            channels = []
        if name is not None:
            remove_block(net, name, inputs)


def _normalise(history: Sequence[Sequence[Any]]) -> History:
    return [
        [str(name), out if out == REMOVE_BLOCK else bool(out), [int(i) for i in idxs]]
        for name, out, idxs in history
    ]


class PruneCallback(CompressionCallback):
    """Structured pruning with torch-pruning's dependency graph, one-shot or over several epochs.

    Pruning steps run at the start of the scheduled epochs; a step at epoch 0 runs in ``setup``,
    before the optimizers exist and before DDP wraps the model. After every later step the
    optimizers and schedulers are rebuilt (and DDP re-wrapped) by
    :meth:`ClassifierModule.rebuild_optimizers`. Under DDP rank 0 decides what to prune and the
    other ranks replay its decision, so every rank holds the same network.

    Args:
        ratio: fraction of channels removed by the end, in [0, 1): of a Transformer's attention
            heads and FFN neurons (whole heads), of each ``nn.MultiheadAttention`` head's width.
        speedup: instead of ``ratio``, a target MACs reduction (e.g. 2.0 = half the MACs), pruned
            in small steps until reached (Transformers, whose heads go whole: at the ratio that
            reaches it, found by bisection on copies).
        importance: channel ranking: l1, l2, taylor, bn_scale, lamp, fpgm or random.
        global_pruning: rank channels across layers instead of within each layer.
        round_to: keep channel counts multiples of this (e.g. 8), or null. A grouped
            convolution (RegNet, ResNeXt) is narrowed alike in every group, so its width is
            groups x channels kept per group: that product is rounded.
        max_layer_ratio: remove at most about this fraction of any one layer in one pruning step
            (torch-pruning stops a layer once it reaches it; with ``global_pruning`` the step is
            taken in small steps, so a layer overshoots by at most one small step's channels).
        ignored_layers: module names kept whole (the classifier head always is).
        iterative_steps: number of pruning steps (1 = one-shot).
        start_epoch: epoch of the first step; null: 0 for a network that enters the run trained
            (``init_from``), else a third of ``max_epochs`` (train, prune, then fine-tune).
        end_epoch: epoch of the last step (default: ``start_epoch + iterative_steps - 1``).
        sparsity_reg: > 0 trains with torch-pruning's group-norm sparsity regulariser of this
            strength until the last step (needs ``start_epoch`` >= 1); 0 disables it.
        taylor_batches: training batches whose gradients rank channels for ``importance=taylor``.
        layer_ratios: per-layer ratios (module name -> ratio), or the path of a YAML file of them
            (``litcompress sensitivity`` writes one); a layer prunes with everything coupled to
            it, the others by ``ratio``; an attention module's name (or its query's) sets the
            share of its heads removed.
        hidden: also narrow a Transformer's hidden width (token embeddings, the residual stream
            and its LayerNorms); ``False`` keeps it (networks without ``nn.Embedding`` are
            unaffected).
        depth: remove whole residual blocks (Transformers: encoder layers): a fraction of the
            removable ones in (0, 1) or a count >= 1, those of lowest bypass cost
            (:mod:`litcompress.compress.depth`); ``None`` keeps them. With ``ratio=0`` only
            blocks go.
        blocks: instead of ``depth``, the names of the blocks to remove.
        depth_batches: validation batches on which the bypass cost of each block is measured.
        depth_distill: when blocks go and the run starts from a trained network (``init_from``)
            without ``compress=distill``, fine-tune by distilling from the network as it entered
            (``compress.distill`` with its defaults); ``False``: plain fine-tuning.
    """

    name = "prune"
    order = 10  # structural changes first: distillation and quantization follow the pruned net
    form_key = "pruning_history"

    def __init__(
        self,
        ratio: float = 0.5,
        speedup: float | None = None,
        importance: str = "l2",
        global_pruning: bool = False,
        round_to: int | None = None,
        max_layer_ratio: float = 1.0,
        ignored_layers: Sequence[str] = (),
        iterative_steps: int = 1,
        start_epoch: int | None = None,
        end_epoch: int | None = None,
        sparsity_reg: float = 0.0,
        taylor_batches: int = 4,
        layer_ratios: dict[str, float] | str | None = None,
        hidden: bool = False,
        depth: float | None = None,
        blocks: Sequence[str] = (),
        depth_batches: int = 4,
        depth_distill: bool = True,
    ) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(
                f"compress.prune.ratio={ratio} must be in [0, 1): the fraction of channels "
                f"removed, e.g. 0.5."
            )
        if speedup is not None and speedup <= 1.0:
            raise ConfigError(
                f"compress.prune.speedup={speedup} must be above 1 (2.0 halves the MACs), or null "
                f"to prune by compress.prune.ratio."
            )
        if importance not in IMPORTANCES:
            raise ConfigError(
                f"compress.prune.importance={importance!r} is unknown; choose one of "
                f"{', '.join(IMPORTANCES)}."
            )
        layer_ratios = _read_layer_ratios(layer_ratios)
        for name, value in layer_ratios.items():
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"compress.prune.layer_ratios.{name}={value} must be in [0, 1).")
        if layer_ratios and (speedup is not None or global_pruning):
            raise ConfigError(
                "compress.prune.layer_ratios sets each layer's ratio itself: it does not combine "
                "with speedup or global_pruning=true (set those to null/false)."
            )
        if round_to is not None and (isinstance(round_to, bool) or round_to < 1):
            raise ConfigError(
                f"compress.prune.round_to={round_to} must be a whole number of channels >= 1 "
                f"(e.g. 8), or null."
            )
        if importance == "taylor" and taylor_batches < 1:
            raise ConfigError(
                f"compress.prune.taylor_batches={taylor_batches}: importance=taylor ranks channels "
                f"by the gradients of that many training batches; use at least 1 (e.g. 4)."
            )
        if iterative_steps < 1:
            raise ConfigError(f"compress.prune.iterative_steps={iterative_steps} must be >= 1.")
        depth_pruning.check_depth(depth)
        if depth is not None and blocks:
            raise ConfigError(
                f"compress.prune.depth={depth} and compress.prune.blocks={list(blocks)} both say "
                f"which blocks go: set one (depth=null to remove the named blocks)."
            )
        if depth_batches < 1:
            raise ConfigError(
                f"compress.prune.depth_batches={depth_batches}: the bypass cost of each block is "
                f"measured on that many validation batches; use at least 1 (e.g. 4)."
            )
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.iterative_steps = iterative_steps
        if start_epoch is not None:
            self._check_epochs(start_epoch)
        if not 0.0 < max_layer_ratio <= 1.0:
            raise ConfigError(
                f"compress.prune.max_layer_ratio={max_layer_ratio} must be in (0, 1]."
            )
        if sparsity_reg < 0 or (sparsity_reg > 0 and start_epoch is not None and start_epoch < 1):
            raise ConfigError(
                f"compress.prune.sparsity_reg={sparsity_reg} needs epochs of sparse training "
                f"before pruning: set start_epoch >= 1 (it is {start_epoch}), or sparsity_reg=0."
            )
        self.ratio = ratio
        self.speedup = speedup
        self.importance = importance
        self.global_pruning = global_pruning
        self.round_to = round_to
        self.max_layer_ratio = max_layer_ratio
        self.ignored_layers = list(ignored_layers)
        self.sparsity_reg = sparsity_reg
        self.taylor_batches = taylor_batches
        self.layer_ratios = layer_ratios
        self.hidden = hidden
        self.depth = depth
        self.blocks = list(blocks)
        self.depth_batches = depth_batches
        self.depth_distill = depth_distill
        # Restored from checkpoints: blocks to remove in all, removed so far, their bypass costs.
        self.depth_total = len(self.blocks)
        self.depth_candidates = 0
        self.removed_blocks: list[str] = []
        self.bypass_costs: dict[str, float] = {}
        # Restored from checkpoints: steps done and the size after each (for the report).
        self.steps_done = 0
        self.base_macs: int | None = None
        self.steps: list[dict[str, Any]] = []
        # The layers whose output channels can be pruned, and their channels at the start.
        self.prunable: list[str] = []
        self.base_channels: int | None = None
        # Heads of each Transformer attention module at the start (none: no such module).
        self.base_heads: dict[str, int] = {}
        # Per prunable layer, the channel groups torch-pruning narrows alike (1: none).
        self._channel_groups: dict[str, int] = {}
        self._regulariser: tp.pruner.GroupNormPruner | None = None

    # -- schedule ---------------------------------------------------------------------------------
    def _check_epochs(self, start_epoch: int) -> None:
        """Fix the schedule once ``start_epoch`` is known."""
        end_epoch = self.end_epoch
        if end_epoch is None:
            end_epoch = start_epoch + self.iterative_steps - 1
        if start_epoch < 0 or end_epoch < start_epoch:
            raise ConfigError(
                f"compress.prune.start_epoch={start_epoch} and end_epoch={end_epoch} must satisfy "
                f"0 <= start_epoch <= end_epoch."
            )
        self.start_epoch, self.end_epoch = start_epoch, end_epoch

    @property
    def schedule(self) -> list[int]:
        """The epoch at which each pruning step runs."""
        if self.iterative_steps == 1:
            return [self.start_epoch]
        span = self.end_epoch - self.start_epoch
        return [
            self.start_epoch + round(span * k / (self.iterative_steps - 1))
            for k in range(self.iterative_steps)
        ]

    def last_form_change_epoch(self) -> int | None:
        return self.schedule[-1] if self.start_epoch is not None else None

    @classmethod
    def form_reachable(cls, done: History | None, wanted: History | None) -> bool:
        done, wanted = done or [], wanted or []
        return wanted[: len(done)] == done

    @classmethod
    def restore_form(
        cls,
        net: nn.Module,
        done: History | None,
        wanted: History,
        inputs: Inputs,
    ) -> nn.Module:
        replay_pruning_history(net, wanted[len(done or []) :], inputs)
        return net

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps_done": self.steps_done,
            "base_macs": self.base_macs,
            "steps": self.steps,
            "prunable": self.prunable,
            "base_channels": self.base_channels,
            "base_heads": self.base_heads,
            "depth_total": self.depth_total,
            "depth_candidates": self.depth_candidates,
            "removed_blocks": self.removed_blocks,
            "bypass_costs": self.bypass_costs,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps_done = state_dict["steps_done"]
        self.base_macs = state_dict["base_macs"]
        self.steps = state_dict["steps"]
        self.prunable = state_dict.get("prunable", [])
        self.base_channels = state_dict.get("base_channels")
        self.base_heads = state_dict.get("base_heads", {})
        self.depth_total = state_dict.get("depth_total", len(self.blocks))
        self.depth_candidates = state_dict.get("depth_candidates", 0)
        self.removed_blocks = state_dict.get("removed_blocks", [])
        self.bypass_costs = state_dict.get("bypass_costs", {})

    # -- hooks ------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: ClassifierModule, stage: str) -> None:
        if stage != "fit":
            return
        net = pl_module.net
        self._inputs = pl_module.input_spec
        _refuse_unbounded(net)
        head = find_classifier(net, self._inputs)[1]
        resolve_layers(net, self.ignored_layers, "compress.prune.ignored_layers")  # names exist
        resolve_layers(net, list(self.layer_ratios), "compress.prune.layer_ratios")
        if self.blocks:
            check_removable(net, self.blocks, self._inputs, "compress.prune.blocks")
        names = {id(m): name for name, m in net.named_modules()}
        # By name: trial prunes of a copy ignore the copy's layers.
        self._ignored = [names[id(head)], *self.ignored_layers]
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
        if self.start_epoch is None:
            self._check_epochs(0 if pl_module.pretrained else max(max_epochs, 0) // 3)
            if self.sparsity_reg and self.start_epoch < 1:
                raise ConfigError(
                    "compress.prune.sparsity_reg needs epochs of sparse training before pruning, "
                    "but the network entered trained: set compress.prune.start_epoch >= 1."
                )
        if 0 <= max_epochs <= self.end_epoch:
            raise ConfigError(
                f"compress.prune.end_epoch={self.end_epoch} is not before trainer.max_epochs="
                f"{max_epochs}: the last pruning step would never run or never be fine-tuned. "
                f"Lower end_epoch or raise max_epochs."
            )
        if trainer.ckpt_path:  # resuming: the checkpoint restores the architecture and our state
            return
        if self.base_macs is None:
            self.base_macs = count_macs(net, self._inputs)
        if self.depth is not None:
            found = depth_pruning.candidates(net, self._ignored)
            self.depth_candidates = len(found)
            self.depth_total = depth_pruning.blocks_to_remove(self.depth, found, net)
        elif self.blocks:
            self.depth_candidates = len(residual_blocks(net))
        steps_now = self.schedule[0] == 0 and self.sparsity_reg == 0
        self.prunable, self.base_channels = [], None  # found by the first pruner (_pruner)
        # Large networks take a while to trace (minutes for a full-size Swin): say what happens.
        log.info(
            "Tracing %s (%d modules) for %s%s",
            type(net).__name__,
            sum(1 for _ in net.modules()),
            "torch-pruning" if self._channels_on else "its residual blocks",
            "" if steps_now else ": a trial prune of a copy, before training",
        )
        if self.speedup:
            self._check_reachable(net)
        elif not steps_now or self.iterative_steps > 1:
            # Fails now, not after training, on a network torch-pruning cannot handle or a ratio
            # it cannot reach.
            self._trial(net)
        if steps_now:
            before = _widths(net)
            self._step(trainer, pl_module)
            if self.iterative_steps == 1 and not self.speedup:
                self._check_honoured(net, before, _widths(net))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        if not self._due(trainer):
            return
        done = len(pl_module.form.get(self.form_key, []))
        optimizer_state = PrunedOptimizerState(trainer.optimizers, pl_module.net)
        while self._due(trainer):
            self._step(trainer, pl_module)
        history = pl_module.form[self.form_key][done:]
        optimizer_state.prune(history, self._inputs)
        pl_module.rebuild_optimizers(state=optimizer_state.state())
        self.network_changed(trainer, pl_module)
        self._regulariser = None

    def _due(self, trainer: L.Trainer) -> bool:
        return (
            self.steps_done < self.iterative_steps
            and self.schedule[self.steps_done] <= trainer.current_epoch
        )

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: ClassifierModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.sparsity_reg and self.steps_done < self.iterative_steps:
            if self._regulariser is None:
                self._regulariser = self._pruner(pl_module.net, 0.0, regularise=True)
            self._regulariser.regularize(pl_module.net)

    # -- pruning ----------------------------------------------------------------------------------
    def _pruner(
        self,
        net: nn.Module,
        ratio: float,
        regularise: bool = False,
        steps: int = 1,
        importance: str | None = None,
        layers: dict[str, float] | None = None,
    ):
        modules = dict(net.named_modules())
        ignored = [modules[name] for name in self._ignored if name in modules]
        if not self.hidden:
            ignored += hidden_layers(net)
        ratios = {modules[n]: ratio for n, ratio in (layers or {}).items() if n in modules}
        kwargs = dict(
            importance=IMPORTANCES[importance or self.importance](),
            pruning_ratio=ratio,
            global_pruning=self.global_pruning,
            round_to=self.round_to,
            max_pruning_ratio=self.max_layer_ratio,
            ignored_layers=ignored,
            iterative_steps=steps,
            **({"pruning_ratio_dict": ratios} if ratios else {}),
            **graph_options(net, ratio, _head_ratios(net, layers or {}), self.global_pruning),
        )
        example = self._inputs.example(1, next(net.parameters()).device, zeros=True)
        training = net.training
        try:
            with quiet_unwrapped_parameters():
                if regularise:
                    pruner = tp.pruner.GroupNormPruner(
                        net, example, reg=self.sparsity_reg, **kwargs
                    )
                else:
                    pruner = GroupRoundingPruner(net, example, **kwargs)
        except Exception as error:
            raise torch_pruning_failure(
                net, error, "cannot build the dependency graph of"
            ) from error
        net.train(training)  # building the graph switches to eval() and never back
        if self.base_channels is None:  # the network as it enters, before the first step
            try:
                self._channel_groups = prunable_layers(pruner, net, ignored)
            except Exception as error:
                raise torch_pruning_failure(net, error, "cannot group the layers of") from error
            self.prunable = list(self._channel_groups)
            self.base_channels = _channels(net, self.prunable)
            self.base_heads = head_counts(net)
        return pruner

    def _step_ratio(self, done: int, ratio: float | None = None) -> float:
        """Ratio of the channels left after ``done`` steps to remove in the next one, so that
        step k reaches k/n of ``ratio`` (default: the ``ratio`` option)."""
        ratio = self.ratio if ratio is None else ratio
        k, n = done + 1, self.iterative_steps
        done, target = ratio * (k - 1) / n, ratio * k / n
        return 1.0 - (1.0 - target) / (1.0 - done)

    def _prune(
        self,
        net: nn.Module,
        done: int,
        run: Callable[[tp.pruner.BasePruner], None],
        importance: str | None = None,
    ) -> History:
        """Prune ``net`` in place by the schedule step after ``done`` steps, each pruner step
        taken by ``run``; returns what was removed."""
        if self.speedup:
            target = self.base_macs / self.speedup ** ((done + 1) / self.iterative_steps)
            if attention_modules(net):
                # Whole heads cannot go in small steps: the ratio that reaches the target is
                # found on copies, and the network pruned once at it.
                ratio = self._ratio_for_macs(net, target)
                pruner = self._pruner(net, ratio, importance=importance)
                run(pruner)
            else:
                pruner = self._pruner(net, 0.95, steps=_PROGRESSIVE_STEPS, importance=importance)
                self._prune_towards(net, target, lambda: run(pruner))
        elif self.global_pruning and self.max_layer_ratio < 1.0:
            # torch-pruning checks max_pruning_ratio before each of its steps: one global step
            # can take a layer far past it (measured: 66% of a layer at a 40% limit). In small
            # steps a layer stops as soon as it reaches the limit.
            pruner = self._pruner(
                net, self._step_ratio(done), steps=_CAPPED_STEPS, importance=importance
            )
            for _ in range(_CAPPED_STEPS):
                run(pruner)
        else:
            layers = {name: self._step_ratio(done, r) for name, r in self.layer_ratios.items()}
            pruner = self._pruner(net, self._step_ratio(done), importance=importance, layers=layers)
            run(pruner)
        return _normalise(pruner.DG.pruning_history())

    def _run(self, pruner: tp.pruner.BasePruner, trainer: L.Trainer, pl_module: ClassifierModule):
        if self.importance == "taylor":
            self._accumulate_gradients(trainer, pl_module)
        prune_step(pruner, pl_module.net)
        pl_module.net.zero_grad(set_to_none=True)

    def _accumulate_gradients(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        net = pl_module.net
        net.zero_grad(set_to_none=True)
        loader = trainer.datamodule.train_dataloader()
        if hasattr(loader.sampler, "set_epoch"):  # this epoch's batches, as a resumed run sees
            loader.sampler.set_epoch(trainer.current_epoch)
        for batch in islice(loader, self.taylor_batches):  # (*inputs, targets)
            *x, y = (t.to(pl_module.device) for t in batch)
            nn.functional.cross_entropy(net(*x), y).backward()

    @property
    def _channels_on(self) -> bool:
        """Whether channels are pruned (else only blocks go: ``ratio=0`` with ``depth``)."""
        return bool(self.ratio or self.speedup or self.layer_ratios)

    def _remember_base(self, net: nn.Module) -> None:
        """Find the prunable layers of ``net`` as it enters, before blocks go."""
        if self.depth_total and self._channels_on and self.base_channels is None:
            self._pruner(net, 0.0)

    def _remove_blocks(
        self,
        net: nn.Module,
        done: int,
        removed: Sequence[str],
        costs_of: Callable[[list], dict[str, float]] | None = None,
        last: bool = False,
    ) -> History:
        """Remove the blocks due at the step after ``done`` steps (``last``: all that are still
        due), ``removed`` being gone already: the named ones in order, or the cheapest by
        ``costs_of`` (``None``: in module order, for trials); returns their history entries."""
        steps = done + 1 if last else self.iterative_steps
        count = depth_pruning.due_now(self.depth_total, done, steps, len(removed))
        if not count:
            return []
        if self.blocks:
            names = [n for n in self.blocks if n not in removed][:count]
        else:
            found = depth_pruning.candidates(net, self._ignored)
            costs = costs_of(found) if costs_of else {b.name: 0.0 for b in found}
            names = depth_pruning.cheapest(net, costs, count)
            if costs_of:
                self.bypass_costs = costs
                log.info("Depth pruning: %s", depth_pruning.describe(costs, names))
        for name in names:
            remove_block(net, name, self._inputs)
        return [[name, REMOVE_BLOCK, []] for name in names]

    def _bypass_costs(self, trainer: L.Trainer, pl_module: ClassifierModule, blocks: list):
        """Bypass cost of each of ``blocks`` on the first validation batches."""
        net = pl_module.net
        device = next(net.parameters()).device
        loader = trainer.datamodule.val_dataloader()
        batches = [
            tuple(t.to(device) for t in batch) for batch in islice(loader, self.depth_batches)
        ]
        return depth_pruning.bypass_costs(net, blocks, batches)

    def _step(self, trainer: L.Trainer, pl_module: ClassifierModule) -> None:
        net = pl_module.net
        before = _widths(net)
        history = None
        if trainer.is_global_zero:
            self._remember_base(net)
            costs_of = functools.partial(self._bypass_costs, trainer, pl_module)
            history = self._remove_blocks(net, self.steps_done, self.removed_blocks, costs_of)
            if self._channels_on:
                run = functools.partial(self._run, trainer=trainer, pl_module=pl_module)
                history += self._prune(net, self.steps_done, run)
        if trainer.world_size > 1:
            history = trainer.strategy.broadcast(history, src=0)
            if not trainer.is_global_zero:
                replay_pruning_history(net, history, self._inputs)
        self.removed_blocks += [name for name, kind, _ in history if kind == REMOVE_BLOCK]
        pl_module.form.setdefault(self.form_key, []).extend(history)
        self.steps_done += 1
        if trainer.world_size > 1:  # every rank must now hold the very same network
            log.info(
                "Rank %d after pruning step %d: %d parameters, weights %s, history %s",
                trainer.global_rank,
                self.steps_done,
                count_params(net),
                fingerprint(net.state_dict().values()),
                fingerprint([repr(pl_module.form[self.form_key]).encode()]),
            )
        self._record(trainer, pl_module, before)

    def _record(self, trainer: L.Trainer, pl_module: ClassifierModule, before: dict) -> None:
        net = pl_module.net
        macs, params = count_macs(net, self._inputs), count_params(net)
        channels = _channels(net, self.prunable)
        step = {
            "epoch": trainer.current_epoch,
            "params": params,
            "macs": macs,
            "channels": channels,
        }
        if self.depth_total:
            step["blocks_removed"] = len(self.removed_blocks)
        if self.base_heads:
            step["heads"] = head_counts(net)
            step["widths"] = _widths(net)
        self.steps.append(step)
        log.info(
            "Pruning step %d/%d at epoch %d: %s params, %s MACs (%.2fx fewer MACs than at start)",
            self.steps_done,
            self.iterative_steps,
            trainer.current_epoch,
            f"{params:,}",
            f"{macs:,}",
            self.base_macs / macs,
        )
        achieved = 1 - channels / self.base_channels if self.base_channels else None
        last = self.steps_done == self.iterative_steps
        # The trial before training ranked untrained weights: global ranking may differ now.
        if (
            last
            and not self.speedup
            and achieved is not None
            and (achieved < self.ratio - _RATIO_TOLERANCE)
        ):
            log.warning(
                "compress.prune.ratio=%s: the trained network was pruned %.1f%% (global ranking "
                "of trained weights left whole layers the trial before training pruned); the "
                "report states the ratio achieved.",
                self.ratio,
                100 * achieved,
            )
        if last and self.round_to is None and _int8_follows(trainer):
            modules = dict(net.named_modules())
            hint = int8_width_hint(
                {name: _widths_of(modules[name]) for name in self.prunable if name in modules}
            )
            if hint:
                log.warning(hint)
        for logger in trainer.loggers:
            logger.log_metrics({"prune/params": params, "prune/macs": macs}, step=self.steps_done)
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text(
                    "prune/channels", _width_table(before, _widths(net)), self.steps_done
                )
        if has_tensorboard(trainer.loggers):
            after = _widths(net)
            figure = layer_bars(
                list(after),
                list(after.values()),
                f"Channels kept per layer after pruning step {self.steps_done} "
                f"({macs:,} MACs, {self.base_macs / macs:.2f}x fewer)",
                "output channels",
                totals=[before.get(name, width) for name, width in after.items()],
            )
            log_figure(trainer.loggers, "prune/channels_kept", figure, self.steps_done)
            if self.bypass_costs:
                names = list(self.bypass_costs)
                figure = layer_bars(
                    names,
                    [self.bypass_costs[n] for n in names],
                    f"Bypass cost of each residual block before pruning step {self.steps_done} "
                    f"({len(self.removed_blocks)} removed so far)",
                    "validation cross-entropy rise when the block alone is bypassed",
                )
                log_figure(trainer.loggers, "prune/bypass_cost", figure, self.steps_done)

    def _ratio_for_macs(self, net: nn.Module, target_macs: float) -> float:
        """The smallest ratio (to 1/1000) at which a one-shot prune of ``net`` leaves at most
        ``target_macs`` (the largest allowed when none does), found by bisection on copies."""
        low, high = 0.0, 0.95
        if self._macs_at(net, high) > target_macs:
            return high
        while high - low > 1e-3:
            middle = (low + high) / 2
            if self._macs_at(net, middle) <= target_macs:
                high = middle
            else:
                low = middle
        return high

    def _macs_at(self, net: nn.Module, ratio: float) -> int:
        trial = copy.deepcopy(net)
        prune_step(self._pruner(trial, ratio, importance="l2"), trial)
        return count_macs(trial, self._inputs)

    def _prune_towards(self, net: nn.Module, target_macs: float, step: Callable[[], None]) -> int:
        """Prune by small ``step``s until ``net`` has at most ``target_macs``; returns its MACs."""
        macs = count_macs(net, self._inputs)
        for _ in range(_PROGRESSIVE_STEPS):
            if macs <= target_macs:
                break
            step()
            macs = count_macs(net, self._inputs)
        return macs

    def _trial(self, net: nn.Module) -> None:
        """Prune a copy of ``net`` by the whole schedule now, ranking channels by magnitude
        (which needs no gradients; how many channels each layer loses does not depend on the
        ranking) and removing blocks in order: what torch-pruning cannot do, or a ratio it cannot
        reach, fails early."""
        trial = copy.deepcopy(net)
        before = _widths(trial)
        self._remember_base(trial)
        removed: list[str] = []
        for done in range(self.iterative_steps):
            removed += [n for n, _, _ in self._remove_blocks(trial, done, removed)]
            if self._channels_on:
                self._prune(trial, done, lambda pruner: prune_step(pruner, trial), importance="l2")
        self._check_honoured(trial, before, _widths(trial))

    def _check_honoured(self, net: nn.Module, before: dict[str, int], after: dict[str, int]):
        """Refuse a ``ratio`` that pruning ``before`` into ``after`` did not reach."""
        if self.layer_ratios:  # each named layer's own ratio; the others prune by `ratio`
            asked = [n for n, r in self.layer_ratios.items() if r > 0]
            heads = head_counts(net)  # an attention module's name asks for its heads

            def kept_whole(name: str) -> bool:
                if name in after:
                    return after[name] == before[name] > 1
                return heads.get(name, 0) > 1 and heads[name] == self.base_heads.get(name)

            whole = [name for name in asked if kept_whole(name)]
            if whole:
                raise ConfigError(
                    f"compress.prune.layer_ratios cannot be honoured: {', '.join(whole)} would "
                    f"keep all their channels (torch-pruning leaves a layer whole when "
                    f"int(channels x (1 - ratio)) is 0). Lower their ratios."
                )
            return
        if not self.ratio or not self.prunable:
            return
        # An attention module of one head cannot lose a head: its projections stay, rightly.
        projections = {id(p) for a in attention_modules(net) if a.heads == 1 for p in a.projections}
        single = {name for name, layer in net.named_modules() if id(layer) in projections}
        whole = [n for n in self.prunable if after.get(n) == before[n] > 1 and n not in single]
        achieved = 1 - _channels(net, self.prunable) / self.base_channels
        name = type(net).__name__
        if whole and not self.global_pruning:
            raise ConfigError(self._whole_layers_message(name, before, whole, achieved))
        if achieved < self.ratio - _RATIO_TOLERANCE:
            limit = (
                f" max_layer_ratio={self.max_layer_ratio} stops each layer at that share."
                if self.max_layer_ratio < 1
                else ""
            )
            why = limit or (
                " torch-pruning leaves a group of layers whole where pruning it would leave no "
                "channel."
            )
            raise ConfigError(
                f"compress.prune.ratio={self.ratio} cannot be reached on {name}: pruning removes "
                f"{achieved:.0%} of the channels of its prunable layers.{why} Ask for at most "
                f"compress.prune.ratio={math.floor(achieved * 100) / 100}"
                + (", or raise max_layer_ratio." if self.max_layer_ratio < 1 else ".")
            )

    def _whole_layers_message(
        self, name: str, before: dict[str, int], whole: list[str], achieved: float
    ) -> str:
        """Why one-shot local pruning leaves the layers ``whole`` unpruned, and what works."""
        groups = {n: self._channel_groups.get(n, 1) for n in self.prunable}
        grouped = [n for n in whole if groups[n] > 1]
        plain = [n for n in whole if groups[n] == 1]
        # The grouped layers first: their cause is the one to explain.
        shown = ", ".join(f"{n} ({before[n]})" for n in (grouped + plain)[:2])
        more = f" and {len(whole) - 2} more" if len(whole) > 2 else ""
        causes = []
        if grouped:
            layer = grouped[0]
            g, per_group = groups[layer], before[layer] // groups[layer]
            kept = int(per_group * (1 - self.ratio))
            text = (
                f"{layer} is pruned in {g} channel groups of {per_group} (a grouped convolution, "
                f"or a layer coupled to one), which torch-pruning narrows alike: it keeps {g} x k "
                f"channels, with k = int({per_group} x (1 - {self.ratio})) = {kept} per group"
            )
            if self.round_to:
                step = self.round_to // math.gcd(self.round_to, g)
                text += (
                    f", and {g} x k is a multiple of round_to={self.round_to} only when k is a "
                    f"multiple of {step}: rounded down, k = "
                    f"{round_kept_per_group(kept, g, self.round_to)}, so the layer stays whole"
                )
            else:
                text += ", so the layer stays whole"
            causes.append(f"{text} ({len(grouped)} such layers).")
        if plain:
            rounding = (
                f" rounded down to a multiple of round_to={self.round_to}" if self.round_to else ""
            )
            which = f" ({len(plain)} such layers, e.g. {plain[0]} ({before[plain[0]]}))"
            causes.append(
                f"torch-pruning keeps int(channels x (1 - ratio)) channels of a layer{rounding}, "
                f"and leaves the layer whole when that is 0{which if grouped else ''}."
            )
        fixes = []
        ceiling = min(
            _ratio_ceiling(before[n] // groups[n], groups[n], self.round_to) for n in whole
        )
        if ceiling > 0:
            fixes.append(
                f"ask for at most compress.prune.ratio={ceiling} (every layer keeps a channel)"
            )
        rounding = self._round_to_that_works(before, groups)
        if rounding:
            fixes.append(
                f"set compress.prune.round_to={rounding} (the largest divisor of "
                f"{self.round_to} that leaves every layer prunable at ratio {self.ratio})"
            )
        elif rounding == 0:
            fixes.append(
                f"set compress.prune.round_to=null (no divisor of {self.round_to} above 1 leaves "
                f"every layer prunable at ratio {self.ratio})"
            )
        fixes.append("add those layers to compress.prune.ignored_layers")
        if not grouped:
            fixes.append("prune by MACs with compress.prune.speedup=...")
        return (
            f"compress.prune.ratio={self.ratio} cannot be honoured on {name}: {len(whole)} of "
            f"its {len(self.prunable)} prunable layers would keep all their channels: "
            f"{shown}{more}, so the network would be pruned {achieved:.0%} instead of "
            f"{self.ratio:.0%}. {' '.join(causes)} To prune it, "
            + ", ".join(fixes[:-1])
            + f", or {fixes[-1]}."
        )

    def _round_to_that_works(self, before: dict[str, int], groups: dict[str, int]) -> int | None:
        """The largest divisor of ``round_to`` below it with which every prunable layer keeps
        channels at ``ratio`` (0: only no rounding does), or ``None``: none does, or no
        ``round_to`` is set."""
        if not self.round_to:
            return None
        for divisor in range(self.round_to - 1, 0, -1):
            if self.round_to % divisor == 0 and all(
                _kept_per_group(before[n] // groups[n], groups[n], self.ratio, divisor)
                for n in self.prunable
            ):
                return divisor if divisor > 1 else 0
        return None

    def _check_reachable(self, net: nn.Module) -> None:
        """Dry-run the MACs target on a copy, so an unreachable one fails before training."""
        trial = copy.deepcopy(net)
        self._remember_base(trial)
        self._remove_blocks(trial, 0, [], last=True)
        # Reachability depends on the layers and limits, not on the ranking: rank by magnitude,
        # which needs no gradients (taylor would).
        if attention_modules(trial):
            macs = self._macs_at(trial, 0.95)
        else:
            pruner = self._pruner(trial, 0.95, steps=_PROGRESSIVE_STEPS, importance="l2")
            macs = self._prune_towards(
                trial, self.base_macs / self.speedup, lambda: prune_step(pruner, trial)
            )
        if macs * self.speedup <= self.base_macs:
            return
        reached = self.base_macs / macs
        raise ConfigError(
            f"compress.prune.speedup={self.speedup} cannot be reached on "
            f"{type(net).__name__}: pruning all it allows (max_layer_ratio="
            f"{self.max_layer_ratio}, {len(self._ignored)} ignored layers) gives {reached:.2f}x "
            f"fewer MACs at most. Ask for less than that"
            + (", or raise max_layer_ratio." if self.max_layer_ratio < 1 else ".")
        )

    @classmethod
    def companions(
        cls, options: Mapping[str, Any], chosen: Collection[str], init_from: str | None
    ) -> dict[str, dict[str, Any]]:
        """Distillation from the network as it entered, when blocks go from a trained network
        and ``compress=distill`` is not chosen (``depth_distill``)."""
        removes_blocks = options.get("depth") is not None or bool(options.get("blocks"))
        if not removes_blocks or not options.get("depth_distill", True) or "distill" in chosen:
            return {}
        if not init_from:
            log.info(
                "compress.prune.depth: the network trains from scratch (no init_from), so the "
                "fine-tuning after blocks go does not distil from a trained deeper network."
            )
            return {}
        log.info(
            "compress.prune.depth: fine-tuning distils from the network before blocks go "
            "(compress.distill with its defaults; compress.prune.depth_distill=false to fine-tune "
            "without, or compress=[prune,distill] to set its options)."
        )
        # As conf/compress/distill.yaml sets them; the other options take their defaults.
        return {
            "distill": {
                "_target_": "litcompress.compress.DistillCallback",
                "init_from": "${init_from}",
                "ckpt_path": "${ckpt_path}",
            }
        }

    def report_entries(self) -> dict[str, Any]:
        """What this technique adds to report.json: what was asked and what was achieved."""
        entry: dict[str, Any] = {
            "importance": self.importance,
            "ratio": None if self.speedup else self.ratio,
            "speedup_target": self.speedup,
            "steps": self.steps,
        }
        if self.depth_total:
            entry["depth"] = {
                "asked": self.depth if self.depth is not None else list(self.blocks),
                "blocks": [self.depth_candidates, self.depth_candidates - len(self.removed_blocks)],
                "removed": list(self.removed_blocks),
                "bypass_costs": dict(self.bypass_costs),
            }
        if not self.steps:
            return {"prune": entry}
        last = self.steps[-1]
        entry["achieved_macs_speedup"] = self.base_macs / last["macs"]
        done = []
        if self.removed_blocks:
            names = ", ".join(self.removed_blocks[:3]) + (
                ", ..." if len(self.removed_blocks) > 3 else ""
            )
            done.append(
                f"removed {len(self.removed_blocks)} of {self.depth_candidates} residual blocks "
                f"({names})"
            )
        if self.base_channels:
            entry["achieved_ratio"] = 1 - last["channels"] / self.base_channels
            done.append(
                f"removed {entry['achieved_ratio']:.1%} of the channels of "
                f"{len(self.prunable)} prunable layers ({self.base_channels:,} -> "
                f"{last['channels']:,})"
            )
        asked = []
        if self._channels_on:
            asked.append(
                f"{self.speedup:.2f}x fewer MACs" if self.speedup else f"ratio {self.ratio:.2f}"
            )
        if self.depth_total:
            asked.append(
                f"depth {self.depth}" if self.depth is not None else f"{len(self.blocks)} blocks"
            )
        entry["summary"] = (
            f"asked {', '.join(asked)}; {'; '.join(done) or 'nothing removed'}, "
            f"{entry['achieved_macs_speedup']:.2f}x fewer MACs"
        )
        if self.base_channels and "heads" in last:
            kept = last["heads"]  # a removed layer's attention has none left
            entry["heads"] = {n: [h, kept.get(n, 0)] for n, h in self.base_heads.items()}
            entry["summary"] += (
                f"; attention heads {sum(self.base_heads.values())} -> {sum(kept.values())} "
                f"({', '.join(str(kept.get(n, 0)) for n in self.base_heads)} per layer)"
            )
        return {"prune": entry}


def _head_ratios(net: nn.Module, layers: dict[str, float]) -> dict[str, float]:
    """The share of heads each attention module named in ``layers`` (by its own name or its
    query's) loses."""
    ratios = {}
    for attention in attention_modules(net):
        query = next(
            n for n, m in attention.module.named_children() if m is attention.projections[0]
        )
        for name in (attention.name, f"{attention.name}.{query}"):
            if name in layers:
                ratios[attention.name] = layers[name]
    return ratios


def _read_layer_ratios(value: dict[str, float] | str | None) -> dict[str, float]:
    """``layer_ratios`` as a mapping: given as one, or read from the YAML file it names."""
    if not isinstance(value, str):
        return {str(k): float(v) for k, v in (value or {}).items()}
    path = Path(value).expanduser()
    try:
        ratios = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(
            f"compress.prune.layer_ratios={value} cannot be read as a YAML file of layer: ratio "
            f"pairs ({type(error).__name__}: {error}). Give the file litcompress sensitivity "
            f"wrote, or a mapping."
        ) from error
    if not isinstance(ratios, dict):
        raise ConfigError(
            f"compress.prune.layer_ratios={value} holds no mapping of layer names to ratios."
        )
    return {str(k): float(v) for k, v in ratios.items()}


def prune_step(pruner: tp.pruner.BasePruner, net: nn.Module) -> None:
    """One step of ``pruner`` on ``net``, keeping its training mode; failures name the cause."""
    training = net.training
    try:
        pruner.step()
    except Exception as error:
        raise torch_pruning_failure(net, error, "could not prune") from error
    after_pruning(net)
    net.train(training)


def _refuse_unbounded(net: nn.Module) -> None:
    """Refuse, before tracing, a network whose layers make torch-pruning run out of memory."""
    layers = sorted({type(m).__name__ for m in net.modules() if isinstance(m, _UNBOUNDED_LAYERS)})
    if layers:
        raise ConfigError(
            f"torch-pruning {tp.__version__} cannot prune {type(net).__name__}: with its "
            f"{', '.join(layers)} layers, building the pruning groups (get_all_groups) expands "
            f"index mappings until memory runs out (measured: the process killed at 20-23 GB "
            f"after 4-8 minutes). ignored_layers cannot help. Pick another model, or compress "
            f"it without pruning (compress=qat or distill)."
        )


def torch_pruning_failure(net: nn.Module, error: Exception, what: str) -> ConfigError:
    """A ConfigError that says what torch-pruning failed at, and whether ignoring a layer helps.

    When the error names a layer of ``net``, that layer can go to ``ignored_layers``; otherwise
    the message says where in torch-pruning it failed (its function names what it was mapping,
    e.g. ``update_reshape_index_mapping``: a reshape of the channels, as a channel shuffle does).
    """
    text = " ".join(str(error).split()) or "no message"
    layers = [
        name
        for name, _ in net.named_modules()
        if name and re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", text)
    ]
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "torch_pruning" in f.filename]
    where = f" in torch-pruning's {frames[-1].name}()" if frames else ""
    if layers:
        hint = (
            f"Add the layer it names ({max(layers, key=len)}) to compress.prune.ignored_layers, "
            f"or pick another model."
        )
    else:
        hint = (
            "It names no layer, so compress.prune.ignored_layers cannot help: this network uses "
            "an operation torch-pruning does not support. Pick another model, or compress it "
            "without pruning (compress=qat or distill)."
        )
    return ConfigError(
        f"torch-pruning {what} {type(net).__name__}: {type(error).__name__}{where}: {text}. {hint}"
    )


class PrunedOptimizerState:
    """Optimizer state sliced the way a pruning step slices the weights.

    Each per-weight state tensor (SGD's momentum, Adam's moments) is copied into a twin of the
    network in place of its weight; replaying the step's pruning history on the twins slices the
    state exactly as the weights were sliced, so a mid-training step keeps the optimizer's memory
    of the channels that stay instead of restarting it from zero. Other entries (Adam's step
    count) carry over as they are.
    """

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], net: nn.Module) -> None:
        names = {id(p): name for name, p in net.named_parameters()}
        per_key: dict[str, dict[str, torch.Tensor]] = {}
        self.other: dict[str, dict[str, Any]] = {}
        for optimizer in optimizers:
            for param, state in optimizer.state.items():
                name = names.get(id(param))
                if name is None:
                    continue
                self.other[name] = {}
                for key, value in state.items():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        per_key.setdefault(key, {})[name] = value
                    else:
                        self.other[name][key] = value
        self.twins: dict[str, nn.Module] = {}
        for key, values in per_key.items():
            twin = copy.deepcopy(net)
            with torch.no_grad():
                for name, param in twin.named_parameters():
                    param.grad = None
                    if name in values:
                        param.copy_(values[name])
            self.twins[key] = twin

    def prune(self, history: History, inputs: Inputs) -> None:
        """Apply pruning ``history`` (the step's entries) to the state."""
        for twin in self.twins.values():
            replay_pruning_history(twin, history, inputs)

    def state(self) -> dict[str, dict[str, Any]]:
        """Per parameter name, the state for the pruned parameter."""
        sliced = {key: dict(twin.named_parameters()) for key, twin in self.twins.items()}
        state = {}
        for name, other in self.other.items():
            if any(name not in params for params in sliced.values()):
                continue  # its block was removed
            state[name] = {**other, **{k: p[name].detach().clone() for k, p in sliced.items()}}
        return state


def _int8_follows(trainer: L.Trainer) -> bool:
    return any(isinstance(c, CompressionCallback) and c.delivers_int8 for c in trainer.callbacks)


def int8_width_hint(widths: dict[str, int]) -> str | None:
    """The warning for pruned layers whose widths (name -> channels) int8 kernels run slowly
    (not multiples of :data:`INT8_WIDTH`), or ``None`` when there are none."""
    odd = {name: width for name, width in widths.items() if width % INT8_WIDTH}
    if not odd:
        return None
    name, width = next(iter(odd.items()))
    return (
        f"compress.prune left {len(odd)} of {len(widths)} pruned layers with a channel count "
        f"that is not a multiple of {INT8_WIDTH} (e.g. {name}: {width}), and the delivered model "
        f"is int8: int8 kernels (VNNI, AMX) run such widths slowly, and the pruned int8 model may "
        f"be no faster than the unpruned one. Set compress.prune.round_to={INT8_WIDTH} to keep "
        f"multiples of {INT8_WIDTH}."
    )


def _widths(net: nn.Module) -> dict[str, int]:
    """Output width of every conv and linear layer (the channels pruning keeps)."""
    return {
        name: _widths_of(m)
        for name, m in net.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    }


def prunable_layers(
    pruner: tp.pruner.BasePruner, net: nn.Module, ignored: Sequence[nn.Module]
) -> dict[str, int]:
    """The conv and linear layers of ``net`` whose output channels torch-pruning may remove
    (wider than one channel, not ``ignored`` and not tied to an ignored layer), found in the
    dependency graph of ``pruner``: name -> the channel groups torch-pruning narrows alike in
    that layer (a grouped convolution's groups, also for the layers coupled to it; else 1)."""
    graph = pruner.DG
    names = {id(m): name for name, m in net.named_modules()}
    found: dict[str, int] = {}
    with quiet_unwrapped_parameters():
        for group in graph.get_all_groups(ignored_layers=list(ignored)):
            groups = channel_groups(pruner, group)
            for dep, _ in group:
                module = dep.target.module
                if (
                    graph.is_out_channel_pruning_fn(dep.handler)
                    and isinstance(module, nn.Conv2d | nn.Linear)
                    and _widths_of(module) > 1
                ):
                    found.setdefault(names[id(module)], groups)
    return found


def _kept_per_group(per_group: int, groups: int, ratio: float, round_to: int | None) -> int:
    """Channels a one-shot local prune at ``ratio`` keeps in each of ``groups`` channel groups of
    ``per_group`` channels (``groups`` = 1: the layer), as torch-pruning 1.6 counts them with
    :class:`~litcompress.compat.GroupRoundingPruner`; 0: the layer stays whole."""
    kept = int(per_group * (1 - ratio))
    if round_to:
        kept = round_kept_per_group(kept, groups, round_to)
    return kept


def _ratio_ceiling(per_group: int, groups: int, round_to: int | None) -> float:
    """The highest ratio (two decimals) at which a layer of ``groups`` x ``per_group`` channels
    keeps channels; 0.0 when none does."""
    need = round_to // math.gcd(round_to, groups) if round_to else 1
    if need >= per_group:
        return 0.0
    return math.floor((1 - need / per_group) * 100) / 100


def _widths_of(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def _channels(net: nn.Module, names: Sequence[str]) -> int:
    """Output channels of the layers ``names`` of ``net``, together."""
    modules = dict(net.named_modules())
    return sum(_widths_of(modules[name]) for name in names if name in modules)


def _width_table(before: dict[str, int], after: dict[str, int]) -> str:
    rows = ["| layer | channels before | after | kept |", "|---|---|---|---|"]
    for name, width in after.items():
        old = before.get(name, width)
        rows.append(f"| {name} | {old} | {width} | {width / old:.0%} |")
    return "\n".join(rows)
