"""litcompress: train image classifiers with Lightning + Hydra, then make them smaller and faster.

Importing the package imports nothing heavy (the ``litcompress`` command starts in well under a
second): the compression techniques (:mod:`litcompress.compress`) are imported when a run uses
them or a checkpoint holds a network form they record.
"""

from litcompress.version import __version__

__all__ = ["__version__"]
