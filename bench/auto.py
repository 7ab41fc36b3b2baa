"""``litcompress auto`` against a hand-written grid, NNCF's accuracy-controlled quantization and
channel pruning alone, in OpenVINO, with a one-point budget.

For each network (``--networks``: ``resnet56`` on ``shapes``, ``bert_mini`` on ``reviews``):

1. fp32: the network trained from scratch (ResNet-56: Adam, 10,000 images, ``--epochs``;
   bert_mini: AdamW 5e-4, the texts cut at 128 tokens);
2. auto: ``litcompress auto <fp32> --max-drop 0.01 --runtime openvino --batch B --trials
   --trials --epochs --tune-epochs`` for B = 32 and 1 (each its own search);
3. grid: the same command with the 6 points of a hand-written grid (channel ratio x blocks
   removed, round_to 8, distilled, QAT) given with ``--try`` (the sampler never chooses), the
   best within the budget at each batch size taken from its trials;
4. NNCF: ``nncf.quantize_with_accuracy_control`` of the fp32 OpenVINO model, ``max_drop=0.01``
   (absolute), validated on the validation split, calibrated on 300 training examples;
5. channel pruning alone: one trial, ``ratio=0.5 round_to=8``, distilled, fp32.

Then every model, in this one process: accuracy on the whole test split and OpenVINO latency at
batch 1 and 32, against torch eager fp32 (the checkpoint) and OpenVINO fp32. NNCF is a benchmark
dependency only: ``pip install -e '.[bench]'``. Trials fine-tune on ``--tune-images`` training
images of ``shapes`` (its validation and test splits do not depend on it).

    # the docs tables
    python bench/auto.py --networks bert_mini --trials 4 --tune-epochs 1 \
        --work-dir outputs/bench_auto
    python bench/auto.py --networks resnet56 --trials 6 --tune-epochs 3 --tune-images 10000 \
        --work-dir outputs/bench_auto
    python bench/auto.py --networks resnet56 --trials 4 --epochs 3       # a quick check
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from _runs import export_artifact, shapes_run, train
from litcompress.cli import main as cli
from litcompress.deploy.evaluate import load_data
from litcompress.deploy.runtimes import OpenVINORuntime, load_artifact
from litcompress.measure import describe_cpu, describe_versions, evaluate_cpu, measure_latency_ms

TEXT_LENGTH = 128
QUIET = ["~callbacks.progress_bar", "~callbacks.model_summary", "trainer.accelerator=cpu"]
# The hand-written grid: channel ratio x blocks removed, rounded to 8, distilled, QAT.
GRIDS = {
    "resnet56": ((0.3, 0.5), (6, 12, 18)),  # of its 25 removable blocks
    "bert_mini": ((0.25, 0.5), (0, 1, 2)),  # of its 4 encoder layers
}


def grid(network: str, epochs: int) -> list[str]:
    """The grid's points as ``--try`` settings."""
    ratios, depths = GRIDS[network]
    return [
        f"ratio={r} round_to=8 depth={d} distill=true quant=qat epochs={epochs}"
        for r in ratios
        for d in depths
    ]


CHANNELS_ONLY = "ratio=0.5 round_to=8 depth=0 distill=true quant=none epochs={epochs}"


def fp32_overrides(network: str, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The overrides of the fp32 run, and those every trial shares."""
    if network == "resnet56":
        base = [*shapes_run(10000, 0.3), "model.depth=56", f"trainer.max_epochs={args.epochs}"]
        return base, [*QUIET, f"data.num_train={args.tune_images}", "optim.lr=5e-4"]
    base = [
        "data=reviews",
        f"data.max_length={TEXT_LENGTH}",
        "optim=adamw",
        "optim.lr=5e-4",
        "model=bert_mini",
        *QUIET,
        f"trainer.max_epochs={args.text_epochs}",
    ]
    return base, [*QUIET, "optim.lr=2e-4"]


def search(checkpoint: Path, folder: Path, shared: list[str], args, *extra: str) -> dict:
    """``litcompress auto`` (reused when done); its auto.json."""
    record = folder / "auto.json"
    if not (folder / "bench.done").exists():
        start = time.perf_counter()
        code = cli(
            [
                "auto",
                str(checkpoint),
                *shared,
                "--max-drop=0.01",
                "--runtime=openvino",
                f"--epochs={args.tune_epochs}",
                f"--output={folder}",
                "--min-run-time=1.0",
                *extra,
            ]
        )
        if code not in (0, 1):  # 1: nothing within the budget, a result too
            raise SystemExit(f"litcompress auto into {folder} failed (exit status {code})")
        print(f"[{folder.name}: {(time.perf_counter() - start) / 60:.1f} min]", flush=True)
        (folder / "bench.done").touch()
    return json.loads(record.read_text())


def best_of(folder: Path, batch: int, data: Any, minimum: float) -> dict | None:
    """The fastest trial of the search in ``folder`` within the budget, timed at ``batch``."""
    best = None
    with open(folder / "summary.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["feasible"] == "True"]
    for row in rows:
        trial = folder / row["folder"]
        report = json.loads((trial / "report.json").read_text())
        artifact = trial / report["runtime"]["file"]
        ms = measure_latency_ms(load_artifact(artifact), data.input_spec, batch, minimum)
        if best is None or ms < best["ms"]:
            best = {"ms": ms, "artifact": artifact, "settings": row["settings"]}
    return best


def nncf_accuracy_control(fp32_xml: Path, data: Any, output: Path) -> tuple[Path, float]:
    """``nncf.quantize_with_accuracy_control(max_drop=0.01)`` of the OpenVINO model: validated on
    the validation split, calibrated on 300 training examples; its path and seconds."""
    import nncf
    import numpy as np
    import openvino as ov

    model = ov.Core().read_model(str(fp32_xml))
    names = [port.get_any_name() for port in model.inputs]

    def feed(example: tuple) -> dict[str, Any]:
        x = example[0][None].numpy()
        if data.input_spec.kind == "tokens":  # one text, unpadded: every token attended
            return {names[0]: x, names[1]: np.ones_like(x)}
        return {names[0]: x}

    calibration = nncf.Dataset([data.train_set[i] for i in range(300)], feed)
    validation = nncf.Dataset(list(data.val_set), feed)

    def accuracy(compiled: Any, items: Any) -> float:
        hits = [int(np.argmax(compiled(feed(item))[0]) == int(item[-1])) for item in items]
        return float(np.mean(hits))

    kind = nncf.ModelType.TRANSFORMER if data.input_spec.kind == "tokens" else None
    start = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        model,
        calibration_dataset=calibration,
        validation_dataset=validation,
        validation_fn=accuracy,
        max_drop=0.01,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=300,
        **({"model_type": kind} if kind else {}),
    )
    seconds = time.perf_counter() - start
    ov.save_model(quantized, str(output), compress_to_fp16=False)
    return output, seconds


def bench_network(network: str, args: argparse.Namespace, work: Path) -> None:
    folder = work / network
    base, shared = fp32_overrides(network, args)
    if not (folder / "fp32" / "bench.done").exists():
        start = time.perf_counter()
        train([*base, "test=true"], folder / "fp32")
        print(f"[fp32: {(time.perf_counter() - start) / 60:.1f} min]", flush=True)
        (folder / "fp32" / "bench.done").touch()
    checkpoint = next((folder / "fp32" / "checkpoints").glob("epoch*.ckpt"))
    trials = f"--trials={args.trials}"
    searches = {
        f"auto b{b}": search(
            checkpoint, folder / f"auto_b{b}", shared, args, trials, f"--batch={b}"
        )
        for b in (32, 1)
    }
    points = [f"--try={point}" for point in grid(network, args.tune_epochs)[: args.trials]]
    searches["grid"] = search(checkpoint, folder / "grid", shared, args, trials, *points)
    channels_only = CHANNELS_ONLY.format(epochs=args.tune_epochs)
    searches["channels"] = search(
        checkpoint, folder / "channels", shared, args, "--trials=1", f"--try={channels_only}"
    )
    fp32_xml = folder / "fp32.xml"
    if not fp32_xml.exists():
        export_artifact(checkpoint, "openvino", fp32_xml)
    meta = load_artifact(fp32_xml).meta
    data = load_data(OmegaConf.create(meta["data"]), meta.get("inputs"))
    nncf_xml = folder / "nncf_accuracy_control.xml"
    if not nncf_xml.exists():
        _, seconds = nncf_accuracy_control(fp32_xml, data, nncf_xml)
        print(f"[NNCF quantize_with_accuracy_control: {seconds / 60:.1f} min]", flush=True)

    # Every model measured here, one after the other, alone.
    mrt = args.min_run_time
    spec = data.input_spec
    length = spec.max_length if spec.kind == "tokens" else None

    def measure(runtime: Any) -> dict[str, float]:
        return {
            "test_acc": evaluate_cpu(
                runtime, data.test_dataloader(), data.num_classes, length=length
            ),
            **{f"b{b}": measure_latency_ms(runtime, spec, b, mrt) for b in (1, 32)},
        }

    eager = measure(load_artifact(checkpoint))
    ov_fp32 = measure(load_artifact(fp32_xml))
    rows: list[tuple[str, str, dict[str, float]]] = [
        ("torch eager fp32 (the network as trained)", "", eager),
        ("OpenVINO fp32", "", ov_fp32),
        (
            "NNCF quantize_with_accuracy_control(max_drop=0.01)",
            "int8 (NNCF picks the layers)",
            measure(OpenVINORuntime(nncf_xml, None, _threads())),
        ),
    ]
    channels = searches["channels"].get("delivered")
    if channels:
        rows.append(
            (
                "channel pruning alone",
                channels["description"],
                measure(load_artifact(folder / "channels" / channels["artifact"])),
            )
        )
    for b in (32, 1):
        for name in ("grid", f"auto b{b}"):
            record = searches[name]
            if name == "grid":
                best = best_of(folder / "grid", b, data, mrt)
                artifact, settings = (best["artifact"], best["settings"]) if best else (None, "")
            else:
                delivered = record.get("delivered")
                artifact = folder / f"auto_b{b}" / delivered["artifact"] if delivered else None
                settings = delivered["description"] if delivered else ""
            if artifact is not None:
                label = f"{name} (best at batch {b})" if name == "grid" else name
                rows.append((label, settings, measure(load_artifact(artifact))))
            else:
                rows.append((f"{name}: nothing within the budget", "", {}))

    print(
        f"\n## {network}: fp32 test accuracy {eager['test_acc']:.4f} (validation "
        f"{searches['auto b32']['baseline']['val_acc']:.4f}); budget: 1 point on validation; "
        f"OpenVINO, {_threads()} threads; latency in ms (times faster than torch eager fp32; "
        f"than OpenVINO fp32)\n"
    )
    print("| model | settings | test acc | batch 1 | batch 32 |")
    print("|---|---|---|---|---|")
    for name, settings, result in rows:
        if not result:
            print(f"| {name} | | | | |")
            continue
        cells = [
            f"{result[f'b{b}']:.3f} ({eager[f'b{b}'] / result[f'b{b}']:.1f}x; "
            f"{ov_fp32[f'b{b}'] / result[f'b{b}']:.1f}x)"
            for b in (1, 32)
        ]
        drop = (result["test_acc"] - eager["test_acc"]) * 100
        accuracy = f"{result['test_acc']:.4f} ({drop:+.2f} pt)"
        print(f"| {name} | {settings} | {accuracy} | {cells[0]} | {cells[1]} |")
    for name, record in searches.items():
        counts = record.get("trials", {})
        print(
            f"\n{name}: {counts.get('run')} trials, {counts.get('feasible')} within the budget, "
            f"{counts.get('infeasible')} over, {counts.get('refused', 0)} refused, "
            f"{counts.get('failed')} failed"
        )


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", default="resnet56,bert_mini")
    parser.add_argument("--epochs", type=int, default=15, help="ResNet-56 fp32 epochs")
    parser.add_argument("--text-epochs", type=int, default=4, help="bert_mini fp32 epochs")
    parser.add_argument("--trials", type=int, default=6, help="trials of each search")
    parser.add_argument("--tune-epochs", type=int, default=2, help="most epochs per trial")
    parser.add_argument("--tune-images", type=int, default=3000, help="shapes images per trial")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per latency")
    parser.add_argument("--work-dir", default="outputs/bench_auto", help="runs kept and reused")
    args = parser.parse_args()
    print(describe_versions() + "\n" + describe_cpu() + "\n", flush=True)
    for network in args.networks.split(","):
        bench_network(network, args, Path(args.work_dir).absolute())


if __name__ == "__main__":
    main()
