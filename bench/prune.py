"""Structured pruning: what it gains (MACs, parameters, CPU latency) and what it costs (accuracy).

Measured in this one process, on a 2-core CPU by default:

1. Size and speed at 32x32, pruning ratio 0.5, one-shot (L2 magnitude): CIFAR ResNet-56 and
   torchvision resnet18, before and after. Latency: median at batch 1 and 32.
2. Accuracy on the generated `shapes` data, same total epochs for every row: ResNet-56
   (`--depth`) unpruned; trained, pruned by litcompress at a third of the epochs, fine-tuned;
   and the same schedule with Lightning's `ModelPruning` (unstructured L1 masks, 50%, made
   permanent), for comparison.

    python bench/prune.py                  # the docs table
    python bench/prune.py --depth 20 --epochs 6 --num-train 4000   # quicker, noisier
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

from lightning.pytorch.callbacks import ModelPruning

from _runs import SHAPE, prune_half, shapes_run, train
from litcompress.checkpoint import load_network
from litcompress.measure import (
    count_macs,
    count_params,
    describe_cpu,
    describe_versions,
    measure_latency_ms,
)
from litcompress.models import CifarResNet, torchvision_classifier

ROWS = ["unpruned", "litcompress", "lottery", "finetune"]


def size_and_speed(min_run_time_s: float) -> None:
    print("## Size and speed at 32x32, ratio 0.5 (one-shot, L2)\n")
    print("| model | MACs | params | latency b1 (ms) | latency b32 (ms) |")
    print("|---|---|---|---|---|")
    networks = {
        "CIFAR ResNet-56": CifarResNet(num_classes=10, in_channels=3, image_size=32, depth=56),
        "torchvision resnet18": torchvision_classifier(10, 3, 32, name="resnet18"),
    }
    for name, net in networks.items():
        net = net.eval()
        pruned = prune_half(net)
        figures = []
        for stat in (
            lambda m: count_macs(m, SHAPE),
            count_params,
            lambda m: measure_latency_ms(m, SHAPE, 1, min_run_time_s),
            lambda m: measure_latency_ms(m, SHAPE, 32, min_run_time_s),
        ):
            before, after = stat(net), stat(pruned)
            figures.append((before, after))
        (m0, m1), (p0, p1), (b1, a1), (b32, a32) = figures
        print(
            f"| {name} | {m0 / 1e6:.1f}M -> {m1 / 1e6:.1f}M ({m0 / m1:.2f}x fewer) "
            f"| {p0 / 1e6:.3f}M -> {p1 / 1e6:.3f}M ({p0 / p1:.2f}x fewer) "
            f"| {b1:.2f} -> {a1:.2f} ({b1 / a1:.2f}x faster) "
            f"| {b32:.1f} -> {a32:.1f} ({b32 / a32:.2f}x faster) |"
        )


def accuracy(
    depth: int,
    epochs: int,
    num_train: int,
    min_run_time_s: float,
    output_dir: Path,
    selected: list[str],
) -> None:
    print(
        f"\n## Accuracy on shapes: ResNet-{depth}, {epochs} epochs in every row, "
        f"{num_train} training images, Adam\n"
    )
    common = [
        *shapes_run(num_train, min_run_time_s),
        f"model.depth={depth}",
        f"trainer.max_epochs={epochs}",
    ]
    prune_epoch = epochs // 3

    def unstructured(lottery_ticket: bool) -> Callable[[], ModelPruning]:
        return lambda: ModelPruning(
            "l1_unstructured",
            amount=0.5,
            apply_pruning=lambda epoch: epoch == prune_epoch,
            make_pruning_permanent=True,
            use_lottery_ticket_hypothesis=lottery_ticket,
            verbose=0,
        )

    rows = {
        "unpruned": ("unpruned", [], None),
        "litcompress": (
            "litcompress prune 0.5 (structured)",
            ["compress=prune", f"compress.prune.start_epoch={prune_epoch}"],
            None,
        ),
        # Lightning's default: the weights that stay are reset to their initial values.
        "lottery": (
            "ModelPruning 50% (unstructured), lottery ticket (Lightning's default)",
            [],
            unstructured(True),
        ),
        # The trained weights that stay are kept and fine-tuned, as litcompress does.
        "finetune": (
            "ModelPruning 50% (unstructured), use_lottery_ticket_hypothesis=False",
            [],
            unstructured(False),
        ),
    }
    rows = {key: rows[key] for key in selected}
    print("| model | test acc | MACs | params (nonzero) | latency b1 (ms) | latency b32 (ms) |")
    print("|---|---|---|---|---|---|")
    reference = None
    for key, (name, overrides, extra) in rows.items():
        run_dir = output_dir / key
        extra_callbacks = [extra()] if extra else None
        after = train([*common, *overrides], run_dir, extra_callbacks)["after"]
        nonzero = after["params"]
        if extra:
            net = load_network(run_dir / "checkpoints" / "last.ckpt")
            nonzero = sum(int((p != 0).sum()) for p in net.parameters())
        reference = reference or after
        print(
            f"| {name} | {after['test_acc']:.4f} "
            f"({(after['test_acc'] - reference['test_acc']) * 100:+.2f} pt) "
            f"| {after['macs'] / 1e6:.1f}M | {after['params'] / 1e6:.3f}M ({nonzero / 1e6:.3f}M) "
            f"| {after['latency_ms_b1']:.2f} "
            f"({reference['latency_ms_b1'] / after['latency_ms_b1']:.2f}x) "
            f"| {after['latency_ms_b32']:.1f} "
            f"({reference['latency_ms_b32'] / after['latency_ms_b32']:.2f}x) |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=56, help="ResNet depth of the accuracy rows")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per latency")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument(
        "--rows",
        nargs="+",
        default=ROWS,
        choices=ROWS,
        help="accuracy rows to run; the first is the reference of the differences",
    )
    parser.add_argument(
        "--output-dir", type=Path, help="keep the accuracy runs here (default: a temporary folder)"
    )
    args = parser.parse_args()
    print(describe_versions() + "\n" + describe_cpu() + "\n")
    if not args.skip_speed:
        size_and_speed(args.min_run_time)
    if args.skip_accuracy:
        return
    with tempfile.TemporaryDirectory() as tmp:
        output_dir = args.output_dir or Path(tmp)
        accuracy(args.depth, args.epochs, args.num_train, args.min_run_time, output_dir, args.rows)
    if args.output_dir:
        print(f"\nruns in {output_dir}, one folder per row: {', '.join(args.rows)}")


if __name__ == "__main__":
    main()
