"""A disk that fills (or fails) during a run: the run stops with one paragraph that names the
folder, the last complete checkpoint and the command that resumes; exit status 1; the checkpoints
written before are intact, and no partial checkpoint is left."""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from litcompress.checkpoint import read_checkpoint
from litcompress.run import main
from tests.conftest import FAST, ROOT, TINY_SHAPES

TINY = [
    *FAST,
    *TINY_SHAPES,
    "model=cnn",
    "model.width=4",
    "report.enabled=false",
    "test=false",
    "trainer.max_epochs=3",
]


def fail_at(epoch: int, code: str = "ENOSPC", filename: str | None = None) -> list[str]:
    return [
        "+callbacks.fail._target_=tests.disk.FailWriting",
        f"+callbacks.fail.epoch={epoch}",
        f"+callbacks.fail.code={code}",
        *([f"+callbacks.fail.filename={filename}"] if filename else []),
    ]


def stopped(cfg, caplog) -> str:
    """Run ``cfg`` through train.py's entry point; the paragraph it logged as it exited 1."""
    with caplog.at_level(logging.ERROR, logger="litcompress.run"), pytest.raises(SystemExit) as end:
        main(cfg)
    assert end.value.code == 1
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    return record.getMessage()


def test_a_full_disk_under_the_event_writer_says_where_and_how_to_resume(
    make_config, tmp_path, caplog
):
    # TensorBoard's event writer says no file name: the folder with the least room is named.
    message = stopped(make_config(*TINY, *fail_at(1)), caplog)
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert re.match(
        rf"The disk that holds {run_dir}\S* is full \(No space left on device\)", message
    )
    assert re.search(rf"last complete checkpoint is {re.escape(str(last))} \(epoch \d", message)
    assert f"hydra.run.dir={run_dir} ckpt_path={last}" in message
    assert "ckpt_path=auto" in message and "\n" not in message
    assert read_checkpoint(last)["epoch"] in (0, 1)  # intact
    assert not (run_dir / ".litcompress.reserve").exists()  # the room kept is given back


def test_a_checkpoint_that_does_not_fit_leaves_the_one_before_whole(
    make_config, tmp_path, caplog, monkeypatch
):
    saves = []
    real_save = torch.save

    def save_until_full(obj, file, *args, **kwargs):
        if not str(getattr(file, "name", "")).endswith(".partial"):  # not a checkpoint
            return real_save(obj, file, *args, **kwargs)
        saves.append(file.name)
        if len(saves) < 3:
            return real_save(obj, file, *args, **kwargs)
        file.write(b"PK\x03\x04 the first bytes of a checkpoint")  # then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save_until_full)
    checkpoints = tmp_path / "run" / "checkpoints"
    message = stopped(make_config(*TINY), caplog)
    assert len(saves) == 3  # epoch 0: best and last; epoch 1: its best did not fit
    assert message.startswith(f"The disk that holds {checkpoints} is full")
    assert f"ckpt_path={checkpoints / 'last.ckpt'}" in message
    assert read_checkpoint(checkpoints / "last.ckpt")["epoch"] == 0
    assert read_checkpoint(checkpoints / "epoch000.ckpt")["epoch"] == 0
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch000.ckpt", "last.ckpt"]


def test_a_failing_disk_is_named_with_the_file_it_failed_on(make_config, tmp_path, caplog):
    report = tmp_path / "run" / "report.json"
    message = stopped(make_config(*TINY, *fail_at(1, "EIO", str(report))), caplog)
    assert message.startswith(
        f"The disk that holds {tmp_path / 'run'} is failing (input/output error) "
        f"(Input/output error: {report})"
    )
    assert "Check or replace the disk, then resume" in message


def test_a_disk_full_before_the_first_checkpoint_says_so(make_config, caplog):
    message = stopped(make_config(*TINY, *fail_at(0)), caplog)
    assert "No checkpoint was complete yet" in message and "start the run again" in message


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (skipped where mounting is not permitted, e.g. without root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def train_py(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_a_run_on_a_disk_that_fills_stops_clearly_and_resumes_once_there_is_room(small_disk):
    run_dir = small_disk / f"run-{uuid.uuid4().hex[:6]}"
    filler = small_disk / "filler"
    options = [*TINY, "trainer.max_epochs=4", f"hydra.run.dir={run_dir}"]
    fill = ["+callbacks.fill._target_=tests.disk.FillDisk", f"+callbacks.fill.path={filler}"]
    result = train_py(*options, *fill)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    (message,) = [line for line in output.splitlines() if "The disk that holds" in line]
    assert f"{small_disk}" in message and "is full" in message
    assert message in (run_dir / "train.log").read_text()  # the room kept for it was used
    resume = shlex.split(message.split("then resume: ", 1)[1].split(" (or ckpt_path=auto")[0])
    checkpoint = Path(next(a for a in resume if a.startswith("ckpt_path=")).split("=", 1)[1])
    assert read_checkpoint(checkpoint)["epoch"] in (0, 1)  # written before the disk filled
    assert not list(run_dir.rglob("*.partial"))
    for path in (run_dir / "checkpoints").glob("*.ckpt"):  # none truncated by the full disk
        read_checkpoint(path)
    filler.unlink()  # room again: the command given resumes the run, without the filler
    again = train_py(*[a for a in resume[2:] if not a.startswith("+callbacks.fill")])
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 3
