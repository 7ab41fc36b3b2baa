"""Sweeps beyond one process: submitit's local launcher (jobs side by side, DDP inside a job),
the SLURM submission script it would write, and Lightning's view of a submitit job's tasks."""

from __future__ import annotations

import csv
import json
import os
import re

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from litcompress.cluster import SubmititEnvironment, cluster_plugins
from tests.conftest import CONF_DIR
from tests.test_cli import DDP_QUICK, train_py


def slurm_script(*overrides: str, folder) -> str:
    """The sbatch script `-m cluster=slurm OVERRIDES` submits for a job, as Hydra's submitit
    launcher builds its executor (written without a cluster)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["cluster=slurm", *overrides], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    params = {
        key: OmegaConf.select(launcher, key)
        for key in launcher
        if key not in ("_target_", "submitit_folder", "name", "max_num_timeout")
    }
    executor = submitit.AutoExecutor(
        folder=folder, cluster="slurm", slurm_max_num_timeout=launcher.max_num_timeout
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    # submitit's own script writer (private): what `sbatch` would receive.
    return executor._executor._make_submission_file_text("python -u train.py", "0")


def test_the_slurm_script_has_one_task_per_device_on_every_node_and_requeues(tmp_path, monkeypatch):
    fake = tmp_path / "bin"  # submitit wants an `srun` on the PATH, even to write the script
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    script = slurm_script(
        "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", folder=tmp_path
    )
    assert "#SBATCH --nodes=2" in script
    assert "#SBATCH --ntasks-per-node=4" in script and "#SBATCH --gpus-per-node=4" in script
    assert "#SBATCH --time=240" in script
    assert "#SBATCH --signal=USR2@120" in script  # submitit requeues the job before its end
    assert re.search(r"srun .*python -u train.py", script)
    cpu = slurm_script(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "hydra.launcher.gpus_per_node=null",
        folder=tmp_path,
    )
    assert "--ntasks-per-node=2" in cpu and "gpus" not in cpu


def test_the_tasks_of_a_local_submitit_job_are_the_ddp_ranks(monkeypatch):
    assert cluster_plugins() == []  # not a submitit job
    env = {
        "SUBMITIT_LOCAL_JOB_ID": "1234",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
        "SUBMITIT_EXECUTOR": "local",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("litcompress.cluster.rank_zero_only.rank", 0)
    (environment,) = cluster_plugins()
    assert isinstance(environment, SubmititEnvironment) and environment.creates_processes_externally
    assert (environment.world_size(), environment.global_rank(), environment.local_rank()) == (
        2,
        1,
        1,
    )
    assert environment.main_port == SubmititEnvironment().main_port  # the same on every task
    from litcompress.cluster import rank_zero_only

    assert rank_zero_only.rank == 1  # rank-zero work before fitting is not done twice


@pytest.mark.slow
def test_a_submitit_local_sweep_of_ddp_jobs(tmp_path):
    result = train_py(
        "-m",
        "cluster=local",
        "optim=sgd,adam",  # two jobs side by side, each DDP on 2 CPU processes
        *DDP_QUICK,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["job"], row["status"]) for row in rows] == [("0", "done"), ("1", "done")]
    for job in ("0", "1"):
        assert json.loads((tmp_path / job / "report.json").read_text())["after"]["test_acc"]
    logs = "".join(p.read_text() for p in (tmp_path / ".submitit").rglob("*.err"))
    assert logs.count("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") == 2, logs[-3000:]
