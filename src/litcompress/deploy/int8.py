"""The int8 artifact a run delivers: converted, saved, reloaded as a user reloads it, measured.

* ``pt2e``: ``model_int8.pt2``, an ExportedProgram (``torch.export.save``) with a dynamic batch
  dimension, compiled by inductor when loaded.
* ``fx``: ``model_int8.pt``, a state dict plus the network's config and form, loaded with
  ``weights_only=True`` and rebuilt by preparing and converting a fresh network.

:func:`load_int8` reloads either in a fresh process, ready to run at int8 speed.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from litcompress.checkpoint import CHECKPOINT_KEY, cpu_twin, rebuild_network, require_file
from litcompress.compat import cpu_has_vnni, enable_inductor_freezing, set_attention_dropout
from litcompress.deploy.metadata import artifact_metadata, write_metadata
from litcompress.deploy.program import export_program, save_program
from litcompress.errors import ConfigError, first_line
from litcompress.measure import (
    ModelStats,
    count_macs,
    count_params,
    evaluate_cpu,
    measure_latency_ms,
    state_dict_bytes,
)
from litcompress.outputs import atomic_path
from litcompress.pictures import has_tensorboard, log_histograms
from litcompress.quant.backends import TRACE_BATCH, convert
from litcompress.spec import Inputs, InputSpec

log = logging.getLogger(__name__)

ARTIFACTS = {"pt2e": "model_int8.pt2", "fx": "model_int8.pt"}


def save_int8(
    model: nn.Module,
    backend: str,
    path: str | os.PathLike[str],
    inputs: Inputs,
    meta: dict[str, Any],
) -> Path:
    """Write the int8 ``model`` to ``path`` whole or not at all.

    ``pt2e``: an ExportedProgram with a dynamic batch dimension. ``fx``: a state dict plus
    ``meta`` (the network's config and form), which :func:`load_int8` needs to rebuild it.
    """
    path = Path(path)
    if backend == "pt2e":
        return save_program(export_program(model, inputs), path)
    with atomic_path(path) as tmp:
        torch.save({CHECKPOINT_KEY: meta, "state_dict": model.state_dict()}, tmp)
    return path


def enable_int8_kernels() -> None:
    """Make this process able to load and compile torchao int8 programs at full speed.

    ``import torchao`` registers the quantize/dequantize ops a ``.pt2`` refers to; the x86
    quantizer module registers inductor's int8 fusion passes (without it the compile succeeds
    but runs reference kernels, ~5x slower); freezing lets inductor pack the int8 weights.
    """
    import torchao  # noqa: F401
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401

    enable_inductor_freezing()
    # Printed at every int8 compile by inductor's own lowering code: nothing a user can act on.
    warnings.filterwarnings(
        "ignore", message="To copy construct from a tensor", category=UserWarning
    )


def load_program(path: Path) -> torch.export.ExportedProgram:
    """A saved torch program (fp32 or int8), with the int8 kernels registered first."""
    enable_int8_kernels()  # an int8 program refers to torchao's ops: register them first
    try:
        program = torch.export.load(path)
    except Exception as error:
        raise ConfigError(
            f"{path} cannot be loaded as a torch program (torch.export.load: "
            f"{type(error).__name__}: {first_line(error)})."
        ) from error
    # A program converted from a graph captured in training mode may keep attention dropout.
    set_attention_dropout(program.graph_module, training=False)
    return program


def is_int8_program(program: torch.export.ExportedProgram) -> bool:
    """Whether ``program`` quantizes (an int8 model converted by torchao's PT2E flow)."""
    return any("quantize" in str(node.target) for node in program.graph.nodes)


def load_int8(path: str | os.PathLike[str], compile: bool = True) -> nn.Module:
    """Reload an int8 artifact written by a run, in eval mode on the CPU.

    Args:
        path: ``model_int8.pt2`` (pt2e) or ``model_int8.pt`` (fx) from a run folder.
        compile: for ``.pt2``, compile with inductor (int8 kernels; the first call per batch size
            compiles, ~15 s). Without it the program runs slow reference ops.
    """
    resolved = require_file(path, "path")
    if resolved.suffix == ".pt2":
        module = load_program(resolved).module()
        return torch.compile(module, dynamic=False) if compile else module
    saved = torch.load(resolved, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or CHECKPOINT_KEY not in saved:
        raise ConfigError(f"{path} is not an int8 model written by litcompress (fx backend).")
    meta = saved[CHECKPOINT_KEY]
    twin = rebuild_network(meta["model_config"], meta).cpu()
    with torch.no_grad():  # conversion needs observed ranges; the saved state replaces them
        twin(*InputSpec.of_record(meta).example(TRACE_BATCH, zeros=True))
    int8 = convert(twin)
    int8.load_state_dict(saved["state_dict"])
    return int8.eval()


def deploy_int8(
    module: L.LightningModule,
    data: L.LightningDataModule,
    output_dir: str | os.PathLike[str],
    backend: str,
    quantization_key: str,
    evaluate: bool,
    measure: bool,
    min_run_time_s: float = 1.0,
    time_torch: bool = True,
) -> ModelStats | None:
    """Convert ``module``'s fake-quantized network to int8, save it, reload it and measure it.

    Args:
        module: a :class:`~litcompress.module.ClassifierModule` whose network is a
            :class:`~litcompress.quant.fake_quant.FakeQuantNet` (trained or calibrated).
        data: the data module; its test split is used when ``evaluate``.
        output_dir: the run folder, where the artifact goes.
        backend: the backend that prepared the network.
        quantization_key: the form entry that records the quantization (the float network,
            measured beside the int8 one, is rebuilt without it).
        evaluate: measure the int8 model's test accuracy (on the CPU).
        measure: measure size and speed; return the report's ``after`` entry.
        min_run_time_s: timing budget per batch size.
        time_torch: time it in torch (compiled by inductor, ~15 s per batch size), beside the
            float network compiled; without it only its size and MACs are measured.

    Returns:
        the int8 model's statistics, or ``None`` when not ``measure``.
    """
    # Convert a CPU twin of the network: training may have been on a GPU.
    twin = cpu_twin(module.net, module.model_config, module.form)
    log.info("Converting the network to int8 (%s)", backend)
    int8 = convert(twin)
    float_form = {k: v for k, v in module.form.items() if k != quantization_key}
    return deliver_int8(
        int8,
        module,
        data,
        output_dir,
        backend,
        float_form,
        evaluate,
        measure,
        min_run_time_s,
        time_torch=time_torch,
    )


def quantization_histograms(float_net: nn.Module, int8: nn.Module) -> dict[str, torch.Tensor]:
    """What quantization did, for TensorBoard: the float weights of the layers it quantized
    (``float_net``'s matrices and kernels), the int8 values they became, and the float range each
    quantized activation covers (its scale times its number of steps) in the converted ``int8``
    graph (PT2E; a graph without such nodes gives empty histograms)."""
    weights = [p.detach().flatten() for p in float_net.parameters() if p.dim() > 1]
    int8_weights, ranges = [], []
    graph = getattr(int8, "graph", None)
    for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
        if node.op == "get_attr":
            value = int8
            for part in str(node.target).split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor) and value.dtype == torch.int8 and value.dim() > 1:
                int8_weights.append(value.flatten())
        name = str(node.target)
        quantizes = node.op == "call_function" and "quantize_per_tensor" in name
        # PT2E's decomposed op: (input, scale, zero_point, quant_min, quant_max, dtype).
        if quantizes and "dequant" not in name and len(node.args) >= 5:
            scale, _, low, high = node.args[1:5]
            if isinstance(scale, float):
                ranges.append(scale * (high - low))
    empty = torch.zeros(0)
    return {
        "quantization/weights_float": torch.cat(weights).cpu() if weights else empty,
        "quantization/weights_int8": torch.cat(int8_weights) if int8_weights else empty,
        "quantization/activation_ranges": torch.tensor(ranges),
    }


def deliver_int8(
    int8: nn.Module,
    module: L.LightningModule,
    data: L.LightningDataModule,
    output_dir: str | os.PathLike[str],
    backend: str,
    float_form: dict[str, Any],
    evaluate: bool,
    measure: bool,
    min_run_time_s: float = 1.0,
    method: str = "qat",
    time_torch: bool = True,
) -> ModelStats | None:
    """Save the int8 model ``int8`` of ``module``'s network, reload it and measure it.

    ``float_form``: the form of the float network it was made from (measured beside it);
    ``method``: how it was made (``qat``, ``ptq``), recorded in its metadata. Other arguments and
    the result as for :func:`deploy_int8`.
    """
    meta = {"model_config": module.model_config, **module.form}
    path = save_int8(int8, backend, Path(output_dir) / ARTIFACTS[backend], module.input_spec, meta)
    write_metadata(
        path,
        artifact_metadata(
            source="run",
            network=module.model_config["_target_"],
            precision="int8",
            runtime="torch",
            inputs=module.checkpoint_extras.get("inputs"),
            input_spec=module.input_spec,
            data=module.checkpoint_extras.get("data"),
            backend=backend,
            method=method,
        ),
    )
    log.info("Saved the int8 model to %s", path)
    if has_tensorboard(module.loggers):
        histograms = quantization_histograms(module.net, int8)
        log_histograms(module.loggers, histograms, module.global_step)
    # Measure what was saved, loaded the way a user loads it.
    deployed = load_int8(path)
    inputs = module.input_spec
    test_acc = None
    if evaluate:
        # As many batches as trainer.test saw (limit_test_batches), for a like-for-like figure.
        batches = module.trainer.num_test_batches if module._trainer else []
        limit = batches[0] if batches else None
        # Texts padded to one length: the compiled int8 model compiles once, not per length.
        length = inputs.max_length if inputs.kind == "tokens" else None
        test_acc = evaluate_cpu(
            deployed, data.test_dataloader(), module.num_classes, limit, length=length
        )
        log.info("int8 test accuracy: %.4f", test_acc)
        for logger in module.loggers:
            logger.log_metrics({"int8/test_acc": test_acc}, step=module.global_step)
    if not measure:
        return None
    float_net = rebuild_network(module.model_config, float_form).eval()
    stats = ModelStats(
        test_acc=test_acc,
        params=count_params(float_net),
        macs=count_macs(float_net, inputs),
        file_bytes=path.stat().st_size,
        latency_ms_b1=None,  # timed below, or not in torch (report.time_torch=false)
        latency_ms_b32=None,
        extra={
            "int8_backend": backend,
            "int8_artifact": path.name,
            # The artifact also holds the program; these are its tensors alone.
            "int8_weights_bytes": state_dict_bytes(int8),
            "fp32_file_bytes": state_dict_bytes(float_net),
        },
    )
    if time_torch:
        enable_int8_kernels()
        fp32_compiled = torch.compile(float_net, dynamic=False)
        for batch in (1, 32):
            latency = measure_latency_ms(deployed, inputs, batch, min_run_time_s)
            setattr(stats, f"latency_ms_b{batch}", latency)
            stats.extra[f"fp32_compiled_latency_ms_b{batch}"] = measure_latency_ms(
                fp32_compiled, inputs, batch, min_run_time_s
            )
        stats.model = deployed  # timed again beside the network that entered the run
    notes = int8_notes(stats)
    for note in notes:
        log.warning("%s", note)
    if notes:
        stats.extra["notes"] = notes
    return stats


def int8_notes(stats: ModelStats) -> list[str]:
    """What a user must know when the int8 model is no gain: slower or larger than fp32."""
    notes = []
    fp32_ms = stats.extra.get("fp32_compiled_latency_ms_b32")
    if fp32_ms is not None and stats.latency_ms_b32 > fp32_ms:
        vnni = "" if cpu_has_vnni() else " This CPU has no VNNI int8 instructions."
        notes.append(
            f"The int8 model is slower than the same network in fp32 compiled at batch 32 "
            f"({stats.latency_ms_b32:.2f} ms against {fp32_ms:.2f} ms): its int8 kernels do not "
            f"pay off for these layers on this CPU.{vnni} Deploy the fp32 network, or measure on "
            f"the CPU you deploy on."
        )
    if stats.file_bytes > stats.extra["fp32_file_bytes"]:
        notes.append(
            f"The int8 artifact ({stats.file_bytes:,} bytes) is larger than the fp32 weights "
            f"({stats.extra['fp32_file_bytes']:,} bytes): the saved program outweighs what int8 "
            f"weights save ({stats.extra['int8_weights_bytes']:,} bytes of tensors)."
        )
    return notes
