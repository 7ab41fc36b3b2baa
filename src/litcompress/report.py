"""The run report: what a run gained and what it cost, measured on the networks themselves.

``report.json`` in the run folder holds two entries, ``before`` (the network as it enters the run)
and ``after`` (the final network), each a :class:`ModelStats`, plus ``speedup_b32`` and the
measurement settings. Compression callbacks extend an entry by adding keys to it.
"""

from __future__ import annotations

import copy
import io
import json
import os
import platform
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.utils.benchmark as benchmark
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

REPORT_VERSION = 1


@dataclass
class ModelStats:
    """Size and speed of one network.

    Attributes:
        test_acc: accuracy on the test split, or ``None`` when the network was not evaluated.
        params: number of parameters.
        macs: multiply-accumulates of one forward pass of one image.
        file_bytes: size of the saved weights (``torch.save`` of the state dict).
        latency_ms_b1: median CPU latency of a forward pass at batch 1, in milliseconds.
        latency_ms_b32: the same at batch 32.
        extra: technique-specific entries (e.g. compiled latency of an int8 model).
    """

    test_acc: float | None
    params: int
    macs: int
    file_bytes: int
    latency_ms_b1: float | None
    latency_ms_b32: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    # The measured model itself (not reported): timed again beside the other one at the end.
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_REPORTED}
        data.update(copy.deepcopy(self.extra))
        return data


_NOT_REPORTED = ("extra", "model")


# The report's figures as sweep objectives and TensorBoard HParams metrics.
REPORT_FIGURES = (
    *(
        f"report/{stage}_{f.name}"
        for stage in ("before", "after")
        for f in fields(ModelStats)
        if f.name not in _NOT_REPORTED
    ),
    "report/speedup_b32",
    "report/speedup_b1",
)


def count_params(net: nn.Module) -> int:
    """Number of parameters of ``net`` (trainable or not)."""
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one image, counted by torch's FLOP counter.

    Runs in eval mode (so BatchNorm statistics stay as they are) and restores ``net``'s mode.
    """
    training = net.training
    device = next(net.parameters()).device
    net.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            net(torch.zeros(1, *input_shape, device=device))
    finally:
        net.train(training)
    return counter.get_total_flops() // 2


def state_dict_bytes(net: nn.Module) -> int:
    """Size in bytes of ``torch.save(net.state_dict())``."""
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def measure_latency_ms(
    net: nn.Module, input_shape: tuple[int, ...], batch_size: int, min_run_time_s: float = 1.0
) -> float:
    """Median CPU latency of one forward pass, in ms, with ``torch.get_num_threads()`` threads.

    One untimed call first (a compiled network compiles for this batch size then), then
    ``torch.utils.benchmark`` times blocks of runs for ``min_run_time_s``.
    """
    x = torch.randn(batch_size, *input_shape)
    timer = benchmark.Timer(
        "net(x)", globals={"net": net, "x": x}, num_threads=torch.get_num_threads()
    )
    with torch.inference_mode():
        net(x)
        return timer.blocked_autorange(min_run_time=min_run_time_s).median * 1e3


def measure(
    net: nn.Module,
    input_shape: tuple[int, ...],
    test_acc: float | None = None,
    min_run_time_s: float = 1.0,
) -> ModelStats:
    """Measure ``net`` on the CPU (on a copy: the training copy keeps its device and mode).

    Args:
        net: the network to measure.
        input_shape: ``(channels, height, width)`` of one input image.
        test_acc: its test accuracy, if it was evaluated.
        min_run_time_s: timing budget per batch size.
    """
    stats = measure_size(net, input_shape, test_acc)
    for batch in (1, 32):
        latency = measure_latency_ms(stats.model, input_shape, batch, min_run_time_s)
        setattr(stats, f"latency_ms_b{batch}", latency)
    return stats


def measure_size(
    net: nn.Module, input_shape: tuple[int, ...], test_acc: float | None = None
) -> ModelStats:
    """What does not depend on the moment: parameters, MACs, file size, on a CPU copy of ``net``
    (``model``); latency is left ``None``, to be timed beside the other network
    (:func:`time_side_by_side`)."""
    net = copy.deepcopy(net).cpu().eval()
    return ModelStats(
        test_acc=test_acc,
        params=count_params(net),
        macs=count_macs(net, input_shape),
        file_bytes=state_dict_bytes(net),
        latency_ms_b1=None,
        latency_ms_b32=None,
        model=net,
    )


# Rounds of the paired timing; the spread of their ratios says how far the speed-up can be trusted.
# Fewer (down to MIN_ROUNDS) when single calls of the two models already outlast min_run_time_s.
PAIRED_ROUNDS = 15
MIN_ROUNDS = 5
# A speed-up whose rounds spread wider than this (interquartile range / median) is flagged.
TRUSTED_SPREAD = 0.20


def paired_latency_ms(
    first: Any,
    second: Any,
    input_shape: tuple[int, ...],
    batch_size: int,
    min_run_time_s: float = 1.0,
    rounds: int = PAIRED_ROUNDS,
) -> dict[str, float]:
    """Time two models alternately in one window: their median latencies and how steady the
    ratio was.

    Each round times a block of calls of ``first``, then of ``second`` (the same input, the same
    threads), so that a machine that gets busier or quieter (or a process that warms up) moves
    both alike. Returns ``first_ms``, ``second_ms`` (medians over the rounds), ``ratio``
    (``first_ms / second_ms``) and ``spread`` (interquartile range over median of the rounds'
    own ratios) and ``rounds``: ``rounds`` unless one call of each model together outlasts
    ``min_run_time_s / rounds`` (large networks at batch 32), then as many as fit, at least
    :data:`MIN_ROUNDS`.
    """
    x = torch.randn(batch_size, *input_shape)
    timers = [
        benchmark.Timer("net(x)", globals={"net": net, "x": x}, num_threads=torch.get_num_threads())
        for net in (first, second)
    ]
    with torch.inference_mode():
        first(x), second(x)  # compile (for compiled models) and warm up
        # Calls per block, so that all rounds of both take about min_run_time_s.
        once = [max(t.timeit(1).median, 1e-6) for t in timers]
        rounds = max(MIN_ROUNDS, min(rounds, int(min_run_time_s / sum(once))))
        numbers = [max(1, int(min_run_time_s / (2 * rounds * s))) for s in once]
        times: list[list[float]] = [[], []]
        for _ in range(rounds):
            for index, timer in enumerate(timers):
                times[index].append(timer.timeit(numbers[index]).median * 1e3)
    ratios = torch.tensor([a / b for a, b in zip(*times, strict=True)])
    q1, median, q3 = torch.quantile(ratios, torch.tensor([0.25, 0.5, 0.75])).tolist()
    first_ms, second_ms = (float(torch.tensor(t).median()) for t in times)
    return {
        "first_ms": first_ms,
        "second_ms": second_ms,
        "ratio": first_ms / second_ms,
        "spread": (q3 - q1) / median,
        "rounds": rounds,
    }


def time_side_by_side(
    before: ModelStats,
    after: ModelStats,
    before_net: Any,
    input_shape: tuple[int, ...],
    min_run_time_s: float,
) -> dict[str, Any]:
    """Fill both entries' latencies from one paired timing of ``before_net`` and ``after.model``.

    Returns the report's ``timing`` entry: rounds, the spread of each speed-up and, when a spread
    is too wide to trust the ratio, a note (also added to ``after``'s notes).
    """
    timing: dict[str, Any] = {"method": "paired"}
    for batch in (1, 32):
        result = paired_latency_ms(before_net, after.model, input_shape, batch, min_run_time_s)
        setattr(before, f"latency_ms_b{batch}", result["first_ms"])
        setattr(after, f"latency_ms_b{batch}", result["second_ms"])
        timing[f"spread_b{batch}"] = result["spread"]
        timing[f"rounds_b{batch}"] = result["rounds"]
        if result["spread"] > TRUSTED_SPREAD:
            note = (
                f"The speed-up at batch {batch} ({result['ratio']:.2f}x) is not reliable: its "
                f"{result['rounds']} paired rounds spread by {result['spread']:.0%} (interquartile "
                f"range over median). The machine was busy; measure again on an idle one "
                f"(litcompress evaluate, or a longer report.min_run_time_s)."
            )
            after.extra.setdefault("notes", []).append(note)
            timing.setdefault("notes", []).append(note)
    return timing


# Instruction sets that decide int8 speed on x86 (VNNI: int8 dot products; AMX: int8 tiles).
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_info() -> dict[str, Any]:
    """This CPU's model name and the instruction sets that decide int8 speed (Linux: /proc)."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text(errors="replace")
        found = re.search(r"^model name\s*:\s*(.*)$", text, flags=re.M)
        model = found.group(1).strip() if found else model
        flags = set(text.split())
    return {
        "cpu": model,
        "isa": [flag for flag in _ISA_FLAGS if flag in flags],
        "cores": os.cpu_count(),
    }


def describe_cpu() -> str:
    """One line for benchmark output: model, cores, instruction sets, torch threads."""
    info = cpu_info()
    isa = ", ".join(info["isa"]) or "no AVX2"
    vnni = "VNNI" if {"avx512_vnni", "avx_vnni"} & set(info["isa"]) else "no VNNI"
    return (
        f"CPU: {info['cpu']}, {info['cores']} cores ({isa}; {vnni}), "
        f"torch threads: {torch.get_num_threads()}"
    )


def build_report(
    before: ModelStats, after: ModelStats, input_shape: tuple[int, ...], **info: Any
) -> dict[str, Any]:
    """Assemble the ``report.json`` document; ``info`` adds top-level entries."""
    return {
        "version": REPORT_VERSION,
        "before": before.to_dict(),
        "after": after.to_dict(),
        "speedup_b32": before.latency_ms_b32 / after.latency_ms_b32,
        "speedup_b1": before.latency_ms_b1 / after.latency_ms_b1,
        "measured_on": {
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            **cpu_info(),
            "torch": torch.__version__,
            "input_shape": list(input_shape),
        },
        **info,
    }


def report_figures(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as flat ``report/<stage>_<key>`` figures (plus the speed-ups)."""
    figures = {
        f"report/{stage}_{key}": float(value)
        for stage in ("before", "after")
        for key, value in report[stage].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    figures["report/speedup_b32"] = report["speedup_b32"]
    figures["report/speedup_b1"] = report["speedup_b1"]
    return figures


def write_report(
    before: ModelStats,
    after: ModelStats,
    input_shape: tuple[int, ...],
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
    report = build_report(before, after, input_shape, **info)
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


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary file next to ``path`` that replaces ``path`` once the block succeeds.

    Readers see the old file or the whole new one, never a partial write; on error the temporary
    file is removed. The new file gets the usual permissions (the umask's).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same suffix as the target: some writers (torch.export.save) check it.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``data`` as JSON so that ``path`` is either the old file or the whole new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


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
    lines.append(
        f"\nspeed-up at batch 32: **{report['speedup_b32']:.2f}x**, at batch 1: "
        f"{report['speedup_b1']:.2f}x (CPU, {report['measured_on']['threads']} threads)"
    )
    lines += [f"\n{line}" for line in technique_lines(report)]
    lines += [f"\n**Note:** {note}" for note in report["after"].get("notes", [])]
    lines += [f"\n{line}" for line in export_lines(report)]
    return "\n".join(lines)


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
    console.print(
        f"speed-up at batch 32: {report['speedup_b32']:.2f}x, at batch 1: "
        f"{report['speedup_b1']:.2f}x (CPU, {report['measured_on']['threads']} threads)"
    )
    for line in technique_lines(report):
        console.print(line)
    for note in report["after"].get("notes", []):
        console.print(f"note: {note}")
    for line in export_lines(report):
        console.print(line)
