"""Shared fixtures: compose the real configs the way users do, with outputs in a temp folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# Fast settings shared by the end-to-end tests: a few batches, no rich UI, short timings.
FAST = [
    "trainer=debug",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "report.min_run_time_s=0.05",
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
