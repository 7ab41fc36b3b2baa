"""What a run returns to sweepers describes the network it delivers, not one it replaced."""

from __future__ import annotations

import csv
import json

import pytest

from litcompress.checkpoint import read_checkpoint
from litcompress.errors import ConfigError
from litcompress.run import run
from tests.conftest import FAST

PRUNED_LATE = [
    *FAST,
    "compress=prune",
    "logger=csv",
    "model=resnet",
    "model.depth=8",
    "trainer.max_epochs=5",
    "trainer.limit_train_batches=null",
    "compress.prune.ratio=0.9",
    "compress.prune.start_epoch=3",
]


def val_acc_by_epoch(run_dir) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("val/acc")]
    return {int(row["epoch"]): float(row["val/acc"]) for row in rows}


def test_the_sweep_metric_is_the_best_of_the_delivered_network(make_config, tmp_path):
    cfg = make_config(
        *PRUNED_LATE, "optimized_metric=[val/acc_best,report/after_macs]", output_dir=tmp_path
    )
    best, after_macs = run(cfg)
    accuracy = val_acc_by_epoch(tmp_path)
    before_pruning = max(acc for epoch, acc in accuracy.items() if epoch < 3)
    after_pruning = max(acc for epoch, acc in accuracy.items() if epoch >= 3)
    assert after_pruning < before_pruning, f"pruning 90% should cost accuracy: {accuracy}"
    assert best == pytest.approx(after_pruning)
    report = json.loads((tmp_path / "report.json").read_text())
    assert after_macs == report["after"]["macs"] < report["before"]["macs"]

    # The dense network's best checkpoint is kept apart, not mixed with the pruned ones.
    checkpoints = tmp_path / "checkpoints"
    dense = list((checkpoints / "before_prune").glob("epoch*.ckpt"))
    assert len(dense) == 1 and int(dense[0].stem.removeprefix("epoch")) < 3
    assert "pruning_history" not in read_checkpoint(dense[0])["litcompress"]
    pruned = list(checkpoints.glob("epoch*.ckpt"))
    assert pruned and all(int(p.stem.removeprefix("epoch")) >= 3 for p in pruned)
    assert all(read_checkpoint(p)["litcompress"]["pruning_history"] for p in pruned)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimized_metric=report/after_tset_acc"], r"optimized_metric=report/after_tset_acc is"),
        (
            ["optimized_metric=[val/acc_best,report/speedup_b32]", "report.enabled=false"],
            r"optimized_metric=report/speedup_b32 is a report figure, but report.enabled=false",
        ),
    ],
)
def test_report_figures_that_cannot_be_measured_are_refused_before_training(
    make_config, tmp_path, overrides, message
):
    with pytest.raises(ConfigError, match=message):
        run(make_config(*FAST, *overrides, output_dir=tmp_path))
    assert not (tmp_path / "checkpoints").exists()
