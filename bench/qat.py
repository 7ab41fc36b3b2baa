"""Quantization-aware training: how much faster the int8 model is, and what accuracy it keeps.

Measured in this one process, on a 2-core CPU by default:

1. Speed at 32x32, batch 1 and 32: fp32 eager, fp32 compiled (inductor, freezing) and the int8
   model of each backend, as ``compress=qat`` makes it: prepared, run on a few batches to set the
   quantization ranges, converted, saved, reloaded with ``load_int8`` (pt2e: compiled). Networks:
   CIFAR ResNet-20 and ResNet-56, torchvision resnet18 and mobilenet_v2.
2. Accuracy on the generated ``shapes`` data: a CIFAR ResNet (``--depth``) trained in fp32, then
   fine-tuned with QAT from that checkpoint (``init_from``, ``compress=qat``) for
   ``--qat-epochs``; the int8 model's test accuracy against the fp32 network it came from.

    python bench/qat.py                     # the docs table
    python bench/qat.py --skip-accuracy     # speed only (about 13 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from _runs import accuracy_options, shapes_run, train_then_qat
from litcompress.checkpoint import rebuild_network
from litcompress.compat import cpu_has_vnni
from litcompress.deploy.int8 import ARTIFACTS, enable_int8_kernels, load_int8, save_int8
from litcompress.measure import describe_cpu, describe_versions, measure_latency_ms
from litcompress.quant.backends import convert

SHAPE = (3, 32, 32)


NETWORKS = {
    "CIFAR ResNet-20": {"_target_": "litcompress.models.CifarResNet", "depth": 20},
    "CIFAR ResNet-56": {"_target_": "litcompress.models.CifarResNet", "depth": 56},
    "torchvision resnet18": {
        "_target_": "litcompress.models.torchvision_classifier",
        "name": "resnet18",
    },
    "torchvision mobilenet_v2": {
        "_target_": "litcompress.models.torchvision_classifier",
        "name": "mobilenet_v2",
    },
}


def int8_model(config: dict, backend: str, folder: Path) -> torch.nn.Module:
    """The int8 model of ``config``'s network as a QAT run delivers it: saved, then reloaded."""
    form = {"reduce_range": not cpu_has_vnni()} if backend == "pt2e" else {}
    quantization = {"quantization": {"backend": backend, **form}}
    qat_net = rebuild_network(config, quantization)
    with torch.no_grad():
        for _ in range(4):  # set the quantization ranges and BatchNorm statistics
            qat_net(torch.randn(32, *SHAPE))
    meta = {"model_config": config, **quantization}
    path = save_int8(convert(qat_net), backend, folder / ARTIFACTS[backend], SHAPE, meta)
    return load_int8(path)


def speed(min_run_s: float) -> None:
    print("## Speed at 32x32 (CPU latency in ms; in brackets: how many times faster than fp32)\n")
    print("| model | batch | fp32 eager | fp32 compiled | int8 pt2e (compiled) | int8 fx (eager) |")
    print("|---|---|---|---|---|---|")
    enable_int8_kernels()
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in NETWORKS.items():
            config = {**config, "num_classes": 10, "in_channels": 3, "image_size": 32}
            net = rebuild_network(config, {}).eval()
            models = [net, torch.compile(net, dynamic=False)]
            models += [int8_model(config, backend, Path(tmp)) for backend in ("pt2e", "fx")]
            for batch in (1, 32):
                eager, *others = [measure_latency_ms(m, SHAPE, batch, min_run_s) for m in models]
                cells = [f"{eager:.2f}"]
                cells += [f"{ms:.2f} ({eager / ms:.2f}x)" for ms in others]
                print(f"| {name} | {batch} | {' | '.join(cells)} |", flush=True)


def accuracy(depth: int, epochs: int, qat_epochs: int, num_train: int) -> None:
    print(
        f"\n## Accuracy on shapes: ResNet-{depth}, fp32 for {epochs} epochs, then QAT "
        f"fine-tuning for {qat_epochs} ({num_train} training images, Adam)\n"
    )
    common = [*shapes_run(num_train), f"model.depth={depth}"]
    with tempfile.TemporaryDirectory() as tmp:
        fp32, qat = train_then_qat(common, epochs, qat_epochs, Path(tmp))
    fp32_acc = fp32["after"]["test_acc"]
    after = qat["after"]
    # Accuracy only: the speed table above is the latency measurement (taken on an idle machine).
    print("| model | test acc | file (bytes) |")
    print("|---|---|---|")
    print(f"| fp32 (eager) | {fp32_acc:.4f} | {fp32['after']['file_bytes']:,} |")
    trained = after["trained_test_acc"]
    print(f"| QAT, fake-quantized | {trained:.4f} ({(trained - fp32_acc) * 100:+.2f} pt) | |")
    print(
        f"| QAT, int8 ({qat['qat']['backend']}, reduce_range={qat['qat']['reduce_range']}) "
        f"| {after['test_acc']:.4f} ({(after['test_acc'] - fp32_acc) * 100:+.2f} pt) "
        f"| {after['file_bytes']:,} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    accuracy_options(parser)
    args = parser.parse_args()
    print(describe_versions() + "\n" + describe_cpu() + "\n")
    if not args.skip_speed:
        speed(args.min_run_time)
    if not args.skip_accuracy:
        accuracy(args.depth, args.epochs, args.qat_epochs, args.num_train)


if __name__ == "__main__":
    main()
