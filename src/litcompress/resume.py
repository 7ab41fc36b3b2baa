"""Resuming a run: ``ckpt_path=auto``, and a resumed run going on with its own techniques.

``ckpt_path=auto`` is the same command for a run's first start and every restart (what a cluster
runs again after a time limit or a preemption): the run folder's ``last.ckpt`` when it reads
whole, else the newest checkpoint of the run that does (the unreadable ones set aside), else a new
run. A resumed run takes the technique settings recorded in its checkpoint and refuses others, and
its network and data must be those of the run that wrote the checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from litcompress.checkpoint import checkpoint_problem, readable_checkpoints
from litcompress.errors import ConfigError
from litcompress.outputs import output_folders
from litcompress.run_folder import first_process

log = logging.getLogger(__name__)

# Entry of a checkpoint's litcompress record: the run's compress options (unresolved).
COMPRESS_KEY = "compress"
# The techniques the chosen ones added (build.add_companions), recorded beside them.
COMPANIONS_KEY = "compress_added"


# ckpt_path=auto: resume from the run folder's last.ckpt when there is one, else start (a job that
# a cluster requeued after a time limit or a preemption runs the same command again).
AUTO_RESUME = "auto"


def auto_resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint ``ckpt_path=auto`` resumes from, or ``None`` (a new run).

    The run folder's ``last.ckpt``; when it cannot be read (a node that died while writing it, a
    bad disk) or is missing, the newest checkpoint of the run that reads whole, with a warning
    that says what was skipped and why: the epochs after it are trained again.

    Raises:
        ConfigError: the run writes no checkpoints, or none of its checkpoints can be read.
    """
    folder = output_folders(cfg).get("callbacks.model_checkpoint.dirpath")
    if folder is None:
        raise ConfigError(
            "ckpt_path=auto resumes from the run's checkpoints/last.ckpt, but this run writes no "
            "checkpoints (callbacks.model_checkpoint is off): keep it, or give a checkpoint path."
        )
    last = folder / "last.ckpt"
    present = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if not present:
        log.info("ckpt_path=auto: no %s yet, starting the run", last)
        return None
    if last.is_file() and checkpoint_problem(last) is None:
        log.info("ckpt_path=auto: resuming from %s", last)
        return str(last)
    readable = readable_checkpoints(folder)
    taken = {checkpoint.path for checkpoint in readable}
    unreadable = [path for path in present if path not in taken]
    skipped = [f"{path.name}: {checkpoint_problem(path)}" for path in unreadable]
    if not last.is_file():
        skipped.insert(0, f"{last.name}: missing")
    if readable:
        if first_process():  # out of Lightning's way (it would write last-v1.ckpt beside it)
            skipped += [f"kept as {set_aside(path).name}" for path in unreadable]
        log.warning(
            "ckpt_path=auto: resuming from %s, the newest checkpoint of %s that reads whole, and "
            "not from %s (skipped: %s). The epochs after it are trained again; from it, the "
            "resume is exact.",
            readable[0],
            folder,
            last.name,
            "; ".join(skipped),
        )
        return str(readable[0].path)
    if cfg.get("overwrite"):
        log.warning(
            "ckpt_path=auto: no checkpoint of %s can be read (%s); overwrite=true: the run "
            "starts again and deletes them.",
            folder,
            "; ".join(skipped),
        )
        return None
    raise ConfigError(
        f"ckpt_path=auto: no checkpoint in {folder} can be read ({'; '.join(skipped)}), so the "
        f"run cannot resume. Start it again in that folder with overwrite=true (which deletes "
        f"them), or in a new folder."
    )


def set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint to ``<name>.unreadable`` (kept, no longer a .ckpt)."""
    aside = path.with_name(f"{path.name}.unreadable")
    for number in range(1, 1000):
        if not aside.exists():
            break
        aside = path.with_name(f"{path.name}.unreadable-{number}")
    path.rename(aside)
    return aside


def resume_techniques(cfg: DictConfig, resumed: dict[str, Any]) -> None:
    """A resumed run goes on with the techniques of the run it resumes, with their settings.

    Without ``compress`` options the checkpoint's are taken (a run resumed by a cluster's requeue,
    or by hand with only ``ckpt_path``); other ones are refused: a technique's schedule and state
    belong to the run that started it.
    """
    saved = resumed.get(COMPRESS_KEY)
    if saved is None:  # a checkpoint of an older litcompress: it does not say
        return
    given = compress_options(cfg)
    added = resumed.get(COMPANIONS_KEY) or []
    chosen = {k: v for k, v in saved.items() if k not in added}  # as the command line chose
    if given == saved or (given and given == chosen):
        with open_dict(cfg):  # with the techniques the chosen ones added
            cfg.compress = saved
        return
    if not given:
        log.info("Resuming with the run's techniques: compress=[%s]", ",".join(saved))
        with open_dict(cfg):
            cfg.compress = saved
        return
    if set(given) == set(chosen):
        saved = chosen  # the techniques the run added are not compared
    if set(given) != set(saved):
        asked = f"compress=[{','.join(given)}], but the run used compress=[{','.join(saved)}]"
    else:
        changed = [
            f"compress.{name}.{key}: {saved[name].get(key)!r} in the checkpoint, "
            f"{given[name].get(key)!r} here"
            for name in saved
            for key in sorted({*saved[name], *given[name]})
            if saved[name].get(key) != given[name].get(key)
        ]
        asked = f"other technique settings ({'; '.join(changed)})"
    raise ConfigError(
        f"ckpt_path={cfg.ckpt_path} resumes a run, and this command asks for {asked}: a resumed "
        f"run goes on with its own techniques and settings. Drop the compress options (they are "
        f"taken from the checkpoint), or start a new run from its weights with "
        f"init_from={cfg.ckpt_path}."
    )


def compress_options(cfg: DictConfig) -> dict[str, Any]:
    """The run's ``compress`` options as plain values, interpolations kept (``${init_from}``)."""
    compress = cfg.get("compress")
    return OmegaConf.to_container(compress, resolve=False) if compress else {}


def check_resume(resumed: dict[str, Any], checkpoint_path: str, net_config: dict) -> None:
    """Refuse to resume from a checkpoint of another network or other data, before fitting (the
    state-dict mismatch would come after the data is loaded, as a traceback)."""
    saved = resumed["model_config"]
    differences = [  # keys of one side only: another litcompress version's defaults
        f"{key}: {saved[key]!r} in the checkpoint, {net_config[key]!r} here"
        for key in sorted(set(saved) & set(net_config))
        if saved[key] != net_config[key]
    ]
    if differences:
        raise ConfigError(
            f"ckpt_path={checkpoint_path} is a checkpoint of another network or other data than "
            f"this run builds ({'; '.join(differences)}). Resume with the model and data options "
            f"of the run that wrote it (its .hydra/overrides.yaml lists them), or start a new run "
            f"from its weights with init_from=."
        )
