"""Knowledge distillation, and the whole pipeline: what distillation wins back, what it all gains.

Measured in this one process, on the generated ``shapes`` data, the same epochs for every run:

1. A teacher: CIFAR ResNet-56 (``--teacher-depth``) trained from scratch.
2. Students with and without distillation from it (``compress=distill``, alpha 0.5, T 4):
   a ResNet-20 (``--student-depth``) from scratch, and the teacher pruned at 0.5 and fine-tuned
   (``init_from`` the teacher, ``compress=prune`` vs ``compress=[prune,distill]``).
3. The full pipeline from the teacher, ``compress=[prune,distill,qat]``: accuracy, MACs, file size
   and CPU latency at batch 1 and 32 of the int8 pruned student against the fp32 teacher.

    python bench/distill.py --teacher-run UNPRUNED --features layer1,layer2,layer3   # docs table
    python bench/distill.py                                 # teacher trained here, logits only
    python bench/distill.py --teacher-depth 20 --student-depth 8 --epochs 4 --num-train 2000

``--hard`` uses a harder ``shapes`` (:data:`HARD_SHAPES`: smaller shapes among distractor blobs
and lines, more noise; all 10 classes), on which 15 epochs do not saturate accuracy (the docs
says what it showed: a teacher must first be better than the student is alone);
``--students-only`` runs the teacher and the two ResNet-20 rows alone:

    python bench/distill.py --hard --students-only --features layer1,layer2,layer3

``--teacher-run DIR`` takes the teacher from a finished run instead of training it (its
``report.json`` and best checkpoint; e.g. ``unpruned`` of ``bench/prune.py --output-dir``, which
trains the same ResNet-56 with the same options). ``--features layer1,layer2,layer3`` adds feature
distillation at those layers to every distilled row.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _runs import shapes_run, train
from litcompress.measure import describe_cpu, describe_versions

# The harder data of --hard: shapes of 25-60% of the image side, 2 distractors, more noise.
# (15-40% with 4 distractors and noise 0.15, and 20-50% with 3 and 0.12, left every network at
# chance after 6-10 epochs on 3,000-4,000 images; with these a ResNet-20 is at 0.36 after 8.)
HARD_SHAPES = ["data.scale_range=[0.25,0.6]", "data.clutter=2", "data.noise_std=0.1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher-depth", type=int, default=56)
    parser.add_argument("--student-depth", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=15, help="epochs of every run")
    parser.add_argument("--num-train", type=int, default=10000)
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds per latency")
    parser.add_argument("--teacher-run", type=Path, help="a finished run of the teacher")
    parser.add_argument("--features", help="layers of feature distillation, comma-separated")
    parser.add_argument("--hard", action="store_true", help="the harder shapes (HARD_SHAPES)")
    parser.add_argument(
        "--students-only", action="store_true", help="only the ResNet-20 rows beside the teacher"
    )
    args = parser.parse_args()
    common = [*shapes_run(args.num_train, args.min_run_time), f"trainer.max_epochs={args.epochs}"]
    if args.hard:
        common += HARD_SHAPES
    teacher_net = f"model.depth={args.teacher_depth}"
    student_net = f"model.depth={args.student_depth}"
    print(describe_versions() + "\n" + describe_cpu() + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.teacher_run:
            teacher = json.loads((args.teacher_run / "report.json").read_text())
        else:
            teacher = train([*common, teacher_net], root / "teacher")
        teacher_dir = args.teacher_run or root / "teacher"
        ckpt = next((teacher_dir / "checkpoints").glob("epoch*.ckpt"))
        distill = ["compress.distill.alpha=0.5", "compress.distill.temperature=4"]
        if args.features:
            distill.append(f"compress.distill.features=[{args.features}]")
        runs = {
            f"ResNet-{args.student_depth} from scratch": [student_net],
            f"ResNet-{args.student_depth} from scratch + distill": [
                student_net,
                "compress=distill",
                f"compress.distill.teacher_checkpoint={ckpt}",
                *distill,
            ],
            f"ResNet-{args.teacher_depth} pruned 0.5, fine-tuned": [
                teacher_net,
                f"init_from={ckpt}",
                "compress=prune",
            ],
            f"ResNet-{args.teacher_depth} pruned 0.5, fine-tuned + distill": [
                teacher_net,
                f"init_from={ckpt}",
                "compress=[prune,distill]",
                *distill,
            ],
            f"ResNet-{args.teacher_depth} prune + distill + int8 QAT": [
                teacher_net,
                f"init_from={ckpt}",
                "compress=[prune,distill,qat]",
                f"compress.qat.start_epoch={args.epochs * 2 // 3}",
                *distill,
            ],
        }
        if args.students_only:
            runs = dict(list(runs.items())[:2])
        reports = {
            name: train([*common, *overrides], root / f"run{i}")
            for i, (name, overrides) in enumerate(runs.items())
        }
    ref = teacher["after"]
    if args.teacher_run:
        print(f"\nThe teacher (and its row): the run in {args.teacher_run}, with its own data.")
    print(
        f"\n## Distillation on {'the harder ' if args.hard else ''}shapes: "
        f"ResNet-{args.teacher_depth} teacher, {args.epochs} epochs in every run, "
        f"{args.num_train} training images, Adam\n"
    )
    print("| network | test acc | MACs | file (bytes) | latency b1 (ms) | latency b32 (ms) |")
    print("|---|---|---|---|---|---|")
    rows = {f"teacher ResNet-{args.teacher_depth} (fp32)": teacher, **reports}
    for name, report in rows.items():
        after = report["after"]
        gain = (after["test_acc"] - ref["test_acc"]) * 100
        cells = [
            f"{after['test_acc']:.4f} ({gain:+.2f} pt)",
            f"{after['macs'] / 1e6:.1f}M ({ref['macs'] / after['macs']:.2f}x fewer)",
            f"{after['file_bytes']:,}",
            f"{after['latency_ms_b1']:.2f} ({ref['latency_ms_b1'] / after['latency_ms_b1']:.2f}x)",
            f"{after['latency_ms_b32']:.1f} "
            f"({ref['latency_ms_b32'] / after['latency_ms_b32']:.2f}x)",
        ]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
