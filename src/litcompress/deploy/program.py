"""A network as a ``torch.export`` program with a dynamic batch dimension, saved atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import nn

from litcompress.errors import ConfigError, first_line
from litcompress.outputs import atomic_path
from litcompress.quant.backends import TRACE_BATCH, quiet_deprecations
from litcompress.spec import Inputs, InputSpec


def export_program(model: nn.Module, inputs: Inputs) -> torch.export.ExportedProgram:
    """Capture ``model`` (eval mode) for images of ``inputs``, any batch size.

    Strict capture first (it handles modules reused at several places, as torchvision's ResNets
    reuse their ReLU); non-strict capture if that fails.

    Raises:
        ConfigError: neither capture works; the message holds torch.export's own first lines.
    """
    example = InputSpec.of(inputs).example(TRACE_BATCH)
    errors = []
    with quiet_deprecations():
        for strict in (True, False):
            try:
                return torch.export.export(
                    model,
                    example,
                    dynamic_shapes=InputSpec.of(inputs).dynamic_shapes(),
                    strict=strict,
                )
            except Exception as error:  # torch.export raises many types
                errors.append(f"{type(error).__name__}: {first_line(error)}")
    raise ConfigError(
        f"torch.export cannot capture {type(model).__name__} ({errors[-1]}), so it cannot be "
        f"exported to any format. Make the failing module export-friendly (no data-dependent "
        f"Python control flow); the checkpoint (.ckpt) itself still predicts with "
        f"`litcompress predict`."
    )


def save_program(program: torch.export.ExportedProgram, path: str | os.PathLike[str]) -> Path:
    """``torch.export.save`` ``program`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        buffer = io.BytesIO()  # the archive is named after the file: not after `tmp`
        torch.export.save(program, buffer)
        tmp.write_bytes(buffer.getbuffer())
    return path
