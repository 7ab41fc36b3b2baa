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


def build_network(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the network recorded in ``checkpoint`` and load its weights (exact)."""
    meta = checkpoint[CHECKPOINT_KEY]
    net = instantiate(meta["model_config"], _convert_="all")
    net.load_state_dict(network_state_dict(checkpoint))
    return net


def load_network(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the trained network of a litcompress checkpoint file, in eval mode on the CPU."""
    return build_network(read_checkpoint(path)).eval()
