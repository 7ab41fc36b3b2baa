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


# Deployment runtime -> the export format it runs (torch runs the run's own model).
RUNTIME_FORMATS = {"torch": None, "onnxruntime": "onnx", "openvino": "openvino"}


def check_runtime(runtime: str, option: str = "report.runtime") -> str | None:
    """The export format ``runtime`` runs (``None``: torch), or ConfigError naming ``option``."""
    if runtime not in RUNTIME_FORMATS:
        raise ConfigError(
            f"{option}={runtime!r} is not a runtime; choose among {', '.join(RUNTIME_FORMATS)} "
            f"(e.g. {option}=openvino: the delivered model exported and timed in OpenVINO)."
        )
    return RUNTIME_FORMATS[runtime]


def formats_to_export(formats: Iterable[str], runtime: str) -> list[str]:
    """The formats a run exports: those asked for, and the one its ``report.runtime`` runs."""
    formats = list(formats)
    needed = RUNTIME_FORMATS.get(runtime)
    return formats + [needed] if needed and needed not in formats else formats
