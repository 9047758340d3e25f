"""Shared fixtures: tiny seeded data with planted anomalies, tiny fast configs,
and MLflow pointed at a temporary store so tests never touch ./mlruns."""

from __future__ import annotations

import contextlib
import importlib
import os
import runpy
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from anomaly_vae.config import Config, load_config

TINY = [
    "model.hidden_dims=[32]",
    "model.latent_dim=2",
    "training.epochs=150",
    "training.learning_rate=0.003",
    "training.min_steps=0",
    "training.patience=10",
    "training.batch_size=64",
    "scoring.mc_samples=4",
    # The plain ELBO: on a few hundred rows the trimmed loss's noisy validation curve stops
    # this tiny model early, undertrained. Trimming has its own tests (test_detector.py).
    "model.trim_fraction=0",
]


def tiny_fit(*args: str):
    """``anomaly-vae fit ARGS --quiet`` with the tiny settings; the CliRunner result."""
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    settings = [arg for key in TINY for arg in ("--set", key)]
    return CliRunner().invoke(main, ["fit", *args, "--quiet", *settings])


def traced_peaks(first, *then) -> tuple[object, list[int]]:
    """Run ``first()``, then each of ``then`` on the result before it, under one
    tracemalloc trace: ``(the last result, the peak bytes numpy and Python allocated
    during each step)``, each peak counting what was held when its step began."""
    tracemalloc.start()
    try:
        result = first()
        peaks = [tracemalloc.get_traced_memory()[1]]
        for step in then:
            tracemalloc.reset_peak()
            result = step(result)
            peaks.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    return result, peaks


def traced_peak(function):
    """``(function(), peak bytes numpy and Python allocated while it ran)``."""
    result, (peak,) = traced_peaks(function)
    return result, peak


def tiny_config(*overrides: str) -> Config:
    """A small, fast configuration (seconds to fit on a few hundred rows)."""
    return load_config(overrides=[*TINY, *overrides])


def correlated_normal(n: int, seed: int) -> np.ndarray:
    """``(n, 6)`` rows on a 2-D linear manifold plus small noise: what a VAE can learn."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    mixing = np.array([[1.0, 0.5, -0.3, 0.8, 0.0, 1.2], [0.0, 1.0, 0.9, -0.5, 1.1, 0.3]])
    return latent @ mixing + 0.1 * rng.normal(size=(n, 6))


def planted_anomalies(n: int, seed: int) -> np.ndarray:
    """``(n, 6)`` rows pushed off the manifold (15x the normal noise), within its range."""
    rng = np.random.default_rng(seed)
    return correlated_normal(n, seed) + rng.normal(scale=1.5, size=(n, 6))


@pytest.fixture
def normal_rows() -> np.ndarray:
    return correlated_normal(600, seed=0)


@pytest.fixture
def test_rows() -> tuple[np.ndarray, np.ndarray]:
    """Fresh normal rows followed by planted anomalies, and labels (True = anomaly)."""
    X = np.vstack([correlated_normal(300, seed=1), planted_anomalies(30, seed=2)])
    return X, np.r_[np.zeros(300, bool), np.ones(30, bool)]


def mixed_table(n: int, seed: int, anomalies: int = 0) -> pd.DataFrame:
    """A realistic table: id, numeric (with some missing), categorical, label columns.

    Normal rows: ``load`` tracks ``temperature`` per ``machine``; anomalies break that.
    """
    rng = np.random.default_rng(seed)
    machine = rng.choice(["press", "lathe", "drill"], size=n)
    offset = pd.Series(machine).map({"press": 0.0, "lathe": 5.0, "drill": -5.0}).to_numpy()
    temperature = rng.normal(60, 5, size=n)
    load = 2.0 * (temperature - 60) + offset + rng.normal(0, 1, size=n)
    vibration = rng.gamma(2.0, 1.0, size=n)
    label = np.zeros(n, dtype=int)
    if anomalies:
        rows = rng.choice(n, size=anomalies, replace=False)
        load[rows] += rng.choice([-12.0, 12.0], size=anomalies)  # 12 sd off the machine's line
        label[rows] = 1
    vibration[rng.random(n) < 0.05] = np.nan  # some readings are missing in normal operation
    return pd.DataFrame(
        {
            "reading_id": [f"r{seed}-{i}" for i in range(n)],
            "machine": machine,
            "temperature": temperature,
            "load": load,
            "vibration": vibration,
            "is_fault": label,
        }
    )


def mislabelled_table(n: int, seed: int, wrong: int = 30) -> pd.DataFrame:
    """:func:`mixed_table` of normal rows only, the first ``wrong`` of them labelled
    anomalous by mistake: a threshold chosen on these labels (f1, recall) lands inside
    normal operation."""
    table = mixed_table(n, seed)
    table.loc[table.index[:wrong], "is_fault"] = 1
    return table


# What MLflow keeps for the whole process: mlflow.set_tracking_uri and set_experiment
# write these environment variables as well as module globals (so that subprocesses
# inherit them), and start_run sets MLFLOW_RUN_ID. A test's monkeypatch.setenv restores
# only a variable it set itself.
MLFLOW_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
)
# (module, global) pairs behind mlflow.get_tracking_uri, get_registry_uri and the active
# experiment: None until set. Private, but MLflow 3.18 has no public way to do without
# them: get_tracking_uri and is_tracking_uri_set do not tell a URI set_tracking_uri set
# (which outranks a later test's MLFLOW_TRACKING_URI) from the variable, get_registry_uri
# falls back to the tracking URI, and set_experiment cannot clear the active experiment
# (it wants one that exists in the current store). So mlflow_globals checks they are there.
MLFLOW_GLOBALS = (
    ("mlflow.tracking._tracking_service.utils", "_tracking_uri"),
    ("mlflow.tracking._model_registry.utils", "_registry_uri"),
    ("mlflow.tracking.fluent", "_active_experiment_id"),
)


def mlflow_globals() -> list[tuple[ModuleType, str]]:
    """Each of MLFLOW_GLOBALS as (its module, its name) while MLflow is imported; none
    before. Raises RuntimeError if MLflow no longer has one (an upgrade that moved it):
    reading None and setting a name MLflow no longer reads would stop putting back its
    state, silently, and every later test would run in the store an earlier one left."""
    if "mlflow" not in sys.modules:
        return []
    found = []
    for module_name, name in MLFLOW_GLOBALS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise RuntimeError(
                f"MLflow has no module {module_name} (MLFLOW_GLOBALS in tests/conftest.py): "
                "find where this MLflow version keeps its state"
            ) from error
        if not hasattr(module, name):
            raise RuntimeError(
                f"MLflow's {module_name} has no {name} (MLFLOW_GLOBALS in tests/conftest.py): "
                "find where this MLflow version keeps its state"
            )
        found.append((module, name))
    return found


def mlflow_state() -> dict[str, str | None]:
    """MLflow's process-global state: each of MLFLOW_VARIABLES, each of MLFLOW_GLOBALS
    (None while MLflow is not imported) and the active run's id, by name."""
    state: dict[str, str | None] = {name: os.environ.get(name) for name in MLFLOW_VARIABLES}
    state.update({name: None for _, name in MLFLOW_GLOBALS})
    state.update({name: getattr(module, name) for module, name in mlflow_globals()})
    fluent = sys.modules.get("mlflow.tracking.fluent")
    run = fluent.active_run() if fluent is not None else None
    state["active_run"] = run.info.run_id if run is not None else None
    return state


@contextlib.contextmanager
def mlflow_state_kept() -> Iterator[None]:
    """Undo on exit what the block left of MLflow's process-global state (mlflow_state):
    end any run it left active, then put back the tracking and registry URIs, the active
    experiment and their environment variables, so that a later test cannot log into this
    one's store. MLflow is not imported here (1.5 s): what a block that imported it set is
    put back to MLflow's own start (None, no variable)."""
    saved = mlflow_state()
    try:
        yield
    finally:
        fluent = sys.modules.get("mlflow.tracking.fluent")
        while fluent is not None and fluent.active_run() is not None:
            # end_run pops the run before it reaches the store: an unreachable one ends it too
            with contextlib.suppress(Exception):
                fluent.end_run()
        for module, name in mlflow_globals():
            setattr(module, name, saved[name])
        for name in MLFLOW_VARIABLES:
            if saved[name] is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = saved[name]


@pytest.fixture(autouse=True, scope="module")
def _mlflow_state_kept_per_module() -> Iterator[None]:
    """What a module-scoped fixture (fitted_run, family_run, ...) left of MLflow's global
    state, undone after the module; set up before the module's other module fixtures."""
    with mlflow_state_kept():
        yield


@pytest.fixture(autouse=True)
def _mlflow_state_kept_per_test() -> Iterator[None]:
    """What a test and its function fixtures left of MLflow's global state, undone after
    it: the state its module's fixtures set stays for the module's next test."""
    with mlflow_state_kept():
        yield


@pytest.fixture
def tracking_store(tmp_path, monkeypatch):
    """A temporary MLflow SQLite store; the working directory is tmp_path too."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return uri


def run_pipeline_script(monkeypatch, name: str, *args: str) -> int | str | None:
    """``python pipelines/NAME ARGS`` in this process; its exit code."""
    script = Path(__file__).parents[1] / "pipelines" / name
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    return exit_info.value.code
