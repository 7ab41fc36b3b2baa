"""Compression techniques, each a Lightning callback built from ``conf/compress/<name>.yaml``.

Every technique subclasses :class:`~litcompress.compress.base.CompressionCallback`, the one
protocol the run and the checkpoint code know (order, network form in checkpoints, report
entries, deployment). Importing this package registers the built-in techniques' network forms.
"""

from litcompress.compress.base import CompressionCallback
from litcompress.compress.distill import DistillCallback
from litcompress.compress.prune import PruneCallback
from litcompress.compress.ptq import PTQCallback
from litcompress.compress.qat import QATCallback
from litcompress.compress.sparsity import SparsityCallback

__all__ = [
    "CompressionCallback",
    "DistillCallback",
    "PTQCallback",
    "PruneCallback",
    "QATCallback",
    "SparsityCallback",
]
