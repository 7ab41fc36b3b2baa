"""The ``litcompress`` command: export, predict and evaluate what a run delivered, analyse
how much each of its layers tolerates pruning (``sensitivity``), and search for the fastest
model within an accuracy budget (``auto``).

``train.py`` trains; this command deploys. Its subcommands take Lightning CLI's names where they
fit (``predict``) and Hydra overrides where a data set is needed (``data=shapes``,
``data.data_dir=...``). Exit status: 0 done, 1 an export or a runtime failed (``auto``: no trial
within the budget), 2 bad input (one paragraph saying what to change), 3 some image files could
not be read (the rest were predicted), 130 interrupted (``auto`` goes on with the same command).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litcompress import noise
from litcompress.deploy.formats import FORMATS
from litcompress.errors import ConfigError, ExportError
from litcompress.version import __version__

# Each subcommand imports what it runs (torch, runtimes, techniques) when it runs: the help and
# the refusal of bad arguments come in a fraction of a second.
if TYPE_CHECKING:
    import torch

    from litcompress.deploy.export import Deliverable

log = logging.getLogger("litcompress")

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SKIPPED, EXIT_INTERRUPTED = 1, 2, 3, 130


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="litcompress",
        description="Export, predict with and evaluate the models litcompress runs deliver.",
    )
    main.add_argument("--version", action="version", version=f"litcompress {__version__}")
    main.add_argument(
        "--verbose",
        action="store_true",
        help=f"also show the lines dependencies print that litcompress hides as harmless "
        f"(litcompress.noise; or set {noise.VERBOSE_ENV}=1)",
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    exp = commands.add_parser(
        "export",
        help="export a run's network to ONNX, OpenVINO or a torch program, checked for parity",
        description="Export the network a run delivers (its tested checkpoint; int8 after "
        "compress=qat) with a dynamic batch size, check it against that network on real images "
        "and record preprocessing, class names, parity and the run's report in it.",
    )
    exp.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="a run folder or a .ckpt file")
    exp.add_argument("--format", required=True, choices=list(FORMATS), help="artifact format")
    precision = exp.add_mutually_exclusive_group()
    precision.add_argument(
        "--int8",
        dest="int8",
        action="store_true",
        default=None,
        help="the int8 model, with the ranges QAT learned (default after compress=qat)",
    )
    precision.add_argument(
        "--fp32", dest="int8", action="store_false", help="the float network (default otherwise)"
    )
    exp.add_argument("--output", help="artifact path (default: <run>/export/model[_int8].<ext>)")
    _data_overrides(exp, "data of the parity check (default: the run's own test images)")
    _threads(exp)

    pred = commands.add_parser(
        "predict",
        help="predict the classes of image files or texts",
        description="Predict image files, or texts, with any artifact (.ckpt, .pt2, .pt, .onnx, "
        "OpenVINO .xml), prepared as in training (images resized and normalised, texts "
        "tokenized) and named with the training data's classes, all read from the artifact.",
    )
    pred.add_argument("artifact", metavar="ARTIFACT")
    pred.add_argument("images", nargs="*", metavar="IMAGES", help="files, folders or globs")
    pred.add_argument(
        "--text", action="append", default=[], help="a text to classify (text models; repeatable)"
    )
    pred.add_argument(
        "--file", help="texts to classify: one per line, or a column of a .csv/.tsv (--column)"
    )
    pred.add_argument("--column", default="text", help="the text column of --file (default text)")
    pred.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    pred.add_argument("--output", help="write the predictions to a .csv or .json file")
    pred.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    given = pred.add_argument_group(
        "preprocessing", "for artifacts that do not record it (e.g. an ONNX file from elsewhere)"
    )
    given.add_argument("--image-size", type=int, help="side the images are resized to")
    given.add_argument("--channels", type=int, choices=(1, 3), help="1 (grayscale) or 3 (RGB)")
    given.add_argument("--mean", type=float, nargs="+", help="per channel, of pixels in [0, 1]")
    given.add_argument("--std", type=float, nargs="+", help="per channel, of pixels in [0, 1]")
    given.add_argument("--classes", help="class names, comma-separated, or a file of one per line")
    _threads(pred)

    ev = commands.add_parser(
        "evaluate",
        help="accuracy and CPU latency of any artifact on a data set",
        description="Test accuracy (the whole test split) and CPU latency at batch 1 and 32 of "
        "any artifact, measured as the run report measures them.",
    )
    ev.add_argument("artifact", metavar="ARTIFACT")
    _data_overrides(ev, "the data (default: the data the artifact records), e.g. data=shapes")
    ev.add_argument("--output", help="also write the figures to this .json file")
    ev.add_argument(
        "--min-run-time", type=float, default=1.0, help="seconds of timing per batch size"
    )
    _threads(ev)

    sens = commands.add_parser(
        "sensitivity",
        help="how much accuracy each layer loses when pruned alone (a long job)",
        description="Prune each group of coupled layers of a run's network alone at a range of "
        "ratios, without fine-tuning, and measure validation accuracy: a CSV, a plot (PNG and "
        "TensorBoard) and the per-layer ratios that keep accuracy within --budget, as a file "
        "compress.prune.layer_ratios takes.",
    )
    sens.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="a run folder or a .ckpt file")
    _data_overrides(sens, "the data (default: the data the run trained on), e.g. data=shapes")
    sens.add_argument(
        "--ratios",
        default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
        help="comma-separated pruning ratios to try (default: 0.1 to 0.9)",
    )
    sens.add_argument(
        "--budget", type=float, default=0.01, help="accuracy each layer may lose (default 0.01)"
    )
    sens.add_argument(
        "--max-batches", type=int, help="validation batches per measurement (default: all)"
    )
    sens.add_argument("--importance", default="l2", help="channel ranking (as compress.prune)")
    sens.add_argument("--output", help="output folder (default: <run>/sensitivity)")
    _threads(sens)
    auto = commands.add_parser(
        "auto",
        help="the fastest deployable model within an accuracy budget (a search of trial runs)",
        description="From a trained network, search techniques and their settings (channel "
        "and depth pruning, round_to, distillation, PTQ or QAT, epochs of fine-tuning) with "
        "Optuna, each trial a train.py run measured in the deployment runtime: validation "
        "accuracy and latency at the batch size. The fastest trial within --max-drop of the "
        "network's validation accuracy is confirmed on the test split and delivered "
        "(<output>/delivered/), with summary.md/.csv, trade_off.png and auto.json. The same "
        "command with the same --output goes on with a stopped search.",
    )
    auto.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="the trained network")
    auto.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="train.py overrides every trial shares (default data: the checkpoint's own), "
        "e.g. optim.lr=1e-4 data.batch_size=64",
    )
    auto.add_argument(
        "--max-drop",
        type=float,
        default=0.01,
        help="validation accuracy the model may lose (default 0.01: one point)",
    )
    auto.add_argument(
        "--runtime",
        default="openvino",
        help="where the model will run: openvino (default), onnxruntime or torch",
    )
    auto.add_argument("--batch", type=int, default=32, help="batch size timed (default 32)")
    auto.add_argument("--trials", type=int, default=20, help="trials in all (default 20)")
    auto.add_argument(
        "--epochs", type=int, default=3, help="most epochs of fine-tuning per trial (default 3)"
    )
    auto.add_argument(
        "--quant", default="none,ptq,qat", help="int8 methods tried (default none,ptq,qat)"
    )
    auto.add_argument("--timeout-min", type=float, help="start no trial after this many minutes")
    auto.add_argument("--trial-timeout-min", type=float, help="stop a trial after this long")
    auto.add_argument(
        "--try",
        dest="tries",
        action="append",
        default=[],
        help="a point to try first, e.g. 'ratio=0.5 depth=0.25 quant=qat epochs=2' (repeatable)",
    )
    auto.add_argument(
        "--cluster",
        default="none",
        help="none (default: trials as processes here), local or slurm (cluster=... of train.py)",
    )
    auto.add_argument("--output", help="the search's folder (default outputs/auto/<date>_<time>)")
    auto.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")
    auto.add_argument(
        "--min-run-time", type=float, default=1.0, help="seconds of timing per measurement"
    )
    summ = commands.add_parser(
        "summarize",
        help="the summary of a sweep or any folder of runs",
        description="One row per run (overrides, status, wall time, accuracy, parameters, MACs, "
        "file size, CPU latency, speed-up, the techniques' summaries) and the Pareto front of "
        "accuracy against latency and file size: summary.csv, summary.md, pareto.png and a "
        "TensorBoard run summary/, written into DIR. Exit status 1 when some runs failed.",
    )
    summ.add_argument("folder", metavar="DIR", help="a sweep folder or a folder of run folders")
    summ.add_argument("--no-tensorboard", action="store_true", help="skip the TensorBoard run")
    return main


def _data_overrides(command: argparse.ArgumentParser, help: str) -> None:
    command.add_argument("overrides", nargs="*", metavar="data=...", help=help)


def _threads(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--threads", type=int, help="CPU threads of every runtime (default: torch's, all cores)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    noise.install(verbose=True if args.verbose else None)  # before anything imports torch
    _show_log()
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            return _bad_input(f"--threads {args.threads} must be at least 1.")
        import torch

        torch.set_num_threads(args.threads)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as error:
        return _bad_input(str(error))
    except ExportError as error:
        log.error("Export failed: %s", error)
        return EXIT_FAILED


def _show_log() -> None:
    """Print litcompress's log lines as plain messages on stderr.

    The handler sits on litcompress's own logger, not the root one, as it did before the
    subcommands imported their libraries lazily: Lightning, imported later, keeps its own handler
    (it adds one when the root logger has none) instead of printing each line twice, and other
    libraries' warnings still show as plain messages (Python's last-resort handler).
    """
    log.setLevel(logging.INFO)
    if not any(getattr(handler, "litcompress_cli", False) for handler in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.litcompress_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)


def _bad_input(message: str) -> int:
    log.error("litcompress: %s", message)
    return EXIT_BAD_INPUT


def run_export(args: argparse.Namespace) -> int:
    from litcompress.deploy.export import artifact_name, check_precision, export, resolve_source

    source = resolve_source(args.source)
    deliverable = source.deliverable()
    int8 = deliverable.delivers_int8 if args.int8 is None else args.int8
    output = (
        Path(args.output)
        if args.output
        else source.run_dir / "export" / artifact_name(args.format, int8)
    )
    if output.suffix != FORMATS[args.format]:
        raise ConfigError(
            f"--output {args.output}: a {args.format} artifact's file ends in "
            f"{FORMATS[args.format]}."
        )
    check_precision(deliverable, int8)
    images, labels = _check_images(deliverable, args.overrides)
    exported = export(deliverable, args.format, output, images, int8, labels)
    print(f"{exported.path} ({exported.precision}, {exported.bytes:,} bytes)")
    return 0


def _check_images(
    deliverable: Deliverable, overrides: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    from litcompress.deploy.evaluate import data_config, load_data
    from litcompress.deploy.export import labelled_images

    recorded = deliverable.record.get("data")
    config = data_config(recorded, overrides, deliverable.source)
    data = load_data(config, deliverable.record.get("inputs"))
    expected = deliverable.inputs.shape
    if data.input_shape != expected:
        raise ConfigError(
            f"The data ({config.get('_target_')}) gives images of shape {data.input_shape}, but "
            f"the network takes {expected}: check it on the data it was trained for."
        )
    return labelled_images(data.test_dataloader())


def run_predict(args: argparse.Namespace) -> int:
    from litcompress.deploy.metadata import Preprocessing
    from litcompress.deploy.predict import check_output, gather_images, predict, write_predictions
    from litcompress.deploy.runtimes import load_artifact

    check_output(args.output)
    files = gather_images(args.images) if args.images else []
    runtime = load_artifact(args.artifact, threads=args.threads)
    if runtime.inputs is not None and runtime.inputs.kind == "tokens":
        return _predict_texts(runtime, args)
    if args.text or args.file:
        raise ConfigError(
            f"--text/--file: {args.artifact} is an image model; give it image files, folders "
            f"or globs."
        )
    if not files:
        raise ConfigError(f"No images given: litcompress predict {args.artifact} <files...>.")
    inputs = (runtime.meta or {}).get("inputs") or {}
    if runtime.input_shape and not args.image_size:  # the model's own static input shape
        inputs = {
            "channels": runtime.input_shape[0],
            "image_size": runtime.input_shape[1],
            **inputs,
        }
    preprocessing = Preprocessing.from_inputs(
        {k: v for k, v in inputs.items() if v is not None},
        args.artifact,
        image_size=args.image_size,
        channels=args.channels,
        mean=args.mean,
        std=args.std,
    )
    classes = _classes(args.classes) or inputs.get("classes")
    predictions, skipped = predict(
        runtime,
        files,
        preprocessing,
        classes,
        top_k=args.top_k,
        batch_size=args.batch_size,
        progress=sys.stderr.isatty(),
    )
    for prediction in predictions:
        best = ", ".join(f"{name} {p:.3f}" for _, name, p in prediction.top)
        print(f"{prediction.file}\t{best}")
    if args.output:
        log.info("Predictions of %d images written to %s", len(predictions), args.output)
        write_predictions(predictions, args.output)
    for path, reason in skipped:
        log.warning("Skipped %s: not a readable image (%s)", path, reason)
    if skipped:
        log.warning("%d of %d files were skipped.", len(skipped), len(files))
        return EXIT_SKIPPED
    return 0


def _predict_texts(runtime: Any, args: argparse.Namespace) -> int:
    from litcompress.deploy.predict import predict_texts, read_texts, write_predictions

    if args.images:
        raise ConfigError(
            f"{args.images[0]}: {args.artifact} is a text model; give it texts with "
            f'--text "..." or --file texts.txt, not image files.'
        )
    texts = [*args.text, *(read_texts(args.file, args.column) if args.file else [])]
    predictions = predict_texts(runtime, texts, top_k=args.top_k, batch_size=args.batch_size)
    for prediction in predictions:
        best = ", ".join(f"{name} {p:.3f}" for _, name, p in prediction.top)
        shown = prediction.file if len(prediction.file) <= 60 else prediction.file[:57] + "..."
        print(f"{shown}\t{best}")
    if args.output:
        log.info("Predictions of %d texts written to %s", len(predictions), args.output)
        write_predictions(predictions, args.output, key="text")
    return 0


def _classes(value: str | None) -> list[str] | None:
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [name.strip() for name in value.split(",")]


def run_evaluate(args: argparse.Namespace) -> int:
    if args.output and not args.output.endswith(".json"):
        raise ConfigError(f"--output {args.output}: evaluate writes a .json file.")
    if args.min_run_time <= 0:
        raise ConfigError(f"--min-run-time {args.min_run_time} must be positive seconds.")
    from litcompress.deploy.evaluate import data_config, evaluate, load_data
    from litcompress.deploy.runtimes import load_artifact

    runtime = load_artifact(args.artifact, threads=args.threads)
    config = data_config((runtime.meta or {}).get("data"), args.overrides, args.artifact)
    data = load_data(config, (runtime.meta or {}).get("inputs"))
    figures = evaluate(runtime, data, args.min_run_time)
    _print_figures(figures)
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2))
    return 0


def _print_figures(figures: dict[str, Any]) -> None:
    from litcompress.measure import describe_cpu

    print(f"{figures['artifact']} ({figures['runtime']} {figures['precision']})")
    print(f"  test accuracy: {figures['test_acc']:.4f} on {figures['test_images']} images")
    b1, b32 = figures["latency_ms_b1"], figures["latency_ms_b32"]
    print(f"  CPU latency b1: {b1:.3f} ms, b32: {b32:.3f} ms")
    print(f"  {describe_cpu()}")


def run_sensitivity(args: argparse.Namespace) -> int:
    from rich.progress import Progress
    from torch.utils.tensorboard import SummaryWriter

    from litcompress.checkpoint import CHECKPOINT_KEY, inference_network, read_checkpoint
    from litcompress.compress.prune import IMPORTANCES
    from litcompress.deploy.evaluate import data_config, load_data
    from litcompress.deploy.export import resolve_source
    from litcompress.sensitivity import analyse

    try:
        ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    except ValueError:
        raise ConfigError(f"--ratios {args.ratios}: give fractions, e.g. 0.2,0.5,0.8.") from None
    if not 0 <= args.budget <= 1:
        raise ConfigError(f"--budget {args.budget} must be an accuracy drop in [0, 1], e.g. 0.01.")
    if args.max_batches is not None and args.max_batches < 1:
        raise ConfigError(f"--max-batches {args.max_batches} must be at least 1.")
    if args.importance not in IMPORTANCES or args.importance == "taylor":
        choices = ", ".join(k for k in IMPORTANCES if k != "taylor")
        raise ConfigError(f"--importance {args.importance!r}: choose one of {choices}.")
    source = resolve_source(args.source)
    checkpoint_path, run_dir = source.checkpoint, source.run_dir
    if checkpoint_path is None:
        raise ConfigError(
            f"{args.source} is an int8 model without its float network: analyse the run's "
            f"checkpoint (outputs/runs/<run>/checkpoints/*.ckpt)."
        )
    checkpoint = read_checkpoint(checkpoint_path)
    record = checkpoint[CHECKPOINT_KEY]
    if record.get("quantization"):
        raise ConfigError(
            f"{checkpoint_path} is fake-quantized (compress=qat): analyse the float network, "
            f"e.g. the checkpoint of the run it started from."
        )
    net = inference_network(checkpoint)
    # A text network is analysed on texts tokenized as it was trained.
    data = load_data(
        data_config(record.get("data"), args.overrides, str(checkpoint_path)), record.get("inputs")
    )
    output = Path(args.output) if args.output else run_dir / "sensitivity"
    with Progress() as progress:
        result = analyse(
            net,
            data.val_dataloader(),
            data.num_classes,
            data.input_spec,
            ratios,
            args.max_batches,
            args.importance,
            progress,
        )
    paths = result.write(output, args.budget)
    with SummaryWriter(str(output / "tensorboard")) as writer:
        writer.add_figure("sensitivity/curves", result.figure(), 0)
    suggested = result.suggest(args.budget)
    print(f"validation accuracy before pruning: {result.baseline:.4f}")
    for group, ratio in suggested.items():
        print(f"  {group}: up to {ratio:.2f} within {args.budget} of it")
    print(f"{paths['csv']}\n{paths['png']}\n{paths['layer_ratios']}")
    print(
        f"prune by them: python train.py init_from={checkpoint_path} compress=prune "
        f"compress.prune.ratio=0 compress.prune.layer_ratios={paths['layer_ratios']}"
    )
    return 0


def run_auto(args: argparse.Namespace) -> int:
    from litcompress.auto.search import AutoOptions, search

    options = AutoOptions(
        source=args.source,
        max_drop=args.max_drop,
        runtime=args.runtime,
        batch=args.batch,
        trials=args.trials,
        max_epochs=args.epochs,
        timeout_min=args.timeout_min,
        trial_timeout_min=args.trial_timeout_min,
        output=args.output,
        cluster=args.cluster,
        seed=args.seed,
        tries=args.tries,
        overrides=args.overrides,
        min_run_time_s=args.min_run_time,
        quant=tuple(q.strip() for q in args.quant.split(",") if q.strip()),
    )
    found = search(options)
    if found.record.get("interrupted"):
        return EXIT_INTERRUPTED
    return 0 if found.best is not None else EXIT_FAILED


def run_summarize(args: argparse.Namespace) -> int:
    from litcompress.sweeps import summarize

    paths, jobs = summarize(args.folder, tensorboard=not args.no_tensorboard)
    print(paths["summary.md"].read_text())
    for path in paths.values():
        print(path)
    failed = [job for job in jobs if job.status == "failed"]
    for job in failed:
        print(f"failed: {job.name} ({' '.join(job.overrides)}): {job.error} (log: {job.log})")
    return EXIT_FAILED if failed else 0


COMMANDS = {
    "export": run_export,
    "predict": run_predict,
    "evaluate": run_evaluate,
    "sensitivity": run_sensitivity,
    "summarize": run_summarize,
    "auto": run_auto,
}


if __name__ == "__main__":
    raise SystemExit(main())
