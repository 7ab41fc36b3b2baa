"""The run's output folders: checked before any work, owned by one run, saves verified.

A run writes into its folder (``paths.output_dir``), its checkpoint folder and its loggers'
folders. :func:`check_writable` makes and probes each before anything is built,
:func:`check_free_space` checks room for a few checkpoints once the network is known, and
:func:`claim_checkpoint_folder` refuses to mix two runs' checkpoints in one folder (two runs
started at once are kept apart earlier, by :mod:`litcompress.run_folder`).

:class:`AtomicCheckpointIO` writes each checkpoint beside its place and renames it there, so that
a disk that fills mid-write leaves the previous checkpoints whole; :func:`disk_failure` and
:func:`disk_failure_message` turn a full (or failing) disk into one paragraph that says where to
resume from, and :func:`reserve_room` keeps a little room for that paragraph in ``train.log``.

Every file litcompress writes whole or not at all goes through :func:`atomic_path`.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch import nn

from litcompress.checkpoint import readable_checkpoints
from litcompress.errors import ConfigError
from litcompress.measure import state_dict_bytes

# Checkpoints a run must have room for (best, last, and one being written).
CHECKPOINTS_OF_ROOM = 4
# What a full or failing disk is called in the message, by errno.
DISK_FAILURES = {
    errno.ENOSPC: "full",
    errno.EDQUOT: "over its quota",
    errno.EIO: "failing (input/output error)",
}
# Room kept in the run folder for the last words of a run whose disk fills (train.log).
RESERVE_FILE = ".litcompress.reserve"
RESERVE_BYTES = 256 * 1024
# Options a resume command does not repeat (it sets its own run folder and checkpoint).
NOT_REPEATED = ("ckpt_path", "init_from", "overwrite", "hydra.run.dir")


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
    _remove_stale_partials(folder)
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


def prepare_checkpoint_folder(cfg: DictConfig, folders: dict[str, Path], net: nn.Module) -> None:
    """Room for the checkpoints of ``net``, and the checkpoint folder claimed by this run (on the
    first process; :func:`claim_checkpoint_folder`)."""
    checkpoints = folders.get("callbacks.model_checkpoint.dirpath")
    if checkpoints is None:
        return
    # Weights and optimizer state (two moments for Adam): about three copies of the weights.
    check_free_space(checkpoints, 3 * state_dict_bytes(net))
    if rank_zero_only.rank == 0:
        claim_checkpoint_folder(checkpoints, bool(cfg.ckpt_path), bool(cfg.get("overwrite")))


def _checkpoints(folder: Path) -> Iterable[Path]:
    return folder.rglob("*.ckpt")


def _remove_stale_partials(folder: Path) -> None:
    """Delete what :class:`AtomicCheckpointIO` left of a write that a killed process never
    finished (``.<name>.<pid>.partial`` of a pid that no longer runs)."""
    for partial in folder.glob(".*.partial") if folder.is_dir() else []:
        pid = partial.suffixes[-2].lstrip(".") if len(partial.suffixes) >= 2 else ""
        if pid.isdigit() and not _alive(int(pid)):
            partial.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on a local disk: a checkpoint is written to a
    hidden file beside its place, synced, and renamed over it. A write that fails (a full disk)
    leaves the file of that name as it was, and no partial file.

    (Lightning 2.6 writes into a temporary file under ``/tmp`` and moves it: across filesystems
    the move copies into the destination, so a disk that fills mid-copy truncates ``last.ckpt``.)
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` whole or not at all (remote paths: Lightning's way)."""
        if "://" in str(path) or storage_options is not None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise OSError(error.errno, error.strerror, str(target)) from error
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def disk_failure(error: BaseException) -> OSError | None:
    """The error in ``error``'s chain that says a disk is full, over its quota or failing
    (Lightning raises a second one while closing the loggers: either may carry it)."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FAILURES:
            return current
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return None


def failed_folder(error: OSError, folders: dict[str, Path]) -> Path:
    """The folder whose disk failed: the one of the file being written when the error says it,
    else (a writer that does not: TensorBoard's) the run's folder with the least room left."""
    for name in (error.filename2, error.filename):  # a move's destination, or the file written
        if name:
            return existing_ancestor(Path(os.fsdecode(name)).parent)
    return min(folders.values(), key=lambda f: shutil.disk_usage(existing_ancestor(f)).free)


def disk_failure_message(cfg: DictConfig, error: OSError, overrides: Sequence[str] | None) -> str:
    """One paragraph for a run stopped by a full or failing disk: which folder, the last
    checkpoint that reads whole, and the command that resumes from it.

    ``overrides``: the command-line options of the run (Hydra's), repeated in that command.
    """
    folders = output_folders(cfg)
    folder = failed_folder(error, folders)
    run_dir = Path(cfg.paths.output_dir).absolute()
    state = DISK_FAILURES[error.errno]
    where = f": {error.filename2 or error.filename}" if (error.filename2 or error.filename) else ""
    message = (
        f"The disk that holds {folder} is {state} ({error.strerror}{where}), so the run stopped."
    )
    checkpoints = folders.get("callbacks.model_checkpoint.dirpath")
    readable = readable_checkpoints(checkpoints) if checkpoints and checkpoints.is_dir() else []
    fix = "Free space on it" if error.errno != errno.EIO else "Check or replace the disk"
    if not readable:
        return (
            f"{message} No checkpoint was complete yet. {fix}, then start the run again "
            f"(with overwrite=true in {run_dir})."
        )
    kept = [o for o in overrides or [] if o.lstrip("+~").split("=", 1)[0] not in NOT_REPEATED]
    command = shlex.join(
        ["python", "train.py", *kept, f"hydra.run.dir={run_dir}", f"ckpt_path={readable[0].path}"]
    )
    if overrides is None:
        command = command.replace("train.py", "train.py <the run's options>", 1)
    return (
        f"{message} The last complete checkpoint is {readable[0]}; the checkpoints written before "
        f"are intact (each is written whole, then renamed into place). {fix}, then resume: "
        f"{command} (or ckpt_path=auto in place of ckpt_path=..., which takes the newest "
        f"checkpoint of that folder that reads whole). The epochs after it are trained again."
    )


def reserve_room(folder: Path) -> Path | None:
    """Keep :data:`RESERVE_BYTES` of ``folder``'s disk for the run's last words (``None``: there is
    not even that much room, which the checks before training say)."""
    path = folder / RESERVE_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as file:
            file.write(bytes(RESERVE_BYTES))  # written, not sparse: the blocks are taken
            file.flush()
            os.fsync(file.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        return None
    return path


def release_room(path: Path | None) -> None:
    """Give back the room :func:`reserve_room` kept."""
    if path is not None:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file next to ``path`` that replaces ``path`` once the block succeeds.

    Readers see the old file or the whole new one, never a partial write; on error the temporary
    file is removed. The new file gets the usual permissions (the umask's).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same suffix as the target: some writers (torch.export.save) check it.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``data`` as JSON so that ``path`` is either the old file or the whole new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
