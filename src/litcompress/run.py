"""One run, as the steps a user imagines: check, build, fit, test, deliver, report, export.

Each step lives below this module: the checks in :mod:`litcompress.preflight` and
:mod:`litcompress.resume`, the builders in :mod:`litcompress.build`, the output folders in
:mod:`litcompress.outputs`, the delivered model and the report in :mod:`litcompress.deliver`, the
exporters in :mod:`litcompress.deploy`. Nothing imports this module but ``train.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NoReturn

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from litcompress.build import (
    add_companions,
    build_compression,
    build_data,
    build_module,
    build_trainer,
)
from litcompress.cluster import cluster_plugins
from litcompress.deliver import (
    best_checkpoint,
    deliver,
    measure_entering,
    metric,
    optimized_value,
    report_run,
)
from litcompress.deploy.export import attach_report, export_run, failed_exports
from litcompress.deploy.formats import formats_to_export
from litcompress.errors import ConfigError, ExportError, JobFailed, OutputError, first_line
from litcompress.outputs import (
    check_writable,
    disk_failure,
    disk_failure_message,
    output_folders,
    prepare_checkpoint_folder,
    release_room,
    reserve_room,
)
from litcompress.preflight import check_inputs, in_hydra_multirun
from litcompress.report import report_figures
from litcompress.resolvers import register as register_resolvers
from litcompress.resume import (
    COMPANIONS_KEY,
    COMPRESS_KEY,
    check_resume,
    compress_options,
    resume_techniques,
)
from litcompress.run_folder import first_process
from litcompress.spec import RECORD_KEY as SPEC_KEY

log = logging.getLogger(__name__)


def run(cfg: DictConfig, extra_callbacks: list[Callback] | None = None) -> float | None:
    """Train, test and report as ``cfg`` says; returns ``cfg.optimized_metric`` (for sweepers).

    ``extra_callbacks`` are added to the configured ones (for programmatic use, e.g. benchmarks).
    """
    register_resolvers()  # for configs composed outside train.py (the compose API, benchmarks)

    # Check: what needs no data or network, before any work.
    resumed = check_inputs(cfg)
    if resumed is not None:
        resume_techniques(cfg, resumed)
        added = list(resumed.get(COMPANIONS_KEY) or [])
    else:
        added = add_companions(cfg)  # techniques the chosen ones ask for (depth: distill)
    cluster = cluster_plugins()  # a task of a local submitit job: its processes are submitit's
    folders = output_folders(cfg)
    check_writable(folders)

    # Build: data, network, techniques, trainer.
    L.seed_everything(cfg.seed, workers=True)
    data = build_data(cfg)
    if resumed is not None:  # inputs prepared as the run did (a text run's tokenizer)
        data.use_recorded_inputs(resumed.get("inputs"))
    if rank_zero_only.rank == 0:
        data.prepare_data()  # missing files or failed downloads now, not after measuring
    module = build_module(cfg, data)
    if resumed is not None:
        check_resume(resumed, cfg.ckpt_path, module.model_config)
    prepare_checkpoint_folder(cfg, folders, module.net)
    # Checkpoints and artifacts record how inputs were prepared and the class names, and the
    # techniques with their settings, so that a resumed run goes on with them.
    module.checkpoint_extras.update(
        inputs=data.inputs_record(),
        **{SPEC_KEY: data.input_spec.to_record()},
        data=OmegaConf.to_container(cfg.data, resolve=True),
        **{COMPRESS_KEY: compress_options(cfg), COMPANIONS_KEY: added},
    )
    compression = build_compression(cfg)
    trainer, report_callback = build_trainer(cfg, compression, cluster, extra_callbacks)
    if not cfg.ckpt_path:
        measure_entering(cfg, trainer, module, data, report_callback)

    # Fit (set before fit, not passed to it, so that the callbacks' setup knows the run resumes).
    trainer.ckpt_path = cfg.ckpt_path
    trainer.fit(module, datamodule=data, weights_only=True)
    trainer.ckpt_path = None
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    # Test the best checkpoint.
    test_acc = None
    if cfg.test:
        trainer.test(module, datamodule=data, ckpt_path=best_checkpoint(trainer), weights_only=True)
        test_acc = metric(trainer, "test/acc")

    # Deliver and export, on the first process.
    after, exports = None, {}
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        after = deliver(cfg, module, data, compression, test_acc)
        # What the run exports: the formats asked for, and the one report.runtime times.
        formats = formats_to_export(cfg.export or [], cfg.report.get("runtime", "torch"))
        if formats:
            measured = after if cfg.report.enabled else None
            exports = export_run(
                formats, module, data, output_dir, measured, cfg.report.min_run_time_s
            )

    # Report what the run gained and what it cost.
    metrics = {**fit_metrics, **{k: float(v) for k, v in trainer.callback_metrics.items()}}
    if trainer.is_global_zero and cfg.report.enabled and report_callback.before is not None:
        report = report_run(
            cfg, trainer, module, data, compression, report_callback, after, exports
        )
        metrics.update(report_figures(report))
        attach_report(output_dir, report)
    failed = failed_exports(exports)
    if failed:  # after everything else is saved: the exit status says what was not delivered
        raise ExportError("; ".join(failed))
    trained = any(key.startswith("val/") for key in fit_metrics)
    return optimized_value(cfg.optimized_metric, metrics, trained)


def main(cfg: DictConfig) -> float | None:
    """Entry point for ``train.py``: runs, and turns a ConfigError, a failed export or a full
    disk into one clear paragraph (logged, and in ``train.log``) and an exit status."""
    torch.set_float32_matmul_precision("high")
    # Room for the last words of a run whose disk fills, given back when it ends.
    reserve = reserve_room(Path(cfg.paths.output_dir)) if first_process() else None
    try:
        return run(cfg)
    except ConfigError as error:
        log.error("Configuration error: %s", error)
        _exit(2, error)
    except ExportError as error:
        log.error("The run finished and its results are saved, but an export failed: %s", error)
        _exit(1, error)
    except OutputError as error:
        log.error("%s", error)
        _exit(1, error)
    except Exception as error:
        failure = disk_failure(error)
        if failure is None:
            raise
        release_room(reserve)
        message = disk_failure_message(cfg, failure, _command_line_overrides())
        previous, logging.raiseExceptions = logging.raiseExceptions, False
        try:  # a train.log that still cannot be written: the console has the message
            log.error("%s", message)
        finally:
            logging.raiseExceptions = previous
        _exit(1, OutputError(message))
    finally:
        release_room(reserve)


def _command_line_overrides() -> list[str] | None:
    """The run's command-line options (Hydra's task overrides), ``None`` outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def _exit(code: int, error: Exception) -> NoReturn:
    """End with exit status ``code`` (the error is logged); a sweep's job fails instead, as any
    failing job does, so that the sweep goes on (SystemExit would end it) and reports it."""
    if in_hydra_multirun(basic_launcher=False):
        raise JobFailed(f"{type(error).__name__}: {first_line(error)}") from None
    raise SystemExit(code) from None
