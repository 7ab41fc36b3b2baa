"""Measurement, in one place: what a network costs (parameters, MACs, file size), how fast it
runs on this CPU (alone, or two networks timed side by side), how accurate it is on a data
loader, and which CPU measured it.

The run report, ``litcompress evaluate``, the sensitivity analysis, the exporters and the
benchmarks all measure through these functions, so that their figures are the same figures.
"""

from __future__ import annotations

import copy
import io
import math
import os
import platform
import re
from dataclasses import dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.utils.benchmark as benchmark
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchmetrics.classification import MulticlassAccuracy

from litcompress.spec import Inputs, InputSpec


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
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_REPORTED}
        data.update(copy.deepcopy(self.extra))
        return data


NOT_REPORTED = ("extra", "model")


def count_params(net: nn.Module) -> int:
    """Number of parameters of ``net`` (trainable or not)."""
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, inputs: Inputs) -> int:
    """Multiply-accumulates of one forward pass of one example, counted by torch's FLOP counter.

    Runs in eval mode (so BatchNorm statistics stay as they are) and restores ``net``'s mode.
    """
    training = net.training
    device = next(net.parameters()).device
    net.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            net(*InputSpec.of(inputs).example(1, device, zeros=True))
    finally:
        net.train(training)
    return counter.get_total_flops() // 2


def state_dict_bytes(net: nn.Module) -> int:
    """Size in bytes of ``torch.save(net.state_dict())``."""
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def measure_latency_ms(
    net: nn.Module, inputs: Inputs, batch_size: int, min_run_time_s: float = 1.0
) -> float:
    """Median CPU latency of one forward pass, in ms, with ``torch.get_num_threads()`` threads.

    One untimed call first (a compiled network compiles for this batch size then), then
    ``torch.utils.benchmark`` times blocks of runs for ``min_run_time_s``.
    """
    x = InputSpec.of(inputs).example(batch_size)
    timer = benchmark.Timer(
        "net(*x)", globals={"net": net, "x": x}, num_threads=torch.get_num_threads()
    )
    with torch.inference_mode():
        net(*x)
        return timer.blocked_autorange(min_run_time=min_run_time_s).median * 1e3


def measure(
    net: nn.Module,
    inputs: Inputs,
    test_acc: float | None = None,
    min_run_time_s: float = 1.0,
) -> ModelStats:
    """Measure ``net`` on the CPU (on a copy: the training copy keeps its device and mode).

    Args:
        net: the network to measure.
        inputs: what the network takes (its :class:`InputSpec`, or one image's shape).
        test_acc: its test accuracy, if it was evaluated.
        min_run_time_s: timing budget per batch size.
    """
    stats = measure_size(net, inputs, test_acc)
    for batch in (1, 32):
        latency = measure_latency_ms(stats.model, inputs, batch, min_run_time_s)
        setattr(stats, f"latency_ms_b{batch}", latency)
    return stats


def measure_size(net: nn.Module, inputs: Inputs, test_acc: float | None = None) -> ModelStats:
    """What does not depend on the moment: parameters, MACs, file size, on a CPU copy of ``net``
    (``model``); latency is left ``None``, to be timed beside the other network
    (:func:`time_side_by_side`)."""
    net = copy.deepcopy(net).cpu().eval()
    return ModelStats(
        test_acc=test_acc,
        params=count_params(net),
        macs=count_macs(net, inputs),
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
    inputs: Inputs,
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
    x = InputSpec.of(inputs).example(batch_size)
    timers = [
        benchmark.Timer(
            "net(*x)", globals={"net": net, "x": x}, num_threads=torch.get_num_threads()
        )
        for net in (first, second)
    ]
    with torch.inference_mode():
        first(*x), second(*x)  # compile (for compiled models) and warm up
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
    inputs: Inputs,
    min_run_time_s: float,
) -> dict[str, Any]:
    """Fill both entries' latencies from one paired timing of ``before_net`` and ``after.model``.

    Returns the report's ``timing`` entry: rounds, the spread of each speed-up and, when a spread
    is too wide to trust the ratio, a note (also added to ``after``'s notes).
    """
    timing: dict[str, Any] = {"method": "paired"}
    for batch in (1, 32):
        result = paired_latency_ms(before_net, after.model, inputs, batch, min_run_time_s)
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
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


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
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
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


def evaluate_cpu(
    net: nn.Module,
    loader: Any,
    num_classes: int,
    max_batches: float | None = None,
    length: int | None = None,
) -> float:
    """Accuracy of ``net`` over (the first ``max_batches`` batches of) ``loader`` on the CPU.

    Short last batches are padded to the first batch's size, and with ``length`` token inputs
    are padded to that many tokens (attention mask 0), so that a model compiled for one shape is
    not compiled again for each batch size and text length.
    """
    # Only this process evaluates, even under DDP: no syncing with the other ranks.
    accuracy = MulticlassAccuracy(num_classes, average="micro", sync_on_compute=False)
    batch_size = None
    with torch.no_grad():
        for *x, y in islice(loader, None if max_batches in (None, math.inf) else int(max_batches)):
            batch_size = batch_size or len(y)
            n = len(y)
            if n < batch_size:
                x = [torch.cat([t, t[-1:].expand(batch_size - n, *t.shape[1:])]) for t in x]
            if length is not None:
                x = [_pad_tokens(t, length) for t in x]
            accuracy.update(net(*x)[:n], y)
    return float(accuracy.compute())


def _pad_tokens(t: torch.Tensor, length: int) -> torch.Tensor:
    """Token ids or attention mask (``N x L`` integers) padded with zeros to ``length``."""
    if t.dim() != 2 or t.is_floating_point() or t.shape[1] >= length:
        return t
    return nn.functional.pad(t, (0, length - t.shape[1]))


def describe_versions() -> str:
    """One line for benchmark output: the versions that made the figures."""
    import torchvision

    from litcompress.version import __version__

    versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    return f"litcompress {__version__} ({versions})"
