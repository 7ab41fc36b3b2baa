"""Exact resume: a training process killed at an epoch boundary and resumed from ``last.ckpt``
ends bit for bit where the same run uninterrupted ends (weights, optimizer, best accuracy)."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from litcompress.checkpoint import read_checkpoint
from litcompress.compress import QATCallback
from litcompress.errors import ConfigError
from litcompress.run import run
from tests.conftest import FAST
from tests.test_cli import train_py

BASE = [*FAST, "test=false"]
RESNET = ["model=resnet", "model.depth=8", "model.width=8"]


def kill_at(epoch: int, how: str) -> list[str]:
    return [
        "+callbacks.kill._target_=tests.killer.KillAt",
        f"+callbacks.kill.epoch={epoch}",
        f"+callbacks.kill.signal={how}",
    ]


def assert_same_checkpoints(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for state_a, state_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for index, entry in state_a["state"].items():
            for name, value in entry.items():
                assert torch.equal(
                    torch.as_tensor(value), torch.as_tensor(state_b["state"][index][name])
                ), (index, name)
    assert a["lr_schedulers"] == b["lr_schedulers"]


def killed_then_resumed(
    tmp_path,
    overrides: list[str],
    kills: list[tuple[int, str]],
    keep: tuple[str, ...] = ("trainer.", "model"),
):
    """Run ``overrides`` in a subprocess killed at each ``(epoch, signal)`` in turn (each resumed
    from ``last.ckpt`` with nothing but ``ckpt_path`` and the options starting with ``keep``),
    then to its end in this process."""
    folder = tmp_path / "killed"
    # Resumed with nothing but ckpt_path: the techniques and their settings come from it.
    kept = keep  # resumed with the same network, data and epochs: nothing else
    resume = [*BASE, *[o for o in overrides if o.startswith(kept)], "report.enabled=false"]
    command = overrides
    for epoch, how in kills:
        result = train_py(*command, *kill_at(epoch, how), f"hydra.run.dir={folder}")
        expected = -signal.SIGKILL if how == "SIGKILL" else 1
        assert result.returncode == expected, result.stdout[-3000:] + result.stderr[-3000:]
        last = read_checkpoint(folder / "checkpoints" / "last.ckpt")
        assert last["epoch"] == epoch - 1  # the last completed epoch, whatever its accuracy
        command = [*resume, f"ckpt_path={folder}/checkpoints/last.ckpt"]
    run_config = command
    return folder, run_config


@pytest.mark.slow
def test_pruning_distillation_and_qat_resume_bit_for_bit_after_sigkill(
    make_config, tmp_path, trained_resnet8, monkeypatch
):
    # What is compared is the training; the int8 conversion at the end (a minute) is tested
    # in test_qat.py.
    monkeypatch.setattr(QATCallback, "deploy", lambda *args, **kwargs: None)
    overrides = [
        *BASE,
        *RESNET,
        "trainer.max_epochs=4",
        "report.enabled=false",
        "compress=[prune,distill,qat]",
        "compress.prune.start_epoch=1",
        "compress.prune.importance=taylor",
        f"compress.distill.teacher_checkpoint={trained_resnet8}",
        "compress.qat.start_epoch=2",
    ]
    straight = run(make_config(*overrides, output_dir=tmp_path / "straight"))
    # Killed after pruning (epoch 2 starts QAT), then again once QAT trains.
    folder, resume = killed_then_resumed(tmp_path, overrides, [(2, "SIGKILL"), (3, "SIGKILL")])
    resumed = run(make_config(*resume, output_dir=folder))
    assert resumed == straight  # val/acc_best: the best of all epochs, before and after the kill
    assert_same_checkpoints(
        read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt"),
        read_checkpoint(folder / "checkpoints" / "last.ckpt"),
    )


@pytest.mark.slow
def test_an_interrupted_pruned_run_resumes_exactly_and_reports_its_pruning(make_config, tmp_path):
    overrides = [
        *BASE,
        "model=mobilenet",  # dropout: draws from the global generator in every training step
        "model.width_mult=0.5",
        "trainer.max_epochs=3",
        "compress=prune",
        "compress.prune.start_epoch=1",
        "compress.prune.depth=2",  # inverted residuals removed whole, with the channels
    ]
    run(make_config(*overrides, output_dir=tmp_path / "straight"))
    folder, resume = killed_then_resumed(tmp_path, overrides, [(2, "SIGINT")])
    run(make_config(*[o for o in resume if o != "report.enabled=false"], output_dir=folder))
    assert_same_checkpoints(
        read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt"),
        read_checkpoint(folder / "checkpoints" / "last.ckpt"),
    )
    straight = json.loads((tmp_path / "straight" / "report.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    assert report["compress"] == ["prune"] and report["prune"] == straight["prune"]
    assert len(report["prune"]["depth"]["removed"]) == 2
    assert report["before"]["params"] == straight["before"]["params"]
    assert report["after"]["params"] == straight["after"]["params"]


def test_resuming_with_other_techniques_is_refused(make_config, tmp_path):
    folder = tmp_path / "run"
    run(
        make_config(
            *BASE,
            *RESNET,
            "trainer.max_epochs=1",
            "report.enabled=false",
            "compress=prune",
            output_dir=folder,
        )
    )
    last = folder / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"compress=\[qat\], but the run used compress=\[prune\]"):
        run(make_config(*BASE, *RESNET, "compress=qat", f"ckpt_path={last}", output_dir=folder))
    with pytest.raises(ConfigError, match=r"compress.prune.ratio: 0.5 in the checkpoint, 0.7 here"):
        run(
            make_config(
                *BASE,
                *RESNET,
                "compress=prune",
                "compress.prune.ratio=0.7",
                f"ckpt_path={last}",
                output_dir=folder,
            )
        )
