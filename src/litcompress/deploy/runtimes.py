"""Any litcompress artifact as one callable: a batch of images in, logits out, on the CPU.

:func:`load_artifact` opens a checkpoint (``.ckpt``), a torch program (``.pt2``, fp32 or int8),
the fx int8 model (``.pt``), an ONNX model (ONNX Runtime) or an OpenVINO IR (``.xml``), each the
way a user deploys it, so that predicting, evaluating and timing treat them all alike
(:func:`litcompress.deploy.int8.evaluate_cpu` and
:func:`litcompress.report.measure_latency_ms` take a :class:`Runtime` as they take a network).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from litcompress.checkpoint import inference_network, read_checkpoint, require_file
from litcompress.deploy.int8 import is_int8_program, load_int8, load_program
from litcompress.deploy.metadata import checkpoint_metadata, read_metadata
from litcompress.errors import ConfigError, first_line
from litcompress.spec import RECORD_KEY, Examples, InputSpec, count_examples, take_examples

log = logging.getLogger(__name__)

# Suffix -> runtime name, for the artifacts this module opens.
RUNTIMES = {
    ".ckpt": "torch",
    ".pt2": "torch",
    ".pt": "torch",
    ".onnx": "onnxruntime",
    ".xml": "openvino",
}


class Runtime:
    """A loaded artifact: ``runtime(*inputs)`` maps a batch of the network's inputs (images
    ``N x C x H x W``; token ids and attention mask ``N x L``) to ``N x classes`` logits.

    Attributes:
        path: the artifact.
        runtime: ``torch``, ``onnxruntime`` or ``openvino``.
        precision: ``fp32`` or ``int8`` (as run by this runtime).
        meta: the artifact's metadata (:mod:`litcompress.deploy.metadata`), or ``None``.
        inputs: the :class:`~litcompress.spec.InputSpec` the artifact takes, where it says.
    """

    runtime = "torch"

    def __init__(self, path: Path, meta: dict[str, Any] | None, precision: str) -> None:
        self.path = path
        self.meta = meta
        self.precision = precision
        self.inputs = self._input_spec(meta or {})

    def _input_spec(self, meta: dict[str, Any]) -> InputSpec | None:
        """What the artifact takes: the spec it records, or what its preprocessing (older
        artifacts) or the model itself declares; ``None`` where nothing says."""
        if meta.get(RECORD_KEY):
            return InputSpec(**meta[RECORD_KEY])
        inputs = meta.get("inputs") or {}
        size, channels = inputs.get("image_size"), inputs.get("channels")
        if size and channels:
            return InputSpec.image(channels, size)
        declared = self.declared_shape()
        return InputSpec.of(declared) if declared else None

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input (``(channels, height, width)`` for images), where known."""
        return self.inputs.shape if self.inputs is not None else None

    @property
    def name(self) -> str:
        """E.g. ``onnxruntime int8``."""
        return f"{self.runtime} {self.precision}"

    def declared_shape(self) -> tuple[int, int, int] | None:
        """The input shape the model itself declares (static channels, height, width), if any."""
        return None

    def __call__(self, *inputs: Tensor) -> Tensor:
        raise NotImplementedError


class TorchRuntime(Runtime):
    """A torch module: a checkpoint's network, a ``.pt2`` program, or the fx int8 model."""

    def __init__(
        self, path: Path, meta: dict[str, Any] | None, precision: str, net: nn.Module
    ) -> None:
        self.net = net
        super().__init__(path, meta, precision)

    def __call__(self, *inputs: Tensor) -> Tensor:
        with torch.inference_mode():
            return self.net(*inputs)


class OnnxRuntime(Runtime):
    """An ONNX model run by ONNX Runtime's CPU provider with ``threads`` threads."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, meta: dict[str, Any] | None, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: not its notes about unused initializers
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise ConfigError(
                f"ONNX Runtime cannot load {path}: {type(error).__name__}: {first_line(error)}"
            ) from error
        self.input_names = [i.name for i in self.session.get_inputs()]
        quantized = any(
            node.op_type in ("QuantizeLinear", "QLinearConv", "QLinearMatMul")
            for node in _onnx_nodes(path)
        )
        super().__init__(path, meta, "int8" if quantized else "fp32")

    def declared_shape(self) -> tuple[int, int, int] | None:
        shape = self.session.get_inputs()[0].shape
        if len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
            return tuple(shape[1:])
        return None

    def __call__(self, *inputs: Tensor) -> Tensor:
        feed = dict(zip(self.input_names, map(_array, inputs), strict=True))
        return torch.from_numpy(self.session.run(None, feed)[0])


class OpenVINORuntime(Runtime):
    """An OpenVINO IR compiled for the CPU in fp32 precision (int8 where the model is quantized).

    OpenVINO's own default on CPUs with AMX or AVX-512 bf16 is bf16 inference, which moves logits
    by ~1e-2: ``precision_hint="bf16"`` asks for it (faster there, no longer fp32-exact).
    """

    runtime = "openvino"

    def __init__(
        self, path: Path, meta: dict[str, Any] | None, threads: int, precision_hint: str = "f32"
    ) -> None:
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(
                model,
                "CPU",
                {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision_hint},
            )
        except Exception as error:
            raise ConfigError(
                f"OpenVINO cannot load {path}: {type(error).__name__}: {first_line(error)}"
            ) from error
        self.model = model
        quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) or any(
            op.get_type_name() == "Convert"
            and op.get_input_element_type(0).get_type_name() in ("u8", "i8")
            for op in model.get_ops()
        )
        precision = "int8" if quantized else ("fp32" if precision_hint == "f32" else precision_hint)
        self.request = self.compiled.create_infer_request()
        super().__init__(path, meta, precision)

    def declared_shape(self) -> tuple[int, int, int] | None:
        shape = self.model.inputs[0].get_partial_shape()
        if shape.rank.is_static and len(shape) == 4 and all(d.is_static for d in list(shape)[1:]):
            return tuple(d.get_length() for d in list(shape)[1:])
        return None

    def __call__(self, *inputs: Tensor) -> Tensor:
        self.request.infer(dict(enumerate(map(_array, inputs))))
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


def _onnx_nodes(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)


def _array(x: Tensor) -> np.ndarray:
    """A runtime's input: float32 images, int64 token ids and masks."""
    dtype = np.float32 if x.is_floating_point() else np.int64
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=dtype)


def run_batched(net: Any, inputs: Examples, batch: int = 32) -> Tensor:
    """``net`` over ``inputs`` (a tensor, or a tuple of the network's inputs) in batches of one
    size (the last one padded with its last example), on the CPU."""
    outputs = []
    for start in range(0, count_examples(inputs), batch):
        x = take_examples(inputs, start, start + batch)
        n = len(x[0])
        if n < batch:
            x = tuple(torch.cat([t, t[-1:].expand(batch - n, *t.shape[1:])]) for t in x)
        outputs.append(net(*x)[:n].detach().float().cpu())
    return torch.cat(outputs)


def load_artifact(
    path: str | os.PathLike[str],
    threads: int | None = None,
    compile: bool = True,
    precision_hint: str = "f32",
) -> Runtime:
    """Open the artifact at ``path`` with its runtime, on the CPU, ready to run.

    Args:
        path: a ``.ckpt``, ``.pt2``, ``.pt`` (fx int8), ``.onnx`` or OpenVINO ``.xml`` file.
        threads: CPU threads of ONNX Runtime and OpenVINO (default: torch's, so that every
            runtime is measured with the same number).
        compile: compile int8 torch programs with inductor (their int8 kernels).
        precision_hint: OpenVINO's inference precision (``f32``, or ``bf16`` for its default on
            CPUs that have it).

    Raises:
        ConfigError: an unknown kind of file, or one its runtime cannot load.
    """
    resolved = require_file(path, "ARTIFACT")
    suffix = resolved.suffix
    if suffix not in RUNTIMES:
        raise ConfigError(
            f"{path} is not a model litcompress can run: use a .ckpt checkpoint, a .pt2 torch "
            f"program, an .onnx model or an OpenVINO .xml (with its .bin)."
        )
    threads = threads or torch.get_num_threads()
    if suffix == ".ckpt":  # read once: its record is its metadata
        checkpoint = read_checkpoint(resolved, "ARTIFACT")
        meta = checkpoint_metadata(checkpoint, resolved)
        return TorchRuntime(resolved, meta, meta["precision"], inference_network(checkpoint))
    meta = read_metadata(resolved)
    if suffix == ".onnx":
        return OnnxRuntime(resolved, meta, threads)
    if suffix == ".xml":
        return OpenVINORuntime(resolved, meta, threads, precision_hint)
    if suffix == ".pt":
        return TorchRuntime(resolved, meta, "int8", load_int8(resolved))
    program = load_program(resolved)
    if is_int8_program(program):
        module = program.module()
        net = torch.compile(module, dynamic=False) if compile else module
        return TorchRuntime(resolved, meta, "int8", net)
    return TorchRuntime(resolved, meta, "fp32", program.module())
