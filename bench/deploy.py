"""Deployment runtimes side by side: torch, inductor, litcompress int8, ONNX Runtime, OpenVINO.

Measured in this one process, with torch's threads (every runtime is given the same number):

1. Speed at 32x32, batch 1 and 32, of each network as litcompress exports it: fp32 torch eager,
   fp32 compiled (inductor, freezing), litcompress int8 (the ``.pt2`` a QAT run delivers,
   compiled), ONNX Runtime fp32 and int8 (QDQ), OpenVINO fp32 and int8 (the same QDQ model as IR),
   and OpenVINO fp32 with its own default precision hint (bf16 on CPUs with AMX/AVX-512 bf16; not
   fp32-exact). Networks: CIFAR ResNet-20, ResNet-56 pruned at 0.5 (one-shot, L2), torchvision
   resnet18 and mobilenet_v2; their int8 models carry quantization ranges set on random batches
   (speed does not depend on training).
2. Accuracy on the generated ``shapes`` data: a ResNet-20 trained in fp32, fine-tuned with QAT from
   that checkpoint with ``export=[onnx,openvino,pt2]``; the test accuracy of every int8 artifact
   (as ``litcompress evaluate`` measures it) against the fp32 network.

    python bench/deploy.py                    # the docs table
    python bench/deploy.py --skip-accuracy    # speed only
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf

from _runs import SHAPE, accuracy_options, prune_half, shapes_run, train_then_qat
from litcompress.checkpoint import rebuild_network
from litcompress.compat import cpu_has_vnni
from litcompress.deploy.evaluate import evaluate, load_data
from litcompress.deploy.export import Deliverable, artifact_name, write_artifact
from litcompress.deploy.int8 import enable_int8_kernels
from litcompress.deploy.runtimes import load_artifact
from litcompress.measure import describe_cpu, describe_versions, measure_latency_ms
from litcompress.quant.backends import prepare

NETWORKS = {
    "CIFAR ResNet-20": ({"_target_": "litcompress.models.CifarResNet", "depth": 20}, False),
    "CIFAR ResNet-56 pruned 0.5": (
        {"_target_": "litcompress.models.CifarResNet", "depth": 56},
        True,
    ),
    "torchvision resnet18": (
        {"_target_": "litcompress.models.torchvision_classifier", "name": "resnet18"},
        False,
    ),
    "torchvision mobilenet_v2": (
        {"_target_": "litcompress.models.torchvision_classifier", "name": "mobilenet_v2"},
        False,
    ),
}
COLUMNS = [
    "torch eager fp32",
    "inductor fp32",
    "litcompress int8 (inductor)",
    "ONNX Runtime fp32",
    "ONNX Runtime int8",
    "OpenVINO fp32",
    "OpenVINO int8",
    "OpenVINO default hint",
]


def deliverables(config: dict, pruned: bool) -> tuple[Deliverable, Deliverable]:
    """The fp32 network and its quantization-aware twin, ranges set on random batches."""
    config = {**config, "num_classes": 10, "in_channels": 3, "image_size": 32}
    net = rebuild_network(config, {}).eval()
    if pruned:
        net = prune_half(net)
    qat = prepare(copy.deepcopy(net), "pt2e", SHAPE, reduce_range=not cpu_has_vnni())
    with torch.no_grad():
        for _ in range(4):
            qat(torch.randn(32, *SHAPE))
    qat.eval()
    name = config["_target_"]
    return (
        Deliverable(net, SHAPE, name, {}, "bench"),
        Deliverable(qat, SHAPE, name, {}, "bench"),
    )


def runtimes(fp32: Deliverable, int8: Deliverable, folder: Path) -> list:
    """One callable per column of the table."""
    paths = {
        (fmt, quantized): write_artifact(
            source, fmt, folder / artifact_name(fmt, quantized), quantized
        )
        for fmt in ("onnx", "openvino")
        for quantized, source in ((False, fp32), (True, int8))
    }
    int8_pt2 = write_artifact(int8, "pt2", folder / "model_int8.pt2", True)
    default_hint = "bf16" if _has_bf16() else "f32"
    return [
        fp32.net,
        torch.compile(fp32.net, dynamic=False),
        load_artifact(int8_pt2),
        load_artifact(paths["onnx", False]),
        load_artifact(paths["onnx", True]),
        load_artifact(paths["openvino", False]),
        load_artifact(paths["openvino", True]),
        load_artifact(paths["openvino", False], precision_hint=default_hint),
    ]


def _has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def speed(min_run_s: float, only: str | None) -> None:
    print(
        "## Speed at 32x32 (CPU latency in ms; in brackets: times faster than torch eager fp32)\n"
    )
    print(f"| model | batch | {' | '.join(COLUMNS)} |")
    print(f"|---|---|{'---|' * len(COLUMNS)}")
    enable_int8_kernels()
    for name, (config, pruned) in NETWORKS.items():
        if only and only not in name:
            continue
        fp32, int8 = deliverables(config, pruned)
        with tempfile.TemporaryDirectory() as tmp:
            models = runtimes(fp32, int8, Path(tmp))
            for batch in (1, 32):
                eager, *others = [measure_latency_ms(m, SHAPE, batch, min_run_s) for m in models]
                cells = [f"{eager:.2f}", *(f"{ms:.2f} ({eager / ms:.1f}x)" for ms in others)]
                print(f"| {name} | {batch} | {' | '.join(cells)} |", flush=True)


def accuracy(depth: int, epochs: int, qat_epochs: int, num_train: int) -> None:
    print(
        f"\n## Accuracy on shapes: ResNet-{depth}, fp32 for {epochs} epochs, then QAT "
        f"fine-tuning for {qat_epochs} with export=[onnx,openvino,pt2] ({num_train} training "
        f"images, Adam)\n"
    )
    common = [*shapes_run(num_train), f"model.depth={depth}"]
    with tempfile.TemporaryDirectory() as tmp:
        fp32, qat = train_then_qat(
            common, epochs, qat_epochs, Path(tmp), ["export=[onnx,openvino,pt2]"]
        )
        qat_dir = Path(tmp) / "qat"
        fp32_acc = fp32["after"]["test_acc"]
        print("| model | runtime | test acc | file (bytes) |")
        print("|---|---|---|---|")
        print(f"| fp32 | torch | {fp32_acc:.4f} | {fp32['after']['file_bytes']:,} |")
        trained = qat["after"]["trained_test_acc"]
        print(
            f"| QAT, fake-quantized | torch | {trained:.4f} ({(trained - fp32_acc) * 100:+.2f}) | |"
        )
        data = None
        for fmt in ("pt2", "onnx", "openvino"):
            entry = qat["export"][fmt]
            runtime = load_artifact(qat_dir / entry["file"])
            data = data or load_data(OmegaConf.create(runtime.meta["data"]))
            acc = evaluate(runtime, data, 0.05)["test_acc"]
            print(
                f"| int8 {entry['file']} | {runtime.runtime} | {acc:.4f} "
                f"({(acc - fp32_acc) * 100:+.2f}) | {entry['bytes']:,} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    accuracy_options(parser)
    parser.add_argument("--only", help="speed of the networks whose name contains this only")
    args = parser.parse_args()
    print(describe_versions() + "\n" + describe_cpu() + "\n")
    if not args.skip_speed:
        speed(args.min_run_time, args.only)
    if not args.skip_accuracy:
        accuracy(args.depth, args.epochs, args.qat_epochs, args.num_train)


if __name__ == "__main__":
    main()
