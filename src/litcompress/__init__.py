"""litcompress: train image classifiers with Lightning + Hydra, then make them smaller and faster.

Importing the package registers the built-in compression techniques (:mod:`litcompress.compress`),
so that checkpoints of pruned or quantization-aware networks reload in any process.
"""

from importlib.metadata import PackageNotFoundError, version

from litcompress import compress  # noqa: F401  (registers the techniques' network forms)

try:
    __version__ = version("litcompress")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
