"""Which torchvision classifiers litcompress can train, prune and quantize: a table, as measured.

Every name in ``torchvision.models.list_models(module=torchvision.models)`` goes through one real
run, as a user would start it (``python train.py model=torchvision model.name=NAME
compress=[prune,qat]`` on tiny ``shapes`` data at a small input size): build, one training
step fake-quantized after pruning half the channels at epoch 0, int8 conversion (the run's
int8 artifact, exported and saved; compiling it, minutes per large model, is left out). Each
model runs in its own process with a time limit, so a hang is reported as such. The table says,
per model: parameters before and after pruning, the MACs ratio, and either "works" or the message
the user gets (the run's one-paragraph configuration error, or the last line of a crash).

    python bench/coverage.py                           # all models (about an hour on 2 cores)
    python bench/coverage.py --models resnet18 googlenet --image-size 32
    python bench/coverage.py --round-to 8 --models regnet_y_400mf   # widths multiples of 8
    python bench/coverage.py --render a.json b.json    # one table from runs split over processes
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def overrides(name: str, image_size: int, backend: str, round_to: int | None = None) -> list[str]:
    rounding = [] if round_to is None else [f"compress.prune.round_to={round_to}"]
    return [
        "model=torchvision",
        f"model.name={name}",
        "data=shapes",
        f"data.image_size={image_size}",
        "data.num_train=16",
        "data.num_val=4",
        "data.num_test=4",
        "data.batch_size=4",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "compress=[prune,qat]",
        "compress.prune.start_epoch=0",
        *rounding,
        "compress.qat.start_epoch=0",
        f"compress.qat.backend={backend}",
        "report.enabled=false",
        "test=false",  # the int8 artifact is converted and saved; not compiled (minutes per model)
        "logger=none",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
        "~callbacks.lr_monitor",
    ]


def run_one(
    name: str, image_size: int, backend: str, round_to: int | None, output_dir: Path
) -> None:
    """In a child process: the run, then the sizes of the networks it started and ended with."""
    sys.path.insert(0, str(ROOT / "bench"))
    from _runs import compose_config
    from litcompress.checkpoint import read_checkpoint, rebuild_network
    from litcompress.measure import count_macs, count_params
    from litcompress.run import main

    cfg = compose_config(overrides(name, image_size, backend, round_to), output_dir)
    main(cfg)
    meta = read_checkpoint(output_dir / "checkpoints" / "last.ckpt")["litcompress"]
    config = meta["model_config"]
    shape = (config["in_channels"], image_size, image_size)
    dense = rebuild_network(config, {})
    pruned = rebuild_network(config, {"pruning_history": meta["pruning_history"]})
    sizes = {
        "params": count_params(dense),
        "params_pruned": count_params(pruned),
        "macs": count_macs(dense, shape),
        "macs_pruned": count_macs(pruned, shape),
        "int8": (output_dir / f"model_int8.{'pt2' if backend == 'pt2e' else 'pt'}").is_file(),
    }
    (output_dir / "coverage.json").write_text(json.dumps(sizes))


def message_of(output: str) -> str:
    """What the user was told: the configuration error, else the last line of the traceback."""
    errors = re.findall(r"Configuration error: (.*?)(?:\n\S|\Z)", output, flags=re.S)
    if errors:
        return " ".join(errors[-1].split())
    lines = [line for line in output.strip().splitlines() if line.strip()]
    tail = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line)]
    return (tail or lines or ["no output"])[-1].strip()


def check(name: str, image_size: int, backend: str, round_to: int | None, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        output_dir = Path(folder) / "run"
        command = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--image-size",
            str(image_size),
            "--backend",
            backend,
            "--output-dir",
            str(output_dir),
            *([] if round_to is None else ["--round-to", str(round_to)]),
        ]
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT
            )
        except subprocess.TimeoutExpired:
            return {"name": name, "result": f"no result within {timeout_s:.0f} s", "time_s": None}
        elapsed = time.perf_counter() - start
        result = output_dir / "coverage.json"
        if done.returncode == 0 and result.is_file():
            return {
                "name": name,
                "result": "works",
                "time_s": elapsed,
                **json.loads(result.read_text()),
            }
        if done.returncode < 0:  # killed: SIGKILL is what the kernel's out-of-memory killer sends
            signal_name = signal.Signals(-done.returncode).name
            hint = " (out of memory?)" if signal_name == "SIGKILL" else ""
            return {"name": name, "result": f"killed by {signal_name}{hint}", "time_s": elapsed}
        kind = "refused" if done.returncode == 2 else f"failed (exit {done.returncode})"
        message = message_of(done.stdout + "\n" + done.stderr)
        return {"name": name, "result": f"{kind}: {message}", "time_s": elapsed}


def row(entry: dict) -> str:
    if entry["result"] != "works":
        time_s = f"{entry['time_s']:.0f}" if entry["time_s"] is not None else "-"
        return f"| {entry['name']} | | | | {time_s} | {_short(entry['result'])} |"
    ratio = entry["macs"] / entry["macs_pruned"]
    return (
        f"| {entry['name']} | {entry['params'] / 1e6:.2f}M | {entry['params_pruned'] / 1e6:.2f}M "
        f"| {ratio:.2f}x | {entry['time_s']:.0f} | works{'' if entry['int8'] else ' (no int8)'} |"
    )


def _short(message: str, limit: int = 700) -> str:
    """For a table cell: the message, or its first sentences up to ``limit`` characters and its
    last sentence (what to do) when that is short."""
    if len(message) <= limit:
        return message
    cut = message.rfind(". ", 0, limit)
    start = message[: cut + 1] if cut > 0 else message[:limit] + "..."
    last = message.rfind(". ", len(start))
    if last > 0 and len(message) - last <= 300:
        return f"{start} ... {message[last + 2 :]}"
    return start


def print_table(results: list[dict]) -> None:
    print("| model | params | pruned | fewer MACs | time (s) | result |")
    print("|---|---|---|---|---|---|")
    for entry in results:
        print(row(entry), flush=True)
    works = sum(entry["result"] == "works" for entry in results)
    print(f"\n{works} of {len(results)} work; the others are refused with the message shown.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="default: every torchvision classifier")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--backend", default="pt2e", choices=["pt2e", "fx"])
    parser.add_argument(
        "--round-to", type=int, help="compress.prune.round_to (e.g. 8); default: null"
    )
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--render", type=Path, nargs="+", help="print the table of --json files instead of running"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one, args.image_size, args.backend, args.round_to, args.output_dir)
        return

    import torchvision

    import litcompress
    from litcompress.measure import describe_cpu

    names = args.models or torchvision.models.list_models(module=torchvision.models)
    rounding = f", round_to={args.round_to}" if args.round_to else ""
    print(
        f"# torchvision classifiers through build, training, pruning (ratio 0.5{rounding}) and "
        f"int8 ({args.backend}) at {args.image_size}x{args.image_size}\n\n{describe_cpu()}; "
        f"torchvision {torchvision.__version__}; litcompress {litcompress.__version__}\n"
    )
    if args.render:  # a table of earlier results (e.g. from several processes), in model order
        found = {e["name"]: e for path in args.render for e in json.loads(path.read_text())}
        print_table([found[name] for name in names if name in found])
        return
    results = []
    for name in names:
        results.append(check(name, args.image_size, args.backend, args.round_to, args.timeout_s))
        print(row(results[-1]), flush=True)
        if args.json:  # after every model: an interrupted run keeps what it measured
            args.json.write_text(json.dumps(results, indent=1))
    print_table(results)


if __name__ == "__main__":
    main()
