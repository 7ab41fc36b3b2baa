"""Export the network a run delivers to ONNX, OpenVINO IR or a torch program, and check it.

Every export is checked in the same call against the network it came from, on real images:

* fp32: the artifact's logits within ``FP32_TOLERANCE`` of torch's, relative to their largest
  magnitude;
* int8: top-1 agreement with the quantization-aware network (the ranges QAT learned are carried
  over, nothing is calibrated again) of at least ``INT8_AGREEMENT``, and the logits' distance to
  torch's own int8 model.

Formats: ``onnx`` (the ``torch.onnx`` dynamo exporter; int8 as a QDQ model that ONNX Runtime and
OpenVINO run with integer kernels), ``openvino`` (``openvino.convert_model`` of that ONNX model,
weights kept in fp32/int8) and ``pt2`` (``torch.export``; int8 runs with inductor's kernels).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from litcompress.checkpoint import CHECKPOINT_KEY, cpu_twin, inference_network, read_checkpoint
from litcompress.deploy.formats import FORMATS
from litcompress.deploy.metadata import artifact_metadata, read_metadata, write_metadata
from litcompress.deploy.program import export_program, save_program
from litcompress.deploy.runtimes import Runtime, load_artifact, run_batched
from litcompress.errors import ConfigError, ExportError, first_line
from litcompress.quant.artifact import ARTIFACTS, load_program
from litcompress.quant.backends import convert, quiet_deprecations
from litcompress.quant.fake_quant import FakeQuantNet
from litcompress.report import ModelStats, atomic_path, measure_latency_ms

log = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4
INT8_AGREEMENT = 0.99
# Images of the parity check (run in batches of 32: int8 programs compile for one shape).
PARITY_IMAGES = 256


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


@dataclass
class Deliverable:
    """A trained network ready to export, with what its artifacts record about it.

    Attributes:
        net: the network in eval mode on the CPU (a :class:`FakeQuantNet` after QAT).
        input_shape: ``(channels, height, width)``.
        network: the class path of the network (from its config).
        record: the checkpoint's ``litcompress`` record: ``inputs`` (preprocessing, classes),
            ``data`` (the data config), the form.
        source: where it came from (a checkpoint path, or ``run``).
        report: the run's report, when known.
    """

    net: nn.Module
    input_shape: tuple[int, int, int]
    network: str
    record: dict[str, Any]
    source: str
    report: dict[str, Any] | None = None
    # Conversion to int8 (~20 s) and capture are done once for every format.
    _programs: dict[bool, tuple[nn.Module, torch.export.ExportedProgram]] = field(
        default_factory=dict, init=False, repr=False
    )

    @property
    def quantized(self) -> bool:
        return isinstance(self.net, FakeQuantNet)

    def use_int8_program(self, program: torch.export.ExportedProgram) -> None:
        """Export this int8 program (the run's own ``model_int8.pt2``) instead of converting the
        network again (~20 s)."""
        self._programs[True] = (program.module(), program)

    def program(self, int8: bool) -> tuple[nn.Module, nn.Module, torch.export.ExportedProgram]:
        """``(model to export, reference it must agree with, its captured program)``."""
        if int8 not in self._programs:
            model = _model(self, int8)
            self._programs[int8] = (model, export_program(model, self.input_shape))
        model, program = self._programs[int8]
        return model, self.net, program

    @classmethod
    def from_checkpoint(cls, path: Path, report: dict[str, Any] | None = None) -> Deliverable:
        checkpoint = read_checkpoint(path, "RUN_OR_CHECKPOINT")
        record = checkpoint[CHECKPOINT_KEY]
        config = record["model_config"]
        size = config["image_size"]
        return cls(
            net=inference_network(checkpoint),
            input_shape=(config["in_channels"], size, size),
            network=config["_target_"],
            record=record,
            source=str(path),
            report=report,
        )


def resolve_source(source: str | os.PathLike[str]) -> tuple[Path, Path, dict[str, Any] | None]:
    """``(checkpoint, run folder, run report)`` of a run folder or a checkpoint file.

    A run folder gives the checkpoint its report names as delivered (the one the run tested),
    else its ``checkpoints/last.ckpt`` (an unfinished run). A checkpoint inside
    ``<run>/checkpoints/`` belongs to that run.

    Raises:
        ConfigError: neither a run folder with checkpoints nor a ``.ckpt`` file.
    """
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        report = _read_report(path / "report.json")
        delivered = ((report or {}).get("delivered") or {}).get("checkpoint")
        checkpoint = path / delivered if delivered else path / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            raise ConfigError(
                f"{source} is a folder without the checkpoint of a litcompress run (looked for "
                f"{checkpoint}). Give a run folder (outputs/runs/<run>) or a .ckpt file."
            )
        if not delivered:
            log.warning("%s has no report (an unfinished run?): exporting %s", source, checkpoint)
        return checkpoint, path, report
    if path.suffix != ".ckpt" or not path.is_file():
        raise ConfigError(
            f"{source} is neither a run folder nor a .ckpt checkpoint"
            + (" (it does not exist)" if not path.exists() else "")
            + ". export takes what a run wrote: outputs/runs/<run>, or one of its checkpoints."
        )
    run_dir = next(
        (p.parent for p in (path.parent, path.parent.parent) if p.name == "checkpoints"),
        path.parent,
    )
    return path, run_dir, _read_report(run_dir / "report.json")


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
    inputs: Tensor,
    int8: bool | None = None,
) -> Exported:
    """Export ``deliverable`` to ``fmt`` at ``output``, check it on ``inputs`` and record it.

    Args:
        deliverable: the network and what its artifact records.
        fmt: ``onnx``, ``openvino`` or ``pt2``.
        output: the artifact's path.
        inputs: real, preprocessed images for the parity check (``N x C x H x W``).
        int8: export the int8 model (``None``: int8 when the network is quantization-aware, which
            is what its run delivered).

    Raises:
        ConfigError: the precision asked for is not what this network can give.
        ExportError: the exporter failed (its message, the op, what to try instead), or the
            artifact failed its parity check (the artifact is kept, marked failed).
    """
    int8 = deliverable.quantized if int8 is None else int8
    path = write_artifact(deliverable, fmt, output, int8)
    model, reference, _ = deliverable.program(int8)
    runtime = load_artifact(path)
    parity = check_parity(runtime, reference, model if int8 else None, inputs)
    exported = Exported(path, fmt, "int8" if int8 else "fp32", parity)
    exported.meta = artifact_metadata(
        source=deliverable.source,
        network=deliverable.network,
        precision=exported.precision,
        runtime=runtime.runtime,
        inputs=deliverable.record.get("inputs"),
        data=deliverable.record.get("data"),
        report=deliverable.report,
        format=fmt,
        parity=parity,
    )
    write_metadata(path, exported.meta)
    if not parity["passed"]:
        raise ExportError(
            f"{path} was written but failed its parity check against the {deliverable.network} "
            f"it came from: {describe_parity(parity)}. It is kept (its metadata says it failed); "
            f"do not deploy it. Try another format, or report the network to litcompress."
        )
    log.info("%s: %s", path.name, describe_parity(parity))
    return exported


def write_artifact(
    deliverable: Deliverable, fmt: str, output: str | os.PathLike[str], int8: bool
) -> Path:
    """Export ``deliverable`` to ``fmt`` at ``output``, without checking or recording it (see
    :func:`export`, which does both)."""
    check_formats([fmt], "--format")
    path = Path(output)
    model, _, program = deliverable.program(int8)
    log.info("Exporting %s to %s (%s)", deliverable.network, path, "int8" if int8 else "fp32")
    if fmt == "pt2":
        save_program(program, path)
    elif fmt == "onnx":
        _save_onnx(program, path, deliverable.network)
    else:
        _save_openvino(program, path, deliverable.network)
    return path


def check_precision(deliverable: Deliverable, int8: bool) -> None:
    """Refuse a precision the network cannot give (before any slow work).

    Raises:
        ConfigError: fp32 of a quantization-aware network, int8 of a float one, or int8 of the
            ``fx`` backend (whose int8 model ``torch.export`` cannot capture).
    """
    net = deliverable.net
    if not int8 and deliverable.quantized:
        raise ConfigError(
            f"{deliverable.source} holds a quantization-aware network: its weights were "
            f"trained for int8 and it delivers an int8 model. Export it with --int8 (the "
            f"default for it), or export a checkpoint from before compress=qat for fp32."
        )
    if int8 and not deliverable.quantized:
        raise ConfigError(
            f"--int8: {deliverable.source} holds a float network, with no quantization ranges "
            f"to export. Train it with compress=qat (init_from=<this checkpoint> compress=qat "
            f"trainer.max_epochs=2 fine-tunes it), then export that run."
        )
    if int8 and net.backend != "pt2e":
        raise ConfigError(
            f"{deliverable.source} was quantized with compress.qat.backend={net.backend}, whose "
            f"int8 model (torch.ao FX) torch.export cannot capture. Export its int8 model with "
            f"backend pt2e: train with compress.qat.backend=pt2e."
        )


def _model(deliverable: Deliverable, int8: bool) -> nn.Module:
    """The model to export: the network, or its int8 conversion."""
    check_precision(deliverable, int8)
    return convert(copy.deepcopy(deliverable.net)) if int8 else deliverable.net


def _save_onnx(program: torch.export.ExportedProgram, path: Path, network: str) -> None:
    for chatty in ("onnx_ir", "onnxscript"):  # a line per rewritten node at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        with quiet_deprecations():
            onnx_program = torch.onnx.export(
                program,
                dynamo=True,
                input_names=["images"],
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
    with atomic_path(path) as tmp:
        onnx_program.save(str(tmp))


def _onnx_failure(error: BaseException) -> tuple[str | None, str]:
    """``(the op the exporter could not translate, one line on why)`` from its error."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the exporter colours its messages
    op = re.search(r"op='([\w.]+)'", text) or re.search(r"target=torch\.ops\.([\w.]+)", text)
    summary = next(
        (line.split(": ", 1)[-1] for line in text.splitlines() if "No ONNX function" in line),
        first_line(error.__cause__ or error),
    )
    return (op.group(1) if op else None), summary.strip()


def _save_openvino(program: torch.export.ExportedProgram, path: Path, network: str) -> None:
    """OpenVINO IR through the ONNX model (its Q/DQ pairs become OpenVINO's int8 FakeQuantize)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        _save_onnx(program, onnx_path, network)
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
    runtime: Runtime, reference: nn.Module, int8_model: nn.Module | None, inputs: Tensor
) -> dict[str, Any]:
    """Compare ``runtime`` with the network it came from on ``inputs`` (see the module docstring).

    ``int8_model``: torch's int8 model of the same network, for an int8 artifact (``None``: fp32).
    """
    got = run_batched(runtime, inputs)
    with torch.no_grad():
        wanted = run_batched(reference.eval(), inputs)
    scale = float(wanted.abs().max()) or 1.0
    result: dict[str, Any] = {
        "images": len(inputs),
        "max_abs_diff": float((got - wanted).abs().max()),
        "top1_agreement": float((got.argmax(1) == wanted.argmax(1)).float().mean()),
    }
    if int8_model is None:
        result["max_rel_diff"] = result["max_abs_diff"] / scale
        result["tolerance"] = FP32_TOLERANCE
        result["passed"] = result["max_rel_diff"] <= FP32_TOLERANCE
        return result
    with torch.no_grad():
        torch_int8 = run_batched(int8_model, inputs)
    result["against"] = "the quantization-aware network"
    result["max_abs_diff_to_torch_int8"] = float((got - torch_int8).abs().max())
    result["top1_agreement_with_torch_int8"] = float(
        (got.argmax(1) == torch_int8.argmax(1)).float().mean()
    )
    result["required_agreement"] = INT8_AGREEMENT
    result["passed"] = result["top1_agreement"] >= INT8_AGREEMENT
    # Disagreements on images the network hardly separates (top-1 and top-2 logits closer than
    # twice the error of int8 itself: torch's int8 model against the quantization-aware network)
    # come from an unsure network, not from a wrong artifact.
    result["int8_error"] = float((torch_int8 - wanted).abs().max())
    top2 = wanted.topk(2, dim=1).values
    near_tie = (top2[:, 0] - top2[:, 1]) < 2 * result["int8_error"]
    disagree = got.argmax(1) != wanted.argmax(1)
    result["disagreements"] = int(disagree.sum())
    result["disagreements_near_ties"] = int((disagree & near_tie).sum())
    return result


def describe_parity(parity: dict[str, Any]) -> str:
    verdict = "passed" if parity["passed"] else "FAILED"
    if "tolerance" in parity:
        return (
            f"parity {verdict}: logits within {parity['max_rel_diff']:.2e} (relative; tolerance "
            f"{parity['tolerance']:.0e}) of torch on {parity['images']} images"
        )
    text = (
        f"parity {verdict}: top-1 agrees with {parity['against']} on "
        f"{parity['top1_agreement']:.2%} of {parity['images']} images (required "
        f"{parity['required_agreement']:.0%}), with torch's int8 model on "
        f"{parity['top1_agreement_with_torch_int8']:.2%}"
    )
    ties, count = parity.get("disagreements_near_ties", 0), parity.get("disagreements", 0)
    if not parity["passed"] and count and ties == count:
        text += (
            f"; all {count} disagreements are near-ties (the network's top two logits closer "
            f"than twice the largest error of int8 itself, {parity['int8_error']:.3f}): the "
            f"network is unsure of these images, and int8 rounding flips them. Check its "
            f"accuracy and train it further before deploying it"
        )
    return text


def real_inputs(loader: Iterable[Any], images: int = PARITY_IMAGES) -> Tensor:
    """The first ``images`` images of ``loader`` (batches of ``(x, y)``)."""
    batches, count = [], 0
    for x, _ in loader:
        batches.append(x)
        count += len(x)
        if count >= images:
            break
    return torch.cat(batches)[:images].float().cpu()


def measure_artifact(
    exported: Exported, input_shape: tuple[int, ...], min_run_time_s: float
) -> dict[str, Any]:
    """The report entry of one artifact: files, size, latency at batch 1 and 32, parity."""
    runtime = load_artifact(exported.path)
    return {
        "file": exported.path.name,
        "bytes": exported.bytes,
        "runtime": runtime.runtime,
        "precision": exported.precision,
        "latency_ms_b1": measure_latency_ms(runtime, input_shape, 1, min_run_time_s),
        "latency_ms_b32": measure_latency_ms(runtime, input_shape, 32, min_run_time_s),
        "parity": exported.parity,
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
        data: the run's data module: the parity check runs on its first test images.
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
        input_shape=module.input_shape,
        network=module.model_config["_target_"],
        record={**module.checkpoint_extras, **module.form},
        source="run",
    )
    int8_artifact = output_dir / ARTIFACTS["pt2e"]
    if deliverable.quantized and int8_artifact.is_file():  # the int8 model the run just made
        deliverable.use_int8_program(load_program(int8_artifact))
    inputs = real_inputs(data.test_dataloader())
    entries: dict[str, Any] = {}
    for fmt in formats:
        path = output_dir / "export" / artifact_name(fmt, deliverable.quantized)
        try:
            exported = export(deliverable, fmt, path, inputs)
        except (ConfigError, ExportError) as error:  # the run's own results stay; say it failed
            log.error("export=%s failed: %s", fmt, error)
            entries[fmt] = {"file": None, "error": str(error)}
            continue
        if after is None:
            entries[fmt] = {"bytes": exported.bytes, "parity": exported.parity}
        else:
            entries[fmt] = measure_artifact(exported, deliverable.input_shape, min_run_time_s)
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
