"""Bad input refused before training with a message naming the option, the value and the fix; and
runs that did what they were asked end without an error."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from litcompress.errors import ConfigError
from litcompress.run import run
from tests.conftest import FAST, TINY_SHAPES

RESNET8 = [*FAST, "model=resnet", "model.depth=8", "report.enabled=false"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["seed=abc"], r"seed='abc' is not an integer: use e.g. seed=42"),
        (["optim.lr=-1"], r"optim.lr=-1 must be a positive number \(e.g. optim.lr=1e-3\)"),
        (["optim.lr=0"], r"optim.lr=0 must be a positive number"),
        (["optim.weight_decay=-0.1"], r"optim.weight_decay=-0.1 must be 0 or more"),
        (["optim.lr=fast"], r"optim.lr='fast' is not a number"),
        (["data.batch_size=0"], r"data.batch_size=0 must be an integer of at least 1"),
        (["data.num_workers=-1"], r"data.num_workers=-1 must be an integer of at least 0"),
        (["data=imagefolder"], r"data.data_dir: no value given.*data.data_dir=\.\.\."),
        (["report.min_run_time_s=0"], r"report.min_run_time_s=0 must be a positive number"),
        (["report.runtime=tensorrt"], r"report.runtime='tensorrt' is not a runtime; choose"),
        (
            ["report.runtime=openvino", "report.enabled=false"],
            r"report.runtime=openvino times the delivered model .* report.enabled=false",
        ),
        (["report.time_torch=false"], r"report.time_torch=false with report.runtime=torch would"),
        (["report.time_torch=maybe"], r"report.time_torch='maybe' must be true or false"),
        (
            [
                "report.runtime=openvino",
                "report.time_torch=false",
                "optimized_metric=report/after_latency_ms_b32",
            ],
            r"optimized_metric=report/after_latency_ms_b32 times the delivered model in torch, "
            r"but report.time_torch=false: optimize report/runtime_latency_ms_b32",
        ),
        # Settings that would never take effect in the run asked for (trainer=debug: 2 epochs).
        (
            ["compress=qat", "compress.qat.start_epoch=0", "compress.qat.freeze_bn_epoch=2"],
            r"freeze_bn_epoch=2 is not before trainer.max_epochs=2: it would never take effect",
        ),
        (
            ["compress=qat", "compress.qat.start_epoch=0", "compress.qat.freeze_observer_epoch=5"],
            r"freeze_observer_epoch=5 is not before trainer.max_epochs=2",
        ),
    ],
)
def test_bad_settings_are_refused_before_training_with_the_fix(make_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run(make_config(*FAST, *overrides))


def test_a_folder_as_ckpt_path_names_a_checkpoint_inside_it(make_config, trained_resnet8):
    run_dir = trained_resnet8.parents[1]
    with pytest.raises(
        ConfigError, match=r"is a folder: point ckpt_path at a checkpoint file, e\.g\. .*\.ckpt"
    ):
        run(make_config(*RESNET8, f"ckpt_path={run_dir}"))


def test_corrupt_and_foreign_files_as_ckpt_path_are_named(make_config, tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x80\x02 not a checkpoint")
    with pytest.raises(
        ConfigError, match=r"ckpt_path=.*corrupt.ckpt could not be read as a checkpoint"
    ):
        run(make_config(*RESNET8, f"ckpt_path={corrupt}"))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(
        ConfigError, match=r"ckpt_path=.*foreign.ckpt is not a litcompress checkpoint"
    ):
        run(make_config(*RESNET8, f"ckpt_path={foreign}"))


def test_resuming_with_other_data_or_another_network_is_refused(make_config, trained_resnet8):
    with pytest.raises(
        ConfigError,
        match=r"other data.*image_size: 8 in the checkpoint, 32 here.*init_from=",
    ):
        run(make_config(*RESNET8, *TINY_SHAPES, f"ckpt_path={trained_resnet8}"))
    with pytest.raises(ConfigError, match=r"depth: 8 in the checkpoint, 20 here"):
        run(make_config(*FAST, "model=resnet", "model.depth=20", f"ckpt_path={trained_resnet8}"))


@pytest.mark.slow
def test_a_zero_epoch_run_evaluates_reports_and_ends_without_error(make_config, tmp_path):
    cfg = make_config(*FAST, *TINY_SHAPES, "model=cnn", "model.width=4", "trainer.max_epochs=0")
    assert run(cfg) is None  # val/acc_best was never logged: no value, and no error
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["epochs"] == 0 and report["after"]["params"] == report["before"]["params"]


@pytest.mark.slow
def test_resuming_a_finished_run_ends_without_error(make_config, trained_resnet8, tmp_path):
    assert run(make_config(*RESNET8, f"ckpt_path={trained_resnet8}")) is None


class _FallingAccuracy(Callback):
    """Reports a validation accuracy that falls every epoch (what ModelCheckpoint monitors)."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            trainer.callback_metrics["val/acc"] = torch.tensor(1.0 / (trainer.current_epoch + 1))


@pytest.mark.slow
def test_last_ckpt_is_the_last_epoch_even_when_accuracy_falls(make_config, tmp_path):
    cfg = make_config(*FAST, *TINY_SHAPES, "model=cnn", "model.width=4", "trainer.max_epochs=3")
    run(cfg, extra_callbacks=[_FallingAccuracy()])
    folder = tmp_path / "run" / "checkpoints"
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2  # the last completed epoch (Lightning 2.6 alone: 0)
    best = sorted(p.name for p in folder.glob("epoch*.ckpt"))
    assert best == ["epoch000.ckpt"]  # the best stays apart


TINY_CNN = [*FAST, *TINY_SHAPES, "model=cnn", "model.width=4", "report.enabled=false"]


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(make_config, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"paths.output_dir=.*a_file/run cannot be written"):
        run(make_config(*TINY_CNN, output_dir=blocker / "run"))
    cfg = make_config(*TINY_CNN, f"callbacks.model_checkpoint.dirpath={blocker}/checkpoints")
    with pytest.raises(
        ConfigError, match=r"callbacks.model_checkpoint.dirpath=.* cannot be written"
    ):
        run(cfg)
    assert not (tmp_path / "run" / "tensorboard").exists()  # refused before anything was built


def test_a_disk_without_room_for_checkpoints_is_refused(make_config, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ConfigError, match=r"has 0.0 MB free, but the run needs about"):
        run(make_config(*TINY_CNN))


@pytest.mark.slow
def test_a_run_folder_belongs_to_one_run(make_config, tmp_path):
    run(make_config(*TINY_CNN))
    with pytest.raises(
        ConfigError, match=r"already holds another run's checkpoints.*overwrite=true"
    ):
        run(make_config(*TINY_CNN))
    run(make_config(*TINY_CNN, "overwrite=true"))
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert "last-v1.ckpt" not in names and "last.ckpt" in names


@pytest.mark.slow
def test_a_checkpoint_that_is_not_written_stops_the_run_at_once(make_config, monkeypatch, tmp_path):
    import lightning as L

    from litcompress.errors import OutputError

    # What Lightning 2.6 does on a PermissionError: nothing written, no error.
    monkeypatch.setattr(L.Trainer, "save_checkpoint", lambda self, *args, **kwargs: None)
    with pytest.raises(OutputError, match=r"could not be written.*the run stops here"):
        run(make_config(*TINY_CNN, "trainer.max_epochs=3"))
