"""Every technique on a Transformer text classifier, against the peers, in one process.

On the ``reviews`` corpus (Rotten Tomatoes snippets, fresh or rotten, offline), texts cut at 128
tokens, everything measured on this CPU with the same threads:

1. fp32: ``bert_mini`` (4 layers x 256, 4 heads, FFN 1024) from scratch, AdamW 5e-4, ``--epochs``;
2. pruned to 2x and 4x fewer MACs (``compress.prune.speedup``: whole heads and FFN neurons, the
   hidden width kept), each fine-tuned for ``--finetune-epochs`` from the fp32 checkpoint;
3. Torch-Pruning applied by hand with its attention-head recipe (heads and head widths, FFN and the
   hidden width at one ratio, chosen for the same 2x fewer MACs), the same importance (L2) and the
   same fine-tuning, against litcompress's prune, ``--seeds`` seeds each, both tested at the
   fine-tuning's last epoch;
4. PTQ (``init_from=<fp32> compress=ptq trainer.max_epochs=0``) and QAT (``--qat-epochs``);
5. distillation: ``bert_tiny`` (2 x 128) trained alone, and trained from the fp32 network as its
   teacher (``compress.distill.teacher_checkpoint``), ``--student-epochs`` each;
6. the pipeline: ``init_from=<fp32> compress=[prune,distill,qat]`` at 2x fewer MACs.

Then accuracy on the whole test split, and latency at batch 1 and 32 at 128 tokens, in every
runtime: torch eager and inductor (fp32), litcompress int8 (torch, compiled), ONNX Runtime fp32 and
``quantize_dynamic`` int8 (what Optimum applies by default), OpenVINO fp32 and int8, and NNCF's
``nncf.quantize`` of the OpenVINO model (300 calibration texts, ``model_type=TRANSFORMER``; a
benchmark dependency: ``pip install -e '.[bench]'``). Run it alone: latencies on a busy machine
mean nothing.

    python bench/text.py                                          # the docs tables (~40 min)
    python bench/text.py --limit 1500 --epochs 1 --finetune-epochs 1 --qat-epochs 1 \\
        --student-epochs 1 --seeds 1 --min-run-time 0.3            # a quick check
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from _runs import compose_config, export_artifact, train
from litcompress.checkpoint import load_network, read_checkpoint
from litcompress.deploy.evaluate import load_data
from litcompress.deploy.runtimes import OnnxRuntime, OpenVINORuntime, TorchRuntime, load_artifact
from litcompress.measure import (
    count_macs,
    describe_cpu,
    describe_versions,
    evaluate_cpu,
    measure_latency_ms,
)
from litcompress.models import find_classifier
from litcompress.models.attention import attention_modules
from litcompress.run import run as fit

LENGTH = 128
# The seed of the data split (the run's default seed): every run tests on the same texts.
DATA_SEED = 42


class TestAtEnd(Callback):
    """The test accuracy of the network as training leaves it (the last epoch's), on the CPU."""

    def __init__(self) -> None:
        self.test_acc: float | None = None

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        net = copy.deepcopy(pl_module.net).cpu().eval()
        data = trainer.datamodule
        self.test_acc = evaluate_cpu(net, data.test_dataloader(), data.num_classes)


def prune_by_hand(net: torch.nn.Module, ratio: float, example: tuple) -> None:
    """Torch-Pruning's recipe for a ``transformers`` BERT: heads and head widths, FFN and hidden
    width at ``ratio``, the head attributes updated after the step as its BERT example does."""
    attentions = attention_modules(net)
    heads = {p: a.heads for a in attentions for p in a.projections}
    pruner = tp.pruner.BasePruner(
        net,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        num_heads=heads,
        prune_num_heads=True,
        head_pruning_ratio=ratio,
        ignored_layers=[find_classifier(net)[1]],
    )
    pruner.step()
    for attention in attentions:
        module, query = attention.module, attention.projections[0]
        module.num_attention_heads = pruner.num_heads[query]
        module.attention_head_size = query.out_features // module.num_attention_heads
        module.all_head_size = query.out_features
        module.scaling = module.attention_head_size**-0.5


class PrunedByHand(Callback):
    """Prunes the network entering the run by hand (:func:`prune_by_hand`) before training."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            spec = pl_module.input_spec
            prune_by_hand(pl_module.net, self.ratio, spec.example(1, zeros=True))
            pl_module.net.train()


def ratio_for_macs(net: torch.nn.Module, spec: Any, target: float) -> float:
    """The smallest ratio (to 1/200) at which :func:`prune_by_hand` leaves at most ``target``."""
    low, high = 0.0, 0.9
    while high - low > 0.005:
        middle = (low + high) / 2
        trial = copy.deepcopy(net).eval()
        prune_by_hand(trial, middle, spec.example(1, zeros=True))
        if count_macs(trial, spec) <= target:
            high = middle
        else:
            low = middle
    return high


def ort_dynamic(fp32_onnx: Path, output: Path) -> Path:
    """ONNX Runtime's ``quantize_dynamic`` (int8 weights, activations quantized at run time)
    after its ``quant_pre_process``, as Optimum applies it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = output.with_name("prepared.onnx")
    # Both write temporary models into the working folder: work in the output's.
    here = os.getcwd()
    os.chdir(output.parent)
    try:
        # Its symbolic shape inference gives up on the exported BERT ("Incomplete symbolic shape
        # inference"); ONNX's own shape inference and its graph optimization still run.
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(output), weight_type=QuantType.QInt8)
    finally:
        os.chdir(here)
    return output


def nncf_quantize(fp32_xml: Path, data: Any, count: int, output: Path) -> tuple[Path, float]:
    """NNCF's ``nncf.quantize`` of the OpenVINO model at ``fp32_xml`` on the first ``count``
    training texts; the model's path and the seconds it took."""
    import nncf
    import openvino as ov

    samples = []
    for index in range(count):
        ids = data.train_set[index][0][None].numpy()
        samples.append({"input_ids": ids, "attention_mask": (ids * 0 + 1)})
    model = ov.Core().read_model(str(fp32_xml))
    start = time.perf_counter()
    quantized = nncf.quantize(
        model,
        nncf.Dataset(samples),
        subset_size=count,
        model_type=nncf.ModelType.TRANSFORMER,
    )
    seconds = time.perf_counter() - start
    ov.save_model(quantized, str(output), compress_to_fp16=False)
    return output, seconds


def latency(runtime: Any, spec: Any, min_run_time: float) -> tuple[float, float]:
    return tuple(measure_latency_ms(runtime, spec, b, min_run_time) for b in (1, 32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="texts used (default: all)")
    parser.add_argument("--epochs", type=int, default=4, help="fp32 training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--student-epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the pruning comparison")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per latency")
    parser.add_argument(
        "--work-dir", help="keep the runs here and reuse those done (default: a temporary folder)"
    )
    parser.add_argument(
        "--int8-attention",
        action="store_true",
        help="PTQ, QAT and the pipeline with int8 attention matmuls (attention=true)",
    )
    args = parser.parse_args()
    print(describe_versions() + "\n" + describe_cpu() + "\n", flush=True)
    common = [
        "data=reviews",
        f"data.max_length={LENGTH}",
        f"data.seed={DATA_SEED}",
        *([f"data.limit={args.limit}"] if args.limit else []),
        "optim=adamw",
        "trainer.accelerator=cpu",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
        "report.min_run_time_s=0.2",
    ]
    # Options of the runs that make int8 models.
    attention = {
        name: [f"compress.{name}.attention=true"] if args.int8_attention else []
        for name in ("ptq", "qat")
    }
    scratch = [*common, "optim.lr=5e-4"]
    tune = [*common, "optim.lr=2e-4"]
    acc: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.work_dir or tmp)

        def run(name: str, overrides: list[str], **kwargs: Any) -> dict[str, Any] | None:
            done = folder / name / "bench.done"
            report_path = folder / name / "report.json"
            if done.exists():  # --work-dir: made by an earlier call
                return json.loads(report_path.read_text()) if report_path.exists() else None
            start = time.perf_counter()
            if "report.enabled=false" in overrides:
                fit(compose_config(overrides, folder / name), **kwargs)
                report = None
            else:
                report = train(overrides, folder / name, **kwargs)
            print(f"[{name}: {time.perf_counter() - start:.0f} s]", flush=True)
            done.touch()
            return report

        fp32 = run("fp32", [*scratch, "model=bert_mini", f"trainer.max_epochs={args.epochs}"])
        best = next((folder / "fp32" / "checkpoints").glob("epoch*.ckpt"))
        acc["fp32"] = fp32["after"]["test_acc"]
        after = [f"init_from={best}", "model=bert_mini"]
        pruned = {}
        for speedup in (2, 4):
            report = run(
                f"prune{speedup}",
                [
                    *tune,
                    *after,
                    "compress=prune",
                    f"compress.prune.speedup={speedup}",
                    f"trainer.max_epochs={args.finetune_epochs}",
                    "export=[onnx,openvino]",
                ],
            )
            pruned[speedup] = report
            acc[f"prune{speedup}"] = report["after"]["test_acc"]
        ptq = run(
            "ptq",
            [
                *tune,
                *after,
                "compress=ptq",
                *attention["ptq"],
                "trainer.max_epochs=0",
                "export=[onnx,openvino]",
            ],
        )
        qat = run(
            "qat",
            [
                *common,
                "optim.lr=5e-5",
                *after,
                "compress=qat",
                *attention["qat"],
                f"trainer.max_epochs={args.qat_epochs}",
                "export=[openvino]",
            ],
        )
        student = [*scratch, "model=bert_tiny", f"trainer.max_epochs={args.student_epochs}"]
        alone = run("student", student)
        taught = run(
            "distilled",
            [*student, "compress=distill", f"compress.distill.teacher_checkpoint={best}"],
        )
        pipeline = run(
            "pipeline",
            [
                *tune,
                *after,
                "compress=[prune,distill,qat]",
                "compress.prune.speedup=2",
                f"compress.qat.start_epoch={args.finetune_epochs}",
                *attention["qat"],
                f"trainer.max_epochs={args.finetune_epochs + args.qat_epochs}",
                "export=[onnx,openvino]",
            ],
        )

        # Pruning by hand against litcompress's prune, same MACs, same fine-tuning, per seed.
        net = load_network(best).eval()
        data = load_data(
            OmegaConf.create(read_checkpoint(best)["litcompress"]["data"]),
            read_checkpoint(best)["litcompress"]["inputs"],
        )
        data.setup("fit")
        spec = data.input_spec
        base_macs = count_macs(net, spec)
        hand_ratio = ratio_for_macs(net, spec, base_macs / 2)
        hand_net = copy.deepcopy(net)
        prune_by_hand(hand_net, hand_ratio, spec.example(1, zeros=True))
        hand_speedup = base_macs / count_macs(hand_net, spec)
        seeds = {"litcompress": [], "by hand": []}
        for seed in range(args.seeds):
            for name, extra, callbacks in (
                ("litcompress", ["compress=prune", "compress.prune.speedup=2"], []),
                ("by hand", [], [PrunedByHand(hand_ratio)]),
            ):
                probe = TestAtEnd()
                run_name = f"{name}-{seed}".replace(" ", "_")
                run(
                    run_name,
                    [
                        *tune,
                        *after,
                        *extra,
                        f"seed={seed}",
                        # The seed of training only: the split stays the fp32 network's.
                        f"data.seed={DATA_SEED}",
                        f"trainer.max_epochs={args.finetune_epochs}",
                        "test=false",
                        "report.enabled=false",
                    ],
                    extra_callbacks=[probe, *callbacks],
                )
                result = folder / run_name / "test_at_end.json"
                if probe.test_acc is not None:
                    result.write_text(json.dumps(probe.test_acc))
                seeds[name].append(json.loads(result.read_text()))

        # Every runtime, on the whole test split and at 128 tokens.
        out = folder / "artifacts"
        out.mkdir(exist_ok=True)
        fp32_onnx = export_artifact(best, "onnx", out / "fp32.onnx")
        fp32_xml = export_artifact(best, "openvino", out / "fp32.xml")
        threads = torch.get_num_threads()
        eager = load_artifact(best)
        rows: dict[str, tuple[Any, Any]] = {  # name -> (runtime for accuracy, for latency)
            "torch eager fp32": (eager, eager),
            "torch inductor fp32": (eager, TorchRuntime(best, None, "fp32", torch.compile(net))),
            "ONNX Runtime fp32": (load_artifact(fp32_onnx),) * 2,
            "ONNX Runtime quantize_dynamic int8": (
                OnnxRuntime(ort_dynamic(fp32_onnx, out / "dynamic.onnx"), None, threads),
            )
            * 2,
            "OpenVINO fp32": (load_artifact(fp32_xml),) * 2,
        }
        try:
            nncf_xml, seconds = nncf_quantize(fp32_xml, data, 300, out / "nncf.xml")
            nncf_name = f"OpenVINO int8, NNCF nncf.quantize (300 texts, {seconds:.0f} s)"
            rows[nncf_name] = (OpenVINORuntime(nncf_xml, None, threads),) * 2
        except ImportError:
            print("NNCF is not installed (pip install -e '.[bench]'): its row is left out.\n")
        int8_pt2 = folder / "ptq" / "model_int8.pt2"
        rows["litcompress PTQ int8, torch (compiled)"] = (
            load_artifact(int8_pt2, compile=False),
            load_artifact(int8_pt2),
        )
        for fmt, runtime in (("onnx", "ONNX Runtime"), ("openvino", "OpenVINO")):
            artifact = load_artifact(folder / "ptq" / ptq["export"][fmt]["file"])
            rows[f"litcompress PTQ int8, {runtime}"] = (artifact, artifact)
        qat_xml = load_artifact(folder / "qat" / qat["export"]["openvino"]["file"])
        rows["litcompress QAT int8, OpenVINO"] = (qat_xml, qat_xml)
        for speedup, report in pruned.items():
            artifact = load_artifact(
                folder / f"prune{speedup}" / report["export"]["openvino"]["file"]
            )
            rows[f"litcompress pruned {speedup}x fewer MACs, OpenVINO fp32"] = (artifact, artifact)
        pipe_pt2 = folder / "pipeline" / "model_int8.pt2"
        rows["litcompress pipeline int8, torch (compiled)"] = (
            load_artifact(pipe_pt2, compile=False),
            load_artifact(pipe_pt2),
        )
        for fmt, runtime in (("onnx", "ONNX Runtime"), ("openvino", "OpenVINO")):
            artifact = load_artifact(folder / "pipeline" / pipeline["export"][fmt]["file"])
            rows[f"litcompress pipeline int8, {runtime}"] = (artifact, artifact)
        results = {}
        for name, (for_accuracy, for_latency) in rows.items():
            accuracy = evaluate_cpu(
                for_accuracy, data.test_dataloader(), data.num_classes, length=LENGTH
            )
            results[name] = (accuracy, *latency(for_latency, spec, args.min_run_time))
            print(f"[{name}: measured]", flush=True)

    test_texts = len(data.test_set)
    print(
        f"\n## bert_mini on reviews ({len(data.train_set)} training texts, {args.epochs} epochs): "
        f"accuracy on the {test_texts} test texts, latency at {LENGTH} tokens (ms; in brackets: "
        f"times faster than torch eager fp32), {threads} threads\n"
    )
    print("| model, runtime | test acc | batch 1 | batch 32 |")
    print("|---|---|---|---|")
    _, eager_b1, eager_b32 = results["torch eager fp32"]
    for name, (accuracy, b1, b32) in results.items():
        drop = (accuracy - results["torch eager fp32"][0]) * 100
        print(
            f"| {name} | {accuracy:.4f} ({drop:+.2f} pt) "
            f"| {b1:.2f} ({eager_b1 / b1:.2f}x) | {b32:.2f} ({eager_b32 / b32:.2f}x) |"
        )

    print("\n## Accuracy of each technique (test accuracy of the checkpoint best on validation)\n")
    print("| model | MACs | test acc |")
    print("|---|---|---|")
    macs = fp32["after"]["macs"]
    print(f"| fp32 bert_mini | {macs / 1e6:.1f}M | {acc['fp32']:.4f} |")
    for report in pruned.values():
        heads = report["prune"]["summary"].split("; ")[-1]
        print(
            f"| pruned to {report['prune']['achieved_macs_speedup']:.2f}x fewer MACs ({heads}), "
            f"{args.finetune_epochs} epochs | {report['after']['macs'] / 1e6:.1f}M "
            f"| {report['after']['test_acc']:.4f} |"
        )
    for name, report in (("PTQ int8", ptq), (f"QAT int8, {args.qat_epochs} epoch(s)", qat)):
        print(f"| {name} | {macs / 1e6:.1f}M | {report['after']['test_acc']:.4f} |")
    for name, report in (
        ("bert_tiny alone", alone),
        ("bert_tiny distilled from bert_mini", taught),
    ):
        print(
            f"| {name}, {args.student_epochs} epochs | {report['after']['macs'] / 1e6:.1f}M "
            f"| {report['after']['test_acc']:.4f} |"
        )
    print(
        f"| pipeline prune 2x + distill + QAT int8 | {pipeline['after']['macs'] / 1e6:.1f}M "
        f"| {pipeline['after']['test_acc']:.4f} |"
    )

    print(
        f"\n## Pruning to 2x fewer MACs: litcompress against Torch-Pruning by hand (ratio "
        f"{hand_ratio:.3f}: {hand_speedup:.2f}x fewer MACs), L2 importance, {args.finetune_epochs} "
        f"epochs of fine-tuning, test accuracy at the last epoch\n"
    )
    print("| method | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " | mean |")
    print("|---|" + "---|" * (args.seeds + 1))
    for name, values in seeds.items():
        cells = " | ".join(f"{v:.4f}" for v in values)
        print(f"| {name} | {cells} | {statistics.mean(values):.4f} |")

    print("\n## Targets\n")
    base = results["torch eager fp32"][0]
    fastest = min(
        (n for n in results if n.startswith("litcompress pipeline")), key=lambda n: results[n][2]
    )
    f_acc, f_b1, f_b32 = results[fastest]
    checks = [
        (
            f"fastest pipeline artifact ({fastest}) >= 8x faster at batch 32",
            eager_b32 / f_b32 >= 8,
            f"{eager_b32 / f_b32:.2f}x",
        ),
        ("... and >= 4x at batch 1", eager_b1 / f_b1 >= 4, f"{eager_b1 / f_b1:.2f}x"),
        ("... within 1 point of fp32", f_acc >= base - 0.01, f"{(f_acc - base) * 100:+.2f} pt"),
    ]
    ours_ort, ours_ov = (
        results[f"litcompress PTQ int8, {r}"] for r in ("ONNX Runtime", "OpenVINO")
    )
    dyn = results["ONNX Runtime quantize_dynamic int8"]
    checks += [
        (
            "int8 in ONNX Runtime at least as accurate as quantize_dynamic",
            ours_ort[0] >= dyn[0],
            f"{ours_ort[0]:.4f} vs {dyn[0]:.4f}",
        ),
        (
            "... and at least as fast (batch 32)",
            ours_ort[2] <= dyn[2],
            f"{ours_ort[2]:.2f} vs {dyn[2]:.2f} ms",
        ),
    ]
    nncf_rows = [n for n in results if "NNCF" in n]
    if nncf_rows:
        peer = results[nncf_rows[0]]
        checks += [
            (
                "int8 in OpenVINO at least as accurate as NNCF",
                ours_ov[0] >= peer[0],
                f"{ours_ov[0]:.4f} vs {peer[0]:.4f}",
            ),
            (
                "... and at least as fast (batch 32)",
                ours_ov[2] <= peer[2],
                f"{ours_ov[2]:.2f} vs {peer[2]:.2f} ms",
            ),
        ]
    ours, hand = statistics.mean(seeds["litcompress"]), statistics.mean(seeds["by hand"])
    checks += [
        (
            "pruned 2x within 1 point of fp32",
            acc["prune2"] >= acc["fp32"] - 0.01,
            f"{(acc['prune2'] - acc['fp32']) * 100:+.2f} pt",
        ),
        (
            "pruned 2x at least as accurate as Torch-Pruning by hand (mean of seeds)",
            ours >= hand,
            f"{ours:.4f} vs {hand:.4f}",
        ),
        (
            "distillation >= +1 point over the student alone",
            taught["after"]["test_acc"] >= alone["after"]["test_acc"] + 0.01,
            f"{(taught['after']['test_acc'] - alone['after']['test_acc']) * 100:+.2f} pt",
        ),
    ]
    print("| target | met | measured |")
    print("|---|---|---|")
    for name, met, measured in checks:
        print(f"| {name} | {'yes' if met else 'no'} | {measured} |")


if __name__ == "__main__":
    main()
