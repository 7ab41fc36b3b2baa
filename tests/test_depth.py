"""Depth pruning (compress.prune.depth / blocks): whole residual blocks go, chosen by what
bypassing each costs on validation batches, with channel pruning or alone; the network reloads in
a fresh process, reports what went, fine-tunes by distilling from the deeper network and resumes
with that distillation after a kill. DDP is covered with channel pruning (test_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from litcompress.checkpoint import load_network, read_checkpoint
from litcompress.compress.depth import bypass_costs, cheapest
from litcompress.compress.prune import REMOVE_BLOCK, replay_pruning_history
from litcompress.errors import ConfigError
from litcompress.models import CifarResNet, vit
from litcompress.models.blocks import Skipped, bypassed, remove_block, residual_blocks
from litcompress.resume import resume_techniques
from litcompress.run import run
from tests.conftest import FAST, compose_config, shared_run
from tests.test_prune import outputs_in_a_fresh_process
from tests.test_resume import assert_same_checkpoints, killed_then_resumed

RESNET14 = ["model=resnet", "model.depth=14", "model.width=8"]


def resnet14(seed: int = 0) -> CifarResNet:
    torch.manual_seed(seed)
    return CifarResNet(num_classes=4, in_channels=3, image_size=8, depth=14, width=8).eval()


def test_removable_blocks_are_found_by_their_identity_shortcut():
    # ResNet-14: two blocks per stage; the first of stages 2 and 3 downsamples (a projection).
    assert [b.name for b in residual_blocks(resnet14())] == [
        "layer1.0",
        "layer1.1",
        "layer2.1",
        "layer3.1",
    ]
    resnet18 = torchvision.models.resnet18()
    assert [b.name for b in residual_blocks(resnet18)] == [
        "layer1.0",
        "layer1.1",
        "layer2.1",
        "layer3.1",
        "layer4.1",
    ]
    mobilenet = torchvision.models.mobilenet_v2()
    expected = [
        f"features.{i}"
        for i, m in enumerate(mobilenet.features)
        if m.__dict__.get("use_res_connect")
    ]
    assert [b.name for b in residual_blocks(mobilenet)] == expected and len(expected) == 10
    transformer = vit(num_classes=4, in_channels=3, image_size=8, patch_size=4, depth=3, dim=32)
    assert [b.name for b in residual_blocks(transformer)] == [
        f"encoder.layers.encoder_layer_{i}" for i in range(3)
    ]


def small_vit(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = vit(4, 3, 8, patch_size=4, depth=3, dim=32, heads=2, mlp_dim=32)
    nn.init.normal_(net.heads.head.weight)  # torchvision starts it at zero: all logits 0
    return net.eval()


@pytest.mark.parametrize("make", [resnet14, small_vit], ids=["resnet", "vit"])
def test_a_removed_block_computes_what_bypassing_it_computes(make):
    net, x = make(), torch.randn(4, 3, 8, 8)
    block = residual_blocks(net)[1]
    with torch.no_grad(), bypassed(block.module):
        expected = net(x)
        assert not torch.allclose(expected, make()(x))  # bypassing changes the output
    params = sum(p.numel() for p in net.parameters())
    remove_block(net, block.name, tuple(x.shape[1:]))
    assert isinstance(net.get_submodule(block.name), Skipped)
    assert sum(p.numel() for p in net.parameters()) < params
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected)
    # Replayed from its history on a fresh network: the same network.
    fresh = make()
    replay_pruning_history(fresh, [[block.name, REMOVE_BLOCK, []]], tuple(x.shape[1:]))
    fresh.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected)


def test_the_bypass_cost_is_the_rise_of_the_cross_entropy_and_the_cheapest_blocks_go():
    net = resnet14()
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    # A block whose residual branch adds nothing (its last BN scaled to 0) costs nothing:
    # its input is the output of a ReLU, which its own final ReLU passes on unchanged.
    nn.init.zeros_(net.layer2[1].bn2.weight)
    nn.init.zeros_(net.layer2[1].bn2.bias)
    blocks = residual_blocks(net)
    costs = bypass_costs(net, blocks, [(x[:8], y[:8]), (x[8:], y[8:])])
    assert costs["layer2.1"] == 0.0
    with torch.no_grad():
        base = nn.functional.cross_entropy(net(x), y)
        with bypassed(net.layer1[0]):
            without = nn.functional.cross_entropy(net(x), y)
    assert costs["layer1.0"] == pytest.approx(float(without - base), abs=1e-6)
    ranked = sorted(costs, key=costs.get)
    assert cheapest(net, costs, 2) == ranked[:2]


@pytest.fixture(scope="module")
def trained_resnet14(tmp_path_factory) -> Path:
    overrides = [*FAST, *RESNET14, "report.enabled=false"]
    return shared_run(tmp_path_factory, "resnet14_digits", overrides) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def depth_run(trained_resnet14, tmp_path_factory) -> tuple[Path, dict]:
    """Half the removable blocks and 30% of the channels of a trained ResNet-14, in one step."""
    out = tmp_path_factory.mktemp("depth") / "run"
    overrides = [
        *FAST,
        *RESNET14,
        f"init_from={trained_resnet14}",
        "compress=prune",
        "compress.prune.depth=0.5",
        "compress.prune.ratio=0.3",
        "trainer.max_epochs=1",
    ]
    run(compose_config(overrides, out))
    return out, json.loads((out / "report.json").read_text())


def test_depth_and_channels_are_pruned_and_reported(depth_run):
    out, report = depth_run
    depth = report["prune"]["depth"]
    assert depth["asked"] == 0.5 and depth["blocks"] == [4, 2]
    costs = depth["bypass_costs"]
    assert set(costs) == {"layer1.0", "layer1.1", "layer2.1", "layer3.1"}
    assert depth["removed"] == sorted(costs, key=costs.get)[:2]  # the two cheapest
    assert report["prune"]["steps"][-1]["blocks_removed"] == 2
    assert report["prune"]["achieved_ratio"] > 0.3  # the channels pruned and those of the blocks
    assert "removed 2 of 4 residual blocks" in report["prune"]["summary"]
    assert report["before"]["macs"] / report["after"]["macs"] > 2
    # The blocks went from a trained network: fine-tuning distilled from the deeper one.
    assert report["compress"] == ["distill", "prune"]
    assert read_checkpoint(out / "checkpoints" / "last.ckpt")["litcompress"]["distill_teacher"]
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert "prune/bypass_cost" in events.Tags()["images"]


def test_a_depth_pruned_checkpoint_reloads_in_a_fresh_process_with_the_same_outputs(
    depth_run, tmp_path
):
    out, report = depth_run
    checkpoint = out / "checkpoints" / "last.ckpt"
    history = read_checkpoint(checkpoint)["litcompress"]["pruning_history"]
    assert [n for n, kind, _ in history if kind == REMOVE_BLOCK] == report["prune"]["depth"][
        "removed"
    ]
    net = load_network(checkpoint)
    assert sum(p.numel() for p in net.parameters()) == report["after"]["params"]
    x = torch.randn(8, 1, 8, 8)
    assert torch.equal(outputs_in_a_fresh_process(checkpoint, x, tmp_path), net(x))


def test_named_blocks_go_alone_without_distillation_when_asked(
    trained_resnet14, make_config, tmp_path
):
    run(
        make_config(
            *FAST,
            *RESNET14,
            f"init_from={trained_resnet14}",
            "compress=prune",
            "compress.prune.ratio=0",
            "compress.prune.blocks=[layer3.1,layer1.0]",
            "compress.prune.depth_distill=false",
            "trainer.max_epochs=1",
            "test=false",
            output_dir=tmp_path,
        )
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["compress"] == ["prune"]
    entry = report["prune"]
    assert (
        entry["depth"]["removed"] == ["layer3.1", "layer1.0"] and not entry["depth"]["bypass_costs"]
    )
    assert "achieved_ratio" not in entry  # no channel pruned
    net = load_network(tmp_path / "checkpoints" / "last.ckpt")
    assert isinstance(net.layer3[1], Skipped) and isinstance(net.layer1[0], Skipped)
    assert net.layer2[1].conv1.out_channels == 16  # the other blocks whole


@pytest.mark.slow
def test_a_run_that_removed_blocks_resumes_with_its_added_distillation_bit_for_bit(
    trained_resnet14, make_config, tmp_path
):
    overrides = [
        *FAST,
        *RESNET14,
        "test=false",
        "report.enabled=false",
        f"init_from={trained_resnet14}",
        "compress=prune",
        "compress.prune.ratio=0.3",
        "compress.prune.depth=1",
        "compress.prune.start_epoch=1",
        "trainer.max_epochs=3",
    ]
    run(make_config(*overrides, output_dir=tmp_path / "straight"))
    # Killed after the block went; resumed with nothing but ckpt_path.
    folder, resume = killed_then_resumed(tmp_path, overrides, [(2, "SIGKILL")])
    run(make_config(*resume, output_dir=folder))
    straight = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    resumed = read_checkpoint(folder / "checkpoints" / "last.ckpt")
    assert_same_checkpoints(straight, resumed)
    record = resumed["litcompress"]
    assert set(record["compress"]) == {"prune", "distill"} and record["compress_added"] == [
        "distill"
    ]


def test_a_resume_given_the_chosen_techniques_goes_on_with_those_they_added(make_config):
    cfg = make_config(*FAST, "compress=prune", "compress.prune.depth=1")
    distill = {"_target_": "litcompress.compress.DistillCallback", "init_from": "${init_from}"}
    saved = {"prune": OmegaConf.to_container(cfg.compress.prune), "distill": distill}
    resumed = {"compress": saved, "compress_added": ["distill"]}
    resume_techniques(cfg, resumed)
    assert OmegaConf.to_container(cfg.compress) == saved
    other = make_config(*FAST, "compress=prune", "compress.prune.depth=2")
    with pytest.raises(ConfigError, match="compress.prune.depth: 1 in the checkpoint, 2 here"):
        resume_techniques(other, resumed)
