"""litcompress auto: a search whose trials are real runs measured in the deployment runtime; a
trial over the accuracy budget is kept as infeasible, the fastest feasible one is delivered within
the budget, and a stopped search goes on from its study."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest

from litcompress.auto.search import (
    BASELINE,
    MAX_REPEATS,
    WARM_START,
    AutoOptions,
    _distinct,
    _Objective,
    _optimize,
    _study,
)
from litcompress.auto.space import Space, describe, overrides, parse_point
from litcompress.auto.trial import Launch, check_overrides
from litcompress.cli import main as cli_main
from litcompress.deploy.runtimes import load_artifact
from litcompress.errors import ConfigError
from tests.conftest import FAST

SETTINGS = {
    "ratio": 0.4,
    "round_to": 8,
    "depth": 3,
    "distill": False,
    "quant": "qat",
    "epochs": 2,
}


def test_a_point_of_the_search_is_a_train_py_command_line():
    assert overrides(SETTINGS) == [
        "compress=[prune,qat]",
        "compress.prune.ratio=0.4",
        "compress.prune.depth=3",
        "compress.prune.round_to=8",
        "compress.prune.depth_distill=false",
        "trainer.max_epochs=2",
    ]
    assert describe(SETTINGS) == "prune 0.40/8 + 3 blocks + qat, 2 epochs"
    as_is = {"ratio": 0.0, "depth": 0, "distill": False, "quant": "ptq", "epochs": 0}
    assert overrides(as_is) == ["compress=[ptq]", "trainer.max_epochs=0"]
    distilled = {**SETTINGS, "distill": True, "quant": "none"}
    assert overrides(distilled)[0] == "compress=[prune,distill]"


def test_a_rounded_ratio_stays_where_the_narrowest_layers_keep_round_to_channels():
    # 16 channels keep 8 up to 0.5, 12 up to 0.3 (int(12 x 0.7) = 8), 8 channels at none.
    assert Space.of(25, 25, 16, 2, ("qat",)).rounded_ratio == 0.5
    assert Space.of(25, 25, 12, 2, ("qat",)).rounded_ratio == 0.3
    assert Space.of(25, 25, 8, 2, ("qat",)).rounded_ratio == 0.0
    space = Space.of(25, 25, 16, 2, ("qat",))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"ratio": 0.75, "round_to": 8, "depth": 3, "quant": "qat"})
    assert space.suggest(study.ask())["ratio"] == 0.5
    study.enqueue_trial({"ratio": 0.75, "round_to": None, "depth": 3, "quant": "qat"})
    assert space.suggest(study.ask())["ratio"] == 0.75


def test_a_new_search_tries_int8_of_the_network_as_trained_after_the_given_points(tmp_path):
    given = parse_point("ratio=0.5 quant=none epochs=1", Space())
    record: dict = {}
    study = _study(tmp_path, AutoOptions("x", quant=("none", "ptq")), [given], record)
    waiting = [t.system_attrs["fixed_params"] for t in study.trials]
    assert waiting == [given, WARM_START] and record["tried"] == waiting
    # Going on with it: nothing enqueued again.
    again = _study(tmp_path, AutoOptions("x", quant=("none", "ptq")), [given], record)
    assert len(again.trials) == 2
    # Without PTQ among the methods, no such point.
    other = tmp_path / "other"
    other.mkdir()
    assert _study(other, AutoOptions("x", quant=("none",)), [], {}).trials == []


class RefusingLaunch:
    """Trials whose run refuses its settings at once (exit status 2), counted."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.runs = folder, []

    def run(self, overrides: list[str], folder: Path, log: Path):
        self.runs.append(overrides)
        outcome = {"run_dir": folder, "wall_s": 0.1, "refused": True, "error": "refused"}
        return type("Outcome", (), outcome)()


def test_settings_tried_before_are_not_run_again_and_do_not_count(tmp_path, caplog):
    # Three settings in all (nothing to prune): int8 by PTQ, by QAT, and fp32 as it is, which
    # the search measured first (its baseline).
    space = Space(max_ratio=0.0, max_epochs=1)
    options = AutoOptions("x", trials=5)
    study = _study(tmp_path, options, [], {})
    launch = RefusingLaunch(tmp_path)
    objective = _Objective(space, launch, tmp_path, None, {"latency_ms": 1.0}, options)
    _optimize(study, objective, left=5, timeout_min=None)
    ptq, qat = (
        ["compress=[ptq]", "trainer.max_epochs=0"],
        ["compress=[qat]", "trainer.max_epochs=1"],
    )
    assert sorted(launch.runs) == [ptq, qat]
    ran = _distinct(study.trials)
    assert len(ran) == 2 and all("same_as" in t.user_attrs for t in study.trials[-MAX_REPEATS:])
    repeats = [t for t in study.trials if t not in ran]
    assert {t.user_attrs["same_as"] for t in repeats} == {t.number for t in ran} | {BASELINE}
    for t in repeats:
        same_as = t.user_attrs["same_as"]
        assert t.value == (1.0 if same_as == BASELINE else study.trials[same_as].value)
    assert "proposed only settings already tried, 20 times in a row" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ratio=0.9", r"ratio=0.9: must be within \[0.0, 0.8\]"),
        ("ratio=0.33", r"ratio is searched in steps of 0.05"),
        ("depth=1.5", r"a whole number of blocks removed"),
        ("depth=9", r"depth=9: must be within \[0, 4\]"),
        ("quant=int4", r"quant is one of none, ptq, qat"),
        ("width=3", r"unknown setting 'width'"),
        ("distill=maybe", r"give true or false"),
    ],
)
def test_a_bad_point_to_try_is_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_point(text, Space(max_depth=4))


def test_options_every_trial_sets_itself_are_refused():
    check_overrides(["data=shapes", "optim.lr=1e-4", "trainer.accelerator=cpu"])
    own = ("compress=prune", "trainer.max_epochs=5", "report.runtime=torch", "report.time_torch=1")
    for override in own:
        with pytest.raises(ConfigError, match="litcompress auto sets"):
            check_overrides([override])
    with pytest.raises(ConfigError, match="--max-drop 1.5 must be an accuracy drop"):
        AutoOptions("x", max_drop=1.5).check()
    with pytest.raises(ConfigError, match="--runtime='tensorrt' is not a runtime"):
        AutoOptions("x", runtime="tensorrt").check()
    with pytest.raises(ConfigError, match="--quant int4"):
        AutoOptions("x", quant=("int4",)).check()


def test_on_a_cluster_a_trial_is_a_one_job_sweep_of_its_launcher(tmp_path):
    command, run_dir = Launch(["data=shapes"], cluster="slurm").command(["compress=none"], tmp_path)
    assert command[1].endswith("train.py") and command[3:7] == [
        "-m",
        "cluster=slurm",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweep.subdir=run",
    ]
    assert command[-2:] == ["data=shapes", "compress=none"] and run_dir == tmp_path / "run"
    command, run_dir = Launch([]).command(["compress=none"], tmp_path)
    assert "-m" not in command and command[-1] == f"hydra.run.dir={tmp_path}"


# A trial that prunes a trained ResNet-8 to nothing is over any budget; the network as it is
# loses nothing.
OVER = "ratio=0.8 round_to=null depth=1 quant=none epochs=1"
AS_IS = "ratio=0 depth=0 quant=none"


def auto(checkpoint: Path, output: Path, *args: str) -> int:
    return cli_main(
        [
            "auto",
            str(checkpoint),
            *FAST,
            "--max-drop=0.05",
            "--runtime=onnxruntime",
            "--quant=none",
            "--epochs=1",
            "--min-run-time=0.05",
            f"--output={output}",
            *args,
        ]
    )


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_the_fastest_trial_within_the_budget_is_delivered_and_a_stopped_search_goes_on(
    trained_resnet8, tmp_path
):
    output = tmp_path / "search"
    assert auto(trained_resnet8, output, "--trials=2", f"--try={OVER}", f"--try={AS_IS}") == 0
    record = json.loads((output / "auto.json").read_text())
    baseline = record["baseline"]
    over, as_is = rows(output)
    assert over["feasible"] == "False" and float(over["drop"]) > 0.05
    assert as_is["feasible"] == "True" and float(as_is["drop"]) == 0.0
    delivered = record["delivered"]
    assert delivered["trial"] == 1 and delivered["val_drop"] <= 0.05
    assert delivered["artifact"] == "delivered/model.onnx"
    # The delivered model, loaded and run: its validation accuracy is the one measured.
    assert load_artifact(output / delivered["artifact"]).runtime == "onnxruntime"
    # Trials are timed in the runtime only (the search ranks by it): no torch timing.
    trial_report = json.loads((output / "delivered" / "report.json").read_text())
    assert trial_report["speedup_b32"] is None and trial_report["after"]["latency_ms_b32"] is None
    assert trial_report["runtime"]["name"] == "onnxruntime"
    assert delivered["test_acc_before"] == pytest.approx(delivered["test_acc"])
    assert baseline["latency_ms"] > 0 and baseline["torch_eager_ms"] > 0
    assert (output / "trade_off.png").stat().st_size > 10_000
    # A trial still running when the search was killed counts as failed when it goes on.
    study = optuna.load_study(study_name="litcompress_auto", storage=f"sqlite:///{output}/study.db")
    study.ask()
    # Other settings on the same folder would mix two searches.
    assert auto(trained_resnet8, output, "--trials=3", "--batch=1") == 2
    assert auto(trained_resnet8, output, "--trials=4") == 0
    study = optuna.load_study(study_name="litcompress_auto", storage=f"sqlite:///{output}/study.db")
    states = [t.state.name for t in study.trials]
    assert states[:2] == ["COMPLETE", "COMPLETE"] and states[2] == "FAIL" and len(states) == 4
    assert [row["trial"] for row in rows(output)] == ["0", "1", "2", "3"]
    assert json.loads((output / "auto.json").read_text())["baseline"] == baseline  # kept
