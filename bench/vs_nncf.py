"""litcompress int8 against NNCF's post-training quantization, both in OpenVINO, on one network.

Measured in this one process, on the generated ``shapes`` data, with the defaults of each tool:

1. fp32: a CIFAR ResNet-``--depth`` trained from scratch for ``--epochs`` (Adam);
2. litcompress PTQ: ``init_from=<best fp32 checkpoint> compress=ptq trainer.max_epochs=0
   export=[openvino]`` (32 calibration batches of training images, histogram observer);
3. litcompress QAT: ``init_from=<the same checkpoint> compress=qat
   trainer.max_epochs=--qat-epochs export=[openvino]`` (the fine-tuning defaults: a learning rate
   ten times below the from-scratch one, no warm-up);
4. NNCF: ``nncf.quantize`` of the fp32 network's OpenVINO model (litcompress's fp32 export of the
   same checkpoint), calibrated on the very images litcompress's PTQ calibrated on (recorded as
   the PTQ run read them), once on all of them and once on NNCF's default subset (300).

Then every OpenVINO model's accuracy on the whole test split and its latency at batch 1 and 32,
against OpenVINO fp32 (the same runtime, the same threads). NNCF is a benchmark dependency only:
``pip install -e '.[bench]'``.

    python bench/vs_nncf.py                                   # the docs table
    python bench/vs_nncf.py --epochs 2 --num-train 1024       # a quick check
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from _runs import export_artifact, shapes_run, train
from litcompress.deploy.evaluate import evaluate, load_data
from litcompress.deploy.runtimes import OpenVINORuntime, load_artifact
from litcompress.measure import describe_cpu, describe_versions


class RecordTrainingImages(Callback):
    """Keeps every batch of images read from the training loader of the run it is given to (the
    calibration batches of a zero-epoch PTQ run, which trains on none)."""

    def __init__(self) -> None:
        self.images: list[torch.Tensor] = []

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        data, recorded = trainer.datamodule, self.images
        original = data.train_dataloader

        class Recording:
            def __init__(self, loader: Any) -> None:
                self.loader = loader

            def __len__(self) -> int:
                return len(self.loader)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.loader, name)

            def __iter__(self) -> Any:
                for images, labels in self.loader:
                    recorded.append(images.clone())
                    yield images, labels

        data.train_dataloader = lambda: Recording(original())


def nncf_quantize(fp32_xml: Path, images: torch.Tensor, subset: int, output: Path) -> float:
    """NNCF's ``nncf.quantize`` of the OpenVINO model at ``fp32_xml`` on ``subset`` of
    ``images`` (one per calibration sample), saved at ``output``; the seconds it took."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_xml))
    samples = [image[None].numpy() for image in images[:subset]]
    start = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
    seconds = time.perf_counter() - start
    ov.save_model(quantized, str(output), compress_to_fp16=False)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=20, help="ResNet depth")
    parser.add_argument("--epochs", type=int, default=15, help="fp32 training epochs")
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per latency")
    args = parser.parse_args()
    print(describe_versions() + "\n" + describe_cpu() + "\n")
    common = [*shapes_run(args.num_train), f"model.depth={args.depth}", "test=false"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train([*common, "test=true", f"trainer.max_epochs={args.epochs}"], folder / "fp32")
        best = next((folder / "fp32" / "checkpoints").glob("epoch*.ckpt"))
        recorder = RecordTrainingImages()
        ptq = train(
            [
                *common,
                f"init_from={best}",
                "compress=ptq",
                "trainer.max_epochs=0",
                "export=[openvino]",
            ],
            folder / "ptq",
            extra_callbacks=[recorder],
        )
        qat = train(
            [
                *common,
                f"init_from={best}",
                "compress=qat",
                f"trainer.max_epochs={args.qat_epochs}",
                "export=[openvino]",
            ],
            folder / "qat",
        )
        fp32_xml = export_artifact(best, "openvino", folder / "fp32.xml")
        calibration = torch.cat(recorder.images)
        nncf_models = {}
        for subset in (len(calibration), 300):
            path = folder / f"nncf_{subset}.xml"
            seconds = nncf_quantize(fp32_xml, calibration, subset, path)
            nncf_models[f"NNCF nncf.quantize, {subset} images ({seconds:.1f} s)"] = path

        rows = {
            "OpenVINO fp32 (litcompress export)": load_artifact(fp32_xml),
            f"litcompress PTQ, calibrated on {len(calibration)} images": load_artifact(
                folder / "ptq" / ptq["export"]["openvino"]["file"]
            ),
            f"litcompress QAT, {args.qat_epochs} epoch(s)": load_artifact(
                folder / "qat" / qat["export"]["openvino"]["file"]
            ),
            **{
                name: OpenVINORuntime(path, None, torch.get_num_threads())
                for name, path in nncf_models.items()
            },
        }
        data = load_data(OmegaConf.create(rows["OpenVINO fp32 (litcompress export)"].meta["data"]))
        results = {name: evaluate(rt, data, args.min_run_time) for name, rt in rows.items()}

    fp32 = results["OpenVINO fp32 (litcompress export)"]
    print(
        f"## ResNet-{args.depth} on shapes ({args.num_train} training images, {args.epochs} "
        f"epochs), int8 in OpenVINO: accuracy on the {fp32['test_images']} test images, latency "
        f"(ms; in brackets: times faster than OpenVINO fp32)\n"
    )
    print("| model | test acc | batch 1 | batch 32 |")
    print("|---|---|---|---|")
    for name, result in results.items():
        acc, b1, b32 = result["test_acc"], result["latency_ms_b1"], result["latency_ms_b32"]
        drop = "" if result is fp32 else f" ({(acc - fp32['test_acc']) * 100:+.2f} pt)"
        speed = [
            f"{ms:.2f}" if result is fp32 else f"{ms:.2f} ({fp32[key] / ms:.2f}x)"
            for ms, key in ((b1, "latency_ms_b1"), (b32, "latency_ms_b32"))
        ]
        print(f"| {name} | {acc:.4f}{drop} | {speed[0]} | {speed[1]} |", flush=True)


if __name__ == "__main__":
    main()
