"""The `fit` workflow: read a table, keep labelled anomalies out of training,
fit and calibrate a detector, evaluate when labels allow, save, track in MLflow."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly_vae.calibration import evaluate
from anomaly_vae.config import Config
from anomaly_vae.data import label_vector, read_table
from anomaly_vae.detector import VAEDetector
from anomaly_vae.errors import DataError
from anomaly_vae.training import EpochCallback

logger = logging.getLogger(__name__)

MODELS_DIR = Path("mlruns") / "models"  # local saved models, relative to the project folder
LATEST_FILE = "LATEST"  # names the newest model folder in MODELS_DIR


@dataclass
class FitResult:
    detector: VAEDetector
    model_dir: Path
    rows: dict[str, int]  # training rows per split, labelled anomalies excluded, evaluation rows
    evaluation: dict[str, Any] | None
    run: Any = None  # tracking.TrackedRun when the fit was logged to MLflow


def fit_table(
    data: str | Path,
    config: Config,
    eval_data: str | Path | None = None,
    project_dir: Path | None = None,
    model_dir: Path | None = None,
    register: bool | None = None,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Fit a detector on the normal rows of ``data`` and do everything around it.

    With ``config.data.label_column``, rows labelled 1 never reach training: they
    and a held-out ``config.evaluation.fraction`` of the labelled-normal rows form
    the evaluation set, to which every row of ``eval_data`` is added.
    """
    project_dir = project_dir or Path.cwd()
    frame = read_table(data)
    label_column = config.data.label_column
    train_frame, eval_frame, eval_labels = _split_labelled(frame, config)
    if eval_data is not None:
        if label_column is None:
            raise DataError("--eval needs --label-col: the evaluation file must be labelled")
        extra = read_table(eval_data)
        extra_labels = label_vector(extra, label_column)
        eval_frame = (
            extra if eval_frame is None else pd.concat([eval_frame, extra], ignore_index=True)
        )
        eval_labels = (
            extra_labels if eval_labels is None else np.concatenate([eval_labels, extra_labels])
        )

    detector = VAEDetector(config.detector_config()).fit(train_frame, on_epoch=on_epoch)
    evaluation = None
    if eval_frame is not None and eval_labels.any() and not eval_labels.all():
        evaluation = evaluate(eval_labels, detector.anomaly_score(eval_frame), detector.threshold_)
    elif eval_frame is not None:
        logger.warning("no evaluation: the labelled evaluation rows are all of one class")

    model_dir = model_dir or _new_model_dir(project_dir)
    detector.save(model_dir)
    _mark_latest(project_dir, model_dir)
    rows = dict(detector.n_training_rows_)
    rows["labelled_anomalies_excluded"] = (
        int(label_vector(frame, label_column).sum()) if label_column else 0
    )
    rows["evaluation"] = 0 if eval_frame is None else len(eval_frame)
    result = FitResult(detector, model_dir, rows, evaluation)

    if config.tracking.enabled:
        from anomaly_vae import tracking  # MLflow import is slow; only when tracking

        tracking.use_tracking(config.tracking.experiment, project_dir)
        result.run = tracking.log_fit_run(
            detector, config, model_dir, train_frame, evaluation, eval_frame, eval_labels, register
        )
    return result


def _split_labelled(
    frame: pd.DataFrame, config: Config
) -> tuple[pd.DataFrame, pd.DataFrame | None, np.ndarray | None]:
    """(training rows, evaluation rows or None, their labels or None)."""
    if config.data.label_column is None:
        return frame, None, None
    labels = label_vector(frame, config.data.label_column)
    normal = np.flatnonzero(~labels)
    if not labels.any():
        return frame, None, None
    rng = np.random.default_rng(config.training.seed)
    held_out = rng.permutation(normal)[: round(config.evaluation.fraction * len(normal))]
    train_rows = np.setdiff1d(normal, held_out)
    eval_rows = np.concatenate([held_out, np.flatnonzero(labels)])
    return frame.iloc[train_rows], frame.iloc[eval_rows], labels[eval_rows]


def _new_model_dir(project_dir: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return project_dir / MODELS_DIR / stamp


def _mark_latest(project_dir: Path, model_dir: Path) -> None:
    models = project_dir / MODELS_DIR
    models.mkdir(parents=True, exist_ok=True)
    temporary = models / f".{LATEST_FILE}.tmp"
    temporary.write_text(str(model_dir.resolve()) + "\n")
    temporary.replace(models / LATEST_FILE)


def latest_model_dir(project_dir: Path | None = None) -> Path | None:
    """The folder of the newest model fit in ``project_dir`` (None if there is none)."""
    marker = (project_dir or Path.cwd()) / MODELS_DIR / LATEST_FILE
    return Path(marker.read_text().strip()) if marker.is_file() else None
