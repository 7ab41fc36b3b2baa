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


# Checkpoint entries that describe the network's form rather than its weights.
ARCHITECTURE_KEYS = ("pruning_history", "quantization")


def architecture(meta: dict[str, Any]) -> dict[str, Any]:
    """The architecture entries of a checkpoint's litcompress record."""
    return {key: meta[key] for key in ARCHITECTURE_KEYS if key in meta}


def restore_architecture(
    net: nn.Module, current: dict[str, Any], saved: dict[str, Any], input_shape: tuple[int, ...]
) -> nn.Module:
    """Bring ``net`` (whose recorded form is ``current``) to the form ``saved`` records.

    A pruned checkpoint records torch-pruning's history: the steps ``net`` has not taken yet are
    replayed on it. A quantization-aware checkpoint records its backend: ``net`` is then prepared
    the same way. ``current`` is updated. Returns the network, which is a new object once
    prepared for quantization.

    Raises:
        ConfigError: ``net`` went further than the checkpoint (pruned more, or quantized while
            the checkpoint is not): a network cannot grow back.
    """
    done = current.get("pruning_history", [])
    wanted = saved.get("pruning_history", [])
    quantized, wanted_quantization = current.get("quantization"), saved.get("quantization")
    if wanted[: len(done)] != done or (quantized and quantized != wanted_quantization):
        raise ConfigError(
            f"The checkpoint has another form than the network it is loaded into (pruning "
            f"history: {len(wanted)} entries against {len(done)}; quantization-aware: "
            f"{wanted_quantization} against {quantized}). Load it into a fresh network: "
            f"litcompress.checkpoint.load_network(path)."
        )
    if wanted != done:
        if quantized:
            raise ConfigError("A quantization-aware network cannot be pruned further.")
        from litcompress.compress.prune import replay_pruning_history

        replay_pruning_history(net, wanted[len(done) :], input_shape)
        current["pruning_history"] = list(wanted)
    if wanted_quantization and not quantized:
        from litcompress.compress.qat import prepare

        net = prepare(net, input_shape=input_shape, **wanted_quantization)
        current["quantization"] = dict(wanted_quantization)
    return net


def rebuild_network(model_config: dict[str, Any], form: dict[str, Any]) -> nn.Module:
    """A fresh network of ``model_config`` (random weights) in the ``form`` of a checkpoint."""
    net = instantiate(model_config, _convert_="all")
    size = model_config["image_size"]
    return restore_architecture(net, {}, form, (model_config["in_channels"], size, size))


def build_network(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the network recorded in ``checkpoint`` (in its form) and load its weights."""
    meta = checkpoint[CHECKPOINT_KEY]
    net = rebuild_network(meta["model_config"], meta)
    net.load_state_dict(network_state_dict(checkpoint))
    return net


def load_network(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the trained network of a litcompress checkpoint file, in eval mode on the CPU."""
    return build_network(read_checkpoint(path)).eval()
