"""Magnitude sparsity: litcompress ``compress=sparsity`` against Lightning's ``ModelPruning`` on
the same schedule, at several sparsities: accuracy and zip-compressed size.

Measured in this one process, on the generated ``shapes`` data, ``--epochs`` for every run:

- dense: the network trained without sparsity (the reference of every difference);
- litcompress: ``compress=sparsity`` with TF-MOT's polynomial schedule (power 3) from 0 to the
  final sparsity at two thirds of the run, masks updated once an epoch, per layer;
- ``ModelPruning``: Lightning's callback with L1 unstructured masks per layer
  (``use_global_unstructured=False``) on the same layers (convolutions and linear layers but the
  classifier head), ``use_lottery_ticket_hypothesis=False`` (the trained weights kept), pruned at
  every epoch's end by the amount that brings each layer to the same schedule's sparsity.

Every run tests its last epoch (``callbacks.model_checkpoint.monitor=null``), the model at its
final sparsity; the size is that model's state dict zip-compressed (deflate), as TF-MOT measures
it, against the dense run's.

    python bench/sparsity.py                                  # the docs table
    python bench/sparsity.py --sparsities 0.75 --epochs 2 --num-train 512   # a quick check
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelPruning
from torch import nn

from _runs import shapes_run, train
from litcompress.checkpoint import load_network
from litcompress.compress.sparsity import SparsityCallback, zipped_bytes
from litcompress.measure import describe_cpu, describe_versions
from litcompress.models import find_classifier

BATCH = 128


def sparse_layers(net: nn.Module) -> list[nn.Module]:
    """The layers both techniques make sparse: convolutions and linear layers, not the head."""
    head = find_classifier(net)[1]
    return [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear) and m is not head]


def lightning_pruning(final: float, epochs: int, steps_per_epoch: int) -> ModelPruning:
    """``ModelPruning`` following litcompress's polynomial schedule, once at each epoch's end.

    ``torch.nn.utils.prune`` takes the fraction of the weights still unpruned, so the amount at
    epoch ``e`` is what brings the layer from the schedule's sparsity at the previous epoch's end
    to the one at this epoch's end."""
    schedule = SparsityCallback(final_sparsity=final, end_step=2 * epochs * steps_per_epoch // 3)
    target = [schedule.target((e + 1) * steps_per_epoch) for e in range(epochs)]

    def amount(epoch: int) -> float:
        before = target[epoch - 1] if epoch else 0.0
        return max(0.0, 1 - (1 - target[epoch]) / (1 - before))

    class SameLayers(ModelPruning):
        def setup(self, trainer, pl_module, stage):  # noqa: ANN001 (Lightning's signature)
            self._parameters_to_prune = [(m, "weight") for m in sparse_layers(pl_module.net)]
            super().setup(trainer, pl_module, stage)

    return SameLayers(
        "l1_unstructured",
        amount=amount,
        use_global_unstructured=False,
        make_pruning_permanent=True,
        use_lottery_ticket_hypothesis=False,
        verbose=0,
    )


def measured(report: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Test accuracy, sparsity of the sparse layers and zipped size of the tested model."""
    net = load_network(run_dir / report["delivered"]["checkpoint"])
    layers = sparse_layers(net)
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    total = sum(m.weight.numel() for m in layers)
    return {
        "acc": report["after"]["test_acc"],
        "sparsity": zeros / total,
        "zip": zipped_bytes(net),
        "b32": report["after"]["latency_ms_b32"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    parser.add_argument("--depth", type=int, default=20, help="CIFAR ResNet depth")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per latency")
    parser.add_argument("--output-dir", type=Path, help="keep the runs (default: a temporary one)")
    args = parser.parse_args()
    steps = math.ceil(args.num_train / BATCH)
    common = [
        *shapes_run(args.num_train, args.min_run_time),
        f"model.depth={args.depth}",
        f"trainer.max_epochs={args.epochs}",
        f"data.batch_size={BATCH}",
        "callbacks.model_checkpoint.monitor=null",
    ]
    print(describe_versions() + "\n" + describe_cpu() + "\n")
    print(
        f"## Sparsity on shapes: ResNet-{args.depth}, {args.epochs} epochs in every run, "
        f"{args.num_train} training images, Adam; polynomial schedule to the final sparsity at "
        f"two thirds of the run\n"
    )
    print("| run | test acc | zero weights | zipped state dict (bytes) | latency b32 (ms) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.output_dir or Path(tmp)
        dense = measured(train(common, root / "dense"), root / "dense")

        def line(name: str, fig: dict[str, Any]) -> None:
            print(
                f"| {name} | {fig['acc']:.4f} ({(fig['acc'] - dense['acc']) * 100:+.2f} pt) "
                f"| {fig['sparsity']:.1%} | {fig['zip']:,} ({fig['zip'] / dense['zip']:.2f}x) "
                f"| {fig['b32']:.1f} ({dense['b32'] / fig['b32']:.2f}x faster) |",
                flush=True,
            )

        line("dense", dense)
        for final in args.sparsities:
            tag = f"{final:g}"
            ours = [
                "compress=sparsity",
                f"compress.sparsity.final_sparsity={final}",
                f"compress.sparsity.frequency={steps}",
            ]
            run_dir = root / f"litcompress_{tag}"
            report = train([*common, *ours], run_dir)
            line(f"litcompress sparsity {final:.0%}", measured(report, run_dir))
            run_dir = root / f"modelpruning_{tag}"
            report = train(common, run_dir, [lightning_pruning(final, args.epochs, steps)])
            line(f"Lightning ModelPruning {final:.0%}", measured(report, run_dir))


if __name__ == "__main__":
    main()
