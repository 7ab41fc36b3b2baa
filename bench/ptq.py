"""Post-training quantization against QAT and fp32: what int8 costs without training, and what
training for it wins back.

Measured in this one process, on the generated ``shapes`` data. For each network:

1. fp32: trained from scratch for ``--epochs`` (the pruned ResNet-56 with ``compress=prune``:
   trained, pruned at a third of the epochs, fine-tuned);
2. PTQ: its best checkpoint quantized to int8 without training (``init_from=<ckpt>
   compress=ptq trainer.max_epochs=0``, ``--calibration-batches`` training batches);
3. QAT: the same checkpoint fine-tuned with QAT for ``--qat-epochs`` (learning rate 1e-4,
   BatchNorm frozen for the last epoch), then converted.

Every figure is the run's own report: test accuracy of the delivered int8 model, and the PTQ run's
CPU latency of the int8 model against the fp32 network it came from, timed side by side in the
same process (int8 speed depends on the CPU: VNNI, AMX; see the first line).

    python bench/ptq.py                                     # the docs table
    python bench/ptq.py --networks resnet20 --epochs 2 --num-train 512   # a quick check
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from _runs import shapes_run, train
from litcompress.measure import describe_cpu, describe_versions

# Name, model overrides, overrides of the fp32 run only.
NETWORKS: dict[str, tuple[str, list[str], list[str]]] = {
    "resnet20": ("ResNet-20", ["model=resnet", "model.depth=20"], []),
    "resnet56_pruned": (
        "ResNet-56 pruned 0.5",
        ["model=resnet", "model.depth=56"],
        ["compress=prune"],
    ),
    "mobilenet_v2": ("MobileNetV2 (depthwise)", ["model=mobilenet"], []),
    "mobilenet_v2_0.5": (
        "MobileNetV2 x0.5 (depthwise)",
        ["model=mobilenet", "model.width_mult=0.5"],
        [],
    ),
}


def _points(acc: float, reference: float) -> str:
    return f"{acc:.4f} ({(acc - reference) * 100:+.2f} pt)"


def compare(key: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """fp32, PTQ and QAT of one network; the three reports."""
    _, model, fp32_only = NETWORKS[key]
    common = [o for o in shapes_run(args.num_train, args.min_run_time) if o != "model=resnet"]
    common += model
    fp32 = train([*common, *fp32_only, f"trainer.max_epochs={args.epochs}"], folder / "fp32")
    best = next((folder / "fp32" / "checkpoints").glob("epoch*.ckpt"))
    ptq = train(
        [
            *common,
            f"init_from={best}",
            "compress=ptq",
            f"compress.ptq.calibration_batches={args.calibration_batches}",
            f"compress.ptq.observer={args.observer}",
            "trainer.max_epochs=0",
        ],
        folder / "ptq",
    )
    qat = train(
        [
            *common,
            f"init_from={best}",
            "compress=qat",
            "optim.lr=1e-4",
            f"trainer.max_epochs={args.qat_epochs}",
            f"compress.qat.freeze_bn_epoch={max(args.qat_epochs - 1, 0)}",
        ],
        folder / "qat",
    )
    return {"fp32": fp32, "ptq": ptq, "qat": qat}


def row(name: str, reports: dict[str, Any]) -> str:
    fp32 = reports["fp32"]["after"]["test_acc"]
    ptq, qat = reports["ptq"], reports["qat"]
    ptq_acc, qat_acc = ptq["after"]["test_acc"], qat["after"]["test_acc"]
    lost = fp32 - ptq_acc
    recovered = f"{(qat_acc - ptq_acc) / lost:.0%}" if lost > 0 else "nothing to recover"
    return (
        f"| {name} | {fp32:.4f} | {_points(ptq_acc, fp32)} | {_points(qat_acc, fp32)} "
        f"| {recovered} | {ptq['after']['macs'] / 1e6:.1f}M "
        f"| {ptq['before']['file_bytes']:,} -> {ptq['after']['file_bytes']:,} "
        f"| {ptq['before']['latency_ms_b32']:.1f} -> {ptq['after']['latency_ms_b32']:.1f} "
        f"({ptq['speedup_b32']:.2f}x) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--epochs", type=int, default=15, help="fp32 training epochs")
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--calibration-batches", type=int, default=8, help="of 128 images")
    parser.add_argument("--observer", default="histogram", choices=["histogram", "minmax"])
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per latency")
    parser.add_argument("--output-dir", type=Path, help="keep the runs (default: a temporary one)")
    args = parser.parse_args()
    print(describe_versions() + "\n" + describe_cpu() + "\n")
    print(
        f"## PTQ vs QAT vs fp32 on shapes: fp32 for {args.epochs} epochs ({args.num_train} "
        f"training images, Adam); PTQ calibrated on {args.calibration_batches} batches of 128 "
        f"({args.observer} observer); QAT fine-tuned for {args.qat_epochs} "
        f"epoch{'s' if args.qat_epochs != 1 else ''}\n"
    )
    print(
        "| network | fp32 test acc | PTQ int8 | QAT int8 | QAT recovers of PTQ's loss "
        "| MACs | file (bytes), fp32 -> PTQ | latency b32 (ms), fp32 -> PTQ int8 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.output_dir or Path(tmp)
        for key in args.networks:
            print(row(NETWORKS[key][0], compare(key, args, root / key)), flush=True)


if __name__ == "__main__":
    main()
