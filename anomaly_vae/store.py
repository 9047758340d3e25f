"""Where MLflow runs go: ``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store
in ``<project>/mlruns/``. Apart from tracking.py so that `anomaly-vae ui` finds the
store without importing MLflow and matplotlib first (over a second of its start-up)."""

from __future__ import annotations

import os
from pathlib import Path

STORE_DIR = "mlruns"
STORE_FILE = "mlflow.db"  # the embedded SQLite store, in STORE_DIR


def tracking_uri(project_dir: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store in ``mlruns/``."""
    store = embedded_store(project_dir)
    if store is None:
        return os.environ["MLFLOW_TRACKING_URI"]
    store.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store.resolve()}"


def embedded_store(project_dir: Path | None = None) -> Path | None:
    """The embedded SQLite store's file (it may not exist yet); None when
    ``MLFLOW_TRACKING_URI`` names another store."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (project_dir or Path.cwd()) / STORE_DIR / STORE_FILE


def new_sqlite_store(uri: str) -> Path | None:
    """The file of the SQLite store ``uri`` names when it does not exist yet, else None
    (another kind of store, or one in memory). MLflow creates such a store on first use
    and runs its schema migrations on it, which take seconds.

    >>> new_sqlite_store("sqlite:////nowhere/mlflow.db"), new_sqlite_store("http://host")
    (PosixPath('/nowhere/mlflow.db'), None)
    """
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").partition("?")[0]  # relative, or /absolute
    if path in ("", ":memory:") or Path(path).exists():
        return None
    return Path(path)
