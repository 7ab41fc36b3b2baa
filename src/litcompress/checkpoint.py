"""Reading litcompress checkpoints safely (``weights_only=True``) and rebuilding their networks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from litcompress.errors import ConfigError
from litcompress.module import CHECKPOINT_KEY


def require_file(path: str | os.PathLike[str], option: str) -> Path:
    """Return ``path`` resolved, or raise ConfigError naming the ``option`` it came from."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ConfigError(
            f"{option}={path} does not exist (looked for {resolved}). Point {option} at a "
            f"checkpoint written by litcompress, e.g. outputs/runs/<run>/checkpoints/last.ckpt."
        )
    return resolved


def read_checkpoint(path: str | os.PathLike[str], option: str = "checkpoint") -> dict[str, Any]:
    """Load a litcompress checkpoint on the CPU without unpickling arbitrary objects.

    Raises:
        ConfigError: the file is missing, unreadable, or was not written by litcompress.
    """
    resolved = require_file(path, option)
    try:
        checkpoint = torch.load(resolved, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise ConfigError(
            f"{option}={path} could not be read as a checkpoint ({type(error).__name__}: {error}). "
            f"Use a .ckpt file written by litcompress."
        ) from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise ConfigError(
            f"{option}={path} is not a litcompress checkpoint (no '{CHECKPOINT_KEY}' entry). "
            f"Use a .ckpt file from outputs/runs/<run>/checkpoints/."
        )
    return checkpoint


def network_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network's weights inside a module checkpoint (keys without the ``net.`` prefix)."""
    return {
        key.removeprefix("net."): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("net.")
    }


# Checkpoint entries that describe the network's shape rather than its weights.
ARCHITECTURE_KEYS = ("pruning_history",)


def architecture(meta: dict[str, Any]) -> dict[str, Any]:
    """The architecture entries of a checkpoint's litcompress record."""
    return {key: meta[key] for key in ARCHITECTURE_KEYS if key in meta}


def restore_architecture(
    net: nn.Module, current: dict[str, Any], saved: dict[str, Any], input_shape: tuple[int, ...]
) -> None:
    """Bring ``net`` (whose recorded state is ``current``) to the architecture ``saved`` records.

    A pruned checkpoint records torch-pruning's history; the steps ``net`` has not taken yet are
    replayed on it, and ``current`` is updated. A network pruned further than the checkpoint
    cannot grow back: that raises ConfigError.
    """
    done = current.get("pruning_history", [])
    wanted = saved.get("pruning_history", [])
    if wanted == done:
        return
    if wanted[: len(done)] != done:
        raise ConfigError(
            "The checkpoint was pruned differently from the network it is loaded into (its "
            f"pruning history has {len(wanted)} entries, the network's {len(done)}). Load it "
            "into a fresh network: litcompress.checkpoint.load_network(path)."
        )
    from litcompress.compress.prune import replay_pruning_history

    replay_pruning_history(net, wanted[len(done) :], input_shape)
    current["pruning_history"] = list(wanted)


def build_network(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the network recorded in ``checkpoint`` (pruned as it was) and load its weights."""
    meta = checkpoint[CHECKPOINT_KEY]
    config = meta["model_config"]
    net = instantiate(config, _convert_="all")
    input_shape = (config["in_channels"], config["image_size"], config["image_size"])
    restore_architecture(net, {}, meta, input_shape)
    net.load_state_dict(network_state_dict(checkpoint))
    return net


def load_network(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the trained network of a litcompress checkpoint file, in eval mode on the CPU."""
    return build_network(read_checkpoint(path)).eval()
