"""Reading litcompress checkpoints safely (``weights_only=True``) and rebuilding their networks."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from litcompress.errors import ConfigError
from litcompress.forms import is_form_key, technique_of
from litcompress.spec import Inputs, InputSpec

# The checkpoint key under which litcompress records what it needs to rebuild the network.
CHECKPOINT_KEY = "litcompress"
# Inside that record: form entry -> class path of the technique that wrote it.
OWNERS_KEY = "form_techniques"


def require_file(path: str | os.PathLike[str], option: str) -> Path:
    """Return ``path`` resolved, or raise ConfigError naming the ``option`` it came from."""
    resolved = Path(path).expanduser().resolve()
    if resolved.is_dir():
        inside = sorted(resolved.glob("**/*.ckpt"))[:3]
        raise ConfigError(
            f"{option}={path} is a folder: point {option} at a checkpoint file"
            + (f", e.g. {inside[0]}" if inside else " (outputs/runs/<run>/checkpoints/last.ckpt)")
            + "."
        )
    if not resolved.is_file():
        raise ConfigError(
            f"{option}={path} does not exist (looked for {resolved}). Point {option} at a "
            f"checkpoint written by litcompress, e.g. outputs/runs/<run>/checkpoints/last.ckpt."
        )
    return resolved


def read_checkpoint(path: str | os.PathLike[str], option: str = "checkpoint") -> dict[str, Any]:
    """Load a litcompress checkpoint on the CPU without unpickling arbitrary objects.

    Raises:
        ConfigError: the file is missing, unreadable, or was not written by litcompress; the
            message names the readable checkpoints beside it (the same run's), newest first.
    """
    resolved = require_file(path, option)
    try:
        checkpoint = torch.load(resolved, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise ConfigError(
            f"{option}={path} could not be read as a checkpoint ({_why(resolved, error)}). Use a "
            f".ckpt file written by litcompress." + _instead(resolved, option)
        ) from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise ConfigError(
            f"{option}={path} is not a litcompress checkpoint (no '{CHECKPOINT_KEY}' entry). "
            f"Use a .ckpt file from outputs/runs/<run>/checkpoints/." + _instead(resolved, option)
        )
    return checkpoint


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint file that reads as a litcompress checkpoint, and where its run was."""

    path: Path
    epoch: int
    global_step: int

    def __str__(self) -> str:
        return f"{self.path} (epoch {self.epoch}, step {self.global_step})"


def checkpoint_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be resumed from (``None``: it reads as a litcompress checkpoint)."""
    return _probe(Path(path))[1]


def readable_checkpoints(
    folder: str | os.PathLike[str], skip: tuple[Path, ...] = ()
) -> list[CheckpointFile]:
    """The checkpoints in ``folder`` (one run's) that read as litcompress checkpoints, newest
    first: by training step, then epoch, ``last.ckpt`` before a best checkpoint of the same
    step. ``skip``: files not to consider."""
    found = []
    skipped = {p.resolve() for p in skip}
    for path in sorted(Path(folder).glob("*.ckpt")):
        if path.resolve() in skipped:
            continue
        checkpoint, _ = _probe(path)
        if checkpoint is not None:
            found.append(checkpoint)

    def newest(c: CheckpointFile) -> tuple:
        return (c.global_step, c.epoch, c.path.stem.startswith("last"), c.path.stat().st_mtime)

    return sorted(found, key=newest, reverse=True)


def _probe(path: Path) -> tuple[CheckpointFile | None, str | None]:
    """Open ``path`` as a checkpoint without reading its tensors (``mmap``)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001  (truncated, empty, foreign: all unreadable)
        return None, _why(path, error)
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        return None, f"not a litcompress checkpoint (no '{CHECKPOINT_KEY}' entry)"
    epoch, step = checkpoint.get("epoch", -1), checkpoint.get("global_step", -1)
    return CheckpointFile(path, int(epoch), int(step)), None


def _why(path: Path, error: Exception) -> str:
    """What was wrong with a file that did not load, in a few words."""
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty: 0 bytes"
    message = str(error).splitlines()[0] if str(error).strip() else "no message"
    return f"{type(error).__name__}: {message}"


def _instead(path: Path, option: str) -> str:
    """The readable checkpoints beside ``path``, for a message about it."""
    others = readable_checkpoints(path.parent, skip=(path,))
    if not others:
        return f" No other checkpoint in {path.parent} can be read."
    auto = (
        " (or ckpt_path=auto with that run's hydra.run.dir, which skips unreadable ones)"
        if option == "ckpt_path"
        else ""
    )
    return (
        f" Readable checkpoints of the same run, newest first: "
        f"{'; '.join(str(c) for c in others[:5])}{'; ...' if len(others) > 5 else ''}. Use one "
        f"of them: {option}={others[0].path}{auto}."
    )


def network_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network's weights inside a module checkpoint (keys without the ``net.`` prefix)."""
    return {
        key.removeprefix("net."): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("net.")
    }


def form_of(meta: dict[str, Any]) -> dict[str, Any]:
    """The entries of a checkpoint's litcompress record that describe the network's form."""
    owners = meta.get(OWNERS_KEY, {})
    return {key: value for key, value in meta.items() if is_form_key(key) or key in owners}


def form_record(form: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint records of ``form``: the entries, and the class of each one's technique."""
    techniques = {key: technique_of(key) for key in form}
    owners = {key: f"{t.__module__}.{t.__qualname__}" for key, t in techniques.items()}
    return {**form, OWNERS_KEY: owners} if form else {}


def restore_architecture(
    net: nn.Module, current: dict[str, Any], saved: dict[str, Any], inputs: Inputs
) -> nn.Module:
    """Bring ``net`` (whose form is ``current``) to the form recorded in ``saved``.

    Each technique restores its own entry (:meth:`CompressionCallback.restore_form`), in the
    techniques' order: a pruned checkpoint replays torch-pruning's history, a quantization-aware
    one prepares the network the same way. ``current`` is updated. Returns the network, which may
    be a new object (e.g. once prepared for quantization).

    Raises:
        ConfigError: ``net`` went further than the checkpoint (pruned more, or quantized while
            the checkpoint is not): a network cannot grow back.
    """
    owners = {**current.get(OWNERS_KEY, {}), **saved.get(OWNERS_KEY, {})}
    keys = {k for k in (*current, *saved) if k != OWNERS_KEY and (is_form_key(k) or k in owners)}
    techniques = sorted((technique_of(key, owners) for key in keys), key=lambda t: t.order)
    for index, technique in enumerate(techniques):
        key = technique.form_key
        done, wanted = current.get(key), saved.get(key)
        if done == wanted:
            continue
        later = [t.form_key for t in techniques[index + 1 :] if current.get(t.form_key)]
        if later or not technique.form_reachable(done, wanted):
            raise ConfigError(
                f"The checkpoint has another network form than the network it is loaded into "
                f"({key}: {_describe(wanted)} in the checkpoint against {_describe(done)}"
                + (f", and the network already has {', '.join(later)}" if later else "")
                + "). Load it into a fresh network: litcompress.checkpoint.load_network(path)."
            )
        net = technique.restore_form(net, done, wanted, inputs)
        current[key] = copy.deepcopy(wanted)
    return net


def _describe(value: Any) -> str:
    if value is None:
        return "none"
    return f"{len(value)} entries" if isinstance(value, list) else repr(value)


def rebuild_network(model_config: dict[str, Any], form: dict[str, Any]) -> nn.Module:
    """A fresh network of ``model_config`` (random weights) in the ``form`` of a checkpoint."""
    net = instantiate(model_config, _convert_="all")
    return restore_architecture(net, {}, form, InputSpec.of_model_config(model_config))


def cpu_twin(net: nn.Module, model_config: dict[str, Any], form: dict[str, Any]) -> nn.Module:
    """A copy of ``net`` on the CPU, rebuilt from its config and form (traced on the CPU: a graph
    traced on a GPU keeps GPU constants), with its weights, in eval mode."""
    twin = rebuild_network(model_config, form)
    twin.load_state_dict({key: value.cpu() for key, value in net.state_dict().items()})
    return twin.eval()


def build_network(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the network recorded in ``checkpoint`` (in its form) and load its weights."""
    meta = checkpoint[CHECKPOINT_KEY]
    net = rebuild_network(meta["model_config"], meta)
    net.load_state_dict(network_state_dict(checkpoint))
    return net


def inference_network(checkpoint: dict[str, Any]) -> nn.Module:
    """The network of ``checkpoint`` as inference and export use it, in eval mode: each technique
    of its form makes it plain (:meth:`CompressionCallback.for_inference`: a sparse network's
    masks are folded into its weights). Resuming and fine-tuning use :func:`build_network`."""
    net = build_network(checkpoint)
    meta = checkpoint[CHECKPOINT_KEY]
    owners = meta.get(OWNERS_KEY)
    for key, value in form_of(meta).items():
        net = technique_of(key, owners).for_inference(net, value)
    return net.eval()


def load_network(path: str | os.PathLike[str]) -> nn.Module:
    """The trained network of a litcompress checkpoint file, on the CPU, ready for inference
    (:func:`inference_network`)."""
    return inference_network(read_checkpoint(path))
