"""One run, one folder: a run claims its folder before Hydra writes anything into it.

:class:`ClaimRunFolder` is a Hydra callback (``hydra.callbacks.run_folder`` in conf/train.yaml).
Its ``on_run_start`` (``on_multirun_start`` for a sweep's folder) runs before Hydra creates the
folder, writes ``.hydra/`` or opens ``train.log``:

- a folder named from the time (the default ``outputs/runs/<date>_<time>``, or any
  ``${now:...}`` pattern) is made new for this run: created with one ``mkdir``, which only one
  process can win, so that a second run started in the same second gets ``<date>_<time>_1``;
- the folder is then locked (``fcntl.flock`` on ``.litcompress.lock`` inside it) for as long as
  the process lives. A second run given the same folder while the first still runs is refused
  before it writes anything; the kernel releases the lock when the process ends, however it
  ends, so a killed run's folder is free for its resume (``ckpt_path``, ``ckpt_path=auto``).

Only the first process of a run claims: the other ranks of a DDP run (Lightning's own DDP
children, torchrun, srun or submitit tasks, told apart by their rank variables) write into the
folder of their rank 0. Processes that a launcher starts side by side with the same command
cannot agree on a new name, so under one a time-named folder keeps Hydra's name (set
``hydra.run.dir`` when two such launches may start in the same second: the lock refuses the
second). This module imports nothing heavy: Hydra imports it before the run starts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from itertools import count
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from litcompress.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; folders are still made new
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# The lock file inside a claimed folder (it stays after the run; only its lock matters).
LOCK_FILE = ".litcompress.lock"
# Environment variables that give a process's rank when a launcher started several (Lightning's
# DDP children and multi-node processes, torchrun, srun, submitit, jsrun).
RANK_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "SLURM_PROCID",
    "SUBMITIT_LOCAL_GLOBALID",
    "JSM_NAMESPACE_RANK",
)
# Set by launchers that start every process of a run with the same command line.
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "GROUP_RANK", "SUBMITIT_LOCAL_GLOBALID")

# Folder -> open descriptor of its lock file, for the folders this process holds.
_held: dict[Path, int] = {}


def first_process() -> bool:
    """Whether this process is rank 0 of its run (or the only process): the one that claims."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def started_with_ranks() -> bool:
    """Whether a launcher started this process beside others running the same command (torchrun,
    srun with several tasks, submitit tasks): each resolves the folder's name by itself."""
    if any(name in os.environ for name in LAUNCHER_VARIABLES):
        return True
    return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def new_folder(base: Path) -> Path:
    """Create and return ``base``, or ``base_1``, ``base_2``... : the first that did not exist.

    ``mkdir`` is atomic: of several processes asking at once, each gets its own folder.
    """
    base.parent.mkdir(parents=True, exist_ok=True)
    for number in count():
        candidate = base if number == 0 else base.with_name(f"{base.name}_{number}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def claim_folder(folder: Path, option: str) -> None:
    """Lock ``folder`` for this process until it ends (made if missing).

    Raises:
        ConfigError: another live process holds it; the message names that run and the fix.
    """
    folder = folder.expanduser().absolute()
    if folder in _held or fcntl is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another live process holds it
        holder = _read_holder(descriptor)
        os.close(descriptor)
        raise ConfigError(
            f"{option}={folder} is in use by a run that is still running ({_describe(holder)}): "
            f"a second run there would mix its checkpoints, logs and report with that run's. "
            f"Wait for it to end or stop it, or give this run a folder of its own ({option}=... "
            f"elsewhere; the default folder is new for every run)."
        ) from None
    except OSError as error:  # a filesystem without locks
        os.close(descriptor)
        log.warning(
            "%s cannot be locked (%s): it is not guarded against a second run", folder, error
        )
        return
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(descriptor, 0)
    os.write(descriptor, json.dumps(record).encode())
    _held[folder] = descriptor


def release_folder(folder: Path) -> None:
    """Give up this process's claim on ``folder`` (a no-op when it holds none)."""
    descriptor = _held.pop(folder.expanduser().absolute(), None)
    if descriptor is not None:
        os.close(descriptor)  # closing the last descriptor releases the lock


def time_named(node: DictConfig) -> bool:
    """Whether the ``dir`` of a ``hydra.run``/``hydra.sweep`` node is named from the time."""
    raw = OmegaConf.to_container(node, resolve=False).get("dir")
    return isinstance(raw, str) and "${now:" in raw.replace(" ", "")


class ClaimRunFolder(Callback):
    """Hydra callback: the run's (or the sweep's) folder is this process's alone, from before
    Hydra writes into it to the end of the process (see the module's description)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, "sweep")

    @staticmethod
    def _claim(config: DictConfig, mode: str) -> None:
        if not first_process():
            return  # a rank > 0 writes into the folder its rank 0 claimed
        node = config.hydra[mode]
        folder = Path(str(node.dir))
        if time_named(node) and not started_with_ranks():
            chosen = new_folder(folder)
            if chosen != folder:
                log.info(
                    "%s exists (another run started in the same second): using %s", folder, chosen
                )
                with read_write(config.hydra):
                    node.dir = str(chosen)
                    if mode == "sweep":  # each job's config is composed again from these
                        config.hydra.overrides.hydra.append(
                            f"hydra.sweep.dir={_quoted(str(chosen))}"
                        )
            folder = chosen
        try:
            claim_folder(folder, f"hydra.{mode}.dir")
        except ConfigError as error:
            log.error("%s", error)
            raise SystemExit(2) from None


def _read_holder(descriptor: int) -> dict[str, Any] | None:
    try:
        return json.loads(os.pread(descriptor, 4096, 0).decode() or "null")
    except (OSError, ValueError):
        return None


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "its process holds the folder's lock"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
        f"{holder.get('command')}"
    )


def _quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
