"""The run's output folders: checked before any work, owned by one run, saves verified.

A run writes into its folder (``paths.output_dir``), its checkpoint folder and its loggers'
folders. :func:`check_writable` makes and probes each before anything is built,
:func:`check_free_space` checks room for a few checkpoints once the network is known, and
:func:`claim_checkpoint_folder` refuses to mix two runs' checkpoints in one folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig

from litcompress.errors import ConfigError

# Checkpoints a run must have room for (best, last, and one being written).
CHECKPOINTS_OF_ROOM = 4


def output_folders(cfg: DictConfig) -> dict[str, Path]:
    """Option -> folder, for every folder the run writes to."""
    folders = {"paths.output_dir": Path(cfg.paths.output_dir)}
    checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint")
    if checkpoint and checkpoint.get("dirpath"):
        folders["callbacks.model_checkpoint.dirpath"] = Path(checkpoint.dirpath)
    for name, logger in (cfg.get("logger") or {}).items():
        if logger and logger.get("save_dir"):
            folders[f"logger.{name}.save_dir"] = Path(logger.save_dir)
    return folders


def existing_ancestor(folder: Path) -> Path:
    """``folder`` itself if it exists, else its nearest existing parent."""
    folder = folder.expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(folders: dict[str, Path]) -> None:
    """Check that each folder exists and takes files, or can be made (nothing is left behind).

    Raises:
        ConfigError: one cannot be made or written; the message names the option and the error.
    """
    for option, folder in folders.items():
        where = existing_ancestor(folder)
        try:
            if not where.is_dir():
                raise NotADirectoryError(f"{where} is a file, not a folder")
            with tempfile.NamedTemporaryFile(dir=where, prefix=".litcompress-probe-"):
                pass
        except OSError as error:
            raise ConfigError(
                f"{option}={folder} cannot be written ({type(error).__name__}: {error}), so the "
                f"run could keep nothing. Choose a folder you can write to (hydra.run.dir=... "
                f"moves the whole run), or fix its permissions."
            ) from error


def check_free_space(folder: Path, checkpoint_bytes: int) -> None:
    """Refuse to start when ``folder`` has no room for a few checkpoints of ``checkpoint_bytes``."""
    needed = CHECKPOINTS_OF_ROOM * checkpoint_bytes
    free = shutil.disk_usage(existing_ancestor(folder)).free
    if free < needed:
        raise ConfigError(
            f"{folder} has {free / 1e6:.1f} MB free, but the run needs about {needed / 1e6:.1f} MB "
            f"for its checkpoints ({CHECKPOINTS_OF_ROOM} of {checkpoint_bytes / 1e6:.1f} MB). Free "
            f"some space, or move the run (hydra.run.dir=...)."
        )


def claim_checkpoint_folder(folder: Path, resuming: bool, overwrite: bool) -> None:
    """Make sure a new run does not mix its checkpoints with another run's.

    A folder with checkpoints belongs to the run that wrote them: resuming it is the way to go on
    (``ckpt_path``); ``overwrite=true`` deletes them first.

    Raises:
        ConfigError: a new run would write beside another run's checkpoints.
    """
    existing = sorted(_checkpoints(folder)) if folder.is_dir() else []
    if not existing or resuming:
        return
    if not overwrite:
        names = ", ".join(str(p.relative_to(folder)) for p in existing[:4])
        raise ConfigError(
            f"{folder} already holds another run's checkpoints ({names}"
            f"{', ...' if len(existing) > 4 else ''}): a new run there would mix them (Lightning "
            f"would write last-v1.ckpt beside the old last.ckpt). Start in a new folder (the "
            f"default hydra.run.dir is), resume that run with ckpt_path={folder / 'last.ckpt'}, "
            f"or delete them with overwrite=true."
        )
    for path in existing:
        os.remove(path)


def _checkpoints(folder: Path) -> Iterable[Path]:
    return folder.rglob("*.ckpt")
