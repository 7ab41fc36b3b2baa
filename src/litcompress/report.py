"""The run report: what a run gained and what it cost, measured on the networks themselves
(:mod:`litcompress.measure`): its contents, ``report.json``, and how it is shown.

``report.json`` in the run folder holds two entries, ``before`` (the network as it enters the run)
and ``after`` (the final network), each a :class:`ModelStats`, plus ``speedup_b32`` and the
measurement settings. Compression callbacks extend an entry by adding keys to it.
"""

from __future__ import annotations

import os
import platform
from dataclasses import fields
from typing import Any

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from litcompress.measure import NOT_REPORTED, ModelStats, cpu_info
from litcompress.outputs import write_json_atomic
from litcompress.spec import Inputs, InputSpec

REPORT_VERSION = 1


# The report's figures as sweep objectives and TensorBoard HParams metrics.
# The figures of the report's ``runtime`` entry that sweeps can optimize.
RUNTIME_KEYS = ("latency_ms_b1", "latency_ms_b32", "speedup_b1", "speedup_b32")
REPORT_FIGURES = (
    *(
        f"report/{stage}_{f.name}"
        for stage in ("before", "after")
        for f in fields(ModelStats)
        if f.name not in NOT_REPORTED
    ),
    "report/speedup_b32",
    "report/speedup_b1",
    # The delivered model in the runtime of report.runtime (torch: the same as after_latency_*).
    *(f"report/runtime_{key}" for key in RUNTIME_KEYS),
)


def build_report(
    before: ModelStats, after: ModelStats, inputs: Inputs, **info: Any
) -> dict[str, Any]:
    """Assemble the ``report.json`` document (measured on examples of ``inputs``); ``info`` adds
    top-level entries."""
    inputs = InputSpec.of(inputs)
    return {
        "version": REPORT_VERSION,
        "before": before.to_dict(),
        "after": after.to_dict(),
        # None when the delivered model was not timed in torch (report.time_torch=false).
        **{f"speedup_b{b}": _ratio(before, after, f"latency_ms_b{b}") for b in (32, 1)},
        "measured_on": {
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            **cpu_info(),
            "torch": torch.__version__,
            "input_shape": list(inputs.shape),
            "inputs": inputs.describe(),
        },
        **info,
    }


def _ratio(before: ModelStats, after: ModelStats, key: str) -> float | None:
    numerator, denominator = getattr(before, key), getattr(after, key)
    return numerator / denominator if numerator and denominator else None


def report_figures(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as flat ``report/<stage>_<key>`` figures (plus the speed-ups)."""
    figures = {
        f"report/{stage}_{key}": float(value)
        for stage in ("before", "after")
        for key, value in report[stage].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    figures.update(
        {f"report/{key}": report[key] for key in ("speedup_b32", "speedup_b1") if report[key]}
    )
    # Without a runtime entry the delivered model runs in torch: the after figures.
    runtime = report.get("runtime") or {
        "latency_ms_b1": report["after"].get("latency_ms_b1"),
        "latency_ms_b32": report["after"].get("latency_ms_b32"),
        "speedup_b1": report["speedup_b1"],
        "speedup_b32": report["speedup_b32"],
    }
    figures.update(
        {f"report/runtime_{k}": float(runtime[k]) for k in RUNTIME_KEYS if runtime.get(k)}
    )
    return figures


def runtime_entry(
    runtime: str, before: ModelStats, after: ModelStats, exported: dict[str, Any] | None
) -> dict[str, Any]:
    """The report's ``runtime`` entry: the delivered model timed in ``runtime`` (its export
    entry ``exported``; torch: the report's ``after``), and its speed-ups over the network that
    entered the run, timed in torch (eager fp32, or as the run received it)."""
    if exported is None:
        timed = {
            "file": after.extra.get("int8_artifact"),
            "precision": "int8" if after.extra.get("int8_artifact") else "fp32",
            "latency_ms_b1": after.latency_ms_b1,
            "latency_ms_b32": after.latency_ms_b32,
        }
    else:
        timed = {
            k: exported.get(k) for k in ("file", "precision", "latency_ms_b1", "latency_ms_b32")
        }
    entry = {"name": runtime, **timed}
    for batch in (1, 32):
        latency = timed[f"latency_ms_b{batch}"]
        before_ms = getattr(before, f"latency_ms_b{batch}")
        entry[f"speedup_b{batch}"] = before_ms / latency if latency and before_ms else None
    return entry


def write_report(
    before: ModelStats,
    after: ModelStats,
    inputs: Inputs,
    path: str | os.PathLike[str],
    loggers: list[Logger] = (),
    hparams: dict[str, Any] | None = None,
    step: int = 0,
    **info: Any,
) -> dict[str, Any]:
    """Build the report, write it to ``path`` (atomically), print it and log it to TensorBoard.

    ``info`` adds top-level entries (the model, the techniques' entries); ``hparams`` (the run's
    config) goes to TensorBoard's HParams tab with the report's figures. Returns the report.
    """
    report = build_report(before, after, inputs, **info)
    write_json_atomic(report, path)
    print_report(report)
    log_report(report, loggers, hparams or {}, step)
    return report


def log_report(
    report: dict[str, Any], loggers: list[Logger], hparams: dict[str, Any], step: int
) -> None:
    """Report to TensorBoard: the HParams tab (config + final figures) and a text summary."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams, metrics=report_figures(report))
            logger.experiment.add_text("report", report_markdown(report), step)
            logger.experiment.flush()


ROWS = [
    ("test_acc", "test accuracy", "{:.4f}"),
    ("params", "parameters", "{:,}"),
    ("macs", "MACs", "{:,}"),
    ("file_bytes", "file size (bytes)", "{:,}"),
    ("latency_ms_b1", "CPU latency b1 (ms)", "{:.3f}"),
    ("latency_ms_b32", "CPU latency b32 (ms)", "{:.3f}"),
]


def report_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(metric, before, after, after/before)`` rows of the report, formatted for people."""
    rows = []
    for key, label, fmt in ROWS:
        before, after = report["before"].get(key), report["after"].get(key)
        ratio = f"{after / before:.3f}x" if before and after is not None else ""
        rows.append(
            (
                label,
                "n/a" if before is None else fmt.format(before),
                "n/a" if after is None else fmt.format(after),
                ratio,
            )
        )
    return rows


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (the TensorBoard text summary)."""
    lines = ["| metric | before | after | after/before |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in report_rows(report)]
    lines.append(f"\n{speedup_line(report, bold=True)}")
    lines += [f"\n{line}" for line in technique_lines(report)]
    lines += [f"\n**Note:** {note}" for note in report["after"].get("notes", [])]
    lines += [f"\n{line}" for line in export_lines(report)]
    return "\n".join(lines)


def speedup_line(report: dict[str, Any], bold: bool = False) -> str:
    """The torch speed-ups of the report, or why there are none."""
    threads = report["measured_on"]["threads"]
    if not report["speedup_b32"]:
        runtime = (report.get("runtime") or {}).get("name", "torch")
        return (
            f"the delivered model was timed in {runtime} only (report.time_torch=false; "
            f"CPU, {threads} threads)"
        )
    b32 = f"**{report['speedup_b32']:.2f}x**" if bold else f"{report['speedup_b32']:.2f}x"
    b1 = f"{report['speedup_b1']:.2f}x"
    return f"speed-up at batch 32: {b32}, at batch 1: {b1} (CPU, {threads} threads)"


def technique_lines(report: dict[str, Any]) -> list[str]:
    """One line per technique whose report entry has a ``summary`` (what was asked, what was
    achieved)."""
    lines = []
    for name in report.get("compress") or []:
        entry = report.get(name)
        if isinstance(entry, dict) and entry.get("summary"):
            lines.append(f"{name}: {entry['summary']}")
    return lines


def export_lines(report: dict[str, Any]) -> list[str]:
    """One line per exported artifact of the report, and which model is fastest."""
    exports = report.get("export") or {}
    lines = []
    for name, entry in exports.items():
        if not isinstance(entry, dict):
            continue
        if entry.get("error"):
            lines.append(f"export={name} FAILED: {entry['error']}")
            continue
        timing = (
            f", b1 {entry['latency_ms_b1']:.3f} ms, b32 {entry['latency_ms_b32']:.3f} ms"
            if "latency_ms_b32" in entry
            else ""
        )
        verdict = "parity passed" if entry["parity"]["passed"] else "parity FAILED"
        lines.append(
            f"exported {entry['file']} ({name}, {entry.get('precision', '')}): "
            f"{entry['bytes']:,} bytes{timing}, {verdict}"
        )
    if exports.get("fastest_b32"):
        lines.append(
            f"fastest at batch 32: {exports['fastest_b32']}, at batch 1: {exports['fastest_b1']} "
            f"(delivered: the run's own model)"
        )
    runtime = report.get("runtime") or {}
    if runtime.get("name", "torch") != "torch" and runtime.get("speedup_b32"):
        lines.append(
            f"report.runtime={runtime['name']} ({runtime['precision']}): b1 "
            f"{runtime['latency_ms_b1']:.3f} ms, b32 {runtime['latency_ms_b32']:.3f} ms; "
            f"{runtime['speedup_b32']:.2f}x at batch 32, {runtime['speedup_b1']:.2f}x at batch 1 "
            f"over the entering network in torch"
        )
    return lines


def print_report(report: dict[str, Any]) -> None:
    """Show the report as a table on the console."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="litcompress report")
    for column in ("metric", "before", "after", "after/before"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in report_rows(report):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(speedup_line(report))
    for line in technique_lines(report):
        console.print(line)
    for note in report["after"].get("notes", []):
        console.print(f"note: {note}")
    for line in export_lines(report):
        console.print(line)
