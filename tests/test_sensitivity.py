"""Per-layer pruning sensitivity: each group pruned alone, measured; the suggested per-layer
ratios are taken by ``compress.prune.layer_ratios``."""

from __future__ import annotations

import csv

import pytest
import torch
import torch_pruning as tp
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from litcompress.checkpoint import load_network, read_checkpoint
from litcompress.cli import main
from litcompress.deploy.evaluate import data_config, load_data
from litcompress.errors import ConfigError
from litcompress.measure import count_macs, evaluate_cpu
from litcompress.run import run
from litcompress.sensitivity import analyse, prunable_groups
from tests.conftest import FAST


def digits(checkpoint) -> tuple:
    data = load_data(data_config(read_checkpoint(checkpoint)["litcompress"]["data"], [], "x"))
    return data, list(data.val_dataloader())[:2]


def test_each_group_pruned_alone_matches_pruning_it_by_hand(trained_resnet8):
    net = load_network(trained_resnet8)
    data, batches = digits(trained_resnet8)
    result = analyse(net, batches, 10, data.input_shape, ratios=[0.5])
    assert result.baseline == evaluate_cpu(net, batches, 10)
    roots = prunable_groups(net, data.input_shape)
    assert set(result.curves) == set(roots) and "fc" not in roots
    # By hand, for one group: torch-pruning's group of the root layer, its L2 importance, the
    # lowest half of its channels removed, everything else untouched.
    root = "layer2.0.conv1"
    by_hand = load_network(trained_resnet8)
    graph = tp.DependencyGraph().build_dependency(by_hand, example_inputs=torch.zeros(1, 1, 8, 8))
    layer = dict(by_hand.named_modules())[root]
    group = graph.get_pruning_group(
        layer, tp.prune_conv_out_channels, list(range(layer.out_channels))
    )
    importance = tp.importance.GroupMagnitudeImportance(p=2)(group)
    removed = layer.out_channels - int(layer.out_channels * 0.5)
    graph.get_pruning_group(
        layer, tp.prune_conv_out_channels, importance.argsort()[:removed].tolist()
    ).prune()
    assert layer.out_channels == 16  # of 32
    assert result.curves[root] == [evaluate_cpu(by_hand.eval(), batches, 10)]
    assert result.macs[root] == [count_macs(by_hand, data.input_shape)]


def widths(net) -> dict[str, int]:
    return {n: m.out_channels for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}


def test_the_command_writes_curves_and_ratios_that_pruning_takes(trained_resnet8, tmp_path):
    out = tmp_path / "sens"
    code = main(
        [
            "sensitivity",
            str(trained_resnet8),
            "--ratios",
            "0.5",
            "--max-batches",
            "1",
            "--budget",
            "1.0",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    rows = list(csv.DictReader((out / "sensitivity.csv").open()))
    net = load_network(trained_resnet8)
    roots = prunable_groups(net, (1, 8, 8))
    assert [r["layer"] for r in rows] == ["(none)", *roots]
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert events.Images("sensitivity/curves")
    # A budget of the whole accuracy allows every tried ratio: 0.5 for every group.
    ratios = yaml.safe_load((out / "layer_ratios.yaml").read_text())
    assert ratios == dict.fromkeys(roots, 0.5)
    # compress.prune takes the file: those groups halved, nothing else pruned (ratio=0).
    run_dir = tmp_path / "pruned"
    run(
        make_run_config(
            trained_resnet8,
            run_dir,
            "compress.prune.ratio=0",
            f"compress.prune.layer_ratios={out / 'layer_ratios.yaml'}",
        )
    )
    pruned = load_network(run_dir / "checkpoints" / "last.ckpt")
    assert {n: w * 2 for n, w in widths(pruned).items()} == widths(net)


def make_run_config(checkpoint, output_dir, *overrides):
    from tests.conftest import compose_config

    return compose_config(
        [
            *FAST,
            f"init_from={checkpoint}",
            "compress=prune",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "report.enabled=false",
            "test=false",
            *overrides,
        ],
        output_dir,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratios", "0.5,1.5"], r"--ratios: 1.5 is not a fraction"),
        (["--budget", "-0.1"], r"--budget -0.1 must be an accuracy drop"),
        (["--importance", "taylor"], r"--importance 'taylor': choose one of"),
        (["--max-batches", "0"], r"--max-batches 0 must be at least 1"),
    ],
)
def test_bad_sensitivity_options_are_refused(trained_resnet8, tmp_path, args, message, caplog):
    assert main(["sensitivity", str(trained_resnet8), "--output", str(tmp_path), *args]) == 2
    assert any(__import__("re").search(message, r.message) for r in caplog.records)


def test_layer_ratios_that_cannot_be_used_are_refused(trained_resnet8, tmp_path):
    with pytest.raises(ConfigError, match=r"layer_ratios=.*missing.yaml cannot be read"):
        run(
            make_run_config(
                trained_resnet8, tmp_path, f"compress.prune.layer_ratios={tmp_path}/missing.yaml"
            )
        )
    ratios = tmp_path / "r.yaml"
    ratios.write_text("layer9.conv: 0.5\n")
    with pytest.raises(
        ConfigError, match=r"layer_ratios names 'layer9.conv', which is not a module"
    ):
        run(make_run_config(trained_resnet8, tmp_path, f"compress.prune.layer_ratios={ratios}"))
    ratios.write_text("conv1: 0.99\n")  # int(16 x 0.01) = 0: torch-pruning would skip it
    with pytest.raises(ConfigError, match=r"layer_ratios cannot be honoured: conv1"):
        run(
            make_run_config(
                trained_resnet8,
                tmp_path,
                "compress.prune.ratio=0",
                f"compress.prune.layer_ratios={ratios}",
            )
        )


def test_a_network_without_prunable_groups_is_refused_before_any_evaluation():
    class Untouchable:
        def __iter__(self):
            raise AssertionError("evaluated before the graph was checked")

    head_only = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(ConfigError, match=r"no layer torch-pruning can prune alone"):
        analyse(head_only, Untouchable(), num_classes=4, inputs=(3, 8, 8))
