"""One run: build everything from the composed config, fit, test, measure and report."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    ProgressBar,
)
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from litcompress.callbacks import EpochSeed
from litcompress.checkpoint import (
    CHECKPOINT_KEY,
    OWNERS_KEY,
    build_network,
    checkpoint_problem,
    form_of,
    form_record,
    read_checkpoint,
    readable_checkpoints,
    rebuild_network,
    require_file,
    technique_of,
)
from litcompress.cluster import cluster_plugins
from litcompress.compress.base import CompressionCallback
from litcompress.data.base import ClassificationData
from litcompress.deploy.export import attach_report, check_formats, export_run, failed_exports
from litcompress.errors import ConfigError, ExportError, JobFailed, OutputError, first_line
from litcompress.module import ClassifierModule
from litcompress.outputs import (
    AtomicCheckpointIO,
    check_free_space,
    check_writable,
    claim_checkpoint_folder,
    disk_failure,
    disk_failure_message,
    output_folders,
    release_room,
    reserve_room,
)
from litcompress.report import (
    REPORT_FIGURES,
    ModelStats,
    measure_latency_ms,
    measure_size,
    report_figures,
    state_dict_bytes,
    time_side_by_side,
    write_report,
)
from litcompress.resolvers import register as register_resolvers
from litcompress.run_folder import first_process

log = logging.getLogger(__name__)

# Entry of a checkpoint's litcompress record: the run's compress options (unresolved).
COMPRESS_KEY = "compress"


def build(config: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a ConfigError from the target surface unwrapped."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        target = config.get("_target_") if hasattr(config, "get") else None
        if target and str(error).startswith("Error locating target"):
            module = str(target).rpartition(".")[0]
            raise ConfigError(
                f"_target_: {target} cannot be imported ({type(cause).__name__}: {cause}). A "
                f"class or function in your own file must be importable as {module}: add the "
                f"folder that holds {module.replace('.', '/')}.py to PYTHONPATH (e.g. "
                f"PYTHONPATH=~/my_models python train.py ...), or fix the name."
            ) from None
        raise


def model_config(cfg: DictConfig, data: ClassificationData) -> dict[str, Any]:
    """The network's full config: the ``model`` group completed with what the data supplies."""
    config = OmegaConf.to_container(cfg.model, resolve=True)
    config.pop("_partial_", None)
    config.update(
        num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size
    )
    return config


def build_module(cfg: DictConfig, data: ClassificationData) -> ClassifierModule:
    """The classifier, with a fresh network or the one of ``init_from``."""
    if cfg.init_from:
        checkpoint = read_checkpoint(cfg.init_from, "init_from")
        net_config = checkpoint[CHECKPOINT_KEY]["model_config"]
        trained_classes = net_config["num_classes"]
        if trained_classes != data.num_classes:
            raise ConfigError(
                f"init_from={cfg.init_from} holds a network for {trained_classes} classes, but the "
                f"data ({cfg.data._target_}) has {data.num_classes}. Train on the same data, or "
                f"start from scratch (init_from=null)."
            )
        for key, what in (("in_channels", "channels"), ("image_size", "image size")):
            if net_config.get(key) != getattr(data, key):
                raise ConfigError(
                    f"init_from={cfg.init_from} holds a network trained on images with {what} "
                    f"{net_config.get(key)}, but the data ({cfg.data._target_}) has {what} "
                    f"{getattr(data, key)}. Fine-tune on data of the same {what} (e.g. "
                    f"data.image_size={net_config.get('image_size')} where the data module "
                    f"resizes), or start from scratch (init_from=null)."
                )
        meta = checkpoint[CHECKPOINT_KEY]
        form = form_of(meta)
        chosen = set(cfg.compress or {})
        for key in form:
            technique = technique_of(key, meta.get(OWNERS_KEY))
            if technique.form_needs_deploy and technique.name not in chosen:
                raise ConfigError(
                    f"init_from={cfg.init_from} is a checkpoint of a network in the form "
                    f"compress={technique.name} gives it ({key}), which only that technique turns "
                    f"into a deliverable model: go on with compress={technique.name}, or use the "
                    f"model its run delivered ({technique.delivered_hint})."
                )
        net = build_network(checkpoint)
        log.info("Starting from the weights of %s (%s)", cfg.init_from, net_config["_target_"])
    else:
        net_config = model_config(cfg, data)
        net = build(net_config)
    module = ClassifierModule(
        net,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler, _convert_="all") if cfg.scheduler else None,
        num_classes=data.num_classes,
        model_config=net_config,
        pretrained=bool(cfg.init_from),
        **cfg.module,
    )
    if cfg.init_from:  # the new run's checkpoints must record the (pruned) architecture too
        module.form = form
    return module


def build_compression(cfg: DictConfig) -> list[CompressionCallback]:
    """The compression callbacks of ``compress=[...]``, ordered by their techniques' ``order``."""
    callbacks = []
    for name, config in (cfg.get("compress") or {}).items():
        callback = build(config)
        if not isinstance(callback, CompressionCallback):
            raise ConfigError(
                f"compress.{name} builds a {type(callback).__name__} ({config.get('_target_')}), "
                f"which is not a litcompress.compress.CompressionCallback: a compression "
                f"technique must subclass it (see the README, 'Writing a compression callback')."
            )
        callbacks.append(callback)
    return sorted(callbacks, key=lambda c: c.order)


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[Callback]:
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not has_logger:
        # LearningRateMonitor refuses to run without a logger; there is nothing to monitor into.
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


def ui_switches(cfg: DictConfig, callbacks: list[Callback]) -> dict[str, bool]:
    """Leave the progress bar and the model summary to the config's callbacks.

    Lightning adds its own when none is among the callbacks, so `~callbacks.progress_bar` alone
    would swap the rich bar for a plain one instead of removing it. The model summary switch only
    adds Lightning's default summary (ours prints whatever it says), and on with ours present it
    says "Trainer already configured with model summary callbacks": always off.
    """
    switches = {
        "enable_progress_bar": any(isinstance(c, ProgressBar) for c in callbacks),
        "enable_model_summary": False,
    }
    return {key: value for key, value in switches.items() if key not in cfg.trainer}


class ReportCallback(Callback):
    """Keeps the ``before`` figures and the form of the network as it entered the run in
    checkpoints, so that a resumed run reports the same (and times the same network)."""

    def __init__(self) -> None:
        self.before: dict[str, Any] | None = None
        self.before_form: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"before": self.before, "before_form": self.before_form}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = state_dict["before"]
        self.before_form = state_dict.get("before_form") or {}


# ckpt_path=auto: resume from the run folder's last.ckpt when there is one, else start (a job that
# a cluster requeued after a time limit or a preemption runs the same command again).
AUTO_RESUME = "auto"


def auto_resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint ``ckpt_path=auto`` resumes from, or ``None`` (a new run).

    The run folder's ``last.ckpt``; when it cannot be read (a node that died while writing it, a
    bad disk) or is missing, the newest checkpoint of the run that reads whole, with a warning
    that says what was skipped and why: the epochs after it are trained again.

    Raises:
        ConfigError: the run writes no checkpoints, or none of its checkpoints can be read.
    """
    folder = output_folders(cfg).get("callbacks.model_checkpoint.dirpath")
    if folder is None:
        raise ConfigError(
            "ckpt_path=auto resumes from the run's checkpoints/last.ckpt, but this run writes no "
            "checkpoints (callbacks.model_checkpoint is off): keep it, or give a checkpoint path."
        )
    last = folder / "last.ckpt"
    present = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
    if not present:
        log.info("ckpt_path=auto: no %s yet, starting the run", last)
        return None
    if last.is_file() and checkpoint_problem(last) is None:
        log.info("ckpt_path=auto: resuming from %s", last)
        return str(last)
    readable = readable_checkpoints(folder)
    taken = {checkpoint.path for checkpoint in readable}
    unreadable = [path for path in present if path not in taken]
    skipped = [f"{path.name}: {checkpoint_problem(path)}" for path in unreadable]
    if not last.is_file():
        skipped.insert(0, f"{last.name}: missing")
    if readable:
        if first_process():  # out of Lightning's way (it would write last-v1.ckpt beside it)
            skipped += [f"kept as {_set_aside(path).name}" for path in unreadable]
        log.warning(
            "ckpt_path=auto: resuming from %s, the newest checkpoint of %s that reads whole, and "
            "not from %s (skipped: %s). The epochs after it are trained again; from it, the "
            "resume is exact.",
            readable[0],
            folder,
            last.name,
            "; ".join(skipped),
        )
        return str(readable[0].path)
    if cfg.get("overwrite"):
        log.warning(
            "ckpt_path=auto: no checkpoint of %s can be read (%s); overwrite=true: the run "
            "starts again and deletes them.",
            folder,
            "; ".join(skipped),
        )
        return None
    raise ConfigError(
        f"ckpt_path=auto: no checkpoint in {folder} can be read ({'; '.join(skipped)}), so the "
        f"run cannot resume. Start it again in that folder with overwrite=true (which deletes "
        f"them), or in a new folder."
    )


def _set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint to ``<name>.unreadable`` (kept, no longer a .ckpt)."""
    aside = path.with_name(f"{path.name}.unreadable")
    for number in range(1, 1000):
        if not aside.exists():
            break
        aside = path.with_name(f"{path.name}.unreadable-{number}")
    path.rename(aside)
    return aside


def check_inputs(cfg: DictConfig) -> dict[str, Any] | None:
    """Checks that need no data or model, done before anything is built.

    Returns the litcompress record of the checkpoint a resumed run starts from (``None`` for a new
    run).
    """
    if _in_hydra_multirun() and str(cfg.trainer.get("strategy", "")).startswith("ddp"):
        # Lightning restarts train.py once per extra rank with the original arguments, `-m` and
        # all, so every rank would start the whole sweep again.
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.strategy} cannot run inside a `-m` sweep with Hydra's "
            f"basic launcher. Run each DDP job on its own (python train.py trainer=ddp ...), or "
            f"sweep with a launcher that starts one process per job: add cluster=local "
            f"(submitit, on this machine) or cluster=slurm."
        )
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: no value given, and the chosen config needs one (e.g. "
            f"data=imagefolder needs data.data_dir=<your image folder>). Add "
            f"{' '.join(f'{key}=...' for key in missing)} to the command line."
        )
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed={cfg.seed!r} is not an integer: use e.g. seed=42.")
    check_optimizer(cfg.get("optim"))
    if cfg.ckpt_path == AUTO_RESUME:
        with open_dict(cfg):
            cfg.ckpt_path = auto_resume_path(cfg)
    resumed = None
    if cfg.ckpt_path:  # readable, and written by litcompress
        resumed = read_checkpoint(cfg.ckpt_path, "ckpt_path")[CHECKPOINT_KEY]
    if cfg.init_from:
        require_file(cfg.init_from, "init_from")
    min_run_time = cfg.report.get("min_run_time_s")
    if (
        isinstance(min_run_time, bool)
        or not isinstance(min_run_time, int | float)
        or (min_run_time <= 0)
    ):
        raise ConfigError(
            f"report.min_run_time_s={min_run_time!r} must be a positive number of seconds (how "
            f"long each latency is measured, e.g. 1.0); to measure nothing, report.enabled=false."
        )
    check_optimized_metric(cfg.optimized_metric, cfg.report.enabled)
    check_formats(cfg.get("export") or [], "export")
    if cfg.ckpt_path and cfg.init_from:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} (resume) and init_from={cfg.init_from} (new run from "
            f"trained weights) exclude each other: set only one."
        )
    return resumed


def check_optimizer(optim: DictConfig | None) -> None:
    """Refuse optimizer settings no optimizer takes (torch says so only once training starts)."""
    if not optim:
        return
    for key, least in (("lr", 0.0), ("weight_decay", 0.0), ("momentum", 0.0)):
        value = optim.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"optim.{key}={value!r} is not a number.")
        if value < least or (key == "lr" and value == 0):
            need = "a positive number (e.g. optim.lr=1e-3)" if key == "lr" else "0 or more"
            raise ConfigError(f"optim.{key}={value} must be {need}.")


def resume_techniques(cfg: DictConfig, resumed: dict[str, Any]) -> None:
    """A resumed run goes on with the techniques of the run it resumes, with their settings.

    Without ``compress`` options the checkpoint's are taken (a run resumed by a cluster's requeue,
    or by hand with only ``ckpt_path``); other ones are refused: a technique's schedule and state
    belong to the run that started it.
    """
    saved = resumed.get(COMPRESS_KEY)
    if saved is None:  # a checkpoint of an older litcompress: it does not say
        return
    given = compress_options(cfg)
    if given == saved:
        return
    if not given:
        log.info("Resuming with the run's techniques: compress=[%s]", ",".join(saved))
        with open_dict(cfg):
            cfg.compress = saved
        return
    if set(given) != set(saved):
        asked = f"compress=[{','.join(given)}], but the run used compress=[{','.join(saved)}]"
    else:
        changed = [
            f"compress.{name}.{key}: {saved[name].get(key)!r} in the checkpoint, "
            f"{given[name].get(key)!r} here"
            for name in saved
            for key in sorted({*saved[name], *given[name]})
            if saved[name].get(key) != given[name].get(key)
        ]
        asked = f"other technique settings ({'; '.join(changed)})"
    raise ConfigError(
        f"ckpt_path={cfg.ckpt_path} resumes a run, and this command asks for {asked}: a resumed "
        f"run goes on with its own techniques and settings. Drop the compress options (they are "
        f"taken from the checkpoint), or start a new run from its weights with "
        f"init_from={cfg.ckpt_path}."
    )


def compress_options(cfg: DictConfig) -> dict[str, Any]:
    """The run's ``compress`` options as plain values, interpolations kept (``${init_from}``)."""
    compress = cfg.get("compress")
    return OmegaConf.to_container(compress, resolve=False) if compress else {}


def check_resume(resumed: dict[str, Any], checkpoint_path: str, net_config: dict) -> None:
    """Refuse to resume from a checkpoint of another network or other data, before fitting (the
    state-dict mismatch would come after the data is loaded, as a traceback)."""
    saved = resumed["model_config"]
    differences = [  # keys of one side only: another litcompress version's defaults
        f"{key}: {saved[key]!r} in the checkpoint, {net_config[key]!r} here"
        for key in sorted(set(saved) & set(net_config))
        if saved[key] != net_config[key]
    ]
    if differences:
        raise ConfigError(
            f"ckpt_path={checkpoint_path} is a checkpoint of another network or other data than "
            f"this run builds ({'; '.join(differences)}). Resume with the model and data options "
            f"of the run that wrote it (its .hydra/overrides.yaml lists them), or start a new run "
            f"from its weights with init_from=."
        )


def check_optimized_metric(names: Any, report_enabled: bool) -> None:
    """Refuse report figures as sweep objectives that this run cannot produce, before training."""
    for name in _metric_names(names):
        if not str(name).startswith("report/"):
            continue  # logged metrics are checked at the end, against what was logged
        if name not in REPORT_FIGURES:
            raise ConfigError(
                f"optimized_metric={name} is not a report figure; choose among "
                f"{', '.join(REPORT_FIGURES)}, or a logged metric such as val/acc_best."
            )
        if not report_enabled:
            raise ConfigError(
                f"optimized_metric={name} is a report figure, but report.enabled=false: enable the "
                f"report, or optimize a logged metric such as val/acc_best."
            )


def _in_hydra_multirun(basic_launcher: bool = True) -> bool:
    """Whether this is a job of a Hydra sweep (with ``basic_launcher``: of one whose jobs run in
    this process, one after the other)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    basic = "BasicLauncher" in str(hydra_cfg.launcher.get("_target_", ""))
    return hydra_cfg.mode == RunMode.MULTIRUN and (basic or not basic_launcher)


def best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return "best"
    return None


def metric(trainer: L.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def run(cfg: DictConfig, extra_callbacks: list[Callback] | None = None) -> float | None:
    """Train, test and report as ``cfg`` says; returns ``cfg.optimized_metric`` (for sweepers).

    ``extra_callbacks`` are added to the configured ones (for programmatic use, e.g. benchmarks).
    """
    register_resolvers()  # for configs composed outside train.py (the compose API, benchmarks)
    resumed = check_inputs(cfg)
    if resumed is not None:
        resume_techniques(cfg, resumed)
    # A task of a local submitit job: its processes and ranks are submitit's (cluster.py).
    cluster = cluster_plugins()
    folders = output_folders(cfg)
    check_writable(folders)
    L.seed_everything(cfg.seed, workers=True)
    data: ClassificationData = build(cfg.data)
    data.shuffle_seed = cfg.seed
    if rank_zero_only.rank == 0:
        # Find missing files or failed downloads now, not after the first measurements.
        data.prepare_data()
    module = build_module(cfg, data)
    if resumed is not None:
        check_resume(resumed, cfg.ckpt_path, module.model_config)
    checkpoints = folders.get("callbacks.model_checkpoint.dirpath")
    if checkpoints is not None:
        # Weights and optimizer state (two moments for Adam): about three copies of the weights.
        check_free_space(checkpoints, 3 * state_dict_bytes(module.net))
        if rank_zero_only.rank == 0:
            claim_checkpoint_folder(checkpoints, bool(cfg.ckpt_path), bool(cfg.get("overwrite")))
    # Checkpoints and exported models record how images were prepared, and the class names.
    module.checkpoint_extras.update(
        inputs=data.inputs_record(),
        data=OmegaConf.to_container(cfg.data, resolve=True),
        # The techniques and their settings, so that a resumed run goes on with them.
        **{COMPRESS_KEY: compress_options(cfg)},
    )

    loggers: list[Logger] = [build(c) for c in (cfg.get("logger") or {}).values() if c]
    report_callback = ReportCallback()
    compression = build_compression(cfg)
    callbacks = [
        report_callback,
        *build_callbacks(cfg, bool(loggers)),
        *compression,
        *(extra_callbacks or []),
        EpochSeed(cfg.seed),  # last: seeds after the other callbacks' epoch-start work
    ]
    trainer: L.Trainer = build(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        **ui_switches(cfg, callbacks),
        # A full disk leaves the checkpoints written before whole (outputs.AtomicCheckpointIO).
        plugins=[*cluster, AtomicCheckpointIO()],
    )

    if not cfg.ckpt_path:  # a resumed run gets its `before` back from the checkpoint
        before_acc = None
        if cfg.init_from and cfg.test:
            module.test_prefix = "before"
            trainer.test(module, datamodule=data, verbose=False)
            module.test_prefix = "test"
            before_acc = metric(trainer, "before/acc")
        # DDP children are started by fit: before it, only the env-derived rank tells them apart.
        if rank_zero_only.rank == 0 and cfg.report.enabled:
            # Its speed is timed at the end, beside the final network (a rebuilt twin).
            before = measure_size(module.net, data.input_shape, before_acc)
            report_callback.before = before.to_dict()
            report_callback.before_form = copy.deepcopy(form_record(module.form))

    # Set before fit (not passed to it) so that the callbacks' setup knows the run resumes.
    trainer.ckpt_path = cfg.ckpt_path
    trainer.fit(module, datamodule=data, weights_only=True)
    trainer.ckpt_path = None
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    test_acc = None
    if cfg.test:
        trainer.test(module, datamodule=data, ckpt_path=best_checkpoint(trainer), weights_only=True)
        test_acc = metric(trainer, "test/acc")

    after, exports = None, {}
    if trainer.is_global_zero:
        after = deploy(cfg, module, data, compression, test_acc)
        if cfg.export:
            exports = export_run(
                cfg.export,
                module,
                data,
                Path(cfg.paths.output_dir),
                after if cfg.report.enabled else None,
                cfg.report.min_run_time_s,
            )
    metrics = {**fit_metrics, **{k: float(v) for k, v in trainer.callback_metrics.items()}}
    if trainer.is_global_zero and cfg.report.enabled and report_callback.before is not None:
        entries = {}
        for callback in compression:
            entries.update(callback.report_entries())
        before = ModelStats(**report_callback.before)
        timing = time_before_and_after(
            before, after, module, report_callback.before_form, data.input_shape, cfg
        )
        report = write_report(
            before,
            after,
            data.input_shape,
            Path(cfg.paths.output_dir) / "report.json",
            loggers=trainer.loggers,
            hparams=OmegaConf.to_container(cfg, resolve=True),
            step=trainer.global_step,
            model=module.model_config["_target_"],
            compress=sorted((cfg.get("compress") or {}).keys()),
            epochs=trainer.current_epoch,
            delivered=delivered(trainer, Path(cfg.paths.output_dir), after, bool(cfg.test)),
            timing=timing,
            **({"export": exports} if exports else {}),
            **entries,
        )
        metrics.update(report_figures(report))
        attach_report(Path(cfg.paths.output_dir), report)
    failed = failed_exports(exports)
    if failed:  # after everything else is saved: the exit status says what was not delivered
        raise ExportError("; ".join(failed))
    trained = any(key.startswith("val/") for key in fit_metrics)
    return optimized_value(cfg.optimized_metric, metrics, trained)


def time_before_and_after(
    before: ModelStats,
    after: ModelStats,
    module: ClassifierModule,
    before_form: dict[str, Any],
    input_shape: tuple[int, ...],
    cfg: DictConfig,
) -> dict[str, Any]:
    """The speed of the network that entered the run against the delivered one, timed side by
    side now (one time window: the speed-up does not depend on when each was measured).

    The entering network is rebuilt in its form (latency does not depend on the weights' values).
    A technique whose delivered statistics carry no runnable model keeps its own latencies.
    """
    log.info("Timing the network that entered the run beside the delivered one")
    before_net = rebuild_network(module.model_config, before_form).eval()
    if after.model is not None:
        return time_side_by_side(before, after, before_net, input_shape, cfg.report.min_run_time_s)
    for batch in (1, 32):
        latency = measure_latency_ms(before_net, input_shape, batch, cfg.report.min_run_time_s)
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
    for name in _metric_names(names):
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


def _metric_names(names: Any) -> list[str]:
    """``optimized_metric`` as a list: one name, a list of names, or none."""
    return [names] if isinstance(names, str) else list(names or [])


def deploy(
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
        )
        if after is not None:
            after.extra["trained_test_acc"] = test_acc  # before conversion (e.g. fake-quantized)
            return after
    if not cfg.report.enabled:
        return None
    # Its latency is timed beside the network that entered the run (time_before_and_after).
    return measure_size(module.net, data.input_shape, test_acc=test_acc)


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
    if _in_hydra_multirun(basic_launcher=False):
        raise JobFailed(f"{type(error).__name__}: {first_line(error)}") from None
    raise SystemExit(code) from None
