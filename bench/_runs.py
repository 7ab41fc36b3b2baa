"""What the benchmarks share: whole litcompress runs, composed as ``python train.py`` would."""

from __future__ import annotations

import argparse
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


def accuracy_options(parser: argparse.ArgumentParser) -> None:
    """The options of the benchmarks' fp32-then-QAT accuracy rows, and their speed budget."""
    parser.add_argument("--depth", type=int, default=20, help="ResNet depth of the accuracy rows")
    parser.add_argument("--epochs", type=int, default=15, help="fp32 training epochs")
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per latency")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")


def train_then_qat(
    common: list[str], epochs: int, qat_epochs: int, folder: Path, qat_extra: list[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train ``common`` in fp32 for ``epochs``, then fine-tune its best checkpoint with QAT for
    ``qat_epochs`` (learning rate 1e-4, BatchNorm frozen for the last epoch); both reports."""
    fp32_dir, qat_dir = folder / "fp32", folder / "qat"
    fp32 = train([*common, f"trainer.max_epochs={epochs}"], fp32_dir)
    best = next((fp32_dir / "checkpoints").glob("epoch*.ckpt"))
    qat = train(
        [
            *common,
            f"trainer.max_epochs={qat_epochs}",
            f"init_from={best}",
            "compress=qat",
            "optim.lr=1e-4",
            f"compress.qat.freeze_bn_epoch={max(qat_epochs - 1, 0)}",
            *qat_extra,
        ],
        qat_dir,
    )
    return fp32, qat


def export_artifact(checkpoint: Path, fmt: str, output: Path) -> Path:
    """``litcompress export CHECKPOINT --format FMT --output OUTPUT`` (checked for parity)."""
    from litcompress.cli import main as cli

    code = cli(["export", str(checkpoint), "--format", fmt, "--output", str(output)])
    if code:
        raise SystemExit(f"litcompress export of {checkpoint} to {fmt} failed (exit {code})")
    return output


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
