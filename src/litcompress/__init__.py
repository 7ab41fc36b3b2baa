"""litcompress: train image classifiers with Lightning + Hydra, then make them smaller and faster.

Importing the package registers the built-in compression techniques (:mod:`litcompress.compress`),
so that checkpoints of pruned or quantization-aware networks reload in any process.
"""

from litcompress import compress  # noqa: F401  (registers the techniques' network forms)
from litcompress.version import __version__

__all__ = ["__version__"]
