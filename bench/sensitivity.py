"""Sensitivity-guided per-layer pruning ratios against one uniform ratio at the same MACs.

Measured in this one process, on the generated ``shapes`` data:

1. a CIFAR ResNet trained in fp32 (or ``--base-run``, a finished run of one);
2. ``litcompress sensitivity`` on it: each prunable group pruned alone at 0.1..0.9 without
   fine-tuning, and the per-layer ratios that keep each group within ``--budget`` of the
   validation accuracy (``layer_ratios.yaml``);
3. from the trained checkpoint, pruned once and fine-tuned for ``--finetune-epochs``:
   - guided: ``compress.prune.ratio=0 compress.prune.layer_ratios=<layer_ratios.yaml>``;
   - uniform: ``compress.prune.speedup=S``, every layer at one ratio, with S the MACs reduction
     the guided run achieved: the same MACs.

    python bench/sensitivity.py --base-run <bench/ptq.py output>/resnet20/fp32   # the docs table
    python bench/sensitivity.py --depth 8 --epochs 2 --num-train 512 --finetune-epochs 1  # quick
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _runs import shapes_run, train
from litcompress.cli import main as litcompress
from litcompress.measure import describe_cpu, describe_versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=20, help="CIFAR ResNet depth")
    parser.add_argument("--epochs", type=int, default=15, help="fp32 training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--budget", type=float, default=0.02, help="accuracy a group may lose")
    parser.add_argument("--max-batches", type=int, help="validation batches per measurement")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per latency")
    parser.add_argument("--base-run", type=Path, help="a finished fp32 run of the same network")
    parser.add_argument("--output-dir", type=Path, help="keep the runs (default: a temporary one)")
    args = parser.parse_args()
    common = [*shapes_run(args.num_train, args.min_run_time), f"model.depth={args.depth}"]
    print(describe_versions() + "\n" + describe_cpu() + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.output_dir or Path(tmp)
        base = args.base_run or root / "fp32"
        if not args.base_run:
            train([*common, f"trainer.max_epochs={args.epochs}"], base)
        ckpt = next((base / "checkpoints").glob("epoch*.ckpt"))
        out = root / "sensitivity"
        options = ["--budget", str(args.budget), "--output", str(out)]
        if args.max_batches:
            options += ["--max-batches", str(args.max_batches)]
        code = litcompress(["sensitivity", str(ckpt), *options])
        if code:
            raise SystemExit(f"litcompress sensitivity failed (exit {code})")
        finetune = [*common, f"init_from={ckpt}", f"trainer.max_epochs={args.finetune_epochs}"]
        guided = train(
            [
                *finetune,
                "compress=prune",
                "compress.prune.ratio=0",
                f"compress.prune.layer_ratios={out / 'layer_ratios.yaml'}",
            ],
            root / "guided",
        )
        speedup = guided["prune"]["achieved_macs_speedup"]
        uniform = train(
            [*finetune, "compress=prune", f"compress.prune.speedup={speedup:.4f}"],
            root / "uniform",
        )
        ratios = (out / "layer_ratios.yaml").read_text()
        fp32 = json.loads((base / "report.json").read_text())["after"]
    print(
        f"## Sensitivity-guided vs uniform pruning on shapes: ResNet-{args.depth} "
        f"({fp32['test_acc']:.4f} in fp32), pruned once, fine-tuned for {args.finetune_epochs} "
        f"epochs; guided ratios for a budget of {args.budget} per group\n"
    )
    print("| pruning | test acc | MACs | params | channels removed |")
    print("|---|---|---|---|---|")
    for name, report in (
        ("sensitivity-guided layer_ratios", guided),
        (f"uniform, speedup={speedup:.2f}", uniform),
    ):
        after = report["after"]
        print(
            f"| {name} | {after['test_acc']:.4f} "
            f"({(after['test_acc'] - fp32['test_acc']) * 100:+.2f} pt) "
            f"| {after['macs'] / 1e6:.2f}M ({report['prune']['achieved_macs_speedup']:.2f}x fewer) "
            f"| {after['params'] / 1e6:.3f}M | {report['prune']['achieved_ratio']:.1%} |"
        )
    print(f"\nThe guided ratios (layer_ratios.yaml):\n\n```\n{ratios}```")


if __name__ == "__main__":
    main()
