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


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A trained (briefly) ResNet-8 on digits: the teacher of these tests."""
    output_dir = tmp_path_factory.mktemp("teacher")
    run(compose_config([*FAST, *MODEL, "report.enabled=false"], output_dir))
    return output_dir / "checkpoints" / "last.ckpt"


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
    loss = callback.distillation_loss(None, student_logits, None)
    torch.testing.assert_close(loss, 0.3 * 4 * expected)
    assert callback.distillation_loss(None, teacher_logits, None).abs() < 1e-6


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
    ],
)
def test_bad_distill_options_fail_before_training(teacher, tmp_path, overrides, message):
    overrides = [o.replace("TEACHER", str(teacher)) for o in overrides]
    with pytest.raises(ConfigError, match=message):
        run(compose_config([*FAST, *MODEL, "compress=distill", *overrides], tmp_path))
    assert not (tmp_path / "checkpoints").exists()
