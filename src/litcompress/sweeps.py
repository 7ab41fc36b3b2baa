"""Sweep summaries: which job of a sweep should be shipped?

Every job of a sweep (or any folder of runs) is one row: its overrides, status, wall time and the
figures of its ``report.json`` (before and after: accuracy, parameters, MACs, file size, CPU
latency at batch 1 and 32, speed-up) and the techniques' own summaries. Compression trades
accuracy for cost, so the answer is a Pareto front: the jobs that no other job beats on
accuracy at no more cost (latency at batch 32, or file size). :func:`summarize` writes
``summary.csv``, ``summary.md`` and ``pareto.png`` into the folder and the same table and
picture to a TensorBoard run ``summary/`` beside the jobs' runs.

:class:`SweepSummary` (a Hydra callback, on in ``conf/train.yaml``) records each job's status in
``job.json`` when it ends, failed or not, and rebuilds the summary after every job, so that an
interrupted sweep, or one whose jobs ran on a cluster, has a summary of what finished;
``litcompress summarize DIR`` rebuilds it for any folder.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from litcompress.errors import ConfigError, JobFailed, first_line
from litcompress.outputs import atomic_path

log = logging.getLogger(__name__)

JOB_RECORD = "job.json"
SUMMARY_FILES = ("summary.csv", "summary.md", "pareto.png")
# The costs a Pareto front is drawn against: report key of the delivered model, axis label.
# Latency is the delivered model's in the runtime of report.runtime (torch unless set).
COSTS = {
    "latency_ms_b32": "CPU latency at batch 32 (ms)",
    "file_bytes": "file size (bytes)",
}
COLUMNS = [
    "job",
    "overrides",
    "status",
    "wall_s",
    "test_acc_before",
    "test_acc_after",
    "params_after",
    "macs_after",
    "file_bytes_after",
    "latency_ms_b1_after",
    "latency_ms_b32_after",
    "speedup_b32",
    "runtime",
    "runtime_latency_ms_b1",
    "runtime_latency_ms_b32",
    "pareto_latency",
    "pareto_size",
    "optuna_best",
    "techniques",
    "error",
]


@dataclass
class Job:
    """One run of a sweep (or of a folder of runs), as its folder records it."""

    folder: Path
    name: str
    overrides: list[str] = field(default_factory=list)
    status: str = "unfinished"
    wall_s: float | None = None
    error: str | None = None
    log: str | None = None
    report: dict[str, Any] | None = None
    label: str = ""  # what sets it apart from the other jobs (label_jobs)

    def figure(self, key: str, stage: str = "after") -> float | None:
        """A figure of the report's ``stage`` entry (``None`` without a report)."""
        return (self.report or {}).get(stage, {}).get(key) if self.report else None

    def cost(self, key: str) -> float | None:
        """A cost of the delivered model: latency in its deployment runtime (the report's
        ``runtime`` entry, else torch's), other figures as :meth:`figure` gives them."""
        runtime = (self.report or {}).get("runtime") or {}
        return runtime[key] if runtime.get(key) is not None else self.figure(key)

    def row(self) -> dict[str, Any]:
        report = self.report or {}
        techniques = [
            f"{name}: {report[name]['summary']}"
            for name in report.get("compress", [])
            if isinstance(report.get(name), dict) and report[name].get("summary")
        ]
        return {
            "job": self.name,
            "overrides": " ".join(self.overrides),
            "status": self.status,
            "wall_s": None if self.wall_s is None else round(self.wall_s, 1),
            "test_acc_before": self.figure("test_acc", "before"),
            "test_acc_after": self.figure("test_acc"),
            "params_after": self.figure("params"),
            "macs_after": self.figure("macs"),
            "file_bytes_after": self.figure("file_bytes"),
            "latency_ms_b1_after": self.figure("latency_ms_b1"),
            "latency_ms_b32_after": self.figure("latency_ms_b32"),
            "speedup_b32": report.get("speedup_b32"),
            "runtime": (report.get("runtime") or {}).get("name"),
            "runtime_latency_ms_b1": (report.get("runtime") or {}).get("latency_ms_b1"),
            "runtime_latency_ms_b32": (report.get("runtime") or {}).get("latency_ms_b32"),
            "techniques": " | ".join(techniques),
            "error": self.error,
        }


def _is_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("report.json", JOB_RECORD, ".hydra"))


def _job_sort_key(folder: Path) -> tuple[int, str]:
    return (int(folder.name), "") if folder.name.isdigit() else (1 << 30, folder.name)


def find_runs(folder: str | os.PathLike[str]) -> list[Path]:
    """The run folders in ``folder``: itself when it is a run, else its sub-folders (two levels
    deep at most) that hold a report, a job record or Hydra's ``.hydra``."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{folder} is not a folder: give a sweep folder or a folder of runs.")
    if _is_run(root) and not (root / "multirun.yaml").exists():
        return [root]
    runs = []
    for child in sorted(root.iterdir(), key=_job_sort_key):
        if child.is_dir() and child.name not in ("summary",):
            if _is_run(child):
                runs.append(child)
            else:
                grand = sorted(child.iterdir(), key=_job_sort_key)
                runs += [g for g in grand if g.is_dir() and _is_run(g)]
    return runs


def read_job(folder: Path, root: Path) -> Job:
    """A run folder's job: its record (``job.json``), else what its files say."""
    job = Job(folder=folder, name=str(folder.relative_to(root)) if folder != root else folder.name)
    record = folder / JOB_RECORD
    if record.is_file():
        data = json.loads(record.read_text())
        job.status = data.get("status", job.status)
        job.wall_s = data.get("wall_s")
        job.error = data.get("error")
        job.log = data.get("log")
        job.overrides = list(data.get("overrides", []))
    elif (folder / ".hydra" / "overrides.yaml").is_file():
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        job.overrides = list(overrides or [])
    report = folder / "report.json"
    if report.is_file():
        job.report = json.loads(report.read_text())
        if job.status == "unfinished":
            job.status = "done"  # a run made by hand, or a job that ended without its record
    return job


def label_jobs(jobs: Sequence[Job]) -> None:
    """Give each job the label of what sets it apart: the overrides not shared by every job."""
    if len(jobs) == 1:
        jobs[0].label = jobs[0].name
        return
    common = set.intersection(*(set(job.overrides) for job in jobs))
    for job in jobs:
        job.label = " ".join(o for o in job.overrides if o not in common) or job.name


def pareto_front(points: Sequence[tuple[float, float] | None]) -> list[bool]:
    """For each ``(accuracy, cost)`` point (``None``: not measured), whether it is on the Pareto
    front: no other point has at least its accuracy at no more cost, and is better in one."""
    front = []
    for i, point in enumerate(points):
        if point is None:
            front.append(False)
            continue
        acc, cost = point
        dominated = any(
            other is not None
            and j != i
            and other[0] >= acc
            and other[1] <= cost
            and (other[0] > acc or other[1] < cost)
            for j, other in enumerate(points)
        )
        front.append(not dominated)
    return front


def optuna_best(folder: Path, jobs: Sequence[Job]) -> list[bool]:
    """Whether each job is one of the best trials of the Optuna study the sweep ran (its best
    trial, or its Pareto front with two objectives): ``optimization_results.yaml``, which the
    Optuna sweeper writes at the end, matched to the jobs by their parameters."""
    results = folder / "optimization_results.yaml"
    if not results.is_file():
        return [False] * len(jobs)
    data = yaml.safe_load(results.read_text()) or {}
    best = [s["params"] for s in data.get("solutions", [])] or [data.get("best_params")]
    best = [params for params in best if params]  # no trial finished: nothing is best
    return [any(_has_params(job, params) for params in best) for job in jobs]


def _has_params(job: Job, params: dict[str, Any]) -> bool:
    given = dict(o.split("=", 1) for o in job.overrides if "=" in o)
    for name, value in params.items():
        if name not in given:
            return False
        try:
            if not math.isclose(float(given[name]), float(value), rel_tol=1e-9):
                return False
        except ValueError:
            if str(given[name]) != str(value):
                return False
    return True


def _points(jobs: Sequence[Job], cost: str) -> list[tuple[float, float] | None]:
    points = []
    for job in jobs:
        acc, value = job.figure("test_acc"), job.cost(cost)
        done = job.status == "done" and acc is not None and value is not None
        points.append((acc, value) if done else None)
    return points


def collect(folder: str | os.PathLike[str]) -> list[Job]:
    """The jobs of the runs in ``folder``.

    Raises:
        ConfigError: ``folder`` is not a folder, or holds no run.
    """
    root = Path(folder)
    runs = find_runs(root)
    if not runs:
        raise ConfigError(
            f"{folder} holds no run (no sub-folder with a report.json, job.json or .hydra): "
            f"give a sweep folder (outputs/multirun/<date>_<time>) or a folder of runs."
        )
    return [read_job(run, root) for run in runs]


def summarize(
    folder: str | os.PathLike[str], tensorboard: bool = True
) -> tuple[dict[str, Path], list[Job]]:
    """Write the summary of the runs in ``folder`` into it; returns the files written and the
    jobs. Raises :class:`ConfigError` as :func:`collect`."""
    root = Path(folder)
    jobs = collect(root)
    label_jobs(jobs)
    rows = [job.row() for job in jobs]
    fronts = {cost: pareto_front(_points(jobs, cost)) for cost in COSTS}
    marks = zip(rows, *fronts.values(), optuna_best(root, jobs), strict=True)
    for row, on_latency, on_size, best in marks:
        row["pareto_latency"], row["pareto_size"], row["optuna_best"] = on_latency, on_size, best
    paths = {name: root / name for name in SUMMARY_FILES}
    with atomic_path(paths["summary.csv"]) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    labelled = [{**row, "overrides": job.label} for row, job in zip(rows, jobs, strict=True)]
    table = markdown_table(labelled)
    with atomic_path(paths["summary.md"]) as tmp:
        Path(tmp).write_text(table)
    figure = pareto_figure(jobs, fronts)
    with atomic_path(paths["pareto.png"]) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(root / "summary")) as writer:
            step = sum(job.status != "unfinished" for job in jobs)
            writer.add_text("sweep/summary", table, step)
            writer.add_figure("sweep/pareto", figure, step)
    failed = [job for job in jobs if job.status == "failed"]
    if failed:
        names = ", ".join(job.name for job in failed)
        log.warning("%d of %d jobs failed: %s", len(failed), len(jobs), names)
    return paths, jobs


def _cell(value: Any, key: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if key.startswith("test_acc"):
        return f"{value:.4f}"
    if key in ("params_after", "macs_after", "file_bytes_after"):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "/")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table (the techniques' long summaries left to the CSV; the
    overrides are what ``rows`` give: the summary gives each job's distinct ones)."""
    keys = [k for k in COLUMNS if k != "techniques"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(row[k], k) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def pareto_figure(jobs: Sequence[Job], fronts: dict[str, list[bool]]) -> Any:
    """Accuracy against each cost: every finished job a point, the Pareto-optimal ones marked,
    joined and labelled with their overrides."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    figure = Figure(figsize=(11, 4.6), layout="constrained")
    for axes, (cost, label) in zip(figure.subplots(1, len(COSTS)), COSTS.items(), strict=True):
        points = _points(jobs, cost)
        shown = [(job, p, on) for job, p, on in zip(jobs, points, fronts[cost], strict=True) if p]
        axes.scatter([p[1] for _, p, _ in shown], [p[0] for _, p, _ in shown], color="0.6", s=18)
        best: dict[tuple[float, float], list[str]] = {}  # jobs at the same point share a label
        for job, (acc, value), on in shown:
            if on:
                best.setdefault((value, acc), []).append(job.label)
        front = sorted(best)
        axes.plot(
            [c for c, _ in front],
            [a for _, a in front],
            "o-",
            color="tab:red",
            ms=6,
            drawstyle="steps-post",
        )
        for (value, acc), labels in best.items():
            axes.annotate(
                "\n".join(labels),
                (value, acc),
                fontsize=6,
                xytext=(4, 4),
                textcoords="offset points",
            )
        runtimes = {(job.report or {}).get("runtime", {}).get("name") for job, _, _ in shown}
        if cost.startswith("latency") and len(runtimes) == 1 and None not in runtimes:
            label = label.replace("CPU latency", f"latency in {runtimes.pop()}")
        axes.set_xlabel(label)
        if cost == "file_bytes":  # 500k, 1M rather than an offset of 1e6
            axes.xaxis.set_major_formatter(EngFormatter())
        axes.set_ylabel("test accuracy of the delivered model")
        axes.set_title(f"Pareto front: accuracy against {label.split(' (')[0]}", fontsize=9)
        axes.grid(alpha=0.3)
    return figure


class SweepSummary(Callback):
    """Hydra callback: each job's ``job.json`` (status, wall time, error, log) and the sweep's
    summary rebuilt after every job and at the end of the sweep (multirun only)."""

    def __init__(self) -> None:
        self._started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Where the sweeper may keep its state (an Optuna study in SQLite) before any job runs.
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra = HydraConfig.get()
        # Once per job: a DDP job's tasks (submitit) all end it, rank 0 records it.
        if hydra.mode != RunMode.MULTIRUN or rank_zero_only.rank != 0:
            return
        folder = Path(hydra.runtime.output_dir)
        error = None
        if job_return.status == JobStatus.FAILED:
            try:
                job_return.return_value  # noqa: B018 (re-raises the job's exception)
            except JobFailed as raised:  # a clear error, already logged
                error = first_line(raised)
            except BaseException as raised:  # noqa: BLE001
                error = f"{type(raised).__name__}: {first_line(raised)}"
        record = {
            "status": "failed" if error else "done",
            "overrides": list(hydra.overrides.task),
            "wall_s": time.time() - self._started if self._started else None,
            "error": error,
            "log": str(folder / f"{hydra.job.name}.log"),
        }
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / JOB_RECORD) as tmp:
            Path(tmp).write_text(json.dumps(record, indent=2))
        self._summarize(hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = self._summarize(config.hydra.sweep.dir)
        failed = [job.name for job in jobs if job.status == "failed"]
        if failed:  # a sweeper that went on past them (Optuna): the exit status says so
            raise JobFailed(
                f"{len(failed)} of {len(jobs)} jobs failed ({', '.join(failed)}): see "
                f"{Path(config.hydra.sweep.dir) / 'summary.md'} and their job.json."
            )

    @staticmethod
    def _summarize(folder: str) -> list[Job]:
        # A summary that cannot be written must not fail the job or the sweep.
        try:
            paths, jobs = summarize(folder)
            log.info("Sweep summary: %s", paths["summary.md"])
            return jobs
        except Exception as error:  # noqa: BLE001
            log.warning("The sweep summary could not be written: %s", first_line(error))
            return []
