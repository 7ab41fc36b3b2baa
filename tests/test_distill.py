"""compress=distill: a frozen teacher's softened logits train the (compressed) student."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.nn import functional as F

from litcompress.checkpoint import load_network, read_checkpoint
from litcompress.compress.distill import DistillCallback
from litcompress.errors import ConfigError
from litcompress.run import run
from tests.conftest import FAST, compose_config
from tests.test_cli import DDP_QUICK, train_py

MODEL = ["model=resnet", "model.depth=8"]


@pytest.fixture
def teacher(trained_resnet8) -> Path:
    """A trained (briefly) ResNet-8 on digits: the teacher of these tests."""
    return trained_resnet8


class Probe(Callback):
    """Records, during training, what the optimizer holds and the teacher's state."""

    def on_train_epoch_end(self, trainer, pl_module):
        self.distill = next(c for c in trainer.callbacks if isinstance(c, DistillCallback))
        teacher = self.distill.teacher
        self.teacher_training = teacher.training
        self.teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
        optimized = {id(p) for o in trainer.optimizers for g in o.param_groups for p in g["params"]}
        self.teacher_in_optimizer = any(id(p) in optimized for p in teacher.parameters())
        self.teacher_grads = any(p.requires_grad for p in teacher.parameters())


def distill_run(output_dir: Path, *overrides: str) -> tuple[dict, Probe]:
    probe = Probe()
    run(compose_config([*FAST, *MODEL, *overrides], output_dir), extra_callbacks=[probe])
    return json.loads((output_dir / "report.json").read_text()), probe


def test_distillation_loss_is_the_softened_kl_scaled_by_t_squared():
    callback = DistillCallback(teacher_checkpoint=None, init_from=__file__, alpha=0.3)
    callback.temperature = 2.0
    teacher_logits, student_logits = torch.randn(8, 10), torch.randn(8, 10)
    callback.teacher = lambda x: teacher_logits
    expected = (
        sum(
            (F.softmax(t / 2, 0) * (F.log_softmax(t / 2, 0) - F.log_softmax(s / 2, 0))).sum()
            for t, s in zip(teacher_logits, student_logits, strict=True)
        )
        / 8
    )
    images = torch.zeros(8, 3, 4, 4)
    loss = callback.distillation_loss(images, student_logits, None)
    torch.testing.assert_close(loss, 0.3 * 4 * expected)
    assert callback.distillation_loss(images, teacher_logits, None).abs() < 1e-6


def test_the_unpruned_network_teaches_its_pruned_self(teacher, tmp_path):
    report, probe = distill_run(
        tmp_path, f"init_from={teacher}", "compress=[prune,distill]", "compress.prune.start_epoch=0"
    )
    distill = probe.distill
    # The teacher was copied before pruning: it is the whole network, frozen and unchanged.
    original = load_network(teacher)
    assert sum(p.numel() for p in distill.teacher.parameters()) == sum(
        p.numel() for p in original.parameters()
    )
    for key, value in original.state_dict().items():
        torch.testing.assert_close(probe.teacher_state[key], value, rtol=0, atol=0)
    assert report["after"]["params"] < report["before"]["params"] / 3  # the student was pruned
    assert not probe.teacher_training and not probe.teacher_grads
    assert not probe.teacher_in_optimizer
    # Checkpoints hold the student alone, and where its teacher came from.
    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert all(key.startswith("net.") for key in checkpoint["state_dict"])
    student = sum(v.numel() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert student < sum(v.numel() for v in original.state_dict().values()) / 2
    assert checkpoint["litcompress"]["distill_teacher"] == str(teacher.resolve())
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/kd_loss", "train/ce_loss", "teacher/val_acc"} <= scalars
    (logged,) = events.Scalars("teacher/val_acc")  # once, not every epoch
    assert 0 < report["distill"]["teacher_val_acc"] == pytest.approx(logged.value)


def test_a_pruned_checkpoint_teaches_through_teacher_checkpoint(teacher, tmp_path):
    run(
        compose_config(
            [*FAST, *MODEL, f"init_from={teacher}", "compress=prune", "report.enabled=false"],
            tmp_path / "pruned",
        )
    )
    pruned = tmp_path / "pruned" / "checkpoints" / "last.ckpt"
    report, probe = distill_run(
        tmp_path / "student", "compress=distill", f"compress.distill.teacher_checkpoint={pruned}"
    )
    assert sum(p.numel() for p in probe.distill.teacher.parameters()) == sum(
        p.numel() for p in load_network(pruned).parameters()
    )
    assert report["distill"]["teacher"] == str(pruned.resolve())
    assert not math.isnan(report["distill"]["teacher_val_acc"])


def test_resume_finds_the_teacher_in_the_checkpoint(teacher, tmp_path):
    run(compose_config([*FAST, *MODEL, f"init_from={teacher}", "compress=distill"], tmp_path / "a"))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    report, probe = distill_run(
        tmp_path / "b", "compress=distill", f"ckpt_path={last}", "trainer.max_epochs=3"
    )
    original = load_network(teacher)
    for key, value in original.state_dict().items():
        torch.testing.assert_close(probe.teacher_state[key], value, rtol=0, atol=0)
    assert report["distill"]["teacher"] == str(teacher.resolve())


@pytest.mark.slow
def test_prune_distill_qat_in_one_command_under_ddp(teacher, tmp_path):
    # Typed in any order: distillation captures the teacher, pruning, then quantization.
    result = train_py(
        *DDP_QUICK,
        *MODEL,
        f"init_from={teacher}",
        "compress=[qat,distill,prune]",
        "compress.distill.features=[layer3]",
        "compress.prune.start_epoch=0",
        "compress.qat.start_epoch=1",
        "trainer.max_epochs=2",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Both ranks pruned to the same network (rank 0 decides, rank 1 replays).
    output = result.stdout + result.stderr
    counts = set(re.findall(r"Rank \d after pruning step 1: (\d+) parameters", output))
    ranks = set(re.findall(r"Rank (\d) after pruning step 1:", output))
    assert ranks == {"0", "1"} and len(counts) == 1, output[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["after"]["params"] == int(counts.pop())
    assert report["compress"] == ["distill", "prune", "qat"]
    assert report["before"]["macs"] / report["after"]["macs"] > 3
    assert report["after"]["int8_artifact"] == "model_int8.pt2"
    assert report["before"]["test_acc"] is not None and report["after"]["test_acc"] is not None
    assert report["distill"]["teacher_val_acc"] > 0
    meta = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["litcompress"]
    assert meta["pruning_history"] and meta["quantization"] and meta["distill_teacher"]


class AdapterProbe(Callback):
    """Records the feature adapters while training and what the module holds afterwards."""

    def __init__(self) -> None:
        self.widths: list[list[int]] = []
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer, pl_module):
        self.start_state = _adapter_state(pl_module)

    def on_train_epoch_start(self, trainer, pl_module):
        # After the techniques' own epoch-start work (extra callbacks come last).
        self.adapter_state_kept = _optimizer_holds(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        term = pl_module.loss_terms.get("feature_loss")
        if term is not None:
            self.widths.append([(a.weight.shape[1], a.weight.shape[0]) for a in term.adapters])
            self.states.append(_adapter_state(pl_module))
            optimized = {
                id(p) for o in trainer.optimizers for g in o.param_groups for p in g["params"]
            }
            self.adapters_optimized = all(id(p) in optimized for p in term.parameters())
            self.student_widths = [
                pl_module.net.get_submodule(f"{name}.0.conv1").out_channels
                for name in ("layer2", "layer3")
            ]

    def on_fit_end(self, trainer, pl_module):
        self.loss_modules_after_fit = list(pl_module.loss_modules)


def _adapter_state(pl_module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pl_module.loss_modules.state_dict().items()}


def _optimizer_holds(trainer, pl_module) -> bool:
    term = pl_module.loss_terms.get("feature_loss")
    state = trainer.optimizers[0].state if trainer.optimizers else {}
    return term is not None and all(p in state for p in term.parameters())


def test_features_are_distilled_through_adapters_that_follow_pruning(teacher, tmp_path):
    probe = AdapterProbe()
    overrides = [
        *FAST,
        *MODEL,
        f"init_from={teacher}",
        "compress=[prune,distill]",
        "compress.prune.start_epoch=0",
        "compress.distill.features=[layer2,layer3]",
    ]
    run(compose_config(overrides, tmp_path), extra_callbacks=[probe])
    # The adapters map the pruned student's widths (each stage's, halved) to the teacher's.
    assert probe.student_widths == [16, 32]
    assert probe.widths[0] == [(16, 32), (32, 64)]
    assert probe.adapters_optimized
    # They were trained, and are gone once training ends: the report measures the student alone.
    assert any(not torch.equal(probe.start_state[k], v) for k, v in probe.states[-1].items())
    assert probe.loss_modules_after_fit == []
    report = json.loads((tmp_path / "report.json").read_text())
    net = load_network(tmp_path / "checkpoints" / "last.ckpt")
    assert report["after"]["params"] == sum(p.numel() for p in net.parameters())
    assert report["distill"]["features"] == {"layer2": "layer2", "layer3": "layer3"}
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/kd_loss", "train/ce_loss", "train/feature_loss"} <= set(events.Tags()["scalars"])
    # The checkpoint keeps the adapters (a resumed run needs them), never the teacher.
    weights = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    adapters = {k for k in weights if k.startswith("loss_modules.feature_loss.adapters.")}
    assert adapters and all(k.startswith("net.") for k in set(weights) - adapters)

    # Resumed, the run continues with the checkpoint's adapters (at the pruned widths).
    resumed = AdapterProbe()
    last = tmp_path / "checkpoints" / "last.ckpt"
    overrides = [o for o in overrides if not o.startswith("init_from")]
    overrides += [f"ckpt_path={last}", "trainer.max_epochs=3"]
    run(compose_config(overrides, tmp_path / "resumed"), extra_callbacks=[resumed])
    for key, value in resumed.start_state.items():
        torch.testing.assert_close(value, weights[f"loss_modules.{key}"], rtol=0, atol=0)
    assert resumed.widths == [[(16, 32), (32, 64)]]


def test_an_adapter_whose_width_survives_a_pruning_step_keeps_its_optimizer_state(
    teacher, tmp_path
):
    # The classifier is never pruned: the adapter on its output keeps its width and its state.
    probe = AdapterProbe()
    overrides = [
        *FAST,
        *MODEL,
        f"init_from={teacher}",
        "compress=[prune,distill]",
        "compress.prune.start_epoch=1",
        "compress.distill.features=[fc]",
        "report.enabled=false",
    ]
    run(compose_config(overrides, tmp_path), extra_callbacks=[probe])
    assert probe.adapter_state_kept  # checked right after the step at epoch 1


def test_features_end_when_quantization_aware_training_starts(teacher, tmp_path):
    overrides = [
        *FAST,
        *MODEL,
        f"init_from={teacher}",
        "compress=[distill,qat]",
        "compress.qat.backend=fx",
        "compress.distill.features=[layer3]",
        "report.enabled=false",
    ]
    probe = AdapterProbe()
    run(compose_config([*overrides, "compress.qat.start_epoch=1"], tmp_path), [probe])
    assert len(probe.widths) == 1  # epoch 0 only; the logits went on teaching
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/feature_loss")] != []
    assert len(events.Scalars("train/kd_loss")) == 2 > len(events.Scalars("train/feature_loss"))
    with pytest.raises(ConfigError, match=r"student has no layer layer3.*start QAT later"):
        run(compose_config([*overrides, "compress.qat.start_epoch=0"], tmp_path / "at_once"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], r"compress.distill needs a trained teacher"),
        (["compress.distill.alpha=1.5", "init_from=TEACHER"], r"alpha=1.5 must be in \(0, 1\]"),
        (["compress.distill.temperature=0", "init_from=TEACHER"], r"temperature=0 must be > 0"),
        (["compress.distill.teacher_checkpoint=nowhere.ckpt"], r"teacher_checkpoint=nowhere"),
        (
            ["data=shapes", "data.num_train=64", "compress.distill.teacher_checkpoint=TEACHER"],
            r"in_channels=1, the student has in_channels=3",
        ),
        (
            ["compress.distill.features=[layer9]", "init_from=TEACHER"],
            r"the teacher has no layer layer9\. Its layers: conv1, bn1, ",
        ),
        (
            ["compress.distill.features={layer9:layer3}", "init_from=TEACHER"],
            r"the student has no layer layer9\. Its layers: conv1, bn1, ",
        ),
        (
            ["compress.distill.features={layer1:layer3}", "init_from=TEACHER"],
            r"student's layer1 gives features of shape \(16, 8, 8\), the teacher's layer3 of "
            r"shape \(64, 2, 2\)",
        ),
        (
            ["compress.distill.features=[fc]", "compress.distill.feature_weight=0"],
            r"feature_weight=0 must be > 0",
        ),
    ],
)
def test_bad_distill_options_fail_before_training(teacher, tmp_path, overrides, message):
    overrides = [o.replace("TEACHER", str(teacher)) for o in overrides]
    with pytest.raises(ConfigError, match=message):
        run(compose_config([*FAST, *MODEL, "compress=distill", *overrides], tmp_path))
    assert not (tmp_path / "checkpoints").exists()
