"""Pictures for TensorBoard, drawn off-screen with matplotlib where a technique acts (never per
training step): what changed in each layer, where a table of numbers is harder to read; and
histograms of what quantization did to weights and activation ranges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger


def layer_bars(
    names: Sequence[str],
    values: Sequence[float],
    title: str,
    xlabel: str,
    totals: Sequence[float] | None = None,
) -> Any:
    """A horizontal bar per layer (``values``; ``totals``, when given, drawn behind in grey)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    figure = Figure(figsize=(7, 1.0 + 0.22 * len(names)), layout="constrained")
    axes = figure.subplots()
    rows = range(len(names))
    if totals is not None:
        axes.barh(rows, totals, color="0.85", label="before")
    axes.barh(rows, values, color="tab:blue", label="after" if totals is not None else None)
    axes.set_yticks(list(rows), list(names), fontsize=7)
    axes.invert_yaxis()  # the network's first layer at the top
    axes.set_xlabel(xlabel)
    axes.set_title(title, fontsize=10)
    if totals is not None:
        axes.legend(loc="lower right", fontsize=7)
    return figure


def has_tensorboard(loggers: Sequence[Logger]) -> bool:
    """Whether a picture has anywhere to go (draw it only then)."""
    return any(isinstance(logger, TensorBoardLogger) for logger in loggers)


def log_figure(loggers: Sequence[Logger], tag: str, figure: Any, step: int) -> None:
    """Add ``figure`` as image ``tag`` to every TensorBoard logger."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, figure, step, close=False)


def log_histograms(
    loggers: Sequence[Logger], histograms: dict[str, torch.Tensor], step: int
) -> None:
    """Add each of ``histograms`` (tag: values) to every TensorBoard logger (empty ones skipped)."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            for tag, values in histograms.items():
                if values.numel():
                    logger.experiment.add_histogram(tag, values.float(), step)
