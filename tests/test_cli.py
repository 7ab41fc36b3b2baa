"""The real entry point in a subprocess: sweeps, DDP and the messages users see."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from litcompress.cli import main as cli_main
from tests.conftest import FAST, ROOT

QUICK = [*FAST, "model=cnn", "model.width=8", "trainer.max_epochs=1"]
# QUICK, on 2 CPU processes under DDP.
DDP_QUICK = [
    *[arg for arg in QUICK if arg != "trainer=debug"],
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def train_py(
    *args: str, timeout: int = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_a_sweep_goes_on_past_a_failed_job_and_ends_with_its_summary_and_pareto_front(tmp_path):
    result = train_py(
        "-m",
        "optim=sgd,adam",
        "compress=prune",
        "compress.prune.ratio=0.3,0.7,1.5",  # 1.5: refused, those two jobs fail
        *QUICK,  # max_epochs=1: pruning starts at epoch 1 // 3 = 0
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 1, result.stderr[-3000:]  # the sweep says that jobs failed
    jobs = sorted((p for p in tmp_path.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert len(jobs) == 6  # every job ran, the failed ones did not end the sweep
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["job"] for row in rows] == [job.name for job in jobs]
    seen = set()
    for job, row in zip(jobs, rows, strict=True):
        overrides = json.loads((job / "job.json").read_text())["overrides"]
        assert row["overrides"] == " ".join(overrides)
        if "compress.prune.ratio=1.5" in overrides:
            assert row["status"] == "failed" and "compress.prune.ratio=1.5" in row["error"]
            assert not (job / "report.json").exists()
            continue
        report = json.loads((job / "report.json").read_text())
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
        assert row["status"] == "done" and float(row["wall_s"]) > 0
        assert float(row["test_acc_after"]) == pytest.approx(report["after"]["test_acc"])
        assert int(row["macs_after"]) == report["after"]["macs"] < report["before"]["macs"]
        assert int(row["file_bytes_after"]) == report["after"]["file_bytes"]
        assert float(row["latency_ms_b32_after"]) == pytest.approx(
            report["after"]["latency_ms_b32"]
        )
        assert row["techniques"].startswith("prune: ")
        seen.add(tuple(overrides))
    assert len(seen) == 4
    # The Pareto marks: the jobs no other job beats on accuracy at no more cost.
    done = [row for row in rows if row["status"] == "done"]
    for cost, mark in (
        ("latency_ms_b32_after", "pareto_latency"),
        ("file_bytes_after", "pareto_size"),
    ):
        for row in done:
            acc, value = float(row["test_acc_after"]), float(row[cost])
            beaten = any(
                float(o["test_acc_after"]) >= acc
                and float(o[cost]) <= value
                and (float(o["test_acc_after"]) > acc or float(o[cost]) < value)
                for o in done
            )
            assert row[mark] == str(not beaten), (cost, row)
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "| job | overrides | status |" in (tmp_path / "summary.md").read_text()
    events = EventAccumulator(str(tmp_path / "summary"))
    events.Reload()
    assert events.Images("sweep/pareto") and events.Tensors("sweep/summary/text_summary")
    # `litcompress summarize` rebuilds it (exit 1: jobs failed), and takes runs made by hand.
    assert cli_main(["summarize", str(tmp_path), "--no-tensorboard"]) == 1
    by_hand = tmp_path.parent / "by_hand"
    finished = [job for job in jobs if (job / "report.json").exists()]
    for name, source in zip(("first", "second"), finished, strict=False):
        shutil.copytree(source, by_hand / name, ignore=shutil.ignore_patterns("job.json"))
    assert cli_main(["summarize", str(by_hand), "--no-tensorboard"]) == 0
    with open(by_hand / "summary.csv", newline="") as handle:
        hand_rows = list(csv.DictReader(handle))
    assert [(r["job"], r["status"]) for r in hand_rows] == [("first", "done"), ("second", "done")]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_one_report(tmp_path):
    result = train_py(*DDP_QUICK, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["after"]["test_acc"] is not None
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    # One TensorBoard run, written by rank 0 alone: event files are named *.<host>.<pid>.<n>.
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"tensorboard"}
    assert len({p.name.split(".")[-2] for p in events}) == 1


@pytest.mark.slow
def test_ddp_sparsity_then_ptq_has_the_same_masks_on_every_rank_and_one_int8_model(tmp_path):
    result = train_py(
        *DDP_QUICK,
        "model=resnet",
        "model.depth=8",
        "compress=[sparsity,ptq]",
        "compress.sparsity.frequency=1",
        "compress.ptq.calibration_batches=2",
        "trainer.max_epochs=2",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr + "".join(p.read_text() for p in tmp_path.glob("*.log"))
    found = re.findall(r"Rank (\d) at sparsity ([\d.]+) \(step (\d+)\): masks (\w+)", output)
    assert {rank for rank, *_ in found} == {"0", "1"}, output[-3000:]
    # At every mask update, the very same masks on both ranks.
    for step in {step for _, _, step, _ in found}:
        masks = {(level, mask) for _, level, s, mask in found if s == step}
        assert len(masks) == 1, found
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["sparsity"]["achieved_sparsity"] == pytest.approx(0.75, abs=0.01)
    # Calibrated once (rank 0), two batches of the per-process batch size.
    assert report["ptq"]["calibration_images"] == 2 * 64
    assert report["after"]["int8_artifact"] == "model_int8.pt2"
    artifacts = sorted(p.name for p in tmp_path.glob("model_int8*"))
    assert artifacts == ["model_int8.pt2", "model_int8.pt2.json"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=resnt"], "Could not find 'model/resnt'"),
        (["data=cifar11"], "Could not find 'data/cifar11'"),
        (["init_from=nowhere.ckpt"], "init_from=nowhere.ckpt does not exist"),
        (["model=torchvision", "model.name=resnet19"], "Did you mean resnet18"),
    ],
)
def test_bad_input_is_one_clear_message_before_work_starts(tmp_path, args, message):
    result = train_py(*args, *FAST, f"hydra.run.dir={tmp_path}", timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output
    assert "Traceback" not in output
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_ddp_inside_a_basic_multirun_is_refused_with_the_fix(tmp_path):
    result = train_py("-m", "trainer=ddp", "seed=1,2", f"hydra.sweep.dir={tmp_path}", timeout=120)
    assert result.returncode == 1  # each job refused, the sweep's status says jobs failed
    assert "add cluster=local" in result.stdout + result.stderr


@pytest.mark.slow
def test_main_job_help_lists_the_config_groups():
    result = train_py("--help", timeout=120)
    assert result.returncode == 0
    for group in ("data:", "model:", "optim:", "scheduler:", "compress:", "trainer:"):
        assert group in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "schedule",
    [
        ["compress.prune.start_epoch=0"],
        # One step in setup, one mid-training: DDP must be wrapped again over the new parameters.
        # Each step also removes a residual block, chosen on rank 0 by bypassing each.
        [
            "compress.prune.iterative_steps=2",
            "compress.prune.start_epoch=0",
            "compress.prune.depth=2",
            "trainer.max_epochs=3",
        ],
    ],
    ids=["one-shot", "iterative"],
)
def test_ddp_pruning_gives_the_same_network_on_every_rank(tmp_path, schedule):
    result = train_py(
        *DDP_QUICK,
        "model=resnet",
        "compress=prune",
        *schedule,
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr + "".join(p.read_text() for p in tmp_path.glob("*.log"))
    steps = 2 if len(schedule) > 1 else 1
    for step in range(1, steps + 1):
        found = re.findall(
            rf"Rank (\d) after pruning step {step}: (\d+) parameters, weights (\w+), history (\w+)",
            output,
        )
        assert {rank for rank, *_ in found} == {"0", "1"}, output[-3000:]
        # The same weights (a hash of the state dict) and pruning history on every rank.
        networks = {tuple(network) for _, *network in found}
        assert len(networks) == 1, found
        counts = {count for _, count, *_ in found}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["after"]["params"] == int(counts.pop())
    assert len(report["prune"]["steps"]) == steps
    if steps > 1:
        assert [s["blocks_removed"] for s in report["prune"]["steps"]] == [1, 2]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
