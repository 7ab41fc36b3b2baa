"""The installed version of litcompress (recorded in exported artifacts)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("litcompress")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
