"""Every use of a private API of torch, torchao or Lightning, in one place.

Each function wraps one private name or internal attribute that litcompress relies on, pinned by
``pyproject.toml`` (torch 2.14.1, torchao 0.18, lightning 2.6, torch-pruning 1.6).
``tests/test_compat.py`` checks each one against the installed versions, so that an upgrade that
moves or changes them fails there, loudly, instead of somewhere in a training run.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch_pruning as tp
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
    """Rewrite the dropout ops of an exported graph for training or evaluation, in place: the
    ``aten.dropout`` ops (torchao's rewrite) and the dropout of fused attention."""
    from torchao.quantization.pt2e.export_utils import _replace_dropout

    _replace_dropout(graph, train_to_eval=train_to_eval)
    set_attention_dropout(graph, training=not train_to_eval)


# Where the dropout probability of a fused attention op captured in training mode is kept while
# the graph evaluates.
_TRAINING_DROPOUT = "litcompress_training_dropout_p"


def _fused_attention(graph: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [
        node
        for node in graph.graph.nodes
        if node.op == "call_function" and "scaled_dot_product" in str(node.target)
    ]


def _dropout_p(node: torch.fx.Node) -> float:
    # aten.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, ...)
    if "dropout_p" in node.kwargs:
        return float(node.kwargs["dropout_p"])
    return float(node.args[4]) if len(node.args) > 4 else 0.0


def _set_dropout_p(node: torch.fx.Node, value: float) -> None:
    if "dropout_p" in node.kwargs or len(node.args) <= 4:
        node.kwargs = {**node.kwargs, "dropout_p": value}
    else:
        node.args = (*node.args[:4], value, *node.args[5:])


def has_attention_dropout(graph: torch.fx.GraphModule) -> bool:
    """Whether ``graph`` holds fused attention captured with dropout (in training mode)."""
    return any(
        _dropout_p(node) or _TRAINING_DROPOUT in node.meta for node in _fused_attention(graph)
    )


def set_attention_dropout(graph: torch.fx.GraphModule, training: bool) -> None:
    """Switch the dropout of fused attention ops on (``training``) or off, in place.

    ``torch.export`` in training mode captures ``transformers``' SDPA attention with its dropout
    probability as a constant argument, which torchao's train/eval rewrite does not touch: the
    converted int8 model would drop attention weights at random in inference (measured on a tiny
    BERT: logits 0.01 apart between two calls on one input; ONNX Runtime, which ignores it,
    within 1e-8 once it is off).
    """
    changed = False
    for node in _fused_attention(graph):
        if not training and _dropout_p(node):
            node.meta[_TRAINING_DROPOUT] = _dropout_p(node)
            _set_dropout_p(node, 0.0)
            changed = True
        elif training and _TRAINING_DROPOUT in node.meta:
            _set_dropout_p(node, node.meta.pop(_TRAINING_DROPOUT))
            changed = True
    if changed:
        graph.recompile()


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


# -- torchao PT2E: the pattern graphs of every prepare and convert, exported once per process ---
_PATTERN_USERS = (
    "torchao.quantization.pt2e.utils",
    "torchao.quantization.pt2e.qat_utils",
    "torchao.quantization.pt2e.reference_representation_rewrite",
)


def _pattern_key(pattern: Any, example_inputs: tuple, is_cuda: bool, kwargs: dict) -> Any:
    """What a pattern graph depends on: the pattern's code and closure, the inputs' shapes and
    dtypes (tracing never reads their values), the device; ``None`` when not hashable."""
    # torchao wraps each pattern function in a module (_WrapperModule) whose `fn` it calls.
    function = getattr(pattern, "fn", None) if isinstance(pattern, torch.nn.Module) else pattern
    if isinstance(pattern, torch.nn.Module) and (list(pattern.parameters()) or function is None):
        return None
    code = getattr(function, "__code__", None)
    if code is None:
        return None
    closure = tuple(cell.cell_contents for cell in function.__closure__ or ())

    def spec(x: Any) -> Any:
        return (tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else x

    inputs = tuple(spec(x) for x in example_inputs)
    key = (type(pattern), code, closure, getattr(function, "__defaults__", None), inputs, is_cuda)
    key += (tuple(sorted((name, spec(value)) for name, value in kwargs.items())),)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def cache_pattern_graphs() -> None:
    """Export each of torchao's pattern graphs once per process instead of at every call.

    Every PT2E prepare and convert matches dozens of small patterns (conv-BatchNorm fusion for
    QAT, its folding at conversion), each first captured with ``torch.export`` (~0.5 s, ~150 of
    them in one QAT run). The graph depends only on the pattern's code and the inputs' shapes, so
    it is cached; callers get a copy (they may rewrite it). Idempotent.
    """
    import importlib

    utils = importlib.import_module(_PATTERN_USERS[0])
    original = utils._get_aten_graph_module_for_pattern
    if getattr(original, "_litcompress_cached", False):
        return
    cache: dict[Any, torch.fx.GraphModule] = {}

    def cached(pattern, example_inputs, is_cuda=False, **kwargs):  # noqa: ANN001, ANN202
        key = _pattern_key(pattern, example_inputs, is_cuda, kwargs)
        if key is None:
            return original(pattern, example_inputs, is_cuda, **kwargs)
        if key not in cache:
            cache[key] = original(pattern, example_inputs, is_cuda, **kwargs)
        return copy.deepcopy(cache[key])

    cached._litcompress_cached = True
    cached.__wrapped__ = original
    cached.cache = cache
    for name in _PATTERN_USERS:  # each imported the function by name
        module = importlib.import_module(name)
        if hasattr(module, "_get_aten_graph_module_for_pattern"):
            module._get_aten_graph_module_for_pattern = cached


# -- torch-pruning: round_to on layers pruned alike in every channel group ----------------------
def round_kept_per_group(kept: int, groups: int, round_to: int) -> int:
    """Channels each of ``groups`` equal channel groups keeps so that the layer keeps a multiple of
    ``round_to``: ``kept`` rounded down to a multiple of ``round_to / gcd(round_to, groups)``
    (0: none can stay). With 55 groups and round_to=8 that is a multiple of 8, with 32 of 1."""
    step = round_to // math.gcd(round_to, groups)
    return kept - kept % step


def channel_groups(pruner: tp.pruner.BasePruner, group: Any) -> int:
    """How many channel groups torch-pruning narrows alike in a pruning group (grouped
    convolutions, GroupNorm, attention heads; 1 for none; depthwise convolutions count as none)."""
    return pruner._get_channel_groups(group)


class GroupRoundingPruner(tp.pruner.BasePruner):
    """torch-pruning's ``BasePruner`` with ``round_to`` applied to the width of a layer whose
    channel groups it narrows alike (a grouped convolution: RegNet, ResNeXt).

    torch-pruning 1.6.1 (``BasePruner._prune``) picks the channels to remove from one channel
    group, then rounds that count as if it were the whole layer's: on RegNet's 440-channel
    convolution in 55 groups of 8 at ratio 0.5 it rounds 440 - 4 down to 432, removes 8 channels
    from each group of 8, and ``check_pruning_group`` then leaves the layer whole. Here the width
    kept, groups x channels kept per group, is what becomes a multiple of ``round_to``
    (:func:`round_kept_per_group`); where no channel of a group can go, the layer stays whole as
    torch-pruning leaves it.
    """

    _groups_now = 1

    def _is_atten_group(self, group: Any) -> Any:
        # _prune calls this on each pruning group just before rounding what it removes from it,
        # and _round_to is not given the group: keep its channel groups for _round_to.
        self._groups_now = channel_groups(self, group)
        return super()._is_atten_group(group)

    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        groups = self._groups_now
        if groups <= 1:
            return super()._round_to(n_pruned, current_channels, round_to)
        per_group = current_channels // groups  # n_pruned counts the channels of one group
        return per_group - round_kept_per_group(per_group - n_pruned, groups, round_to)
