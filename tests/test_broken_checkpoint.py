"""A checkpoint that cannot be read (a node that died while writing it, a bad disk): the message
names the readable checkpoints of the same run, and ``ckpt_path=auto`` resumes from the newest of
them, exactly, with a warning that says what it skipped."""

from __future__ import annotations

import copy
import logging
import re
import shutil
from pathlib import Path

import pytest

from litcompress.checkpoint import read_checkpoint
from litcompress.errors import ConfigError
from litcompress.preflight import check_inputs
from litcompress.run import run
from tests.conftest import FAST, TINY_SHAPES, shared_run
from tests.test_resume import assert_same_checkpoints

# Every epoch kept (epoch000.ckpt, epoch001.ckpt) beside last.ckpt.
TINY = [
    *FAST,
    *TINY_SHAPES,
    "model=cnn",
    "model.width=4",
    "report.enabled=false",
    "test=false",
    "callbacks.model_checkpoint.save_top_k=-1",
]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """The folder of a run of two epochs (shared: tests copy it)."""
    return shared_run(tmp_path_factory, "two_epochs", [*TINY, "trainer.max_epochs=2"])


@pytest.fixture
def broken_run(two_epochs, tmp_path) -> Path:
    """A copy of that run whose last.ckpt lost its second half."""
    folder = tmp_path / "run"
    shutil.copytree(two_epochs, folder)
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    return folder


def test_an_unreadable_ckpt_path_names_the_runs_readable_checkpoints_newest_first(
    make_config, broken_run
):
    checkpoints = broken_run / "checkpoints"
    with pytest.raises(ConfigError) as raised:
        run(make_config(*TINY, f"ckpt_path={checkpoints / 'last.ckpt'}", output_dir=broken_run))
    message = str(raised.value)
    assert "last.ckpt could not be read as a checkpoint" in message
    newest = re.search(
        rf"{re.escape(str(checkpoints / 'epoch001.ckpt'))} \(epoch 1, step \d+\)", message
    )
    older = re.search(
        rf"{re.escape(str(checkpoints / 'epoch000.ckpt'))} \(epoch 0, step \d+\)", message
    )
    assert "newest first" in message and newest and older and newest.start() < older.start()
    assert f"ckpt_path={checkpoints / 'epoch001.ckpt'}" in message and "ckpt_path=auto" in message


def test_an_empty_init_from_names_the_readable_checkpoints_beside_it(make_config, broken_run):
    empty = broken_run / "checkpoints" / "last.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"the file is empty: 0 bytes") as raised:
        run(make_config(*TINY, f"init_from={empty}"))
    assert f"init_from={broken_run / 'checkpoints' / 'epoch001.ckpt'}" in str(raised.value)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_auto_resume_falls_back_to_the_newest_readable_checkpoint_and_resumes_exactly(
    make_config, broken_run, tmp_path, caplog, damage
):
    checkpoints = broken_run / "checkpoints"
    if damage == "empty":
        (checkpoints / "last.ckpt").write_bytes(b"")
    # The same run resumed by hand from epoch001.ckpt, in a copy without the broken file.
    by_hand = tmp_path / "by_hand"
    shutil.copytree(broken_run, by_hand)
    (by_hand / "checkpoints" / "last.ckpt").unlink()
    cfg = make_config(*TINY, "trainer.max_epochs=3", "ckpt_path=auto", output_dir=broken_run)
    with caplog.at_level(logging.WARNING, logger="litcompress.resume"):
        check_inputs(copy.deepcopy(cfg))
    assert re.search(
        rf"resuming from {re.escape(str(checkpoints / 'epoch001.ckpt'))} \(epoch 1, step \d+\)",
        caplog.text,
    )
    assert "skipped: last.ckpt: " in caplog.text
    assert damage != "empty" or "last.ckpt: the file is empty: 0 bytes" in caplog.text
    assert "The epochs after it are trained again" in caplog.text
    run(cfg)
    run(
        make_config(
            *TINY,
            "trainer.max_epochs=3",
            f"ckpt_path={by_hand / 'checkpoints' / 'epoch001.ckpt'}",
            output_dir=by_hand,
        )
    )
    resumed = read_checkpoint(checkpoints / "last.ckpt")
    assert resumed["epoch"] == 2
    # The unreadable file is kept aside, and Lightning wrote no last-v1.ckpt beside it.
    assert (checkpoints / "last.ckpt.unreadable").is_file()
    assert sorted(p.name for p in checkpoints.glob("last*.ckpt")) == ["last.ckpt"]
    assert_same_checkpoints(resumed, read_checkpoint(by_hand / "checkpoints" / "last.ckpt"))


def test_auto_resume_with_no_readable_checkpoint_is_refused_unless_overwrite(
    make_config, broken_run
):
    for path in (broken_run / "checkpoints").glob("epoch*.ckpt"):
        path.write_bytes(b"")
    cfg = make_config(*TINY, "ckpt_path=auto", output_dir=broken_run)
    with pytest.raises(ConfigError, match=r"no checkpoint in .* can be read.*overwrite=true"):
        check_inputs(cfg)
    cfg = make_config(*TINY, "ckpt_path=auto", "overwrite=true", output_dir=broken_run)
    assert check_inputs(cfg) is None and cfg.ckpt_path is None  # a new run, in that folder
