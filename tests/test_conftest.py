"""The shared fixtures' own promises: a test leaves no MLflow state behind for the next."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

LEAKING_TESTS = """
import os

import mlflow
from mlflow.tracking import _tracking_service, fluent


def mlflow_state():
    # Read here, not with conftest's helper, so that this checks the helper too.
    return (
        _tracking_service.utils._tracking_uri,
        fluent._active_experiment_id,
        mlflow.active_run(),
        {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")},
    )


BEFORE = mlflow_state()  # as collected, before any test ran


def test_a_test_leaves_mlflow_pointed_at_its_own_store(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("left-behind")
    mlflow.start_run()
    assert mlflow_state() != BEFORE


def test_the_next_test_starts_from_the_state_before_it():
    assert mlflow_state() == BEFORE
"""


def test_mlflow_state_a_test_leaves_is_undone_before_the_next(pytester):
    # calibrate's and fit's tests left the tracking URI, the active experiment and
    # MLFLOW_EXPERIMENT_ID of their temporary store set, so that a later test's run without
    # an experiment of its own went to that experiment's id in another store.
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(test_leaks=LEAKING_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
