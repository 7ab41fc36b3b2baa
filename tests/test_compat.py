"""The private APIs litcompress relies on (litcompress.compat), checked against the pinned versions.

Each test fails loudly when an upgrade of torch, torchao or Lightning moves or changes one of them.
"""

from __future__ import annotations

import copy
import inspect
import platform
import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from litcompress import compat


class ConvBnDrop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.conv(x)))


def exported_in_training_mode() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    net = ConvBnDrop().train()
    return torch.export.export(net, (torch.randn(4, 1, 6, 6),), strict=True).module()


def test_replace_batchnorm_switches_an_exported_graph_to_running_statistics():
    graph = exported_in_training_mode()
    compat.replace_dropout(graph, train_to_eval=True)  # isolate BatchNorm
    x = torch.randn(4, 1, 6, 6)  # the export fixed the batch size
    y = torch.cat([x[:2], torch.randn(2, 1, 6, 6)])
    # Training BatchNorm: an image's output depends on the rest of its batch.
    assert not torch.allclose(graph(x)[:2], graph(y)[:2])
    compat.replace_batchnorm(graph, train_to_eval=True)
    stats = {k: v.clone() for k, v in graph.state_dict().items() if "running" in k}
    torch.testing.assert_close(graph(x)[:2], graph(y)[:2])
    assert stats and all(torch.equal(v, graph.state_dict()[k]) for k, v in stats.items())
    compat.replace_batchnorm(graph, train_to_eval=False)
    assert not torch.allclose(graph(x)[:2], graph(y)[:2])


def test_replace_dropout_switches_an_exported_graph_to_evaluation():
    graph = exported_in_training_mode()
    compat.replace_batchnorm(graph, train_to_eval=True)
    x = torch.randn(4, 1, 6, 6)
    assert not torch.equal(graph(x), graph(x))  # dropout draws a new mask each call
    compat.replace_dropout(graph, train_to_eval=True)
    torch.testing.assert_close(graph(x), graph(x))


def test_cpu_has_vnni_reads_the_cpu_flags():
    has = compat.cpu_has_vnni()
    assert isinstance(has, bool)
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() in ("x86_64", "AMD64") and cpuinfo.exists():
        assert has == ("avx512_vnni" in cpuinfo.read_text().split())


def test_cpp_compiler_is_found_and_named():
    assert shutil.which(compat.cpp_compiler()), "inductor's compiler is not an executable"
    assert compat.cpp_compiler_setting()  # what the error message names when none is found


def test_enable_inductor_freezing_sets_the_inductor_flag():
    from torch._inductor import config

    before = config.freezing
    try:
        config.freezing = False
        compat.enable_inductor_freezing()
        assert config.freezing is True
    finally:
        config.freezing = before


def test_rewrap_ddp_uses_lightning_calls_that_exist():
    # The behaviour under real DDP is tested end to end (test_cli.py, DDP pruning).
    assert isinstance(inspect.getattr_static(DDPStrategy, "model"), property)
    assert inspect.getattr_static(DDPStrategy, "model").fset is not None
    assert list(inspect.signature(DDPStrategy.configure_ddp).parameters) == ["self"]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_forget_best_checkpoints_leaves_the_state_of_a_fresh_callback(tmp_path, mode):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val/acc", mode=mode, save_top_k=2)
    fresh = callback.state_dict()
    callback.best_k_models = {"a.ckpt": torch.tensor(0.5), "b.ckpt": torch.tensor(0.7)}
    callback.best_model_path = callback.kth_best_model_path = "b.ckpt"
    callback.best_model_score = callback.kth_value = torch.tensor(0.7)
    assert sorted(compat.forget_best_checkpoints(callback)) == ["a.ckpt", "b.ckpt"]
    state = callback.state_dict()
    for key in ("best_k_models", "best_model_path", "best_model_score", "kth_best_model_path"):
        assert state[key] == fresh[key], key
    assert torch.equal(state["kth_value"], fresh["kth_value"])


def test_lightnings_last_checkpoint_internals_are_where_save_last_if_skipped_expects(tmp_path):
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val/acc", save_last=True)
    for name in ("_last_global_step_saved", "_save_last_checkpoint", "_monitor_candidates"):
        assert hasattr(callback, name), name
    assert list(inspect.signature(callback._should_save_on_train_epoch_end).parameters) == [
        "trainer"
    ]
    assert list(inspect.signature(callback._should_skip_saving_checkpoint).parameters) == [
        "trainer"
    ]


def test_model_checkpoint_still_saves_through_the_hook_epoch_checkpoint_verifies():
    assert list(inspect.signature(ModelCheckpoint._save_checkpoint).parameters) == [
        "self",
        "trainer",
        "filepath",
    ]


def test_torchao_pattern_graphs_are_exported_once_per_process(monkeypatch):
    import torchao.quantization.pt2e.qat_utils as qat_utils
    import torchao.quantization.pt2e.utils as pt2e_utils

    from litcompress.quant.backends import prepare

    compat.cache_pattern_graphs()
    cached = pt2e_utils._get_aten_graph_module_for_pattern
    assert getattr(cached, "_litcompress_cached", False)
    assert qat_utils._get_aten_graph_module_for_pattern is cached  # imported there by name
    # torchao's own function (what the cache keys on): a pattern, its inputs, the device.
    parameters = list(inspect.signature(cached.__wrapped__).parameters)
    assert parameters[:3] == ["pattern", "example_inputs", "is_cuda"]
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    x = torch.randn(2, 3, 8, 8)
    calls = []
    original = torch.export.export
    monkeypatch.setattr(
        torch.export, "export", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    cached.cache.clear()  # as in a new process
    outputs, exports = [], []
    for _ in range(2):  # the second prepare takes every pattern from the cache
        before = len(calls)
        model = prepare(copy.deepcopy(net), backend="pt2e", inputs=(3, 8, 8))
        outputs.append(model(x))
        exports.append(len(calls) - before)
    assert exports[1] == 1 < exports[0]  # the network itself, no pattern
    assert torch.equal(outputs[0], outputs[1])


def test_group_rounding_pruner_rounds_the_width_of_a_grouped_convolution():
    # torch-pruning's own rounding leaves this 3x3 convolution (4 groups of 8) whole at round_to=8.
    import torch_pruning as tp

    for name in ("_get_channel_groups", "_is_atten_group", "_round_to"):
        assert callable(getattr(tp.pruner.BasePruner, name, None)), name
    assert list(inspect.signature(tp.pruner.BasePruner._round_to).parameters) == [
        "self",
        "n_pruned",
        "current_channels",
        "round_to",
    ]
    net = nn.Sequential(nn.Conv2d(3, 32, 1), nn.Conv2d(32, 32, 3, groups=4), nn.Conv2d(32, 4, 1))
    pruner = compat.GroupRoundingPruner(
        net,
        torch.zeros(1, 3, 8, 8),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.5,
        round_to=8,
        ignored_layers=[net[2]],
    )
    pruner.step()
    assert (net[1].in_channels, net[1].out_channels, net[1].groups) == (16, 16, 4)
    assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 4, 6, 6)
    assert compat.round_kept_per_group(4, 55, 8) == 0  # 55 x k: a multiple of 8 only for k = 8
    assert compat.round_kept_per_group(4, 26, 8) == 4
    assert compat.round_kept_per_group(3, 32, 8) == 3
