"""Compression techniques, each a Lightning callback built from ``conf/compress/<name>.yaml``.

The shared protocol is small: each callback has an ``order`` (lower runs first, whatever the order
typed on the command line) and talks to the model only through
:class:`litcompress.module.ClassifierModule`'s documented entry points.
"""

from litcompress.compress.distill import DistillCallback
from litcompress.compress.prune import PruneCallback
from litcompress.compress.qat import QATCallback

__all__ = ["DistillCallback", "PruneCallback", "QATCallback"]
