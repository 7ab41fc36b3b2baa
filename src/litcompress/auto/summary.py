"""What ``litcompress auto`` shows of its search: a table of every trial and a picture of the
trade-off (validation accuracy against latency in the deployment runtime, the budget drawn)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litcompress.auto.space import describe
from litcompress.outputs import atomic_path
from litcompress.sweeps import pareto_front

COLUMNS = [
    "trial",
    "state",
    "settings",
    "val_acc",
    "drop",
    "feasible",
    "latency_ms",
    "speedup",
    "wall_s",
    "folder",
    "error",
]


@dataclass
class Row:
    """One trial as the summary shows it."""

    trial: int
    state: str
    settings: dict[str, Any]
    val_acc: float | None = None
    drop: float | None = None
    feasible: bool | None = None
    latency_ms: float | None = None
    speedup: float | None = None
    wall_s: float | None = None
    folder: str | None = None
    error: str | None = None

    def cells(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "state": self.state,
            "settings": describe(self.settings) if self.settings else "",
            "val_acc": self.val_acc,
            "drop": self.drop,
            "feasible": self.feasible,
            "latency_ms": self.latency_ms,
            "speedup": self.speedup,
            "wall_s": None if self.wall_s is None else round(self.wall_s, 1),
            "folder": self.folder,
            "error": self.error,
        }


def write_tables(rows: Sequence[Row], folder: Path, best: int | None) -> dict[str, Path]:
    """``summary.csv`` (every column) and ``summary.md`` (the best trial marked) in ``folder``."""
    paths = {"csv": folder / "summary.csv", "md": folder / "summary.md"}
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(row.cells() for row in rows)
    shown = [c for c in COLUMNS if c not in ("folder", "error")]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        cells = row.cells()
        text = [_cell(cells[key], key) for key in shown]
        if row.trial == best:
            text[0] = f"**{text[0]} (delivered)**"
        lines.append("| " + " | ".join(text) + " |")
    with atomic_path(paths["md"]) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return paths


def _cell(value: Any, key: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in ("val_acc", "drop"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.3f}" if key == "latency_ms" else f"{value:.2f}"
    return str(value).replace("|", "/")


def trade_off_figure(
    rows: Sequence[Row],
    baseline: dict[str, Any],
    max_drop: float,
    runtime: str,
    batch: int,
    best: int | None,
) -> Any:
    """Validation accuracy against latency: feasible trials, infeasible ones, the budget line,
    the entering network, the Pareto front of all trials and the delivered one."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    figure = Figure(figsize=(7.5, 4.8), layout="constrained")
    axes = figure.subplots()
    done = [r for r in rows if r.latency_ms is not None and r.val_acc is not None]
    for feasible, style in ((True, dict(color="tab:blue", marker="o")), (False, {})):
        points = [r for r in done if r.feasible is feasible]
        if not points:
            continue
        axes.scatter(
            [r.latency_ms for r in points],
            [r.val_acc for r in points],
            s=22,
            label="within the budget" if feasible else "over the budget",
            **(style or dict(color="0.6", marker="x")),
        )
    front = pareto_front([(r.val_acc, r.latency_ms) for r in done])
    on_front = sorted((r.latency_ms, r.val_acc) for r, on in zip(done, front, strict=True) if on)
    if on_front:
        axes.plot(*zip(*on_front, strict=True), "-", color="tab:red", lw=1, drawstyle="steps-post")
    axes.scatter(
        [baseline["latency_ms"]],
        [baseline["val_acc"]],
        marker="*",
        s=120,
        color="black",
        label="the network as trained",
    )
    floor = baseline["val_acc"] - max_drop
    axes.axhline(floor, color="tab:green", ls="--", lw=1, label=f"budget: {max_drop:.3g} below")
    for row in done:
        if row.trial == best:
            axes.scatter([row.latency_ms], [row.val_acc], s=160, facecolors="none", color="red")
            axes.annotate(
                f"delivered: trial {row.trial}\n{describe(row.settings)}",
                (row.latency_ms, row.val_acc),
                fontsize=7,
                xytext=(6, -18),
                textcoords="offset points",
            )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(ScalarFormatter())
    axes.tick_params(axis="x", which="minor", labelsize=7)
    axes.set_xlabel(f"latency in {runtime} at batch {batch} (ms, log scale)")
    axes.set_ylabel("validation accuracy")
    axes.set_title(
        f"litcompress auto: {len(done)} trials measured, the fastest within {max_drop:.3g} of "
        f"{baseline['val_acc']:.4f} delivered",
        fontsize=9,
    )
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7, loc="lower right")
    return figure
