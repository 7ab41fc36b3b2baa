"""Builders: the objects of a run from its composed config (data, network and LightningModule,
techniques, callbacks, loggers, trainer), each through Hydra's ``instantiate``."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import lightning as L
from hydra.utils import get_object, instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

from litcompress.callbacks import EpochSeed, ReportCallback
from litcompress.checkpoint import (
    CHECKPOINT_KEY,
    OWNERS_KEY,
    build_network,
    form_of,
    read_checkpoint,
)
from litcompress.compress.base import CompressionCallback
from litcompress.data.base import ClassificationData
from litcompress.errors import ConfigError
from litcompress.forms import technique_of
from litcompress.instantiate import build
from litcompress.module import ClassifierModule
from litcompress.outputs import AtomicCheckpointIO
from litcompress.spec import KIND_WORDS, InputSpec

log = logging.getLogger(__name__)


def model_config(cfg: DictConfig, data: ClassificationData) -> dict[str, Any]:
    """The network's full config: the ``model`` group completed with what the data supplies."""
    config = OmegaConf.to_container(cfg.model, resolve=True)
    config.pop("_partial_", None)
    config.update(num_classes=data.num_classes, **data.network_inputs())
    return config


def build_module(cfg: DictConfig, data: ClassificationData) -> ClassifierModule:
    """The classifier, with a fresh network or the one of ``init_from``."""
    if cfg.init_from:
        checkpoint = read_checkpoint(cfg.init_from, "init_from")
        # Inputs prepared as the network was trained on them (a text network's tokenizer).
        data.use_recorded_inputs(checkpoint[CHECKPOINT_KEY].get("inputs"))
        net_config = checkpoint[CHECKPOINT_KEY]["model_config"]
        trained_classes = net_config["num_classes"]
        if trained_classes != data.num_classes:
            raise ConfigError(
                f"init_from={cfg.init_from} holds a network for {trained_classes} classes, but the "
                f"data ({cfg.data._target_}) has {data.num_classes}. Train on the same data, or "
                f"start from scratch (init_from=null)."
            )
        trained_kind = InputSpec.of_record(checkpoint[CHECKPOINT_KEY]).kind
        if trained_kind != data.input_spec.kind:
            raise ConfigError(
                f"init_from={cfg.init_from} holds a network that takes {KIND_WORDS[trained_kind]}, "
                f"but the data ({cfg.data._target_}) gives {KIND_WORDS[data.input_spec.kind]}: "
                f"fine-tune it on data of its kind, or start from scratch (init_from=null)."
            )
        what_of = {"in_channels": "channels", "image_size": "image size"}
        for key, value in data.network_inputs().items():
            if net_config.get(key) == value:
                continue
            if key in what_of:
                what = what_of[key]
                raise ConfigError(
                    f"init_from={cfg.init_from} holds a network trained on images with {what} "
                    f"{net_config.get(key)}, but the data ({cfg.data._target_}) has {what} "
                    f"{value}. Fine-tune on data of the same {what} (e.g. "
                    f"data.image_size={net_config.get('image_size')} where the data module "
                    f"resizes), or start from scratch (init_from=null)."
                )
            raise ConfigError(
                f"init_from={cfg.init_from} holds a network built for {key}="
                f"{net_config.get(key)}, but the data ({cfg.data._target_}) gives {key}={value}. "
                f"Fine-tune with the tokenizer the network was trained with "
                f"(data.tokenizer=<its run>/tokenizer), or start from scratch (init_from=null)."
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
        check_model_kind(cfg.model, data)
        net_config = model_config(cfg, data)
        net = build(net_config)
    module = ClassifierModule(
        net,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler, _convert_="all") if cfg.scheduler else None,
        num_classes=data.num_classes,
        model_config=net_config,
        pretrained=bool(cfg.init_from),
        **module_options(cfg.module, data),
    )
    if cfg.init_from:  # the new run's checkpoints must record the (pruned) architecture too
        module.form = form
    return module


def check_model_kind(model: DictConfig, data: ClassificationData) -> None:
    """Refuse a network whose constructor takes the other kind of input (an image network on
    text data, or the reverse) before it is built, with the models that fit."""
    target = model.get("_target_")
    try:
        parameters = inspect.signature(get_object(str(target))).parameters
    except Exception:  # not importable: build() says so; no signature: nothing to check
        return
    takes = set(parameters)
    wanted = set(data.network_inputs())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()) or wanted <= takes:
        return
    kind = data.input_spec.kind
    models = (
        "model=bert_tiny, bert_mini, bert_small or hf"
        if kind == "tokens"
        else ("model=resnet, cnn, mobilenet, vit or torchvision")
    )
    raise ConfigError(
        f"model: {target} does not take {KIND_WORDS[kind]} (its constructor has no "
        f"{', '.join(sorted(wanted - takes))}), which the data ({type(data).__name__}) gives. "
        f"Choose a model for {KIND_WORDS[kind]}: {models}."
    )


# The LightningModule's config (`module=...`) for each kind of input.
MODULE_FOR = {"image": "image_classifier", "tokens": "text_classifier"}


def module_options(options: DictConfig, data: ClassificationData) -> dict[str, Any]:
    """The LightningModule's options for this data: ``module=auto`` follows the data's kind of
    input; an explicit choice for the other kind is refused."""
    options = dict(options)
    kind = data.input_spec.kind
    asked = options.pop("inputs", "auto")
    if asked not in ("auto", kind):
        raise ConfigError(
            f"module={MODULE_FOR.get(asked, asked)} takes {KIND_WORDS.get(asked, asked)}, but the "
            f"data ({type(data).__name__}) gives {KIND_WORDS[kind]}: use module={MODULE_FOR[kind]} "
            f"(or leave module out: it follows the data)."
        )
    if options.get("macro_f1") == "auto":
        options["macro_f1"] = kind == "tokens"
    return options


def build_compression(cfg: DictConfig) -> list[CompressionCallback]:
    """The compression callbacks of ``compress=[...]``, ordered by their techniques' ``order``."""
    callbacks = []
    for name, config in (cfg.get("compress") or {}).items():
        callback = build(config)
        if not isinstance(callback, CompressionCallback):
            raise ConfigError(
                f"compress.{name} builds a {type(callback).__name__} ({config.get('_target_')}), "
                f"which is not a litcompress.compress.CompressionCallback: a compression "
                f"technique must subclass it (see docs/writing-a-technique.md)."
            )
        callbacks.append(callback)
    return sorted(callbacks, key=lambda c: c.order)


def add_companions(cfg: DictConfig) -> list[str]:
    """Add to ``cfg.compress`` the techniques its chosen ones ask for and it does not choose
    (:meth:`CompressionCallback.companions`: depth pruning adds distillation from the deeper
    network); returns their names, which the run records beside its techniques."""
    compress = cfg.get("compress") or {}
    added: dict[str, Any] = {}
    for config in compress.values():
        technique = _technique_class(config)
        if technique is None:
            continue
        wanted = technique.companions(config, {*compress, *added}, cfg.get("init_from"))
        added.update({k: v for k, v in wanted.items() if k not in compress})
    if added:
        with open_dict(cfg):
            for name, config in added.items():
                cfg.compress[name] = config
    return list(added)


def _technique_class(config: Any) -> type[CompressionCallback] | None:
    """The technique class a ``compress.<name>`` config builds (``None``: not a technique; the
    builder says so when it builds it)."""
    target = config.get("_target_") if isinstance(config, DictConfig) else None
    try:
        found = get_object(target) if target else None
    except Exception:  # an unknown target: build_compression names it
        return None
    return found if isinstance(found, type) and issubclass(found, CompressionCallback) else None


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


def build_data(cfg: DictConfig) -> ClassificationData:
    """The data module, its order seeded by the run's ``seed``."""
    data: ClassificationData = build(cfg.data)
    data.shuffle_seed = cfg.seed
    return data


def build_trainer(
    cfg: DictConfig,
    compression: list[CompressionCallback],
    plugins: list[Any],
    extra_callbacks: list[Callback] | None = None,
) -> tuple[L.Trainer, ReportCallback]:
    """The Lightning trainer with the run's loggers and callbacks: the report's, the config's,
    the techniques', ``extra_callbacks``, and the epoch seeding last (it seeds after the others'
    epoch-start work). Checkpoints are written whole or not at all (:class:`AtomicCheckpointIO`).
    """
    loggers: list[Logger] = [build(c) for c in (cfg.get("logger") or {}).values() if c]
    report_callback = ReportCallback()
    callbacks = [
        report_callback,
        *build_callbacks(cfg, bool(loggers)),
        *compression,
        *(extra_callbacks or []),
        EpochSeed(cfg.seed),
    ]
    trainer: L.Trainer = build(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        **ui_switches(cfg, callbacks),
        plugins=[*plugins, AtomicCheckpointIO()],
    )
    return trainer, report_callback
