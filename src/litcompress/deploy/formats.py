"""The export formats and their files' suffixes, apart from the exporters (which import torch),
so that the ``litcompress`` command lists them in its help without importing any of them."""

from __future__ import annotations

from collections.abc import Iterable

from litcompress.errors import ConfigError

# Format -> suffix of its artifact.
FORMATS = {"onnx": ".onnx", "openvino": ".xml", "pt2": ".pt2"}


def check_formats(formats: Iterable[str], option: str) -> list[str]:
    """``formats`` as a list, or ConfigError naming ``option`` and the formats there are."""
    formats = [str(f) for f in formats]
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(
                f"{option}={fmt!r} is not an export format; choose among {', '.join(FORMATS)} "
                f"(e.g. {option}=[onnx,openvino])."
            )
    return formats
