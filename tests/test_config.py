"""Every YAML of every config group composes and builds a real object."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from litcompress.build import build, build_callbacks, build_compression
from litcompress.data import ClassificationData
from tests.conftest import CONF_DIR, compose_config


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


# The text options, whose networks take token ids (tests/test_text.py builds them).
TEXT_DATA = ("hf_dataset", "reviews", "text_files")
TEXT_MODELS = ("bert_mini", "bert_small", "bert_tiny", "hf")


def image_options(group: str) -> list[str]:
    return [name for name in options(group) if name not in (*TEXT_DATA, *TEXT_MODELS)]


def test_every_group_has_its_options():
    assert options("data") == [
        "cifar10",
        "cifar100",
        "digits",
        "fashion_mnist",
        "hf_dataset",
        "imagefolder",
        "mnist",
        "reviews",
        "shapes",
        "text_files",
    ]
    assert options("model") == [
        "bert_mini",
        "bert_small",
        "bert_tiny",
        "cnn",
        "hf",
        "mobilenet",
        "resnet",
        "torchvision",
        "vit",
    ]
    assert options("module") == ["auto", "image_classifier", "text_classifier"]
    assert options("optim") == ["adam", "adamw", "sgd"]
    assert options("scheduler") == ["cosine", "multistep", "none", "onecycle"]
    assert options("trainer") == ["cpu", "ddp", "debug", "default", "gpu"]
    assert options("logger") == ["csv", "none", "tensorboard"]
    assert options("compress") == ["distill", "none", "prune", "ptq", "qat", "sparsity"]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    for label in ("cat", "dog"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (10, 10), (i * 80, 0, 0)).save(
                tmp_path / "images" / label / f"{i}.png"
            )
    return tmp_path / "images"


@pytest.mark.parametrize("name", image_options("data"))
def test_data_options_build_data_modules(name, tmp_path, image_folder):
    overrides = [f"data={name}"]
    if name == "imagefolder":
        overrides.append(f"data.data_dir={image_folder}")
    elif name not in ("digits", "shapes"):
        overrides.append(f"data.data_dir={tmp_path}")  # building must not touch the files yet
    data = build(compose_config(overrides).data)
    assert isinstance(data, ClassificationData)
    assert data.num_classes >= 2 and data.in_channels in (1, 3) and data.image_size >= 8


@pytest.mark.parametrize("name", image_options("model"))
def test_model_options_build_networks(name):
    make = build(compose_config([f"model={name}"]).model)
    net = make(num_classes=7, in_channels=3, image_size=32)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("optim", options("optim"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optim_and_scheduler_options(optim, scheduler):
    cfg = compose_config([f"optim={optim}", f"scheduler={scheduler}"])
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = instantiate(cfg.optim)(params)
    assert isinstance(optimizer, torch.optim.Optimizer)
    # The optimizer starts at the configured rate (before a scheduler takes it over).
    assert optimizer.param_groups[0]["lr"] == cfg.optim.lr
    assert optimizer.defaults.get("weight_decay", 0.0) == cfg.optim.get("weight_decay", 0.0)
    if scheduler == "none":
        assert not cfg.scheduler
        return
    config = instantiate(cfg.scheduler, _convert_="all")
    make = config["scheduler"]
    if "total_steps" not in getattr(make, "keywords", {}) and scheduler != "multistep":
        make = functools.partial(make, total_steps=100)
    assert isinstance(make(optimizer), torch.optim.lr_scheduler.LRScheduler)
    assert config["interval"] in ("step", "epoch")


@pytest.mark.parametrize("name", options("trainer"))
def test_trainer_options_build_trainers(name, tmp_path):
    cfg = compose_config([f"trainer={name}"], output_dir=tmp_path)
    if name == "gpu" and not torch.cuda.is_available():
        pytest.skip("no GPU here; the gpu option needs one")
    trainer = build(cfg.trainer, logger=False)
    assert isinstance(trainer, L.Trainer)
    if name == "ddp":
        assert type(trainer.strategy).__name__ == "DDPStrategy"


@pytest.mark.parametrize("name", options("logger"))
def test_logger_options(name, tmp_path):
    cfg = compose_config([f"logger={name}"], output_dir=tmp_path)
    loggers = [build(c) for c in (cfg.logger or {}).values()]
    assert len(loggers) == (0 if name == "none" else 1)
    callbacks = build_callbacks(compose_config([], output_dir=tmp_path), has_logger=bool(loggers))
    names = {type(c).__name__ for c in callbacks}
    assert {"EpochCheckpoint", "RichProgressBar", "RichModelSummary"} <= names
    assert ("LearningRateMonitor" in names) == bool(loggers)


def test_compress_none_adds_no_callbacks():
    assert build_compression(compose_config(["compress=none"])) == []


def test_compress_options_build_in_the_techniques_order(tmp_path):
    teacher = tmp_path / "teacher.ckpt"
    teacher.touch()  # only its existence is checked when the callback is built
    cfg = compose_config(
        ["compress=[qat,prune,distill]", f"compress.distill.teacher_checkpoint={teacher}"]
    )
    names = [type(c).__name__ for c in build_compression(cfg)]
    # Whatever the typed order: capture the teacher, prune, then quantize.
    assert names == ["DistillCallback", "PruneCallback", "QATCallback"]


@pytest.mark.parametrize("name", options("experiment"))
def test_experiments_compose_and_build(name):
    cfg = compose_config([f"experiment={name}"])
    data = build(cfg.data)
    net = build(cfg.model)(
        num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size
    )
    assert isinstance(net, torch.nn.Module)


@pytest.mark.parametrize("name", options("hparams_search"))
def test_searches_compose_with_their_sweeper_and_a_search_space_that_exists(name):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={name}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert "OptunaSweeper" in sweeper._target_ and str(sweeper.storage).startswith("sqlite:///")
    objectives = cfg.optimized_metric
    directions = sweeper.direction
    if OmegaConf.is_list(objectives):  # one direction per objective
        assert len(objectives) == len(directions) == 2
    else:
        assert directions == "maximize" and objectives == "report/after_test_acc"
    for key in sweeper.params:  # every searched option exists in the composed config
        assert OmegaConf.select(cfg, key, throw_on_missing=True) is not None, key


@pytest.mark.parametrize(
    ("optim", "scratch", "finetune"),
    [("adam", 3e-3, 3e-4), ("adamw", 2e-3, 2e-4), ("sgd", 0.1, 0.01)],
)
def test_a_run_from_a_trained_checkpoint_fine_tunes_with_fine_tuning_defaults(
    optim, scratch, finetune
):
    def first_lr(*overrides: str) -> tuple[float, float]:
        cfg = compose_config([f"optim={optim}", "scheduler=cosine", *overrides])
        optimizer = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(3))])
        instantiate(cfg.scheduler, _convert_="all")["scheduler"](optimizer, total_steps=100)
        return cfg.optim.lr, optimizer.param_groups[0]["lr"]  # configured, at the first step

    # From scratch: the from-scratch rate, reached after a warm-up (the first step is ~0).
    configured, first = first_lr()
    assert configured == scratch and first == pytest.approx(scratch * 1e-3)
    # init_from: ten times lower, and no warm-up: the first step trains at it.
    assert first_lr("init_from=trained.ckpt") == (finetune, pytest.approx(finetune))
    # What the user sets is kept, with or without init_from.
    assert first_lr("init_from=trained.ckpt", "optim.lr=1e-5")[0] == 1e-5
    warm = "scheduler.scheduler.warmup_fraction=0.1"
    assert first_lr("init_from=trained.ckpt", warm)[1] == pytest.approx(finetune * 1e-3)
