"""What the benchmarks share: whole litcompress runs, composed as ``python train.py`` would."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict

from litcompress.compress.prune import after_pruning, graph_options
from litcompress.models import find_classifier
from litcompress.run import run

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# The image shape of the speed tables.
SHAPE = (3, 32, 32)


def shapes_run(num_train: int, min_run_time_s: float | None = None) -> list[str]:
    """Overrides of a CPU run of a CIFAR ResNet on ``shapes`` with Adam, without the rich UI."""
    overrides = [
        "data=shapes",
        f"data.num_train={num_train}",
        "model=resnet",
        "optim=adam",
        "trainer.accelerator=cpu",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
    ]
    if min_run_time_s is not None:
        overrides.append(f"report.min_run_time_s={min_run_time_s}")
    return overrides


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config of ``python train.py OVERRIDES``, writing into ``output_dir``."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def train(
    overrides: list[str], output_dir: Path, extra_callbacks: list[Callback] | None = None
) -> dict[str, Any]:
    """Run ``python train.py OVERRIDES`` into ``output_dir``; returns its report.json."""
    run(compose_config(overrides, output_dir), extra_callbacks=extra_callbacks)
    return json.loads((Path(output_dir) / "report.json").read_text())


def prune_half(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` with half its channels pruned away, one-shot by L2 magnitude."""
    pruned = copy.deepcopy(net)
    pruner = tp.pruner.BasePruner(
        pruned,
        torch.zeros(1, *SHAPE),
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=[find_classifier(pruned)[1]],
        **graph_options(pruned),
    )
    pruner.step()
    after_pruning(pruned)
    return pruned.eval()
