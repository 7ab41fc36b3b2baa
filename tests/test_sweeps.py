"""Sweep summaries and searches: the Pareto front against a hand-computed one, folders that hold
no run, Optuna searches (one and two objectives) and their resume."""

from __future__ import annotations

import csv
import json

import optuna
import pytest

from litcompress.errors import ConfigError
from litcompress.sweeps import collect, pareto_front
from tests.test_cli import QUICK, train_py


def test_the_pareto_front_is_the_jobs_nothing_beats_at_no_more_cost():
    points = [
        (0.90, 10.0),  # on the front
        (0.95, 20.0),  # the most accurate at its cost
        (0.85, 5.0),  # the cheapest
        (0.88, 12.0),  # beaten by (0.90, 10): more accurate and cheaper
        (0.95, 25.0),  # beaten by (0.95, 20): as accurate, cheaper
        None,  # not measured (failed)
        (0.90, 10.0),  # the same figures as the first: neither beats the other
    ]
    assert pareto_front(points) == [True, True, True, False, False, False, True]


def test_a_folder_without_runs_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder"):
        collect(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no run"):
        collect(tmp_path / "empty")


@pytest.mark.slow
def test_optuna_searches_return_the_delivered_figures_and_resume_from_their_study(tmp_path):
    first, resumed, pareto = tmp_path / "first", tmp_path / "resumed", tmp_path / "pareto"
    search = ["hparams_search=optuna", "hydra.sweeper.sampler.n_startup_trials=2", *QUICK]
    result = train_py("-m", *search, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={first}")
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"sqlite:///{first / 'optuna.db'}"
    study = optuna.load_study(study_name="litcompress", storage=storage)
    reports = {job: _report(first / job) for job in ("0", "1", "2")}
    # Each trial's value is its delivered model's accuracy, from the job's report.
    assert sorted(t.value for t in study.trials) == sorted(
        r["after"]["test_acc"] for r in reports.values()
    )
    rows = _rows(first)
    assert [row["optuna_best"] for row in rows].count("True") >= 1
    # An interrupted search goes on from its study, in a new sweep folder.
    result = train_py(
        "-m",
        *search,
        "hydra.sweeper.n_trials=1",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={resumed}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(optuna.load_study(study_name="litcompress", storage=storage).trials) == 4
    # Two objectives (NSGA-II): accuracy and latency of the delivered model where it will run
    # (OpenVINO), its Pareto front.
    result = train_py(
        "-m",
        "hparams_search=pareto",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.population_size=2",
        "report.runtime=openvino",
        "optimized_metric=[report/after_test_acc,report/runtime_latency_ms_b32]",
        *QUICK,
        f"hydra.sweep.dir={pareto}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(
        study_name="litcompress_pareto", storage=f"sqlite:///{pareto / 'optuna.db'}"
    )
    assert len(study.trials) == 4
    reports = [_report(pareto / str(i)) for i in range(4)]
    for report in reports:  # exported, and timed in OpenVINO
        runtime = report["runtime"]
        assert runtime["name"] == "openvino" and runtime["file"] == "export/model.xml"
        assert runtime["latency_ms_b32"] == report["export"]["openvino"]["latency_ms_b32"]
    values = {(r["after"]["test_acc"], r["runtime"]["latency_ms_b32"]) for r in reports}
    assert {tuple(t.values) for t in study.trials} == values
    best = {tuple(t.values) for t in study.best_trials}
    for row in _rows(pareto):
        assert row["runtime"] == "openvino"
        figures = (float(row["test_acc_after"]), float(row["runtime_latency_ms_b32"]))
        on_front = any(figures == pytest.approx(b) for b in best)
        assert (row["optuna_best"] == "True") == on_front, row


def _report(folder):
    return json.loads((folder / "report.json").read_text())


def _rows(folder):
    with open(folder / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))
