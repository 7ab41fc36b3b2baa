"""Export the network a run delivers to ONNX, OpenVINO IR or a torch program, and check it.

Every export is checked in the same call, on real test images, for two different things:

* **fidelity** (does the artifact compute what torch computes?): fp32 artifacts have logits
  within ``FP32_TOLERANCE`` of the float network's, relative to their largest magnitude; int8
  artifacts are compared with the int8 program they translate (torch's int8 model: the run's
  ``model_int8.pt2``, made by PTQ's calibration or from the ranges QAT learned, nothing is
  calibrated again): logits within ``INT8_TOLERANCE`` of its, relative to their largest
  magnitude; top-1 agreement is reported beside it. A failed fidelity check fails the export.
* **cost** (int8 only: what did int8 cost on labelled data?): the artifact's accuracy on up to
  ``COST_IMAGES`` labelled test images against the float network's on the same images. A drop
  beyond ``INT8_ACCURACY_TOLERANCE`` warns; it does not fail the export, which is faithful.

Formats: ``onnx`` (the ``torch.onnx`` dynamo exporter; int8 as a QDQ model that ONNX Runtime and
OpenVINO run with integer kernels; the batch dimension is named ``batch``), ``openvino``
(``openvino.convert_model`` of that ONNX model, weights kept in fp32/int8) and ``pt2``
(``torch.export``; int8 runs with inductor's kernels).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from litcompress.checkpoint import CHECKPOINT_KEY, cpu_twin, inference_network, read_checkpoint
from litcompress.deploy.formats import FORMATS, check_formats
from litcompress.deploy.int8 import ARTIFACTS, is_int8_program, load_program
from litcompress.deploy.metadata import artifact_metadata, read_metadata, write_metadata
from litcompress.deploy.program import export_program, save_program
from litcompress.deploy.runtimes import Runtime, load_artifact, run_batched
from litcompress.errors import ConfigError, ExportError, first_line
from litcompress.measure import ModelStats, measure_latency_ms
from litcompress.outputs import atomic_path
from litcompress.quant.backends import convert, quiet_deprecations
from litcompress.quant.fake_quant import FakeQuantNet
from litcompress.spec import RECORD_KEY as SPEC_KEY
from litcompress.spec import (
    Examples,
    InputSpec,
    as_tuple,
    concat_examples,
    count_examples,
    take_examples,
)

log = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4
# An int8 artifact against torch's int8 model: the largest logit difference relative to the
# largest logit (another runtime's rounding moves logits by a few int8 steps: ~0.01 measured on
# ONNX Runtime and OpenVINO; a wrong scale or a lost layer moves them by ~1).
INT8_TOLERANCE = 0.05
# Accuracy (fraction) int8 may lose against the float network before the export warns.
INT8_ACCURACY_TOLERANCE = 0.01
# Images of the fidelity check (run in batches of 32: int8 programs compile for one shape), and
# labelled images of int8's accuracy cost.
PARITY_IMAGES = 256
COST_IMAGES = 1024


@dataclass
class Deliverable:
    """A trained network ready to export, with what its artifacts record about it.

    Attributes:
        net: the network in eval mode on the CPU (a :class:`FakeQuantNet` after QAT), or ``None``
            when only its int8 program is at hand (a run's ``model_int8.pt2`` given alone).
        inputs: what the network takes (its :class:`InputSpec`; a shape given by hand becomes
            one).
        network: the class path of the network (from its config).
        record: the checkpoint's ``litcompress`` record: ``inputs`` (preprocessing, classes),
            ``data`` (the data config), the form.
        source: where it came from (a checkpoint path, or ``run``).
        report: the run's report, when known.
        int8_program: the int8 program the run delivered (``model_int8.pt2``: PTQ's, or QAT's
            conversion), exported as it is instead of converting the network again.
        int8_method: how that program was made (``ptq``, ``qat``), when known.
    """

    net: nn.Module | None
    inputs: InputSpec
    network: str
    record: dict[str, Any]
    source: str
    report: dict[str, Any] | None = None
    int8_program: torch.export.ExportedProgram | None = None
    int8_method: str | None = None
    # Conversion to int8 (~20 s) and capture are done once for every format; so is the float
    # network's accuracy on the cost's images.
    _programs: dict[bool, tuple[nn.Module, torch.export.ExportedProgram]] = field(
        default_factory=dict, init=False, repr=False
    )
    _float_accuracy: dict[tuple[int, int], float | None] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self.inputs = InputSpec.of(self.inputs)

    @property
    def quantized(self) -> bool:
        """The network is quantization-aware (QAT): it only delivers an int8 model."""
        return isinstance(self.net, FakeQuantNet)

    @property
    def delivers_int8(self) -> bool:
        """The run delivered an int8 model of this network (PTQ or QAT): exports default to it."""
        return self.quantized or self.int8_program is not None

    def use_int8_program(
        self, program: torch.export.ExportedProgram, method: str | None = None
    ) -> None:
        """Export this int8 program (the run's own ``model_int8.pt2``) instead of converting the
        network again (~20 s)."""
        self.int8_program, self.int8_method = program, method or self.int8_method

    def program(self, int8: bool) -> tuple[nn.Module, torch.export.ExportedProgram]:
        """``(model to export, its captured program)``; the model is also the reference an
        artifact must agree with (torch's int8 model for int8, the network for fp32)."""
        if int8 not in self._programs:
            check_precision(self, int8)
            if int8 and self.int8_program is not None:
                self._programs[True] = (self.int8_program.module(), self.int8_program)
            else:
                model = convert(copy.deepcopy(self.net)) if int8 else self.net
                self._programs[int8] = (model, export_program(model, self.inputs))
        return self._programs[int8]

    def float_network(self) -> nn.Module | None:
        """The network in float, the reference of int8's accuracy cost (QAT: its weights with the
        fake quantization switched off); ``None`` when only the int8 program is at hand."""
        if isinstance(self.net, FakeQuantNet):
            return self.net.float_network()
        return self.net

    def float_accuracy(self, images: Examples, labels: Tensor) -> float | None:
        """The float network's accuracy on labelled ``images`` (``None`` without one)."""
        key = (as_tuple(images)[0].data_ptr(), count_examples(images))
        if key not in self._float_accuracy:
            net = self.float_network()
            if net is None:
                self._float_accuracy[key] = None
            else:
                with torch.no_grad():
                    predicted = run_batched(net.eval(), images).argmax(1)
                self._float_accuracy[key] = float((predicted == labels).float().mean())
        return self._float_accuracy[key]

    @classmethod
    def from_checkpoint(cls, path: Path, report: dict[str, Any] | None = None) -> Deliverable:
        checkpoint = read_checkpoint(path, "RUN_OR_CHECKPOINT")
        record = checkpoint[CHECKPOINT_KEY]
        return cls(
            net=inference_network(checkpoint),
            inputs=InputSpec.of_record(record),
            network=record["model_config"]["_target_"],
            record=record,
            source=str(path),
            report=report,
        )

    @classmethod
    def from_int8_program(cls, path: Path, report: dict[str, Any] | None = None) -> Deliverable:
        """The int8 program a run saved (``model_int8.pt2`` and its metadata), without its float
        network."""
        program = load_program(path)
        if not is_int8_program(program):
            raise ConfigError(
                f"{path} is a float torch program, not an int8 model: export the run folder or "
                f"its checkpoint (.ckpt) instead."
            )
        meta = read_metadata(path) or {}
        inputs = meta.get("inputs") or {}
        spec = meta.get(SPEC_KEY)
        return cls(
            net=None,
            inputs=InputSpec(**spec) if spec else InputSpec.of(program_input_shape(program)),
            network=meta.get("network") or "network",
            record={"inputs": inputs, "data": meta.get("data")},
            source=str(path),
            report=report or meta.get("report"),
            int8_program=program,
            int8_method=meta.get("method"),
        )


def program_input_shape(program: torch.export.ExportedProgram) -> tuple[int, int, int]:
    """``(channels, height, width)`` of the images ``program`` takes (its first input): what an
    int8 program saved before artifacts recorded their :class:`InputSpec` says of its inputs."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            return tuple(int(d) for d in node.meta["val"].shape[1:])
    raise ConfigError("The torch program takes no input: it is not a litcompress network.")


@dataclass
class Source:
    """What ``litcompress export`` was pointed at, resolved: the delivered checkpoint (``None``
    when the run made none, e.g. an int8 program given alone), the run folder, its report and
    the int8 program the run delivered (``None``: it delivered a float network)."""

    checkpoint: Path | None
    run_dir: Path
    report: dict[str, Any] | None
    int8_artifact: Path | None

    def deliverable(self) -> Deliverable:
        """The :class:`Deliverable` of this source (the int8 program attached, if any)."""
        if self.checkpoint is None:
            return Deliverable.from_int8_program(self.int8_artifact, self.report)
        deliverable = Deliverable.from_checkpoint(self.checkpoint, self.report)
        if self.int8_artifact is not None:
            meta = read_metadata(self.int8_artifact) or {}
            deliverable.use_int8_program(load_program(self.int8_artifact), meta.get("method"))
        return deliverable


def resolve_source(source: str | os.PathLike[str]) -> Source:
    """The checkpoint, run folder, report and int8 program of a run folder, a checkpoint file or
    a run's ``model_int8.pt2``.

    A run folder gives the checkpoint its report names as delivered (the one the run tested),
    else its ``checkpoints/last.ckpt`` (an unfinished run), and the int8 program the report names
    (PTQ, QAT). A checkpoint inside ``<run>/checkpoints/`` belongs to that run; the run's int8
    program comes with it when it was made from that checkpoint (the delivered one). A
    ``model_int8.pt2`` comes with the run's delivered checkpoint when it has one.

    Raises:
        ConfigError: none of these.
    """
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        report = _read_report(path / "report.json")
        delivered = (report or {}).get("delivered") or {}
        checkpoint = path / (delivered.get("checkpoint") or "checkpoints/last.ckpt")
        artifact = _int8_artifact(path, delivered)
        if not checkpoint.is_file() and artifact is None:
            raise ConfigError(
                f"{source} is a folder without the checkpoint or int8 model of a litcompress run "
                f"(looked for {checkpoint} and {path / ARTIFACTS['pt2e']}). Give a run folder "
                f"(outputs/runs/<run>), a .ckpt file or a run's model_int8.pt2."
            )
        if not delivered.get("checkpoint") and checkpoint.is_file():
            log.warning("%s has no report (an unfinished run?): exporting %s", source, checkpoint)
        return Source(checkpoint if checkpoint.is_file() else None, path, report, artifact)
    if path.suffix not in (".ckpt", ".pt2") or not path.is_file():
        raise ConfigError(
            f"{source} is neither a run folder, a .ckpt checkpoint nor a run's int8 .pt2 model"
            + (" (it does not exist)" if not path.exists() else "")
            + ". export takes what a run wrote: outputs/runs/<run>, one of its checkpoints, or "
            "its model_int8.pt2."
        )
    run_dir = next(
        (p.parent for p in (path.parent, path.parent.parent) if p.name == "checkpoints"),
        path.parent,
    )
    report = _read_report(run_dir / "report.json")
    delivered = (report or {}).get("delivered") or {}
    checkpoint = run_dir / delivered["checkpoint"] if delivered.get("checkpoint") else None
    artifact = _int8_artifact(run_dir, delivered)
    if path.suffix == ".pt2":
        if artifact != path:  # not the int8 model the run delivered: its float network is unknown
            return Source(None, run_dir, None, path)
        known = checkpoint if checkpoint is not None and checkpoint.is_file() else None
        return Source(known, run_dir, report, path)
    # A checkpoint is exported with the run's int8 program only when it is the one it came from.
    same = checkpoint is not None and checkpoint.resolve() == path
    return Source(path, run_dir, report, artifact if same else None)


def _int8_artifact(run_dir: Path, delivered: dict[str, Any]) -> Path | None:
    """The int8 torch program a run delivered (its report names it), if it is there."""
    name = delivered.get("artifact")
    path = run_dir / name if name else None
    return path.resolve() if path is not None and path.suffix == ".pt2" and path.is_file() else None


def _read_report(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


@dataclass
class Exported:
    """One exported artifact and its check."""

    path: Path
    format: str
    precision: str
    parity: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    # int8's accuracy cost on labelled images (accuracy_cost), when measured.
    cost: dict[str, Any] | None = None

    @property
    def files(self) -> list[Path]:
        """The artifact's files (an OpenVINO IR is an .xml and a .bin)."""
        return (
            [self.path, self.path.with_suffix(".bin")] if self.format == "openvino" else [self.path]
        )

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def artifact_name(fmt: str, int8: bool) -> str:
    """``model.onnx``, ``model_int8.xml``, ..."""
    return f"model{'_int8' if int8 else ''}{FORMATS[fmt]}"


def export(
    deliverable: Deliverable,
    fmt: str,
    output: str | os.PathLike[str],
    inputs: Examples,
    int8: bool | None = None,
    labels: Tensor | None = None,
) -> Exported:
    """Export ``deliverable`` to ``fmt`` at ``output``, check it and record it.

    Args:
        deliverable: the network and what its artifact records.
        fmt: ``onnx``, ``openvino`` or ``pt2``.
        output: the artifact's path.
        inputs: real, preprocessed images (``N x C x H x W``): the first ``PARITY_IMAGES`` check
            fidelity; with ``labels``, all of them measure int8's accuracy cost.
        int8: export the int8 model (``None``: what the run delivered: int8 after PTQ or QAT).
        labels: the classes of ``inputs`` (``None``: the cost is not measured).

    Raises:
        ConfigError: the precision asked for is not what this network can give.
        ExportError: the exporter failed (its message, the op, what to try instead), or the
            artifact failed its fidelity check (the artifact is kept, marked failed).
    """
    int8 = deliverable.delivers_int8 if int8 is None else int8
    path = write_artifact(deliverable, fmt, output, int8)
    reference, _ = deliverable.program(int8)
    runtime = load_artifact(path)
    parity = check_parity(runtime, reference, take_examples(inputs, 0, PARITY_IMAGES), int8)
    exported = Exported(path, fmt, "int8" if int8 else "fp32", parity)
    if int8 and labels is not None:
        exported.cost = accuracy_cost(runtime, deliverable, inputs, labels)
    exported.meta = artifact_metadata(
        source=deliverable.source,
        network=deliverable.network,
        precision=exported.precision,
        runtime=runtime.runtime,
        inputs=deliverable.record.get("inputs"),
        input_spec=deliverable.inputs,
        data=deliverable.record.get("data"),
        report=deliverable.report,
        format=fmt,
        parity=parity,
        **({"method": deliverable.int8_method} if int8 and deliverable.int8_method else {}),
        **({"accuracy": exported.cost} if exported.cost else {}),
    )
    write_metadata(path, exported.meta)
    if not parity["passed"]:
        raise ExportError(
            f"{path} was written but failed its parity check against the "
            f"{'int8 program' if int8 else 'network'} it came from: {describe_parity(parity)}. "
            f"It is kept (its metadata says it failed); do not deploy it. Try another format, or "
            f"report the network to litcompress."
        )
    log.info("%s: %s", path.name, describe_parity(parity))
    if exported.cost:
        message = describe_cost(exported.cost)
        (log.info if exported.cost["within_tolerance"] is not False else log.warning)(
            "%s: %s", path.name, message
        )
    return exported


def write_artifact(
    deliverable: Deliverable, fmt: str, output: str | os.PathLike[str], int8: bool
) -> Path:
    """Export ``deliverable`` to ``fmt`` at ``output``, without checking or recording it (see
    :func:`export`, which does both)."""
    check_formats([fmt], "--format")
    path = Path(output)
    _, program = deliverable.program(int8)
    log.info("Exporting %s to %s (%s)", deliverable.network, path, "int8" if int8 else "fp32")
    if fmt == "pt2":
        save_program(program, path)
    elif fmt == "onnx":
        _save_onnx(program, path, deliverable.network, deliverable.inputs.names)
    else:
        _save_openvino(program, path, deliverable.network, deliverable.inputs.names)
    return path


def check_precision(deliverable: Deliverable, int8: bool) -> None:
    """Refuse a precision the network cannot give (before any slow work).

    Raises:
        ConfigError: fp32 of a quantization-aware network or of an int8 program given alone,
            int8 of a float network without a run's int8 model, or int8 of the ``fx`` backend
            (whose int8 model ``torch.export`` cannot capture).
    """
    net = deliverable.net
    if not int8 and deliverable.quantized:
        raise ConfigError(
            f"{deliverable.source} holds a quantization-aware network: its weights were "
            f"trained for int8 and it delivers an int8 model. Export it with --int8 (the "
            f"default for it), or export a checkpoint from before compress=qat for fp32."
        )
    if not int8 and net is None:
        raise ConfigError(
            f"--fp32: {deliverable.source} is an int8 model without its float network. Export "
            f"the run's checkpoint (outputs/runs/<run>/checkpoints/*.ckpt) for fp32."
        )
    if int8 and not deliverable.delivers_int8:
        raise ConfigError(
            f"--int8: {deliverable.source} holds a float network, with no quantization ranges "
            f"to export. Quantize it first: post-training (init_from=<this checkpoint> "
            f"compress=ptq trainer.max_epochs=0: seconds), or trained for int8 (init_from=<this "
            f"checkpoint> compress=qat trainer.max_epochs=2), then export that run."
        )
    if int8 and deliverable.int8_program is None and net.backend != "pt2e":
        raise ConfigError(
            f"{deliverable.source} was quantized with compress.qat.backend={net.backend}, whose "
            f"int8 model (torch.ao FX) torch.export cannot capture. Export its int8 model with "
            f"backend pt2e: train with compress.qat.backend=pt2e."
        )


def _save_onnx(
    program: torch.export.ExportedProgram, path: Path, network: str, input_names: Sequence[str]
) -> None:
    for chatty in ("onnx_ir", "onnxscript"):  # a line per rewritten node at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        with quiet_deprecations():
            onnx_program = torch.onnx.export(
                program,
                dynamo=True,
                input_names=list(input_names),
                output_names=["logits"],
                optimize=True,
                verbose=False,
                report=False,
            )
    except Exception as error:
        op, reason = _onnx_failure(error)
        raise ExportError(
            f"The ONNX exporter cannot translate {network}"
            + (f": no ONNX translation of the op {op}" if op else "")
            + f" ({reason}). torch.export captured the network, so --format pt2 exports it "
            f"(torch and inductor run it); the checkpoint itself predicts with "
            f"`litcompress predict`. To reach ONNX, replace that op in the network."
        ) from error
    _name_batch_dimension(onnx_program.model.graph)
    with atomic_path(path) as tmp:
        onnx_program.save(str(tmp))


def _name_batch_dimension(graph: Any) -> None:
    """Call the dynamic batch dimension ``batch`` everywhere in ``graph`` (an ``onnx_ir`` graph),
    where the exporter names it after its symbol (``s31``): tools show the name."""
    import onnx_ir as ir

    dim = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else None
    if not isinstance(dim, ir.SymbolicDim) or dim.value is None:
        return
    symbol = dim.value
    values = [*graph.inputs, *graph.outputs, *(out for node in graph for out in node.outputs)]
    for value in values:
        if value.shape is not None and any(
            isinstance(d, ir.SymbolicDim) and d.value == symbol for d in value.shape
        ):
            value.shape = ir.Shape(
                [
                    ir.SymbolicDim("batch")
                    if isinstance(d, ir.SymbolicDim) and d.value == symbol
                    else d
                    for d in value.shape
                ]
            )


def _onnx_failure(error: BaseException) -> tuple[str | None, str]:
    """``(the op the exporter could not translate, one line on why)`` from its error."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the exporter colours its messages
    op = re.search(r"op='([\w.]+)'", text) or re.search(r"target=torch\.ops\.([\w.]+)", text)
    summary = next(
        (line.split(": ", 1)[-1] for line in text.splitlines() if "No ONNX function" in line),
        first_line(error.__cause__ or error),
    )
    return (op.group(1) if op else None), summary.strip()


def _save_openvino(
    program: torch.export.ExportedProgram, path: Path, network: str, input_names: Sequence[str]
) -> None:
    """OpenVINO IR through the ONNX model (its Q/DQ pairs become OpenVINO's int8 FakeQuantize)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        _save_onnx(program, onnx_path, network, input_names)
        try:
            model = ov.convert_model(str(onnx_path))
        except Exception as error:
            raise ExportError(
                f"OpenVINO cannot convert {network}: {type(error).__name__}: {first_line(error)} "
                f"Its ONNX export works: use --format onnx (ONNX Runtime, or OpenVINO reading "
                f"the .onnx directly)."
            ) from error
        xml = Path(tmp) / path.name
        ov.save_model(model, str(xml), compress_to_fp16=False)  # fp32 stays fp32
        path.parent.mkdir(parents=True, exist_ok=True)
        for written in (xml, xml.with_suffix(".bin")):
            os.replace(written, path.parent / written.name)


def check_parity(
    runtime: Runtime, reference: nn.Module, inputs: Examples, int8: bool
) -> dict[str, Any]:
    """Compare ``runtime`` with the model it translates on ``inputs`` (the module docstring).

    ``reference``: the float network (fp32) or torch's int8 model of it (``int8``).
    """
    got = run_batched(runtime, inputs)
    with torch.no_grad():
        wanted = run_batched(reference.eval() if not int8 else reference, inputs)
    scale = float(wanted.abs().max()) or 1.0
    result: dict[str, Any] = {
        "images": count_examples(inputs),
        "against": "torch's int8 model" if int8 else "the network",
        "max_abs_diff": float((got - wanted).abs().max()),
        "max_rel_diff": float((got - wanted).abs().max()) / scale,
        "top1_agreement": float((got.argmax(1) == wanted.argmax(1)).float().mean()),
    }
    if not int8:
        result["tolerance"] = FP32_TOLERANCE
        result["passed"] = result["max_rel_diff"] <= FP32_TOLERANCE
        return result
    # Two int8 runtimes round differently where a value lands between two integer steps: their
    # logits differ by a few steps. That distance is the check. Top-1 agreement follows from it:
    # a class can only flip on an image whose top two logits are closer than twice the distance
    # (a near-tie of an unsure network), so agreement alone would fail faithful artifacts of
    # networks that are not near 100% accurate.
    result["mean_abs_diff"] = float((got - wanted).abs().mean())
    top2 = wanted.topk(2, dim=1).values
    near_tie = (top2[:, 0] - top2[:, 1]) <= 2 * result["max_abs_diff"]
    disagree = got.argmax(1) != wanted.argmax(1)
    result["disagreements"] = int(disagree.sum())
    result["near_ties"] = int(near_tie.sum())
    result["tolerance"] = INT8_TOLERANCE
    result["passed"] = result["max_rel_diff"] <= INT8_TOLERANCE
    return result


def describe_parity(parity: dict[str, Any]) -> str:
    """One line on a parity check, e.g. for the log."""
    verdict = "passed" if parity["passed"] else "FAILED"
    text = (
        f"parity {verdict}: logits within {parity['max_rel_diff']:.2e} of {parity['against']}'s "
        f"(relative to its largest; tolerance {parity['tolerance']:.0e}) on {parity['images']} "
        f"images"
    )
    if "disagreements" in parity:
        text += (
            f", top-1 agreement {parity['top1_agreement']:.2%} ({parity['disagreements']} "
            f"flipped, among {parity['near_ties']} near-ties)"
        )
    return text


def accuracy_cost(
    runtime: Runtime, deliverable: Deliverable, images: Examples, labels: Tensor
) -> dict[str, Any]:
    """What int8 cost: the int8 artifact's accuracy on labelled ``images`` against the float
    network's on the same images (``fp32_acc`` is ``None`` without a float network)."""
    predicted = run_batched(runtime, images).argmax(1)
    accuracy = float((predicted == labels).float().mean())
    fp32 = deliverable.float_accuracy(images, labels)
    drop = None if fp32 is None else fp32 - accuracy
    return {
        "images": count_examples(images),
        "acc": accuracy,
        "fp32_acc": fp32,
        "drop": drop,
        "tolerance": INT8_ACCURACY_TOLERANCE,
        "within_tolerance": None if drop is None else drop <= INT8_ACCURACY_TOLERANCE,
    }


def describe_cost(cost: dict[str, Any]) -> str:
    text = f"int8 accuracy {cost['acc']:.4f} on {cost['images']} labelled test images"
    if cost["fp32_acc"] is None:
        return text + " (no float network at hand to compare with)"
    text += f", fp32 {cost['fp32_acc']:.4f}: {100 * cost['drop']:+.2f} points lost"
    if not cost["within_tolerance"]:
        text += (
            f", more than the {100 * cost['tolerance']:.0f}-point tolerance: the artifact is "
            f"faithful to torch's int8 model, but int8 costs this network accuracy. Try "
            f"compress=qat (trained for int8), more calibration (compress.ptq.calibration_batches)"
            f" or compress.ptq.observer=minmax"
        )
    return text


def labelled_images(loader: Iterable[Any], images: int = COST_IMAGES) -> tuple[Examples, Tensor]:
    """The first ``images`` examples of ``loader`` (batches of ``(*inputs, y)``) and their
    classes: a tensor of images, or a tuple of the network's inputs (token ids and mask)."""
    xs, ys, count = [], [], 0
    for *x, y in loader:
        xs.append(tuple(x))
        ys.append(y)
        count += len(y)
        if count >= images:
            break
    joined = tuple(
        (t.float() if t.is_floating_point() else t)[:images].cpu() for t in concat_examples(xs)
    )
    return (joined[0] if len(joined) == 1 else joined), torch.cat(ys)[:images].cpu()


def real_inputs(loader: Iterable[Any], images: int = PARITY_IMAGES) -> Examples:
    """The first ``images`` images of ``loader`` (batches of ``(x, y)``)."""
    return labelled_images(loader, images)[0]


def measure_artifact(
    exported: Exported, inputs: InputSpec, min_run_time_s: float
) -> dict[str, Any]:
    """The report entry of one artifact: files, size, latency at batch 1 and 32, parity (and
    int8's accuracy cost)."""
    runtime = load_artifact(exported.path)
    return {
        "file": exported.path.name,
        "bytes": exported.bytes,
        "runtime": runtime.runtime,
        "precision": exported.precision,
        "latency_ms_b1": measure_latency_ms(runtime, inputs, 1, min_run_time_s),
        "latency_ms_b32": measure_latency_ms(runtime, inputs, 32, min_run_time_s),
        "parity": exported.parity,
        **({"accuracy": exported.cost} if exported.cost else {}),
    }


def fastest(entries: dict[str, dict[str, Any]], key: str) -> str | None:
    """The name of the entry with the lowest ``key`` latency."""
    timed = {name: entry[key] for name, entry in entries.items() if entry.get(key) is not None}
    return min(timed, key=timed.get) if timed else None


def export_run(
    formats: Iterable[str],
    module: Any,
    data: Any,
    output_dir: Path,
    after: ModelStats | None,
    min_run_time_s: float,
) -> dict[str, Any]:
    """Export the network a run delivers (``export=[...]``) into ``<run>/export/``.

    Args:
        formats: the formats asked for.
        module: the run's :class:`~litcompress.module.ClassifierModule`, holding the delivered
            network (the best checkpoint's, after testing).
        data: the run's data module: the checks run on its first test images.
        output_dir: the run folder.
        after: the report's measurement of the delivered model (``None``: the report is off,
            nothing is timed).
        min_run_time_s: timing budget per batch size.

    Returns:
        the report's ``export`` entry: one entry per format (file, size, latency, parity; or the
        ``error`` that stopped it: the other formats and the run's results are still delivered)
        and, when measured, which model is fastest at batch 1 and 32 (``delivered`` is the run's
        own model).
    """
    deliverable = Deliverable(
        net=cpu_twin(module.net, module.model_config, module.form),
        inputs=module.input_spec,
        network=module.model_config["_target_"],
        record={**module.checkpoint_extras, **module.form},
        source="run",
    )
    int8_artifact = output_dir / ARTIFACTS["pt2e"]
    if int8_artifact.is_file():  # the int8 model the run just made (PTQ, QAT): exported as it is
        meta = read_metadata(int8_artifact) or {}
        deliverable.use_int8_program(load_program(int8_artifact), meta.get("method"))
    images, labels = labelled_images(data.test_dataloader())
    entries: dict[str, Any] = {}
    for fmt in formats:
        path = output_dir / "export" / artifact_name(fmt, deliverable.delivers_int8)
        try:
            exported = export(deliverable, fmt, path, images, labels=labels)
        except (ConfigError, ExportError) as error:  # the run's own results stay; say it failed
            log.error("export=%s failed: %s", fmt, error)
            entries[fmt] = {"file": None, "error": str(error)}
            continue
        if after is None:
            entries[fmt] = {"bytes": exported.bytes, "parity": exported.parity}
        else:
            entries[fmt] = measure_artifact(exported, deliverable.inputs, min_run_time_s)
        entries[fmt]["file"] = f"export/{path.name}"
    if after is not None:
        timed = {"delivered": after.to_dict(), **entries}
        for key in ("latency_ms_b1", "latency_ms_b32"):
            entries[f"fastest_{key.removeprefix('latency_ms_')}"] = fastest(timed, key)
    return entries


def attach_report(output_dir: Path, report: dict[str, Any]) -> None:
    """Put the run's final report into the metadata of every artifact the run wrote."""
    for path in [*output_dir.glob("model_int8.pt*"), *(output_dir / "export").glob("model*")]:
        if path.suffix in (".json", ".bin"):
            continue
        meta = read_metadata(path)
        if meta is not None:
            write_metadata(path, {**meta, "report": report})


def failed_exports(entries: dict[str, Any]) -> list[str]:
    """The errors of the formats of a run's ``export`` entry that could not be delivered."""
    return [
        f"{fmt}: {entry['error']}"
        for fmt, entry in entries.items()
        if isinstance(entry, dict) and entry.get("error")
    ]
