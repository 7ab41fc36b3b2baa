"""compress=prune: real structured pruning that trains on, reloads, resumes and reports."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from litcompress.build import build, build_compression, build_module
from litcompress.checkpoint import load_network, read_checkpoint
from litcompress.compress.prune import PrunedOptimizerState, int8_width_hint
from litcompress.errors import ConfigError
from litcompress.models import CifarResNet
from litcompress.run import run
from tests.conftest import FAST, TINY_SHAPES

PRUNE = [*FAST, "compress=prune"]


def train(make_config, *overrides: str, output_dir: Path, callbacks=()) -> dict:
    run(make_config(*PRUNE, *overrides, output_dir=output_dir), extra_callbacks=list(callbacks))
    return json.loads((output_dir / "report.json").read_text())


def test_one_shot_pruning_makes_the_network_smaller_and_the_checkpoint_reloads(
    make_config, tmp_path
):
    report = train(make_config, "compress.prune.start_epoch=0", output_dir=tmp_path)
    before, after = report["before"], report["after"]
    # Half the channels of every conv: about a quarter of the MACs and parameters remain.
    assert 3.5 < before["macs"] / after["macs"] < 4.5
    assert 3.5 < before["params"] / after["params"] < 4.5
    assert after["file_bytes"] < before["file_bytes"] / 3
    assert report["prune"]["steps"][0]["macs"] == after["macs"]

    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert checkpoint["litcompress"]["pruning_history"]
    net = load_network(tmp_path / "checkpoints" / "last.ckpt")
    assert sum(p.numel() for p in net.parameters()) == after["params"]


def test_pruned_checkpoint_gives_identical_predictions_in_a_fresh_process(make_config, tmp_path):
    train(make_config, "compress.prune.start_epoch=0", output_dir=tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    x = torch.randn(16, 1, 8, 8)
    assert torch.equal(outputs_in_a_fresh_process(ckpt, x, tmp_path), load_network(ckpt)(x))


def outputs_in_a_fresh_process(checkpoint: Path, x: torch.Tensor, folder: Path) -> torch.Tensor:
    """The outputs on ``x`` of the network of ``checkpoint`` loaded in a fresh process."""
    torch.save(x, folder / "x.pt")
    script = (
        "import sys, torch\n"
        "from litcompress.checkpoint import load_network\n"
        "net = load_network(sys.argv[1])\n"
        "torch.save(net(torch.load(sys.argv[2])), sys.argv[3])\n"
    )
    command = [sys.executable, "-c", script, str(checkpoint), str(folder / "x.pt")]
    subprocess.run([*command, str(folder / "y.pt")], check=True)
    return torch.load(folder / "y.pt")


class WatchPruning(Callback):
    """Snapshots the network right after each pruning step (PruneCallback runs before it)."""

    def __init__(self):
        self.snapshots = []

    def on_train_epoch_start(self, trainer, pl_module):
        net = pl_module.net
        self.snapshots.append(
            {
                "epoch": trainer.current_epoch,
                "weights": {n: p.detach().clone() for n, p in net.named_parameters()},
                "bn_training": [m.training for m in net.modules()],
                "optimizer": {
                    id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]
                },
                "params": {id(p) for p in net.parameters()},
                "adam_state_kept": all(
                    trainer.optimizers[0].state.get(p, {}).get("exp_avg", p[:0]).shape == p.shape
                    for p in net.parameters()
                ),
            }
        )


def test_optimizer_state_is_sliced_like_the_weights():
    net = CifarResNet(num_classes=10, in_channels=3, image_size=16, depth=8)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3, 16, 16)).sum().backward()
    optimizer.step()
    for param in net.parameters():  # state that is a known function of each weight
        optimizer.state[param]["exp_avg"] = param.detach() * 2
        optimizer.state[param]["exp_avg_sq"] = param.detach() ** 2
    carried = PrunedOptimizerState([optimizer], net)
    pruner = tp.pruner.BasePruner(
        net,
        torch.zeros(1, 3, 16, 16),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=[net.fc],
    )
    pruner.step()
    carried.prune(pruner.DG.pruning_history(), (3, 16, 16))
    state = carried.state()
    for name, param in net.named_parameters():
        torch.testing.assert_close(state[name]["exp_avg"], param.detach() * 2)
        torch.testing.assert_close(state[name]["exp_avg_sq"], param.detach() ** 2)
        assert state[name]["step"] == 1


def test_training_continues_correctly_after_every_iterative_step(make_config, tmp_path):
    watch = WatchPruning()
    report = train(
        make_config,
        "trainer.max_epochs=4",
        "compress.prune.iterative_steps=2",
        "compress.prune.start_epoch=1",
        "compress.prune.end_epoch=2",
        output_dir=tmp_path,
        callbacks=[watch],
    )
    assert [step["epoch"] for step in report["prune"]["steps"]] == [1, 2]
    macs = [step["macs"] for step in report["prune"]["steps"]]
    assert report["before"]["macs"] > macs[0] > macs[1]
    for snapshot in watch.snapshots[1:3]:  # the epochs that start with a pruning step
        assert all(snapshot["bn_training"]), "pruning left modules in eval mode"
        assert snapshot["optimizer"] == snapshot["params"], "optimizer holds stale tensors"
        assert snapshot["adam_state_kept"], "the optimizer restarted from zero"
    final = load_network(tmp_path / "checkpoints" / "last.ckpt")
    after_last_step = watch.snapshots[2]["weights"]
    for name, param in final.named_parameters():
        assert param.shape == after_last_step[name].shape
        assert not torch.equal(param, after_last_step[name]), f"{name} stopped training"


def test_resume_continues_an_iterative_schedule(make_config, tmp_path):
    schedule = [
        "trainer.max_epochs=4",
        "compress.prune.iterative_steps=2",
        "compress.prune.start_epoch=0",
        "compress.prune.end_epoch=2",
        "callbacks.model_checkpoint.save_top_k=-1",
    ]
    full = train(make_config, *schedule, output_dir=tmp_path / "full")
    # Resume from the end of epoch 1: one step done, the second (epoch 2) still to come. The
    # second step moved the checkpoints of the earlier form apart.
    mid = tmp_path / "full" / "checkpoints" / "before_prune" / "epoch001.ckpt"
    resumed = train(make_config, *schedule, f"ckpt_path={mid}", output_dir=tmp_path / "resumed")
    assert [s["epoch"] for s in resumed["prune"]["steps"]] == [0, 2]
    assert resumed["after"]["params"] == full["after"]["params"]
    # The entering network's figures come from the checkpoint; its latency is timed at the end.
    timeless = ("latency_ms_b1", "latency_ms_b32")
    assert {k: v for k, v in resumed["before"].items() if k not in timeless} == {
        k: v for k, v in full["before"].items() if k not in timeless
    }
    history = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["litcompress"]
    assert (
        history["pruning_history"]
        == read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["litcompress"][
            "pruning_history"
        ]
    )


def test_a_resume_the_callbacks_were_not_told_of_keeps_the_checkpoints_form(make_config, tmp_path):
    # Lightning itself resuming (SLURM's requeue): setup prunes the fresh network another way,
    # then the checkpoint's architecture must win.
    train(make_config, "compress.prune.start_epoch=0", output_dir=tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    overrides = [
        "compress.prune.start_epoch=0",
        "compress.prune.ratio=0.25",
        "trainer.max_epochs=3",
    ]
    cfg = make_config(*PRUNE, *overrides, output_dir=tmp_path / "resumed")
    data = build(cfg.data)
    module = build_module(cfg, data)
    trainer = build(
        cfg.trainer, callbacks=build_compression(cfg), logger=False, enable_checkpointing=False
    )
    trainer.fit(module, datamodule=data, ckpt_path=last, weights_only=True)
    assert trainer.current_epoch == 3
    expected = load_network(last)
    assert [p.shape for p in module.net.parameters()] == [p.shape for p in expected.parameters()]


def test_init_from_a_pruned_checkpoint(make_config, tmp_path):
    pruned = train(make_config, "compress.prune.start_epoch=0", output_dir=tmp_path / "pruned")
    ckpt = tmp_path / "pruned" / "checkpoints" / "last.ckpt"
    run(make_config(*FAST, f"init_from={ckpt}", output_dir=tmp_path / "next"))
    report = json.loads((tmp_path / "next" / "report.json").read_text())
    assert report["before"]["params"] == report["after"]["params"] == pruned["after"]["params"]
    assert report["before"]["test_acc"] is not None
    # The new run's checkpoints still record the architecture.
    assert load_network(tmp_path / "next" / "checkpoints" / "last.ckpt") is not None


@pytest.mark.parametrize("importance", ["l2", "taylor"])
def test_speedup_target_is_reached(make_config, tmp_path, importance):
    report = train(
        make_config,
        "model.depth=8",
        "compress.prune.speedup=2.0",
        "compress.prune.start_epoch=0",
        f"compress.prune.importance={importance}",
        output_dir=tmp_path,
    )
    ratio = report["before"]["macs"] / report["after"]["macs"]
    assert 2.0 <= ratio < 2.3


def prune_trained(make_config, checkpoint: Path, output_dir: Path, *overrides: str) -> dict:
    """Prune a trained network at once (one short epoch); returns its checkpoint record."""
    run(
        make_config(
            *PRUNE,
            f"init_from={checkpoint}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            "report.enabled=false",
            "test=false",
            *overrides,
            output_dir=output_dir,
        )
    )
    return read_checkpoint(output_dir / "checkpoints" / "last.ckpt")["litcompress"]


def test_every_importance_ranks_channels_its_own_way(make_config, trained_resnet8, tmp_path):
    history = {
        importance: prune_trained(
            make_config,
            trained_resnet8,
            tmp_path / importance,
            f"compress.prune.importance={importance}",
            # Ranked across layers: LAMP ranks like magnitude within one layer.
            "compress.prune.global_pruning=true",
        )["pruning_history"]
        for importance in ("l2", "l1", "taylor", "bn_scale", "lamp", "fpgm", "random")
    }
    for importance, steps in history.items():
        if importance != "l2":  # the ranking, not only the count, comes from the importance
            assert steps != history["l2"], f"{importance} removed the channels l2 removes"


def test_round_to_keeps_channel_counts_multiples(make_config, trained_resnet8, tmp_path):
    for round_to, check in (("null", False), (8, True)):
        output = tmp_path / f"round{round_to}"
        prune_trained(
            make_config,
            trained_resnet8,
            output,
            "compress.prune.ratio=0.3",
            f"compress.prune.round_to={round_to}",
        )
        net = load_network(output / "checkpoints" / "last.ckpt")
        widths = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(w % 8 == 0 for w in widths) == check, widths


class GroupedNet(torch.nn.Module):
    """A small RegNet/ResNeXt: residual bottlenecks whose 3x3 convolution is grouped, one block
    per ``(groups, group_width)`` of ``blocks``."""

    def __init__(self, num_classes, in_channels, image_size, blocks=((4, 8),), width=16):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width)
        )
        self.blocks = nn.ModuleList()
        for groups, group_width in blocks:
            inner = groups * group_width
            self.blocks.append(
                nn.Sequential(
                    nn.Conv2d(width, inner, 1), nn.BatchNorm2d(inner), nn.ReLU(),
                    nn.Conv2d(inner, inner, 3, padding=1, groups=groups), nn.BatchNorm2d(inner),
                    nn.ReLU(), nn.Conv2d(inner, width, 1), nn.BatchNorm2d(width),
                )
            )  # fmt: skip
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.stem(x).relu()
        for block in self.blocks:
            x = (x + block(x)).relu()
        return self.head(x.mean((2, 3)))


def grouped_net(*blocks: tuple[int, int]) -> list[str]:
    """Overrides for a GroupedNet of ``blocks`` (groups, group width), as a user's model config."""
    return [
        "model=cnn",
        "model._target_=tests.test_prune.GroupedNet",
        "~model.width",
        f"+model.blocks={[list(b) for b in blocks]}".replace(" ", ""),
    ]


def grouped_convs(net: torch.nn.Module) -> list[tuple[int, int]]:
    """(channels, groups) of each grouped convolution of ``net``."""
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    return [(m.out_channels, m.groups) for m in convs]


def test_round_to_keeps_grouped_convolutions_multiples_by_narrowing_each_group(
    make_config, tmp_path
):
    # 4 groups of 8 at ratio 0.5 keep 4 each: 16 channels, a multiple of 8 (torch-pruning alone
    # rounded 32 - 4 down to 24, removed 8 from each group of 8 and left the layer whole);
    # 32 groups of 2 keep 1 each (32); 6 groups of 8 keep 4 each (24).
    report = train(
        make_config,
        *TINY_SHAPES,
        *grouped_net((4, 8), (32, 2), (6, 8)),
        "compress.prune.start_epoch=0",
        "compress.prune.round_to=8",
        output_dir=tmp_path,
    )
    net = load_network(tmp_path / "checkpoints" / "last.ckpt")  # weights_only=True, replayed
    assert grouped_convs(net) == [(16, 4), (32, 32), (24, 6)]
    widths = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths), widths
    assert report["prune"]["achieved_ratio"] >= 0.45
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_a_grouped_convolution_round_to_cannot_prune_is_refused_with_a_round_to_that_works(
    make_config, tmp_path
):
    # 3 groups of 8: 3 x k is a multiple of 8 only for k = 8, every channel of a group.
    overrides = [*TINY_SHAPES, *grouped_net((4, 8), (3, 8)), "compress.prune.start_epoch=0"]
    with pytest.raises(ConfigError) as refused:
        train(make_config, *overrides, "compress.prune.round_to=8", output_dir=tmp_path / "8")
    message = str(refused.value)
    assert "blocks.1.3 (24)" in message
    assert (
        "blocks.1.3 is pruned in 3 channel groups of 8 (a grouped convolution, or a layer "
        "coupled to one), which torch-pruning narrows alike: it keeps 3 x k channels, with "
        "k = int(8 x (1 - 0.5)) = 4 per group, and 3 x k is a multiple of round_to=8 only when "
        "k is a multiple of 8: rounded down, k = 0, so the layer stays whole" in message
    )
    assert "at most compress.prune.ratio" not in message  # a group keeps all 8 or none
    fix = re.search(r"set (compress\.prune\.round_to=\d+)", message)
    assert fix and fix[1] == "compress.prune.round_to=4", message
    report = train(make_config, *overrides, fix[1], output_dir=tmp_path / "4")  # the fix works
    net = load_network(tmp_path / "4" / "checkpoints" / "last.ckpt")
    assert grouped_convs(net) == [(16, 4), (12, 3)]
    assert report["prune"]["achieved_ratio"] >= 0.45


def test_pruning_before_int8_warns_of_widths_int8_kernels_run_slowly(make_config, tmp_path, caplog):
    # A CIFAR ResNet pruned by 0.3 keeps 11 of 16 channels: slower in int8 than unpruned.
    with caplog.at_level(logging.WARNING, logger="litcompress"):
        train(
            make_config,
            *TINY_SHAPES,
            "model=resnet",
            "model.depth=8",
            "compress=[prune,qat]",
            "compress.prune.ratio=0.3",
            "compress.prune.start_epoch=0",
            "compress.qat.start_epoch=0",
            "compress.qat.backend=fx",
            output_dir=tmp_path,
        )
    warned = [r.getMessage() for r in caplog.records if "not a multiple of 8" in r.getMessage()]
    assert len(warned) == 1
    example = re.search(r"\(e\.g\. ([\w.]+): (\d+)\)", warned[0])
    assert example and int(example[2]) % 8, warned
    assert "compress.prune.round_to=8" in warned[0]
    assert int8_width_hint({"conv1": 8, "layer1.0.conv1": 16}) is None


def test_max_layer_ratio_limits_what_any_layer_loses(make_config, trained_resnet8, tmp_path):
    dense = load_network(trained_resnet8)
    before = {n: m.out_channels for n, m in dense.named_modules() if isinstance(m, torch.nn.Conv2d)}
    lost = {}
    for limit in (1.0, 0.3):
        output = tmp_path / f"limit{limit}"
        prune_trained(
            make_config,
            trained_resnet8,
            output,
            "compress.prune.ratio=0.2",
            "compress.prune.global_pruning=true",
            f"compress.prune.max_layer_ratio={limit}",
        )
        net = load_network(output / "checkpoints" / "last.ckpt")
        after = {n: m.out_channels for n, m in net.named_modules() if n in before}
        lost[limit] = max(1 - after[n] / before[n] for n in before)
    assert lost[1.0] > 0.3  # global ranking alone strips some layer beyond the limit
    # torch-pruning stops a layer once past the limit, between small steps: one channel of a
    # 16-channel layer (6%) may go beyond it.
    assert lost[0.3] <= 0.3 + 1 / 16 + 1e-9


class NormsBeforePruning(Callback):
    """The sum of the conv weights' norms at the end of epoch 0 (before pruning at epoch 1)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            self.norm = sum(
                float(m.weight.norm())
                for m in pl_module.net.modules()
                if isinstance(m, torch.nn.Conv2d)
            )


def test_sparse_training_shrinks_the_weights_before_pruning(make_config, tmp_path):
    norms = {}
    for reg in (0.0, 0.05):
        probe = NormsBeforePruning()
        report = train(
            make_config,
            "model=cnn",
            f"compress.prune.sparsity_reg={reg}",
            "compress.prune.start_epoch=1",
            output_dir=tmp_path / str(reg),
            callbacks=[probe],
        )
        assert report["after"]["params"] < report["before"]["params"] / 2
        norms[reg] = probe.norm
    assert norms[0.05] < 0.9 * norms[0.0], norms


def test_tensorboard_shows_pruning_steps_and_channels(make_config, tmp_path):
    train(make_config, "compress.prune.start_epoch=0", output_dir=tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"prune/params", "prune/macs"} <= set(events.Tags()["scalars"])
    assert "prune/channels/text_summary" in events.Tags()["tensors"]
    (picture,) = events.Images("prune/channels_kept")  # one bar chart per pruning step
    assert picture.step == 1 and picture.width > 100 and picture.height > 100


def test_a_network_torch_pruning_cannot_handle_fails_before_training(make_config, tmp_path):
    # ShuffleNet's channel shuffle: torch-pruning 1.6 fails to map it (ZeroDivisionError). The
    # default schedule prunes after a third of the epochs: the failure must come before them.
    cfg = make_config(
        *PRUNE,
        "model=torchvision",
        "model.name=shufflenet_v2_x0_5",
        "trainer.max_epochs=3",
        output_dir=tmp_path,
    )
    with pytest.raises(ConfigError, match=r"(?s)ShuffleNetV2.*ignored_layers cannot help") as error:
        run(cfg)
    assert "in torch-pruning's" in str(error.value)
    assert not (tmp_path / "checkpoints").exists()


def test_a_network_that_makes_torch_pruning_run_out_of_memory_is_refused_first(
    make_config, tmp_path
):
    cfg = make_config(
        *PRUNE, *TINY_SHAPES, "model=torchvision", "model.name=swin_v2_t", output_dir=tmp_path
    )
    with pytest.raises(
        ConfigError,
        match=r"cannot prune SwinTransformer: with its "
        r"ShiftedWindowAttentionV2 layers.*memory runs out",
    ):
        run(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_the_report_states_the_ratio_and_speedup_achieved_beside_the_requested(
    make_config, trained_resnet8, tmp_path, capsys
):
    run(
        make_config(
            *PRUNE,
            f"init_from={trained_resnet8}",
            "trainer.max_epochs=1",
            "compress.prune.ratio=0.9",  # keeps int(16 x 0.1) = 1 channel of the narrowest
            output_dir=tmp_path,
        )
    )
    entry = json.loads((tmp_path / "report.json").read_text())["prune"]
    net = load_network(tmp_path / "checkpoints" / "last.ckpt")
    convs = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert min(convs) == 1  # every layer was pruned, the narrowest to one channel
    assert entry["ratio"] == 0.9 and 0.9 <= entry["achieved_ratio"] < 0.95
    assert entry["achieved_macs_speedup"] > 30
    assert "asked ratio 0.90; removed 9" in entry["summary"]
    assert "prune: asked ratio 0.90; removed" in capsys.readouterr().out  # under the table


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # int(16 x 0.01) = 0: torch-pruning would leave every 16-channel layer whole.
        (["compress.prune.ratio=0.99"], r"ratio=0.99 cannot be honoured.*at most .*ratio=0.93"),
        (["compress.prune.ratio=0.95"], r"layers would keep all their channels: conv1 \(16\)"),
        # 16 x 0.4 = 6.4 channels kept, rounded down to a multiple of 8: none.
        (["compress.prune.ratio=0.6", "compress.prune.round_to=8"], r"multiple of round_to=8"),
        # Global ranking capped at 40% of any layer cannot remove 60% of all channels.
        (
            [
                "compress.prune.ratio=0.6",
                "compress.prune.global_pruning=true",
                "compress.prune.max_layer_ratio=0.4",
            ],
            r"ratio=0.6 cannot be reached.*max_layer_ratio=0.4 stops each layer",
        ),
        # The same ratio after training (start_epoch=1): refused before the first epoch.
        (["compress.prune.ratio=0.99", "compress.prune.start_epoch=1"], r"cannot be honoured"),
        (
            ["compress.prune.ratio=0.99", "compress.prune.iterative_steps=2"],
            r"ratio=0.99 cannot be reached.*removes 5.% of the channels",
        ),
    ],
)
def test_a_ratio_torch_pruning_cannot_reach_is_refused_before_training(
    make_config, trained_resnet8, tmp_path, overrides, message
):
    start = [] if any("start_epoch" in o for o in overrides) else [f"init_from={trained_resnet8}"]
    with pytest.raises(ConfigError, match=message):
        run(
            make_config(
                *PRUNE,
                *start,
                "model=resnet",
                "model.depth=8",
                *overrides,
                "trainer.max_epochs=3",
                output_dir=tmp_path,
            )
        )
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))


# -- bad input, before training ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("compress.prune.ratio=1.0", r"ratio=1.0 must be in \[0, 1\)"),
        ("compress.prune.importance=l3", r"importance='l3' is unknown"),
        ("compress.prune.ignored_layers=[layer9.conv]", r"'layer9.conv', which is not a module"),
        ("compress.prune.speedup=500", r"speedup=500 cannot be reached.*379"),
        ("compress.prune.end_epoch=9", r"end_epoch=9 is not before trainer.max_epochs=2"),
        ("compress.prune.round_to=0", r"round_to=0 must be a whole number of channels >= 1"),
        (
            "compress.prune.taylor_batches=0 compress.prune.importance=taylor",
            r"taylor_batches=0: importance=taylor",
        ),
        ("compress.prune.depth=1.5", r"depth=1.5 must be a fraction of the removable blocks"),
        ("compress.prune.depth=9", r"asks for 9 blocks, but CifarResNet has 7 removable"),
        ("compress.prune.depth=0.05", r"depth=0.05 removes no block of the 7 removable"),
        ("compress.prune.blocks=[layer2.0]", r"'layer2.0', which cannot be removed: it maps"),
        ("compress.prune.blocks=[layer2.9]", r"'layer2.9', which is not a module"),
        ("compress.prune.depth=2 compress.prune.blocks=[layer1.1]", r"both say which blocks"),
    ],
)
def test_bad_prune_options_fail_before_training(make_config, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        run(make_config(*PRUNE, *override.split(), output_dir=tmp_path))
    assert not (tmp_path / "checkpoints").exists()


COVERAGE = {
    **{f"resnet{d}": ["model=resnet", f"model.depth={d}"] for d in (20, 32, 44, 56, 110)},
    "mobilenet": ["model=mobilenet", "model.width_mult=0.5"],
    "vit": ["model=vit", "model.dim=64", "model.mlp_dim=128", "model.depth=2"],
    "cnn": ["model=cnn"],
    **{
        name: ["model=torchvision", f"model.name={name}"]
        for name in (
            "resnet18",
            "mobilenet_v3_small",
            "efficientnet_b0",
            "densenet121",
            "regnet_x_400mf",
            "convnext_tiny",
        )
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COVERAGE))
def test_every_model_prunes_at_small_input_size(make_config, tmp_path, name):
    # Pruning is checked, not timing: the report's latencies of a full-size torchvision network
    # at batch 32 take longer than the rest (report.enabled=false; the technique's own record).
    run(
        make_config(
            *PRUNE,
            *COVERAGE[name],
            *TINY_SHAPES,
            "compress.prune.start_epoch=0",
            "report.enabled=false",
            output_dir=tmp_path,
        )
    )
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    state = read_checkpoint(ckpt)["callbacks"]["PruneCallback"]
    last = state["steps"][-1]
    assert last["macs"] < state["base_macs"] * 0.6, state
    assert 1 - last["channels"] / state["base_channels"] >= 0.45  # the ratio asked for: 0.5
    net = load_network(ckpt)
    assert sum(p.numel() for p in net.parameters()) == last["params"]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
