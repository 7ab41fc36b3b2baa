"""End-to-end runs of litcompress.run.run on the real configs, in-process and short."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from litcompress.checkpoint import load_network, read_checkpoint
from litcompress.errors import ConfigError
from litcompress.run import run
from tests.conftest import FAST

SMALL_SHAPES = ["data=shapes", "data.num_train=256", "data.num_val=64", "data.num_test=64"]
SMALL_MODELS = {
    "cnn": [],
    "resnet": [],
    "mobilenet": ["model.width_mult=0.25"],
    "vit": ["model.dim=32", "model.mlp_dim=64", "model.depth=2", "model.patch_size=4"],
    "torchvision": ["model.name=resnet18"],
}


def train(make_config, *overrides: str, output_dir: Path) -> tuple[float | None, dict]:
    cfg = make_config(*FAST, *overrides, output_dir=output_dir)
    result = run(cfg)
    return result, json.loads((output_dir / "report.json").read_text())


@pytest.mark.parametrize("data", ["digits", "shapes"])
@pytest.mark.parametrize("model", sorted(SMALL_MODELS))
def test_short_fit_of_every_model_on_digits_and_shapes(make_config, tmp_path, model, data):
    data_args = SMALL_SHAPES if data == "shapes" else ["data=digits"]
    result, report = train(
        make_config, f"model={model}", *SMALL_MODELS[model], *data_args, output_dir=tmp_path
    )
    assert 0.0 <= result <= 1.0
    assert report["before"]["test_acc"] is None  # a fresh network is not evaluated
    assert 0.0 <= report["after"]["test_acc"] <= 1.0
    assert report["after"]["params"] == report["before"]["params"] > 0
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    # The checkpoint rebuilds its network without unpickling anything.
    net = load_network(tmp_path / "checkpoints" / "last.ckpt")
    channels, size = (1, 8) if data == "digits" else (3, 32)
    assert net(torch.zeros(2, channels, size, size)).shape == (2, 10)


def test_digits_resnet_learns(make_config, tmp_path):
    _, report = train(
        make_config,
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=1.0",
        "trainer.limit_val_batches=1.0",
        "trainer.limit_test_batches=1.0",
        output_dir=tmp_path,
    )
    assert report["after"]["test_acc"] > 0.9


def test_report_tensorboard_and_checkpoint_contents(make_config, tmp_path):
    _, report = train(make_config, "model=cnn", output_dir=tmp_path)
    assert report["model"] == "litcompress.models.SmallCNN"
    assert report["compress"] == []
    assert report["speedup_b32"] == pytest.approx(
        report["before"]["latency_ms_b32"] / report["after"]["latency_ms_b32"]
    )

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_step", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc"} <= (
        scalars
    )
    # Two parameter groups: decayed weights and the norm/bias parameters without decay.
    assert {"lr-Adam/pg1", "lr-Adam/pg2", "report/after_params", "report/speedup_b32"} <= scalars
    assert "report/text_summary" in events.Tags()["tensors"]
    # The HParams tab compares runs by the delivered model's figures.
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {
        "report/after_test_acc",
        "report/after_latency_ms_b32",
        "report/after_file_bytes",
        "report/speedup_b32",
    } <= metrics

    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    meta = checkpoint["litcompress"]
    assert meta["model_config"]["_target_"] == "litcompress.models.SmallCNN"
    assert (meta["model_config"]["in_channels"], meta["model_config"]["image_size"]) == (1, 8)


def test_resume_from_last_checkpoint_continues_the_run(make_config, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    _, report1 = train(make_config, "model=cnn", "trainer.max_epochs=1", output_dir=first)
    last = first / "checkpoints" / "last.ckpt"
    _, report2 = train(
        make_config,
        "model=cnn",
        "trainer.max_epochs=2",
        f"ckpt_path={last}",
        output_dir=second,
    )
    assert report1["epochs"] == 1 and report2["epochs"] == 2
    assert read_checkpoint(second / "checkpoints" / "last.ckpt")["global_step"] == 8
    # `before` is the network that entered the first run, carried in the checkpoint (its
    # latency is timed again at the end, beside the delivered network).
    assert _sizes(report2["before"]) == _sizes(report1["before"])


def test_init_from_starts_with_the_trained_weights_and_architecture(make_config, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    _, trained = train(make_config, "model=cnn", "model.width=8", output_dir=first)
    best = next(p for p in (first / "checkpoints").glob("epoch*.ckpt"))
    # model=resnet is ignored: the checkpoint decides the architecture.
    _, report = train(make_config, "model=resnet", f"init_from={best}", output_dir=second)
    assert report["before"]["test_acc"] == pytest.approx(trained["after"]["test_acc"])
    assert report["before"]["params"] == trained["after"]["params"]
    assert report["model"] == "litcompress.models.SmallCNN"


def test_same_seed_gives_same_metrics(make_config, tmp_path):
    reports = [
        train(make_config, "model=cnn", "seed=3", output_dir=tmp_path / name)[1]
        for name in ("a", "b")
    ]
    weights = [
        read_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt")["state_dict"]
        for name in ("a", "b")
    ]
    assert reports[0]["after"]["test_acc"] == reports[1]["after"]["test_acc"]
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    train(make_config, "model=cnn", "seed=4", output_dir=tmp_path / "c")
    other = read_checkpoint(tmp_path / "c" / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(not torch.equal(value, other[key]) for key, value in weights[0].items())


# -- errors before work starts ----------------------------------------------------------------
def test_missing_init_from_file(make_config, tmp_path):
    with pytest.raises(ConfigError, match=r"init_from=/nowhere/model.ckpt does not exist"):
        run(make_config("init_from=/nowhere/model.ckpt"))


def test_missing_ckpt_path_file(make_config):
    with pytest.raises(ConfigError, match=r"ckpt_path=missing.ckpt does not exist"):
        run(make_config("ckpt_path=missing.ckpt"))


def test_checkpoint_with_other_class_count(make_config, tmp_path):
    train(make_config, "model=cnn", "trainer.max_epochs=1", output_dir=tmp_path / "digits")
    last = tmp_path / "digits" / "checkpoints" / "last.ckpt"
    cfg = make_config(*FAST, *SMALL_SHAPES, "data.num_classes=5", f"init_from={last}")
    with pytest.raises(ConfigError, match=r"network for 10 classes.*has 5"):
        run(cfg)


def test_checkpoint_for_another_image_size(make_config, tmp_path):
    train(
        make_config, *SMALL_SHAPES, "model=cnn", "trainer.max_epochs=1", output_dir=tmp_path / "a"
    )
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    cfg = make_config(*FAST, *SMALL_SHAPES, "data.image_size=24", f"init_from={last}")
    with pytest.raises(
        ConfigError, match=r"init_from=.*image size 32, but the data .* image size 24"
    ):
        run(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_torchvision_model_name(make_config):
    with pytest.raises(ConfigError, match=r"name='resnet19'.*resnet18"):
        run(make_config(*FAST, "model=torchvision", "model.name=resnet19"))


def test_torchvision_model_that_cannot_run_at_the_data_size(make_config):
    with pytest.raises(ConfigError, match=r"'vit_b_16' cannot run on 8x8 images.*data.image_size"):
        run(make_config(*FAST, "model=torchvision", "model.name=vit_b_16"))


def test_empty_image_folder(make_config, tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ConfigError, match=str(tmp_path / "images")):
        run(make_config(*FAST, "data=imagefolder", f"data.data_dir={tmp_path / 'images'}"))


def test_not_a_litcompress_checkpoint(make_config, tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ConfigError, match="not a litcompress checkpoint"):
        run(make_config(*FAST, f"init_from={path}"))


def _sizes(stats: dict) -> dict:
    """A report entry without its latencies (timed at the end of each run)."""
    return {k: v for k, v in stats.items() if not k.startswith("latency_ms")}


class Interrupted(Exception):
    pass


class InterruptAtEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise Interrupted


def test_ckpt_path_auto_starts_a_run_then_resumes_it_from_its_folder(make_config, tmp_path):
    """What a requeued cluster job does: the same command again, in the same folder."""
    overrides = [*FAST, "model=cnn", "ckpt_path=auto", "report.enabled=false", "test=false"]
    with pytest.raises(Interrupted):
        run(make_config(*overrides, output_dir=tmp_path), extra_callbacks=[InterruptAtEpoch(1)])
    assert read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4
    # A new run in that folder would be refused (another run's checkpoints): this one resumes.
    run(make_config(*overrides, output_dir=tmp_path))
    last = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (1, 8)
