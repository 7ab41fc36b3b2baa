"""The fake-quantized network: a prepared graph whose behaviour follows its ``training`` flag."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from litcompress.compat import has_attention_dropout, replace_batchnorm, replace_dropout


class FakeQuantNet(nn.Module):
    """A network prepared for quantization, whose behaviour follows its ``training`` flag.

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
        self._has_dropout = any(
            "dropout" in str(n.target) for n in graph.graph.nodes
        ) or has_attention_dropout(graph)
        self._fused_bn = [m for m in graph.modules() if hasattr(m, "freeze_bn")]
        # An exported training graph counts BatchNorm batches with its own ops, which the
        # switch to evaluation leaves in: evaluation would count its batches too.
        self._batch_counters = [
            b for name, b in graph.named_buffers() if name.endswith("num_batches_tracked")
        ]
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

    def forward(self, *inputs: Tensor) -> Tensor:
        self.sync_mode()
        if self._bn_training or not self._batch_counters or self.backend != "pt2e":
            return self.graph(*inputs)
        counts = [b.clone() for b in self._batch_counters]
        out = self.graph(*inputs)
        for buffer, count in zip(self._batch_counters, counts, strict=True):
            buffer.copy_(count)
        return out

    def sync_mode(self) -> None:
        """Bring the graph's BatchNorm, dropout and observers in line with the flags."""
        bn_training = self.training and not self.bn_frozen
        if bn_training != self._bn_training or self._fused_bn_out_of_step(bn_training):
            self._switch_batchnorm(bn_training)
            self._bn_training = bn_training
        if self.backend == "pt2e" and self._has_dropout and self.training != self._dropout_training:
            replace_dropout(self.graph, train_to_eval=not self.training)
            self._dropout_training = self.training
        observing = self.training and not self.observers_frozen
        if observing != self._observing:
            self.graph.apply(_observer_switch(self.backend, observing))
            self._observing = observing

    def float_network(self) -> nn.Module:
        """A copy of this network in evaluation mode with its fake quantization switched off: the
        float network its weights make (the reference of int8's accuracy cost)."""
        twin = copy.deepcopy(self).eval()
        twin.sync_mode()
        if self.backend == "pt2e":
            from torchao.quantization.pt2e import disable_fake_quant
        else:
            from torch.ao.quantization import disable_fake_quant
        twin.graph.apply(disable_fake_quant)
        return twin

    def _fused_bn_out_of_step(self, training: bool) -> bool:
        # FX's fused conv-bn modules leave their BatchNorm's flag alone once frozen, and Lightning
        # restores flags module by module: check the flags themselves, not what was last applied.
        return any(m.bn.training != training for m in self._fused_bn)

    def _switch_batchnorm(self, training: bool) -> None:
        if self.backend == "pt2e":
            # torchao's own train/eval rewrite, limited to BatchNorm (dropout follows `training`).
            replace_batchnorm(self.graph, train_to_eval=not training)
        else:
            from torch.ao.nn.intrinsic import qat

            self.graph.apply(qat.update_bn_stats if training else qat.freeze_bn_stats)


def _observer_switch(backend: str, enable: bool) -> Any:
    if backend == "pt2e":
        from torchao.quantization import pt2e
    else:
        from torch.ao import quantization as pt2e
    return pt2e.enable_observer if enable else pt2e.disable_observer
