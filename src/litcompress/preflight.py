"""Checks before any work: options that could never work are refused with one paragraph that
names the option, the value and the fix, before data or a network is built."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from litcompress.checkpoint import CHECKPOINT_KEY, read_checkpoint, require_file
from litcompress.deploy.formats import check_formats, check_runtime
from litcompress.errors import ConfigError
from litcompress.report import REPORT_FIGURES
from litcompress.resume import AUTO_RESUME, auto_resume_path


def check_inputs(cfg: DictConfig) -> dict[str, Any] | None:
    """Checks that need no data or model, done before anything is built.

    Returns the litcompress record of the checkpoint a resumed run starts from (``None`` for a new
    run).
    """
    if in_hydra_multirun() and str(cfg.trainer.get("strategy", "")).startswith("ddp"):
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
    time_torch = cfg.report.get("time_torch", True)
    if not isinstance(time_torch, bool):
        raise ConfigError(
            f"report.time_torch={time_torch!r} must be true or false (whether the delivered model "
            f"is also timed in torch)."
        )
    check_optimized_metric(cfg.optimized_metric, cfg.report.enabled, time_torch)
    check_formats(cfg.get("export") or [], "export")
    runtime = cfg.report.get("runtime", "torch")
    check_runtime(runtime)
    if runtime != "torch" and not cfg.report.enabled:
        raise ConfigError(
            f"report.runtime={runtime} times the delivered model in {runtime} for the report, but "
            f"report.enabled=false: enable the report, or set report.runtime=torch."
        )
    if not time_torch and runtime == "torch":
        raise ConfigError(
            "report.time_torch=false with report.runtime=torch would time no delivered model: "
            "set report.runtime=onnxruntime or openvino (timed there only), or keep "
            "report.time_torch=true."
        )
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


# Report figures of the delivered model timed in torch (none with report.time_torch=false), and
# their counterparts timed in report.runtime.
TORCH_TIMED = {
    "report/after_latency_ms_b1": "report/runtime_latency_ms_b1",
    "report/after_latency_ms_b32": "report/runtime_latency_ms_b32",
    "report/speedup_b1": "report/runtime_speedup_b1",
    "report/speedup_b32": "report/runtime_speedup_b32",
}


def check_optimized_metric(names: Any, report_enabled: bool, time_torch: bool = True) -> None:
    """Refuse report figures as sweep objectives that this run cannot produce, before training."""
    for name in metric_names(names):
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
        if not time_torch and name in TORCH_TIMED:
            raise ConfigError(
                f"optimized_metric={name} times the delivered model in torch, but "
                f"report.time_torch=false: optimize {TORCH_TIMED[name]} (timed in "
                f"report.runtime), or set report.time_torch=true."
            )


def in_hydra_multirun(basic_launcher: bool = True) -> bool:
    """Whether this is a job of a Hydra sweep (with ``basic_launcher``: of one whose jobs run in
    this process, one after the other)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    basic = "BasicLauncher" in str(hydra_cfg.launcher.get("_target_", ""))
    return hydra_cfg.mode == RunMode.MULTIRUN and (basic or not basic_launcher)


def metric_names(names: Any) -> list[str]:
    """``optimized_metric`` as a list: one name, a list of names, or none."""
    return [names] if isinstance(names, str) else list(names or [])
