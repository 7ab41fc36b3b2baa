"""The export formats and their files' suffixes, apart from the exporters (which import torch),
so that the ``litcompress`` command lists them in its help without importing any of them."""

# Format -> suffix of its artifact.
FORMATS = {"onnx": ".onnx", "openvino": ".xml", "pt2": ".pt2"}
