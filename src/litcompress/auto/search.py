"""``litcompress auto``: the fastest deployable model within an accuracy budget.

From a trained checkpoint, Optuna (TPE) searches the techniques and their settings
(:mod:`litcompress.auto.space`); each trial is a real litcompress run (:mod:`.trial`) whose
delivered model is evaluated here, in the deployment runtime: its accuracy on the validation
split and its latency at the batch size asked for. A trial whose accuracy falls more than
``max_drop`` below the entering network's is kept as infeasible (told to Optuna as slower than
the entering network, the more the further over budget, so that the sampler learns the budget);
a trial whose run fails is kept as failed. At the end the fastest feasible trial is confirmed on
the test split and delivered (``delivered/``: its artifact and report), with the search's
summary (``summary.csv``, ``summary.md``, ``auto.json``) and its picture (``trade_off.png``, and
in TensorBoard).

The study lives in ``<output>/study.db``: the same command with the same ``--output`` goes on
where a killed or finished search stopped (a trial that was running when it was killed counts
as failed), up to ``--trials`` trials in all.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from litcompress.auto.space import (
    QUANT,
    Settings,
    Space,
    changes_nothing,
    describe,
    overrides,
    parse_point,
)
from litcompress.auto.trial import CLUSTERS, Launch, check_overrides
from litcompress.deploy.formats import check_runtime
from litcompress.errors import ConfigError
from litcompress.run_folder import claim_folder

log = logging.getLogger(__name__)

RECORD = "auto.json"
STUDY = "study.db"
RECORDED_DATA = "auto_recorded"  # conf/data/<this>.yaml in the output: the checkpoint's data
# The point a new search tries after those given with --try: int8 of the network as trained.
WARM_START = {"ratio": 0.0, "depth": 0, "quant": "ptq"}
# Sampled settings already tried are not run again; this many in a row end the search.
MAX_REPEATS = 20
BASELINE = "baseline"  # what a sampled "as it is" repeats
REFUSED_PENALTY = 10.0  # a refused trial's value: this many times the entering network's latency


class TrialFailed(Exception):
    """A trial's run failed, or its delivered model could not be measured."""


@dataclass
class AutoOptions:
    """What ``litcompress auto`` is asked (the command's arguments)."""

    source: str
    max_drop: float = 0.01
    runtime: str = "openvino"
    batch: int = 32
    trials: int = 20
    max_epochs: int = 3
    timeout_min: float | None = None
    trial_timeout_min: float | None = None
    output: str | None = None
    cluster: str = "none"
    seed: int = 0
    tries: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    min_run_time_s: float = 1.0
    quant: tuple[str, ...] = ("none", "ptq", "qat")

    def check(self) -> None:
        """Refuse bad options before any long work."""
        if not 0 <= self.max_drop < 1:
            raise ConfigError(
                f"--max-drop {self.max_drop} must be an accuracy drop in [0, 1) (0.01 = one point)."
            )
        check_runtime(self.runtime, "--runtime")
        for name, value, least in (
            ("--batch", self.batch, 1),
            ("--trials", self.trials, 1),
            ("--epochs", self.max_epochs, 1),
        ):
            if value < least:
                raise ConfigError(f"{name} {value} must be at least {least}.")
        for name, value in (
            ("--timeout-min", self.timeout_min),
            ("--trial-timeout-min", self.trial_timeout_min),
            ("--min-run-time", self.min_run_time_s),
        ):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} {value} must be positive.")
        unknown = [q for q in self.quant if q not in QUANT]
        if unknown or not self.quant:
            raise ConfigError(
                f"--quant {','.join(self.quant)}: give some of {', '.join(QUANT)}, e.g. none,qat."
            )
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"--cluster {self.cluster!r}: choose among {', '.join(CLUSTERS)}.")
        check_overrides(self.overrides)

    def settings(self) -> dict[str, Any]:
        """What a resumed search must share with the search it goes on with."""
        return {
            "source": str(Path(self.source).expanduser().resolve()),
            "max_drop": self.max_drop,
            "runtime": self.runtime,
            "batch": self.batch,
            "max_epochs": self.max_epochs,
            "quant": list(self.quant),
            "overrides": list(self.overrides),
        }


@dataclass
class Searched:
    """What the search found: its folder, the delivered trial (``None``: none within budget)."""

    folder: Path
    best: int | None
    record: dict[str, Any]


def search(options: AutoOptions) -> Searched:
    """Run (or go on with) the search ``options`` ask for; see the module's description."""
    options.check()
    # Checked before any work; the blocks a network can lose are known once it is read.
    unbounded = Space(max_depth=2**31, max_epochs=options.max_epochs, quant=tuple(options.quant))
    tries = [parse_point(text, unbounded) for text in options.tries]
    checkpoint, content = _float_checkpoint(options.source)
    space = _space(content, options)
    for text, point in zip(options.tries, tries, strict=True):
        if point.get("depth", 0) > space.max_depth:
            raise ConfigError(
                f"--try {text}: {point['depth']} blocks, but a trial removes at most "
                f"{space.max_depth} of this network's (three quarters of its removable blocks)."
            )
    folder = _output(options)
    record = _start_record(folder, options)
    data, shared = _data(checkpoint, content, folder, options)
    if "baseline" not in record:
        record["baseline"] = _baseline(checkpoint, data, folder, options)
        _save(record, folder)
    baseline = record["baseline"]
    log.info(
        "The network as trained: validation accuracy %.4f, %.3f ms at batch %d in %s (%.3f ms "
        "in torch eager fp32). Budget: validation accuracy >= %.4f.",
        baseline["val_acc"],
        baseline["latency_ms"],
        options.batch,
        options.runtime,
        baseline["torch_eager_ms"],
        baseline["val_acc"] - options.max_drop,
    )
    study = _study(folder, options, tries, record)
    launch = Launch(
        shared,
        options.cluster,
        options.trial_timeout_min * 60 if options.trial_timeout_min else None,
    )
    objective = _Objective(space, launch, folder, data, baseline, options)
    done = len(_distinct(study.trials))
    left = max(0, options.trials - done)
    if left:
        log.info("Searching: %d trials to run (%d done before), results in %s", left, done, folder)
    interrupted = False
    try:
        _optimize(study, objective, left, options.timeout_min)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("Interrupted: the summary shows what finished; the same command goes on.")
    return _finish(study, folder, record, options, data, interrupted)


def _optimize(study: Any, objective: _Objective, left: int, timeout_min: float | None) -> None:
    """Run ``left`` new trials (or until ``timeout_min``): settings the sampler proposes again
    are not run again and do not count, up to MAX_REPEATS in a row (then the space is spent)."""
    deadline = time.monotonic() + timeout_min * 60 if timeout_min else None
    new = repeats = 0
    while new < left:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        study.optimize(
            objective,
            n_trials=1,
            timeout=remaining,
            catch=(TrialFailed,),
            callbacks=[objective.progress],
        )
        if "same_as" not in study.trials[-1].user_attrs:
            new, repeats = new + 1, 0
            continue
        repeats += 1
        if repeats >= MAX_REPEATS:
            log.warning(
                "The sampler proposed only settings already tried, %d times in a row: the "
                "search stops after %d new trials (the space is small: widen it, e.g. --epochs).",
                repeats,
                new,
            )
            return


def _distinct(trials: list[Any]) -> list[Any]:
    """The trials that ran (or failed), not the repeats of earlier settings."""
    return [t for t in trials if t.state.is_finished() and "same_as" not in t.user_attrs]


# -- setting up -----------------------------------------------------------------------------------
def _float_checkpoint(source: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint of the float network ``source`` names, and its content (read once)."""
    from litcompress.checkpoint import CHECKPOINT_KEY, read_checkpoint
    from litcompress.deploy.export import resolve_source

    found = resolve_source(source)
    if found.checkpoint is None:
        raise ConfigError(
            f"{source} is an int8 model without its float network: give the checkpoint of the "
            f"trained network (outputs/runs/<run>/checkpoints/*.ckpt) or its run folder."
        )
    content = read_checkpoint(found.checkpoint)
    if content[CHECKPOINT_KEY].get("quantization"):
        raise ConfigError(
            f"{found.checkpoint} is fake-quantized (compress=qat): start from the float network, "
            f"e.g. the checkpoint of the run it started from."
        )
    return Path(found.checkpoint).resolve(), content


def _output(options: AutoOptions) -> Path:
    folder = Path(
        options.output or f"outputs/auto/{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}"
    ).absolute()
    claim_folder(folder, "--output")
    return folder


def _start_record(folder: Path, options: AutoOptions) -> dict[str, Any]:
    """``auto.json``: made for a new search; checked against ``options`` when going on."""
    path = folder / RECORD
    settings = options.settings()
    if path.is_file():
        record = json.loads(path.read_text())
        differ = [
            f"{key}: {record['settings'].get(key)!r} there, {value!r} here"
            for key, value in settings.items()
            if record["settings"].get(key) != value
        ]
        if differ:
            raise ConfigError(
                f"--output {folder} holds a search with other settings ({'; '.join(differ)}): "
                f"going on with it would mix two searches. Repeat its settings to go on with it, "
                f"or give a new --output."
            )
        log.info("Going on with the search in %s", folder)
        return record
    if any(folder.iterdir() if folder.is_dir() else []) and not _only_lock(folder):
        raise ConfigError(
            f"--output {folder} is not empty and holds no search of litcompress auto: give a "
            f"new folder (nothing in it is overwritten)."
        )
    record = {"settings": settings}
    _save(record, folder)
    return record


def _save(record: dict[str, Any], folder: Path) -> None:
    from litcompress.outputs import write_json_atomic  # Lightning: not before the checks

    write_json_atomic(record, folder / RECORD)


def _only_lock(folder: Path) -> bool:
    from litcompress.run_folder import LOCK_FILE

    return [p.name for p in folder.iterdir()] == [LOCK_FILE]


def _data(
    checkpoint: Path, content: dict[str, Any], folder: Path, options: AutoOptions
) -> tuple[Any, list[str]]:
    """The data of the network as trained (set up: validation and test splits), and the
    overrides every trial shares: the checkpoint's own data config unless ``data=...`` is
    given."""
    from litcompress.checkpoint import CHECKPOINT_KEY
    from litcompress.deploy.evaluate import data_config, load_data

    record = content[CHECKPOINT_KEY]
    data_overrides = [o for o in options.overrides if o.lstrip("+~").startswith("data")]
    data = load_data(
        data_config(record.get("data"), data_overrides, str(checkpoint)), record.get("inputs")
    )
    shared = [f"init_from={checkpoint}", f"report.runtime={options.runtime}", "test=false"]
    if options.runtime != "torch":  # the search ranks by the runtime: torch timing is overhead
        shared.append("report.time_torch=false")
    if not any(o.startswith("data=") for o in options.overrides):
        if record.get("data") is None:
            raise ConfigError(f"{checkpoint} does not record its data: give it, e.g. data=shapes.")
        group = folder / "conf" / "data"
        group.mkdir(parents=True, exist_ok=True)
        from omegaconf import OmegaConf

        OmegaConf.save(OmegaConf.create(record["data"]), group / f"{RECORDED_DATA}.yaml")
        shared += [f"hydra.searchpath=[file://{folder / 'conf'}]", f"data={RECORDED_DATA}"]
    return data, [*shared, *options.overrides]


def _space(content: dict[str, Any], options: AutoOptions) -> Space:
    """The search space of the network of a checkpoint's ``content``: how many of its blocks a
    trial may remove, how far a rounded ratio may go."""
    from torch import nn

    from litcompress.checkpoint import inference_network
    from litcompress.compress.depth import budget, candidates
    from litcompress.models import find_classifier

    net = inference_network(content)
    blocks = candidates(net, [])
    head = find_classifier(net)[1]
    widths = [
        m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        for m in net.modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and m is not head
    ]
    return Space.of(
        len(blocks),
        budget(net, blocks),
        min(widths, default=1),
        options.max_epochs,
        tuple(options.quant),
    )


def _baseline(checkpoint: Path, data: Any, folder: Path, options: AutoOptions) -> dict[str, Any]:
    """The entering network in the runtime (exported in fp32): validation accuracy, latency at
    the batch size; and its latency in torch eager fp32."""
    from litcompress.deploy.export import artifact_name, export, labelled_images, resolve_source
    from litcompress.deploy.formats import RUNTIME_FORMATS
    from litcompress.deploy.runtimes import load_artifact
    from litcompress.measure import measure_latency_ms

    log.info("Measuring the network as trained (%s)", checkpoint)
    eager = load_artifact(checkpoint)
    torch_ms = measure_latency_ms(eager, data.input_spec, options.batch, options.min_run_time_s)
    fmt = RUNTIME_FORMATS[options.runtime]
    artifact = checkpoint
    if fmt is not None:
        artifact = folder / "baseline" / artifact_name(fmt, False)
        deliverable = resolve_source(checkpoint).deliverable()
        images, labels = labelled_images(data.val_dataloader())
        export(deliverable, fmt, artifact, images, False, labels)
    runtime = load_artifact(artifact) if fmt is not None else eager
    val_acc, latency = _measure(runtime, data, options)
    return {
        "artifact": str(artifact),
        "val_acc": val_acc,
        "latency_ms": latency,
        "torch_eager_ms": torch_ms,
    }


def _measure(runtime: Any, data: Any, options: AutoOptions, split: str = "val") -> tuple:
    """Accuracy of a loaded artifact on ``split``, and its latency at the batch size."""
    from litcompress.measure import evaluate_cpu, measure_latency_ms

    spec = data.input_spec
    length = spec.max_length if spec.kind == "tokens" else None
    loader = data.val_dataloader() if split == "val" else data.test_dataloader()
    accuracy = evaluate_cpu(runtime, loader, data.num_classes, length=length)
    return accuracy, measure_latency_ms(runtime, spec, options.batch, options.min_run_time_s)


def _study(folder: Path, options: AutoOptions, tries: list[Settings], record: dict[str, Any]):
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    new_study = not (folder / STUDY).exists()
    enqueued = record.setdefault("tried", [])
    if new_study and "ptq" in options.quant and WARM_START not in tries:
        # First, the cheapest candidate: int8 of the network as trained, no fine-tuning (what
        # post-training quantization tools deliver); the sampler then knows one point early.
        tries = [*tries, WARM_START]
    fresh: list[Settings] = []  # not enqueued before (nor twice)
    for point in tries:
        if point not in enqueued and point not in fresh:
            fresh.append(point)
    given = len(enqueued) + len(fresh)
    # Random points after the given ones, before TPE models the results: with fewer, TPE
    # proposes the given points again (a lone good point is all it knows).
    random_points = max(2, min(8, options.trials // 3))
    sampler = optuna.samplers.TPESampler(seed=options.seed, n_startup_trials=given + random_points)
    study = optuna.create_study(
        storage=f"sqlite:///{folder / STUDY}",
        study_name="litcompress_auto",
        direction="minimize",
        sampler=sampler,
        load_if_exists=True,
    )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # Its process was killed with the search: it counts as failed.
        study.tell(trial.number, state=TrialState.FAIL)
        log.warning("Trial %d was running when the search stopped: counted as failed", trial.number)
    for point in fresh:
        with warnings.catch_warnings():  # Optuna 2.10 calls enqueue_trial experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.enqueue_trial(point)
        enqueued.append(point)
    _save(record, folder)
    return study


# -- the trials -----------------------------------------------------------------------------------
class _Objective:
    """Runs a trial, measures what it delivers, and reports progress."""

    def __init__(self, space, launch, folder, data, baseline, options) -> None:
        self.space, self.launch, self.folder = space, launch, folder
        self.data, self.baseline, self.options = data, baseline, options
        self.started = time.monotonic()

    def __call__(self, trial: Any) -> float:
        from litcompress.deploy.runtimes import load_artifact

        settings = self.space.suggest(trial)
        trial.set_user_attr("settings", settings)
        repeated = self._repeated(trial, settings)
        if repeated is not None:  # a seeded run of the same settings: nothing new to learn
            same_as, value = repeated
            trial.set_user_attr("same_as", same_as)
            what = "the network as trained" if same_as == BASELINE else f"trial {same_as}"
            log.info(
                "Trial %d: %s again (%s): not run again", trial.number, describe(settings), what
            )
            return value
        folder = self.folder / "trials" / f"{trial.number:03d}"
        log.info("Trial %d: %s", trial.number, describe(settings))
        outcome = self.launch.run(overrides(settings), folder, folder.with_suffix(".log"))
        trial.set_user_attr("folder", str(outcome.run_dir.relative_to(self.folder)))
        trial.set_user_attr("wall_s", outcome.wall_s)
        if outcome.refused:
            # Told to the sampler as far slower than the network as trained, so that it
            # learns which settings this network cannot take (a failed trial teaches it nothing).
            trial.set_user_attr("refused", outcome.error)
            log.warning("Trial %d refused its settings: %s", trial.number, outcome.error)
            return self.baseline["latency_ms"] * REFUSED_PENALTY
        if outcome.error:
            return self._failed(trial, outcome.error)
        try:
            report = outcome.report()
            if report is None:
                return self._failed(trial, f"no report.json in {outcome.run_dir}")
            artifact = outcome.artifact(report)
            runtime = load_artifact(artifact)
            val_acc, latency = _measure(runtime, self.data, self.options)
        except (ConfigError, OSError, RuntimeError) as error:
            return self._failed(trial, f"its model could not be measured: {error}")
        drop = self.baseline["val_acc"] - val_acc
        feasible = drop <= self.options.max_drop + 1e-9
        trial.set_user_attr("val_acc", val_acc)
        trial.set_user_attr("drop", drop)
        trial.set_user_attr("latency_ms", latency)
        trial.set_user_attr("feasible", feasible)
        trial.set_user_attr("artifact", str(artifact.relative_to(self.folder)))
        if feasible:
            return latency
        # Slower than the entering network, the more the further over budget.
        excess = (drop - self.options.max_drop) * 100
        return max(latency, self.baseline["latency_ms"]) * (1 + excess)

    def _repeated(self, trial: Any, settings: Settings) -> tuple[int | str, float] | None:
        """What measured ``settings`` already: an earlier trial (its number and value), or the
        search itself when the sampler proposes the network as it is (measured first, as the
        baseline; given with ``--try``, it runs); ``None``: nothing did."""
        earlier = _same_settings(trial.study, settings)
        if earlier is not None:
            return earlier.number, earlier.value
        if changes_nothing(settings) and "fixed_params" not in trial.system_attrs:
            return BASELINE, self.baseline["latency_ms"]
        return None

    def _failed(self, trial: Any, error: str) -> float:
        trial.set_user_attr("error", error)
        log.warning("Trial %d failed: %s", trial.number, error)
        raise TrialFailed(error)

    def progress(self, study: Any, trial: Any) -> None:
        """One line per finished trial: what it gave, and the best so far."""
        attrs = trial.user_attrs
        if "same_as" in attrs:
            return
        done = len(_distinct(study.trials))
        head = f"Trial {trial.number} ({done}/{self.options.trials} done)"
        if "latency_ms" in attrs:
            verdict = "within the budget" if attrs["feasible"] else "OVER the budget"
            log.info(
                "%s: validation accuracy %.4f (drop %.4f), %.3f ms: %s",
                head,
                attrs["val_acc"],
                attrs["drop"],
                attrs["latency_ms"],
                verdict,
            )
        best = _best(study.trials)
        if best is not None:
            speedup = self.baseline["latency_ms"] / best.user_attrs["latency_ms"]
            log.info(
                "Best so far: trial %d, %s: %.3f ms (%.2fx the network as trained in %s), "
                "%.1f min elapsed",
                best.number,
                describe(best.user_attrs["settings"]),
                best.user_attrs["latency_ms"],
                speedup,
                self.options.runtime,
                (time.monotonic() - self.started) / 60,
            )


def _same_settings(study: Any, settings: Settings) -> Any | None:
    """The trial that measured ``settings`` already (``None``: none did)."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "same_as" not in trial.user_attrs and trial.user_attrs.get("settings") == settings:
            return trial
    return None


def _best(trials: list[Any]) -> Any | None:
    """The fastest feasible trial (``None``: none)."""
    feasible = [t for t in trials if t.user_attrs.get("feasible")]
    return min(feasible, key=lambda t: t.user_attrs["latency_ms"], default=None)


# -- the end ---------------------------------------------------------------------------------------
def _finish(study, folder, record, options, data, interrupted) -> Searched:
    from litcompress.auto.summary import trade_off_figure, write_tables
    from litcompress.deploy.runtimes import load_artifact

    trials = _distinct(study.trials)
    rows = [_row(t, record["baseline"]) for t in trials]
    best = _best(trials)
    record.update(
        trials={"run": len(trials), **_counts(rows)},
        interrupted=interrupted,
        measured_on=_cpu(),
    )
    if best is not None:
        artifact = folder / best.user_attrs["artifact"]
        test_acc, _ = _measure(load_artifact(artifact), data, options, "test")
        base_test, _ = _measure(
            load_artifact(record["baseline"]["artifact"]), data, options, "test"
        )
        baseline = record["baseline"]
        latency = best.user_attrs["latency_ms"]
        record["delivered"] = {
            "trial": best.number,
            "settings": best.user_attrs["settings"],
            "description": describe(best.user_attrs["settings"]),
            "artifact": str(_deliver(folder, artifact, best).relative_to(folder)),
            "val_acc": best.user_attrs["val_acc"],
            "val_drop": best.user_attrs["drop"],
            "test_acc": test_acc,
            "test_acc_before": base_test,
            "test_drop": base_test - test_acc,
            "latency_ms": latency,
            "speedup": baseline["latency_ms"] / latency,
            "speedup_over_torch_eager": baseline["torch_eager_ms"] / latency,
        }
        if base_test - test_acc > options.max_drop:
            log.warning(
                "On the test split the delivered model loses %.4f (the budget, %.4f, held on the "
                "validation split): the validation split may be too small to tell.",
                base_test - test_acc,
                options.max_drop,
            )
    else:
        record.pop("delivered", None)
    _save(record, folder)
    write_tables(rows, folder, best.number if best else None)
    figure = trade_off_figure(
        rows,
        record["baseline"],
        options.max_drop,
        options.runtime,
        options.batch,
        best.number if best else None,
    )
    figure.savefig(folder / "trade_off.png", dpi=120)
    _to_tensorboard(folder, figure, (folder / "summary.md").read_text())
    _say(record, folder, options)
    return Searched(folder, best.number if best else None, record)


def _row(trial: Any, baseline: dict[str, Any]) -> Any:
    from litcompress.auto.summary import Row

    attrs = trial.user_attrs
    latency = attrs.get("latency_ms")
    return Row(
        trial=trial.number,
        state="refused" if "refused" in attrs else trial.state.name.lower(),
        settings=attrs.get("settings", {}),
        val_acc=attrs.get("val_acc"),
        drop=attrs.get("drop"),
        feasible=attrs.get("feasible"),
        latency_ms=latency,
        speedup=baseline["latency_ms"] / latency if latency else None,
        wall_s=attrs.get("wall_s"),
        folder=attrs.get("folder"),
        error=attrs.get("error") or attrs.get("refused"),
    )


def _counts(rows: list[Any]) -> dict[str, int]:
    return {
        "feasible": sum(1 for r in rows if r.feasible),
        "infeasible": sum(1 for r in rows if r.feasible is False),
        "failed": sum(1 for r in rows if r.state == "fail"),
        "refused": sum(1 for r in rows if r.state == "refused"),
    }


def _deliver(folder: Path, artifact: Path, best: Any) -> Path:
    """Copy the best trial's artifact (its files, metadata) and report into ``delivered/``."""
    target = folder / "delivered"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for path in artifact.parent.glob(f"{artifact.stem}.*"):
        shutil.copy2(path, target / path.name)
    run_dir = folder / best.user_attrs["folder"]
    if (run_dir / "report.json").is_file():
        shutil.copy2(run_dir / "report.json", target / "report.json")
    return target / artifact.name


def _cpu() -> dict[str, Any]:
    from litcompress.measure import cpu_info

    return cpu_info()


def _to_tensorboard(folder: Path, figure: Any, table: str) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder / "tensorboard")) as writer:
        writer.add_figure("auto/trade_off", figure, 0, close=False)
        writer.add_text("auto/summary", table, 0)


def _say(record: dict[str, Any], folder: Path, options: AutoOptions) -> None:
    counts = record["trials"]
    log.info(
        "%d trials: %d within the budget, %d over it, %d refused their settings, %d failed",
        counts["run"],
        counts["feasible"],
        counts["infeasible"],
        counts["refused"],
        counts["failed"],
    )
    delivered = record.get("delivered")
    if delivered is None:
        log.warning(
            "No trial kept validation accuracy within %s of the network as trained: nothing "
            "delivered. Allow a larger --max-drop, more --epochs or more --trials.",
            options.max_drop,
        )
        return
    log.info(
        "Delivered: trial %d (%s), %s: %.3f ms at batch %d in %s, %.2fx the network as trained "
        "there, %.2fx torch eager fp32; validation accuracy %.4f (drop %.4f), test %.4f "
        "(drop %.4f)",
        delivered["trial"],
        delivered["description"],
        folder / delivered["artifact"],
        delivered["latency_ms"],
        options.batch,
        options.runtime,
        delivered["speedup"],
        delivered["speedup_over_torch_eager"],
        delivered["val_acc"],
        delivered["val_drop"],
        delivered["test_acc"],
        delivered["test_drop"],
    )
    log.info("Summary: %s, %s", folder / "summary.md", folder / "trade_off.png")
