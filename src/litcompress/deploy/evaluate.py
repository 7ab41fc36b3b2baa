"""Accuracy and latency of any artifact on a data set, measured as the run report measures them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from litcompress.data.base import ClassificationData
from litcompress.deploy.runtimes import Runtime
from litcompress.errors import ConfigError
from litcompress.instantiate import build
from litcompress.measure import cpu_info, evaluate_cpu, measure_latency_ms

# Where `litcompress` finds the Hydra configs (conf/) when it composes a `data=...` override.
CONFIG_DIR_ENV = "LITCOMPRESS_CONFIG_DIR"


def config_dir() -> Path:
    """The folder of ``train.yaml``: ``$LITCOMPRESS_CONFIG_DIR``, ``./conf`` or the source's."""
    candidates = [
        *([Path(os.environ[CONFIG_DIR_ENV])] if os.environ.get(CONFIG_DIR_ENV) else []),
        Path.cwd() / "conf",
        Path(__file__).resolve().parents[3] / "conf",
    ]
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return candidate.resolve()
    raise ConfigError(
        f"No litcompress config folder found (looked in {', '.join(map(str, candidates))}): run "
        f"from the project folder, or set {CONFIG_DIR_ENV} to the folder that holds train.yaml."
    )


def data_config(recorded: dict[str, Any] | None, overrides: list[str], artifact: str) -> DictConfig:
    """The data config: ``data=<group>`` overrides compose ``conf/``; ``data.<key>=<value>``
    overrides alone change the data config the artifact recorded.

    Raises:
        ConfigError: an override is not about ``data``, or no data is recorded or given.
    """
    for override in overrides:
        if not override.lstrip("+~").startswith("data"):
            raise ConfigError(
                f"{override}: only data overrides are taken here (data=<name>, data.<key>=<value>)."
            )
    try:
        if any(o.startswith("data=") for o in overrides):
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                return compose("train", overrides=overrides).data
        if recorded is None:
            raise ConfigError(
                f"{artifact} does not record its training data: name it, e.g. data=shapes or "
                f"data=imagefolder data.data_dir=<folder>."
            )
        config = OmegaConf.create(recorded)
        return OmegaConf.merge(config, OmegaConf.from_dotlist([o[5:] for o in overrides]))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"Bad data override ({' '.join(overrides)}): {error}") from error


def load_data(config: DictConfig, inputs: dict[str, Any] | None = None) -> ClassificationData:
    """The data module of ``config``, prepared as the artifact's ``inputs`` record says (a text
    network's tokenizer) and set up (its test split ready)."""
    data = build(config)
    if not isinstance(data, ClassificationData):
        raise ConfigError(
            f"data: {config.get('_target_')} is not a litcompress ClassificationData module."
        )
    data.use_recorded_inputs(inputs)
    data.prepare_data()
    data.setup("test")
    return data


def evaluate(runtime: Runtime, data: ClassificationData, min_run_time_s: float) -> dict[str, Any]:
    """Test accuracy on the whole test split, and CPU latency at batch 1 and 32."""
    if runtime.input_shape is not None and tuple(runtime.input_shape) != data.input_shape:
        raise ConfigError(
            f"{runtime.path} takes images of shape {tuple(runtime.input_shape)} (channels, height, "
            f"width), but the data gives {data.input_shape}: evaluate it on the data it was "
            f"trained for (data.image_size=... where the data module resizes)."
        )
    return {
        "artifact": str(runtime.path),
        "runtime": runtime.runtime,
        "precision": runtime.precision,
        "data": data.__class__.__name__,
        "test_images": len(data.test_set),
        "test_acc": evaluate_cpu(runtime, data.test_dataloader(), data.num_classes),
        "latency_ms_b1": measure_latency_ms(runtime, data.input_spec, 1, min_run_time_s),
        "latency_ms_b32": measure_latency_ms(runtime, data.input_spec, 32, min_run_time_s),
        "measured_on": cpu_info(),
    }
