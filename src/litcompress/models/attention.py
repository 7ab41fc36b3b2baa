"""The attention heads of Transformer networks, found by their layout rather than by class.

A ``transformers`` self-attention module (BERT, RoBERTa, ELECTRA, DistilBERT, MiniLM, and the
like) projects its input with three linear layers (query, key, value) whose outputs are split
into heads of ``attention_head_size`` features each; in ``transformers`` 5 the forward pass splits
them with ``view(..., -1, head_size)``, so the head count follows from the projections' width. A
module with such three projections and a head-size attribute is one attention module here,
whatever its class. Removing whole heads keeps the head size and narrows the projections by
whole heads; :func:`update_head_counts` then sets the module's head count attributes from the
projections' width, after pruning or when a pruned network is rebuilt from its history.

``nn.MultiheadAttention`` (torchvision's ViT) is not one of these: its projections are one packed
weight, and it is pruned by narrowing every head alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

# Names of the query, key and value projections, by family.
PROJECTIONS = (
    ("query", "key", "value"),  # BERT, RoBERTa, ELECTRA, MiniLM
    ("q_lin", "k_lin", "v_lin"),  # DistilBERT
    ("q_proj", "k_proj", "v_proj"),
)
# Attributes that hold the head count, and the size of one head.
HEAD_COUNT = ("num_attention_heads", "n_heads", "num_heads")
HEAD_SIZE = ("attention_head_size", "head_dim")


@dataclass(frozen=True)
class Attention:
    """One attention module: its name in the network, the module and its q, k, v projections."""

    name: str
    module: nn.Module
    projections: tuple[nn.Linear, nn.Linear, nn.Linear]
    head_size: int

    @property
    def heads(self) -> int:
        """The heads it has now (its projections' width in heads)."""
        return self.projections[0].out_features // self.head_size


def attention_modules(net: nn.Module) -> list[Attention]:
    """The attention modules of ``net`` whose heads can be removed whole, in module order."""
    found = []
    for name, module in net.named_modules():
        size = next((getattr(module, a) for a in HEAD_SIZE if hasattr(module, a)), None)
        if not isinstance(size, int) or size < 1:
            continue
        for names in PROJECTIONS:
            layers = tuple(getattr(module, n, None) for n in names)
            if all(isinstance(layer, nn.Linear) for layer in layers):
                found.append(Attention(name, module, layers, size))
                break
    return found


def head_counts(net: nn.Module) -> dict[str, int]:
    """Attention module name -> the heads it has."""
    return {a.name: a.heads for a in attention_modules(net)}


def update_head_counts(net: nn.Module) -> None:
    """Set each attention module's head count attributes from its projections' width."""
    for attention in attention_modules(net):
        for attribute in HEAD_COUNT:
            if isinstance(getattr(attention.module, attribute, None), int):
                setattr(attention.module, attribute, attention.heads)
        if isinstance(getattr(attention.module, "all_head_size", None), int):
            attention.module.all_head_size = attention.projections[0].out_features


def use_eager_attention(net: nn.Module) -> list[tuple[nn.Module, Any]]:
    """Switch the ``transformers`` models inside ``net`` to eager attention (matmul, softmax,
    matmul: it gives the attention probabilities, and int8 quantizers see its matmuls, which the
    fused SDPA op hides); returns each model with the implementation it had."""
    switched, inside = [], set()
    for module in net.modules():
        config = getattr(module, "config", None)
        if id(module) in inside or config is None or not hasattr(module, "set_attn_implementation"):
            continue
        # The outermost model only: it sets its submodels, which share its config.
        inside |= {id(m) for m in module.modules()}
        switched.append((module, config._attn_implementation))
        module.set_attn_implementation("eager")
    return switched


def restore_attention(switched: list[tuple[nn.Module, Any]]) -> None:
    """Give the models :func:`use_eager_attention` switched their implementation back."""
    for model, implementation in switched:
        model.set_attn_implementation(implementation)


@contextlib.contextmanager
def eager_attention(net: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Eager attention in ``net`` while inside (when ``enabled``), the fused one after."""
    switched = use_eager_attention(net) if enabled else []
    try:
        yield
    finally:
        restore_attention(switched)
