"""Shared fixtures: compose the real configs the way users do, with outputs in a temp folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from litcompress import resolvers

resolvers.register()  # the config's interpolations, for configs resolved before a run

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# Fast settings shared by the end-to-end tests: a few batches, no rich UI, short timings.
FAST = [
    "trainer=debug",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "report.min_run_time_s=0.05",
]


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Test workers share the cores: one thread each (and in the processes they start), or OpenMP
    # threads wait for each other.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# Shapes data of a few images, one batch of each split: for runs that only check a path works.
TINY_SHAPES = [
    "data=shapes",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=8",
    "trainer.max_epochs=1",
]


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Compose conf/train.yaml with ``overrides`` as ``python train.py OVERRIDES`` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_config(*overrides, output_dir=None)``: a composed config writing under tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_config(list(overrides), output_dir or tmp_path / "run")

    return make


def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this test run shared by all its workers (pytest-xdist) or its one process."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_run(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: list[str]) -> Path:
    """The output folder of one run made once for the whole test run, whatever the workers.

    The first worker to ask makes it (under a file lock); the others wait and reuse it. Tests must
    only read it (copy what they change).
    """
    from litcompress.run import run

    output_dir = shared_folder(tmp_path_factory) / "shared_runs" / name
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{output_dir}.lock"):
        done = output_dir / ".done"
        if not done.exists():
            run(compose_config(overrides, output_dir))
            done.touch()
    return output_dir


@pytest.fixture(scope="session")
def trained_resnet8(tmp_path_factory) -> Path:
    """last.ckpt of a ResNet-8 trained (briefly) on digits, shared by the whole test run."""
    overrides = [*FAST, "model=resnet", "model.depth=8", "report.enabled=false"]
    return shared_run(tmp_path_factory, "resnet8_digits", overrides) / "checkpoints" / "last.ckpt"


QAT = [*FAST, "compress=qat", "model=resnet", "model.depth=8"]


@pytest.fixture(scope="session")
def qat_run(tmp_path_factory) -> tuple[Path, dict]:
    """One pt2e QAT run (float epoch 0, QAT epoch 1) with its converted int8 model, shared."""
    import json

    output_dir = shared_run(tmp_path_factory, "qat", [*QAT, "compress.qat.start_epoch=1"])
    return output_dir, json.loads((output_dir / "report.json").read_text())
