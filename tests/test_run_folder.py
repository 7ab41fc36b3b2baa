"""One run, one folder: runs started at the same instant never share a folder (the default one is
made new for each; a given one held by a live run is refused before anything is written), and a
killed run's folder is free for its resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from litcompress.checkpoint import read_checkpoint
from litcompress.run_folder import (
    LOCK_FILE,
    ClaimRunFolder,
    claim_folder,
    first_process,
    new_folder,
    release_folder,
)
from tests.conftest import CONF_DIR, FAST, ROOT, TINY_SHAPES
from tests.test_resume import kill_at

START_AT = ROOT / "tests" / "start_at.py"
IN_USE = "is in use by a run that is still running"


def tiny(width: int) -> list[str]:
    """A run of a few seconds whose network width tells its files apart from another run's."""
    return [
        *FAST,
        *TINY_SHAPES,
        "model=cnn",
        f"model.width={width}",
        "report.enabled=false",
        "test=false",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2",
    ]


def start_together(runs: list[list[str]], cwd: Path) -> list[tuple[int, str]]:
    """Start one ``train.py`` per argument list at the same instant; (exit status, output) each."""
    go = cwd / f"go-{uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, str(START_AT), str(go), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args in runs
    ]
    for process in processes:  # every one imported everything and waits for the go
        while process.stdout.readline().strip() != "ready":
            assert process.poll() is None, process.stdout.read()[-3000:]
    go.touch()
    return [(process.wait(timeout=600), process.stdout.read()) for process in processes]


def width_of_run(folder: Path) -> int:
    """The width of the one run whose files ``folder`` holds (asserting there is only one)."""
    names = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert names == ["epoch000.ckpt", "last.ckpt"], names  # no last-v1.ckpt of a second run
    assert len(list((folder / "tensorboard").glob("events.out.tfevents.*"))) == 1
    overrides = OmegaConf.load(folder / ".hydra" / "overrides.yaml")
    (width,) = [int(o.split("=")[1]) for o in overrides if o.startswith("model.width=")]
    checkpoint = read_checkpoint(folder / "checkpoints" / "last.ckpt")
    assert checkpoint["litcompress"]["model_config"]["width"] == width
    return width


@pytest.mark.slow
def test_two_runs_started_at_once_with_the_default_folder_get_one_folder_each(tmp_path):
    results = start_together([tiny(4), tiny(6)], tmp_path)
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    folders = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert_one_folder_each(folders)
    assert sorted(width_of_run(folder) for folder in folders) == [4, 6]


def assert_one_folder_each(folders: list[Path]) -> None:
    """Two folders of the default time-stamped name: in the same second the second one is
    <time>_1; across a second boundary (a busy machine) each has its own time."""
    assert len(folders) == 2
    first, second = (folder.name for folder in folders)
    assert second == f"{first}_1" or (second > first and not second.startswith(first))


@pytest.mark.slow
def test_a_second_run_in_a_folder_a_live_run_holds_is_refused_before_writing(tmp_path):
    folder = tmp_path / "same"
    results = start_together([[*tiny(w), f"hydra.run.dir={folder}"] for w in (4, 6)], tmp_path)
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results[0][1][-3000:] + results[1][1][-3000:]
    (refused,) = [output for code, output in results if code == 2]
    assert f"hydra.run.dir={folder} {IN_USE} (pid " in refused and "Traceback" not in refused
    (winner,) = [index for index, (code, _) in enumerate(results) if code == 0]
    assert width_of_run(folder) == (4, 6)[winner]  # its .hydra/ and log untouched by the other


@pytest.mark.slow
def test_two_sweeps_started_at_once_get_one_sweep_folder_each(tmp_path):
    results = start_together([["-m", *tiny(w)] for w in (4, 6)], tmp_path)
    assert [code for code, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
    sweeps = sorted((tmp_path / "outputs" / "multirun").iterdir())
    assert_one_folder_each(sweeps)
    for sweep in sweeps:
        assert [p.name for p in sweep.iterdir() if p.name.isdigit()] == ["0"]  # its one job
        assert len(list(sweep.rglob("summary.csv"))) == 1
    assert sorted(width_of_run(sweep / "0") for sweep in sweeps) == [4, 6]


@pytest.mark.slow
def test_a_killed_runs_folder_is_free_for_its_resume(tmp_path):
    folder = tmp_path / "run"
    options = [*tiny(4), "trainer.max_epochs=2", f"hydra.run.dir={folder}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    killed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *options, *kill_at(1, "SIGKILL")],
        cwd=ROOT,
        env=env,
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *options, "ckpt_path=auto"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert read_checkpoint(folder / "checkpoints" / "last.ckpt")["epoch"] == 1


@pytest.mark.slow
def test_ddp_ranks_write_into_the_folder_their_rank_zero_claimed(tmp_path):
    ddp = [
        *[o for o in tiny(4) if o != "trainer=debug"],
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
    ]
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *ddp],
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (folder,) = (tmp_path / "outputs" / "runs").iterdir()  # rank 1 was not sent elsewhere
    assert (folder / "checkpoints" / "last.ckpt").is_file()


CLAIM = "from pathlib import Path; from litcompress.run_folder import claim_folder; " + (
    "claim_folder(Path({folder!r}), 'hydra.run.dir')"
)


def claim_elsewhere(folder: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Claim ``folder`` from another process."""
    return subprocess.run(
        [sys.executable, "-c", CLAIM.format(folder=str(folder))],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
    )


def test_a_folder_is_held_while_its_process_lives_and_free_once_released(tmp_path):
    folder = tmp_path / "run"
    claim_folder(folder, "hydra.run.dir")
    try:
        other = claim_elsewhere(folder)
        assert other.returncode == 1 and IN_USE in other.stderr
        assert f"pid {os.getpid()} on " in other.stderr  # who holds it, from the lock file
    finally:
        release_folder(folder)
    assert claim_elsewhere(folder).returncode == 0  # and that one ended: free again
    assert (folder / LOCK_FILE).is_file()


def test_only_the_first_process_of_a_run_claims(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        monkeypatch.delenv(name, raising=False)
    assert first_process()
    monkeypatch.setenv("LOCAL_RANK", "1")  # a child Lightning's DDP started
    assert not first_process()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert not first_process()


def test_a_time_named_folder_that_exists_is_made_new_and_claimed(tmp_path, monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "SLURM_NTASKS", "SUBMITIT_LOCAL_GLOBALID"):
        monkeypatch.delenv(name, raising=False)
    base = tmp_path / "runs" / "day"
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"hydra.run.dir={base}_${{now:%Y}}"], return_hydra_config=True
        )
    taken = Path(str(cfg.hydra.run.dir))
    assert new_folder(taken) == taken  # another run took it first
    ClaimRunFolder().on_run_start(cfg)
    try:
        assert cfg.hydra.run.dir == f"{taken}_1"
        assert claim_elsewhere(Path(f"{taken}_1")).returncode == 1
        assert claim_elsewhere(taken).returncode == 0  # nobody holds that one
    finally:
        release_folder(Path(f"{taken}_1"))
