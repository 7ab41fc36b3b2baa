"""Sweep summaries without running a sweep: the Pareto front against a hand-computed one, and
folders that hold no run."""

from __future__ import annotations

import pytest

from litcompress.errors import ConfigError
from litcompress.sweeps import collect, pareto_front


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
