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
