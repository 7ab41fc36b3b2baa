"""Hydra's ``instantiate`` for litcompress's configs: a ConfigError raised by the target surfaces
as it is, and a ``_target_`` that cannot be imported says how to make it importable."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from litcompress.errors import ConfigError


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
