"""Magnitude sparsity on a schedule (``compress=sparsity``): masks that follow the schedule, keep
their zeros, resume exactly and end as plain sparse weights, with the compressed size reported."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from litcompress.checkpoint import load_network, read_checkpoint
from litcompress.compress import SparsityCallback
from litcompress.deploy.int8 import load_program
from litcompress.errors import ConfigError
from litcompress.run import run
from tests.conftest import FAST

SPARSE = [*FAST, "model=resnet", "model.depth=8", "compress=sparsity", "trainer.max_epochs=3"]


def test_polynomial_and_constant_schedules_follow_tf_mot():
    poly = SparsityCallback(0.8, initial_sparsity=0.2, begin_step=10, end_step=110, power=3)
    assert poly.target(5) == 0.0 and poly.target(10) == pytest.approx(0.2)
    assert poly.target(60) == pytest.approx(0.8 + (0.2 - 0.8) * 0.5**3)
    assert poly.target(110) == poly.target(500) == pytest.approx(0.8)
    constant = SparsityCallback(0.6, schedule="constant", begin_step=4)
    assert constant.target(3) == 0.0 and constant.target(4) == constant.target(99) == 0.6


class MaskHistory(L.Callback):
    """The mask of one layer at the end of every epoch, and its weights as the forward pass sees
    them after the optimizer stepped."""

    def __init__(self) -> None:
        self.masks: list[torch.Tensor] = []

    def on_train_epoch_end(self, trainer, pl_module):
        layer = pl_module.net.layer1[0].conv1
        if hasattr(layer, "weight_mask"):
            self.masks.append(layer.weight_mask.clone())
            assert not layer.weight[layer.weight_mask == 0].any()  # after optimizer steps


def weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def test_pruned_then_sparse_weights_stay_zero_and_shrink_the_zipped_file(make_config, tmp_path):
    history = MaskHistory()
    run(
        make_config(
            *SPARSE,
            "compress=[prune,sparsity]",
            "compress.prune.start_epoch=0",
            "compress.sparsity.frequency=2",
            output_dir=tmp_path,
        ),
        extra_callbacks=[history],
    )
    report = json.loads((tmp_path / "report.json").read_text())
    entry = report["sparsity"]
    assert report["compress"] == ["prune", "sparsity"] and report["prune"]["achieved_ratio"] > 0.45
    # The schedule reached its end: every layer but the head at 75%, zeros never coming back.
    assert entry["achieved_sparsity"] == pytest.approx(0.75, abs=0.01)
    assert all(v == pytest.approx(0.75, abs=0.02) for v in entry["per_layer"].values())
    assert len(history.masks) == 3
    for earlier, later in zip(history.masks, history.masks[1:], strict=False):
        assert bool((later <= earlier).all())
    assert entry["zip_bytes"] < 0.6 * entry["dense_zip_bytes"]
    # The delivered checkpoint records its masks; loaded for inference, they are folded into
    # plain weights (no mask multiply at every call, none in an export).
    best = tmp_path / report["delivered"]["checkpoint"]
    assert read_checkpoint(best)["litcompress"]["sparsity"]
    net = load_network(best)
    assert not any(hasattr(m, "weight_mask") for m in net.modules())
    assert not any(m._forward_pre_hooks for m in net.modules())
    zeros = [float((w == 0).float().mean()) for n, w in weights(net).items() if n != "fc"]
    assert min(zeros) >= 0.73
    assert (tmp_path / "checkpoints" / "before_sparsity").is_dir()  # denser "best" moved apart
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert len(events.Images("sparsity/per_layer")) == 1  # once, when final sparsity is reached
    assert len(events.Images("prune/channels_kept")) == 1


def test_two_of_four_and_global_masks(make_config, tmp_path):
    with pytest.raises(ConfigError, match=r"2:4 needs layers with a multiple of 4 weights.*conv1"):
        run(make_config(*SPARSE, "compress.sparsity.pattern=2:4", output_dir=tmp_path / "x"))
    run(
        make_config(
            *SPARSE,
            "compress.sparsity.pattern=2:4",
            "compress.sparsity.ignored_layers=[conv1]",  # 9 weights per output (3x3, one channel)
            "report.enabled=false",
            output_dir=tmp_path / "24",
        )
    )
    net = load_network(tmp_path / "24" / "checkpoints" / "last.ckpt")
    for name, weight in weights(net).items():
        if name in ("fc", "conv1"):
            continue
        groups = weight.detach().reshape(weight.shape[0], -1, 4)
        assert bool(((groups != 0).sum(-1) == 2).all()), name
    run(
        make_config(
            *SPARSE,
            "compress.sparsity.scope=global",
            "compress.sparsity.frequency=2",
            output_dir=tmp_path / "global",
        )
    )
    report = json.loads((tmp_path / "global" / "report.json").read_text())["sparsity"]
    assert report["achieved_sparsity"] == pytest.approx(0.75, abs=0.01)
    # One threshold for all: layers end at different sparsities.
    assert max(report["per_layer"].values()) - min(report["per_layer"].values()) > 0.05


class Stop(Exception):
    pass


class StopAt(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            raise Stop


def test_a_sparse_run_resumes_with_its_masks_bit_for_bit(make_config, tmp_path):
    overrides = [
        *SPARSE,
        "trainer.max_epochs=4",
        "compress.sparsity.frequency=2",
        "report.enabled=false",
        "test=false",
    ]
    run(make_config(*overrides, output_dir=tmp_path / "straight"))
    with pytest.raises(Stop):
        run(make_config(*overrides, output_dir=tmp_path / "stopped"), extra_callbacks=[StopAt()])
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    run(make_config(*overrides, f"ckpt_path={last}", output_dir=tmp_path / "stopped"))
    a = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")["state_dict"]
    b = read_checkpoint(last)["state_dict"]
    assert any(k.endswith("weight_mask") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("compress.sparsity.final_sparsity=1.0", r"final_sparsity=1.0 must be in \[0, 1\)"),
        ("compress.sparsity.end_step=5 compress.sparsity.begin_step=10", r"end_step=5 is before"),
        ("compress.sparsity.pattern=1:4", r"pattern='1:4' is not supported; use 2:4"),
        ("compress.sparsity.schedule=cubic", r"schedule='cubic' is unknown"),
        ("compress.sparsity.end_step=12", r"final sparsity at step 12 .* the run has 12 optimizer"),
        ("compress.sparsity.ignored_layers=[layer9]", r"'layer9', which is not a module"),
        (
            # 4 steps an epoch: the final sparsity at step 8 leaves QAT no room from epoch 1
            "compress=[sparsity,qat] compress.qat.start_epoch=1 compress.sparsity.end_step=8",
            r"final sparsity at step 8 .* set compress.qat.start_epoch=3 \(or null\) with "
            r"trainer.max_epochs=4, or lower compress.sparsity.end_step to at most 3",
        ),
    ],
)
def test_bad_sparsity_settings_are_refused_before_training(
    make_config, tmp_path, override, message
):
    with pytest.raises(ConfigError, match=message):
        run(make_config(*SPARSE, *override.split(), output_dir=tmp_path))
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))


def test_sparsity_is_kept_through_quantization_aware_training_and_its_resume(make_config, tmp_path):
    """compress=[sparsity,qat]: the zeros reached before QAT stay zero while the fake-quantized
    network trains (interrupted and resumed in that phase) and in the int8 model."""
    overrides = [
        *SPARSE,
        "compress=[sparsity,qat]",
        "compress.sparsity.frequency=1",
        "compress.sparsity.end_step=2",  # final at step 2 of epoch 0
        "compress.qat.start_epoch=1",
    ]
    with pytest.raises(Stop):  # at the start of epoch 2, after a QAT epoch
        run(make_config(*overrides, output_dir=tmp_path), extra_callbacks=[StopAt()])
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert "sparsity" not in read_checkpoint(last)["litcompress"]  # folded: the zeros pinned
    run(make_config(*overrides, f"ckpt_path={last}", output_dir=tmp_path))
    entry = json.loads((tmp_path / "report.json").read_text())["sparsity"]
    assert entry["achieved_sparsity"] == pytest.approx(0.75, abs=0.01)
    assert entry["int8_zip_bytes"] < entry["dense_zip_bytes"]
    program = load_program(tmp_path / "model_int8.pt2")
    tensors = [*program.state_dict.values(), *program.constants.values()]
    int8_convs = [t for t in tensors if t.dtype == torch.int8 and t.dim() == 4]
    assert len(int8_convs) == 9  # every convolution of a ResNet-8, in int8
    assert min(float((t == 0).float().mean()) for t in int8_convs) >= 0.74
