"""How steady the report's speed-up is: an unchanged network against itself, idle and busy.

The report times the network that entered the run and the delivered one side by side at the end
of the run (``litcompress.report.time_side_by_side``: paired rounds in one time window). Here both
are the same CIFAR ResNet-20 (two copies), so every speed-up should be 1.00x. Each setting is
repeated; "separate" is the earlier method (each network timed on its own, one after the other,
as when ``before`` was timed at the start of a run and ``after`` at its end), "paired" the
report's. "busy": one CPU-burning process per core runs beside the measurement.

    python bench/timing.py                # the docs table
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import time

import torch

from _runs import SHAPE
from litcompress.measure import (
    ModelStats,
    describe_cpu,
    describe_versions,
    measure_latency_ms,
    time_side_by_side,
)
from litcompress.models import CifarResNet


def burn(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10000))


def speedups(net: torch.nn.Module, twin: torch.nn.Module, min_run_s: float) -> dict[str, float]:
    separate = {}
    for batch in (1, 32):
        first = measure_latency_ms(net, SHAPE, batch, min_run_s)
        second = measure_latency_ms(twin, SHAPE, batch, min_run_s)
        separate[batch] = first / second
    before, after = (ModelStats(None, 0, 0, 0, None, None) for _ in range(2))
    after.model = twin
    timing = time_side_by_side(before, after, net, SHAPE, min_run_s)
    return {
        "separate_b1": separate[1],
        "separate_b32": separate[32],
        "paired_b1": before.latency_ms_b1 / after.latency_ms_b1,
        "paired_b32": before.latency_ms_b32 / after.latency_ms_b32,
        "spread_b1": timing["spread_b1"],
        "spread_b32": timing["spread_b32"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=1.0, help="report.min_run_time_s")
    args = parser.parse_args()
    print(describe_versions() + "\n" + describe_cpu() + "\n")
    net = CifarResNet(num_classes=10, in_channels=3, image_size=32, depth=20).eval()
    twin = copy.deepcopy(net)
    print(
        "| machine | repeat | separate b1 | separate b32 | paired b1 (spread) "
        "| paired b32 (spread) |"
    )
    print("|---|---|---|---|---|---|")
    for machine in ("idle", "busy"):
        stop = multiprocessing.Event()
        burners = []
        if machine == "busy":
            burners = [
                multiprocessing.Process(target=burn, args=(stop,))
                for _ in range(torch.get_num_threads())
            ]
            for process in burners:
                process.start()
            time.sleep(1)
        try:
            for repeat in range(args.repeats):
                r = speedups(net, twin, args.min_run_time)
                print(
                    f"| {machine} | {repeat + 1} | {r['separate_b1']:.2f}x "
                    f"| {r['separate_b32']:.2f}x "
                    f"| {r['paired_b1']:.2f}x ({r['spread_b1']:.0%}) "
                    f"| {r['paired_b32']:.2f}x ({r['spread_b32']:.0%}) |",
                    flush=True,
                )
        finally:
            stop.set()
            for process in burners:
                process.join()


if __name__ == "__main__":
    main()
