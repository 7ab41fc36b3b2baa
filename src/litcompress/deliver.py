"""What a run delivers: the network measured as it entered, the model as it will be deployed
(a technique's int8 program, or the trained network), the report that sets one against the
other, and the value a sweeper gets back."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from litcompress.callbacks import ReportCallback
from litcompress.checkpoint import form_record, rebuild_network
from litcompress.compress.base import CompressionCallback
from litcompress.data.base import ClassificationData
from litcompress.deploy.formats import RUNTIME_FORMATS
from litcompress.errors import ConfigError
from litcompress.measure import ModelStats, measure_latency_ms, measure_size, time_side_by_side
from litcompress.module import ClassifierModule
from litcompress.preflight import metric_names
from litcompress.report import runtime_entry, write_report
from litcompress.spec import InputSpec

log = logging.getLogger(__name__)


def measure_entering(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: ClassifierModule,
    data: ClassificationData,
    report_callback: ReportCallback,
) -> None:
    """The ``before`` of the report: the network as it entered the run, tested when it came
    trained (``init_from``); its speed is timed at the end, beside the delivered one. A resumed
    run gets its ``before`` back from the checkpoint instead."""
    before_acc = None
    if cfg.init_from and cfg.test:
        module.test_prefix = "before"
        trainer.test(module, datamodule=data, verbose=False)
        module.test_prefix = "test"
        before_acc = metric(trainer, "before/acc")
    # DDP children are started by fit: before it, only the env-derived rank tells them apart.
    if rank_zero_only.rank == 0 and cfg.report.enabled:
        before = measure_size(module.net, data.input_spec, before_acc)
        report_callback.before = before.to_dict()
        report_callback.before_form = copy.deepcopy(form_record(module.form))


def report_run(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: ClassifierModule,
    data: ClassificationData,
    compression: list[CompressionCallback],
    report_callback: ReportCallback,
    after: ModelStats | None,
    exports: dict[str, Any],
) -> dict[str, Any]:
    """Time the entering network beside the delivered one, then write ``report.json`` (and show
    it on the console and in the loggers) with every technique's entry and the exports."""
    entries = {}
    for callback in compression:
        entries.update(callback.report_entries())
    before = ModelStats(**report_callback.before)
    timing = time_before_and_after(
        before, after, module, report_callback.before_form, data.input_spec, cfg
    )
    runtime = cfg.report.get("runtime", "torch")
    fmt = RUNTIME_FORMATS[runtime]
    if fmt is None or not exports.get(fmt, {}).get("error"):
        entries["runtime"] = runtime_entry(
            runtime, before, after, exports.get(fmt) if fmt else None
        )
    output_dir = Path(cfg.paths.output_dir)
    return write_report(
        before,
        after,
        data.input_spec,
        output_dir / "report.json",
        loggers=trainer.loggers,
        hparams=OmegaConf.to_container(cfg, resolve=True),
        step=trainer.global_step,
        model=module.model_config["_target_"],
        compress=sorted((cfg.get("compress") or {}).keys()),
        epochs=trainer.current_epoch,
        delivered=delivered(trainer, output_dir, after, bool(cfg.test)),
        timing=timing,
        **({"export": exports} if exports else {}),
        **entries,
    )


def deliver(
    cfg: DictConfig,
    module: ClassifierModule,
    data: ClassificationData,
    compression: list[CompressionCallback],
    test_acc: float | None,
) -> ModelStats | None:
    """The final network as it will be deployed, measured when the report is enabled.

    A technique that turns the trained network into another artifact (QAT: an int8 model) does so
    here and measures that; otherwise the trained network itself is measured.
    """
    for callback in compression:
        after = callback.deploy(
            module,
            data,
            cfg.paths.output_dir,
            evaluate=test_acc is not None,
            measure=cfg.report.enabled,
            min_run_time_s=cfg.report.min_run_time_s,
            time_torch=cfg.report.get("time_torch", True),
        )
        if after is not None:
            after.extra["trained_test_acc"] = test_acc  # before conversion (e.g. fake-quantized)
            return after
    if not cfg.report.enabled:
        return None
    # Its latency is timed beside the network that entered the run (time_before_and_after).
    return measure_size(module.net, data.input_spec, test_acc=test_acc)


def time_before_and_after(
    before: ModelStats,
    after: ModelStats,
    module: ClassifierModule,
    before_form: dict[str, Any],
    inputs: InputSpec,
    cfg: DictConfig,
) -> dict[str, Any]:
    """The speed of the network that entered the run against the delivered one, timed side by
    side now (one time window: the speed-up does not depend on when each was measured).

    The entering network is rebuilt in its form (latency does not depend on the weights' values).
    A technique whose delivered statistics carry no runnable model keeps its own latencies; with
    ``report.time_torch=false`` the delivered model is not timed in torch (its runtime's export
    is) and the entering network is timed alone.
    """
    time_torch = cfg.report.get("time_torch", True)
    log.info(
        "Timing the network that entered the run%s",
        " beside the delivered one" if time_torch else " (the delivered one: in its runtime)",
    )
    before_net = rebuild_network(module.model_config, before_form).eval()
    if after.model is not None and time_torch:
        return time_side_by_side(before, after, before_net, inputs, cfg.report.min_run_time_s)
    for batch in (1, 32):
        latency = measure_latency_ms(before_net, inputs, batch, cfg.report.min_run_time_s)
        setattr(before, f"latency_ms_b{batch}", latency)
    return {"method": "separate"}


def delivered(
    trainer: L.Trainer, output_dir: Path, after: ModelStats | None, tested: bool
) -> dict[str, Any]:
    """Where the model this run delivers is, relative to the run folder: its checkpoint (the best
    one, which testing loaded; without testing the network stays as fit left it: the last) and
    the artifact a technique made of it (the int8 model)."""
    callback = trainer.checkpoint_callback
    checkpoint = None
    if isinstance(callback, ModelCheckpoint):
        best = callback.best_model_path if tested else None
        checkpoint = best or callback.last_model_path or None
    return {
        "checkpoint": _relative(checkpoint, output_dir) if checkpoint else None,
        "artifact": (after.extra.get("int8_artifact") if after else None),
    }


def _relative(path: str, folder: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)


def optimized_value(
    names: Any, metrics: dict[str, float], trained: bool = True
) -> float | list[float] | None:
    """The value(s) of ``optimized_metric`` for sweepers: one name, or a list (multi-objective).

    ``trained``: this run trained (and validated) at least one epoch. A run that trained none
    (``trainer.max_epochs=0``, or resuming a finished run) did what it was asked: a training
    metric it could not log gives no value (``None``), not an error.
    """
    if not names:
        return None
    values = []
    for name in metric_names(names):
        if name not in metrics and not trained and not name.startswith("report/"):
            log.warning(
                "optimized_metric=%s has no value: this run trained no epoch (max_epochs reached "
                "or 0), so nothing logged it. The run's report and checkpoints are complete.",
                name,
            )
            return None
        if name not in metrics:
            raise ConfigError(
                f"optimized_metric={name} was not measured in this run; available: "
                f"{', '.join(sorted(metrics))}."
            )
        values.append(metrics[name])
    return values[0] if isinstance(names, str) else values


def best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return "best"
    return None


def metric(trainer: L.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)
