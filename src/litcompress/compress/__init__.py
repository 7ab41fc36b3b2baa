"""Compression techniques, each a Lightning callback built from ``conf/compress/<name>.yaml``.

Every technique subclasses :class:`~litcompress.compress.base.CompressionCallback`, the one
protocol the run and the checkpoint code know (order, network form in checkpoints, report
entries, deployment). Each technique's module is imported on first use (``from
litcompress.compress import PruneCallback``, a config's ``_target_``, or a checkpoint that holds
its form), so that a process imports only the techniques it runs: each pulls in torch,
Lightning and its own libraries.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_EXPORTS = {
    "CompressionCallback": "litcompress.compress.base",
    "DistillCallback": "litcompress.compress.distill",
    "PTQCallback": "litcompress.compress.ptq",
    "PruneCallback": "litcompress.compress.prune",
    "QATCallback": "litcompress.compress.qat",
    "SparsityCallback": "litcompress.compress.sparsity",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a technique's module when one of its names is first asked for (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
