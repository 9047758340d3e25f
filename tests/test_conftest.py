"""The shared fixtures' own promises: a test leaves no MLflow state behind for the next."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from tests.conftest import MLFLOW_GLOBALS, mlflow_state, mlflow_state_kept

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


@pytest.mark.parametrize(("module", "name"), MLFLOW_GLOBALS, ids=[n for _, n in MLFLOW_GLOBALS])
def test_the_fixtures_fail_loudly_if_mlflow_moves_the_state_they_put_back(
    monkeypatch, module, name
):
    # They read these private globals as None, and set them back, whether MLflow still
    # had them or not: after an upgrade that moved one, they would have stopped putting
    # MLflow's state back without a word.
    kept = mlflow_state_kept()  # entered while MLflow has the name, left without it
    with pytest.raises(RuntimeError, match=f"MLflow's {module} has no {name} "), kept:
        monkeypatch.delattr(importlib.import_module(module), name)  # as an upgrade would
    with pytest.raises(RuntimeError, match=f"MLflow's {module} has no {name} "):
        mlflow_state()


def test_the_fixtures_fail_loudly_if_mlflow_moves_a_module_they_read(monkeypatch):
    importlib.import_module("mlflow")
    module = MLFLOW_GLOBALS[0][0]
    monkeypatch.setitem(sys.modules, module, None)  # its import fails, as if it were gone
    with pytest.raises(RuntimeError, match=f"MLflow has no module {module} "):
        mlflow_state()
