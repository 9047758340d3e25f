"""MLflow: where runs go, what a fit run logs, and the pyfunc model.

The tracking store defaults to SQLite inside ``<project>/mlruns/`` (database
``mlruns/mlflow.db``, artifacts ``mlruns/artifacts/``); ``MLFLOW_TRACKING_URI``
overrides it, e.g. with a tracking server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import requests
import yaml
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

from anomaly_vae.batch import Failures, input_names
from anomaly_vae.config import (
    FIRST_ROWS_EXAMPLE,
    QUANTILE_THRESHOLD,
    SYNTHETIC_EXAMPLE,
    Config,
    flatten,
    to_dict,
)
from anomaly_vae.data import TablePreprocessor, take_rows
from anomaly_vae.data.preprocessing import names_as_read_now, warnings_per_file
from anomaly_vae.detector import VAEDetector
from anomaly_vae.ensemble import EnsembleDetector
from anomaly_vae.errors import DataError, TrackingError
from anomaly_vae.explanation import explain_scored, refuse_unexplained
from anomaly_vae.family import ENSEMBLE
from anomaly_vae.fitting import INPUT_EXAMPLE_ROWS, Data, TrainingData
from anomaly_vae.models import get_model
from anomaly_vae.scoring import conditional_classes, warn_unknown_classes

# Where runs go, also importable from here as before (store.py keeps `ui` light).
from anomaly_vae.store import STORE_DIR as STORE_DIR
from anomaly_vae.store import STORE_FILE as STORE_FILE
from anomaly_vae.store import embedded_store as embedded_store
from anomaly_vae.store import new_sqlite_store
from anomaly_vae.store import tracking_uri as tracking_uri
from anomaly_vae.training import phase_line

CHAMPION_ALIAS = "champion"
# Run and version tag: why the threshold asks for a check before use (fitting.check_reason)
NEEDS_CHECK_TAG = "needs_check"
CHAMPION_HELD_NOTE = "; --register did not move the champion alias to it"  # ends the tag, held
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")
DETECTOR_ARTIFACT = "detector"  # key of the saved detector among the pyfunc model's artifacts
VIEWS_ARTIFACT_PATH = "views"  # run artifact folder of the classic VAE views
EVALUATION_METRICS = (
    "auroc",
    "aucpr",
    "f1_optimal_threshold",
    "f1_optimal",
    "precision",
    "recall",
    "f1",
    "false_positive_rate",
)


def use_tracking(experiment: str | None = None, project_dir: Path | None = None) -> str:
    """Point MLflow at the project's store; create ``experiment`` (if given) there.

    A local SQLite store keeps the experiment's artifacts in ``artifacts/`` beside
    the database, so the whole store lives in one folder. Returns the tracking URI.
    """
    uri = tracking_uri(project_dir)
    mlflow.set_tracking_uri(uri)
    if experiment is not None:
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment, artifact_location=_local_artifact_root(uri))
        mlflow.set_experiment(experiment)
    return uri


STORE_FAILURES = (MlflowException, requests.RequestException, OSError)  # what logging raises
PREFLIGHT_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def check_store(
    experiment: str | None = None, project_dir: Path | None = None, announce: bool = False
) -> str:
    """Before any training: reach the tracking store and create ``experiment`` there (or,
    without one, list an experiment), once and with a short timeout (MLflow's own retries
    take minutes against a server that is down), so that a wrong ``MLFLOW_TRACKING_URI``
    costs seconds, not a fit. With ``announce``, a SQLite store not created yet is named
    in a :func:`~anomaly_vae.training.phase_line` first: MLflow runs every schema migration on
    it, seconds that were silent. Returns the tracking URI; raises TrackingError."""
    uri = tracking_uri(project_dir)
    new_store = new_sqlite_store(uri)
    if announce and new_store is not None:
        phase_line(f"creating the MLflow tracking store {new_store} (first use)")
    try:
        with quick_requests():
            use_tracking(experiment, project_dir)
            if experiment is None:  # setting the URI alone does not reach the store
                MlflowClient().search_experiments(max_results=1)
        return uri
    except STORE_FAILURES as exc:
        raise TrackingError(
            f"cannot use the MLflow tracking store {uri}: {_first_line(exc)} (check "
            "MLFLOW_TRACKING_URI, or pass --no-tracking)"
        ) from exc


@contextlib.contextmanager
def quick_requests() -> Iterator[None]:
    """MLflow's HTTP requests tried once, with a short timeout (PREFLIGHT_HTTP), unless
    the environment sets them: against a tracking server that is down, MLflow's own
    retries take minutes (by default MLFLOW_HTTP_REQUEST_MAX_RETRIES=7 retries with
    exponentially growing waits, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=2)."""
    saved = {key: os.environ.get(key) for key in PREFLIGHT_HTTP}
    os.environ.update({k: v for k, v in PREFLIGHT_HTTP.items() if saved[k] is None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


@contextlib.contextmanager
def logging_after(done: str) -> Iterator[None]:
    """Around what is logged once the work is done and kept: a failure says what was
    kept (``done``, e.g. "the model is saved in DIR") before what failed."""
    try:
        yield
    except STORE_FAILURES as exc:
        raise TrackingError(
            f"{done}, but logging to MLflow ({mlflow.get_tracking_uri()}) failed: "
            f"{_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]


def _local_artifact_root(uri: str) -> str | None:
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None  # a server or other store decides where artifacts go
    database = Path(uri.removeprefix("sqlite:///"))
    return (database.parent / "artifacts").resolve().as_uri()


@dataclass
class TrackedRun:
    run_id: str
    model_uri: str  # models:/<name>/<version> when registered, else the logged model's URI
    model_version: str | None
    artifact_uri: str  # where the run's plots and tables are
    champion: bool  # whether the champion alias now points at this version
    # Asked to move the champion alias, and kept it where it was, as the threshold asks
    # for a check (moves_champion): the version the alias names (None: no version), and
    # the shell command that moves it to this one (None when the alias was not held)
    champion_kept_on: str | None = None
    move_champion: str | None = None


class AnomalyVAEPyfunc(PythonModel):
    """Scores a pandas DataFrame (tables) or an ``(n, C, H, W)`` array (images) with a
    saved detector or family ensemble.

    ``predict`` returns ``score_frame``: the id column (if configured and present),
    the scores, ``score`` (higher = more anomalous) and the boolean ``is_anomaly``. A
    conditional image model takes the images' class as the parameter ``image_class``
    (one class per request); without it, or with a class it was not trained on, each
    image is scored under the trained class that explains it best, with a warning. A
    table model takes the parameter ``explain`` (K, default 0): each row's K columns that
    added most to its score follow ``is_anomaly`` (``VAEDetector.explain``), as
    ``score --explain K`` writes them.
    """

    # We log an explicit signature; skip MLflow's type-hint validation of predict.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from anomaly_vae.ensemble import load_saved

        self.detector = load_saved(context.artifacts[DETECTOR_ARTIFACT])

    def predict(self, context, model_input, params=None):
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            if isinstance(model_input, np.ndarray) and model_input.ndim >= 3:
                _refuse_cast_unit_floats(model_input)
                image_class = (params or {}).get(IMAGE_CLASS_PARAM) or ""
                classes = np.full(len(model_input), image_class, dtype=object)
                scores = self.detector.score_frame(model_input, classes)
                warn_unknown_classes(self.detector, classes)
                return scores
            quiet = (params or {}).get(LOG_WARNINGS_PARAM) is False
            top = int((params or {}).get(EXPLAIN_PARAM) or 0)
            if top < 0:  # explain's own ValueError ("at least 1") is served as MLflow's
                # "unexpected error", without it; 0 is allowed here
                raise DataError(
                    f"the parameter {EXPLAIN_PARAM!r} is how many columns to name per row, "
                    f"0 (none) or more, not {top}"
                )
            if top:
                refuse_unexplained(self.detector)  # before anything is scored
            frame = pd.DataFrame(model_input)
            # The names the signature of a model logged before Windows-1252 requires
            table = cast(TablePreprocessor, _base_detector(self.detector).preprocessor_)
            frame = frame.rename(columns=names_as_read_now(frame.columns, table.input_columns))
            with _package_warnings_off() if quiet else contextlib.nullcontext():
                scores = self.detector.score_frame(frame)
                if top:
                    why = explain_scored(self.detector, frame, top)
                    # By position: both are in the frame's order with its index, which can
                    # repeat a label (frames concatenated), and a join on it multiplies rows.
                    for name in why.columns:
                        scores[name] = why[name].to_numpy()
            # A missing id as None (JSON null): the scoring server writes NaN as a bare
            # NaN, which JSON parsers refuse. Scores are never missing.
            id_column = _base_detector(self.detector).effective_config.data.id_column
            if id_column in scores.columns and scores[id_column].isna().any():
                ids = scores[id_column]
                scores[id_column] = ids.astype(object).where(ids.notna(), None)
            return scores
        except DataError as exc:
            # A served model answers 400 with this message, not a 500 with a stack trace.
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc


def _refuse_cast_unit_floats(images: np.ndarray) -> None:
    """DataError when an image of a request's uint8 ``images`` ``(n, C, H, W)`` has
    pixels of 0 and 1 only, some 1: over REST, MLflow casts JSON numbers to the
    signature's uint8, so pixels sent as floats in [0, 1] arrive as 0 and 1 and would be
    scored as black images. An all-black image (every pixel 0) is scored as one."""
    if images.dtype != np.uint8 or not images.size:
        return
    brightest = images.reshape(len(images), -1).max(axis=1)
    cast = int(np.count_nonzero(brightest == 1))
    if cast:
        raise DataError(
            f"{cast} of {len(images)} images have pixels of 0 and 1 only: pixels sent as "
            "floats in [0, 1] are read as levels 0 to 255 (MLflow casts them to uint8); "
            "send levels 0 to 255"
        )


@contextlib.contextmanager
def _package_warnings_off() -> Iterator[None]:
    """The package's warnings unlogged meanwhile (its errors still are)."""
    package = logging.getLogger("anomaly_vae")
    level = package.level
    package.setLevel(logging.ERROR)
    try:
        yield
    finally:
        package.setLevel(level)


def _base_detector(detector: Any) -> VAEDetector:
    """The detector whose input schema a model has (an ensemble's first member)."""
    return getattr(detector, "first", detector)


def _labelled(data: TrainingData) -> tuple[Data, np.ndarray]:
    """``data``'s evaluation rows and their labels, where the caller knows it has them
    (``has_evaluation()``, or an evaluation computed on them)."""
    # TrainingData is built with both or neither.
    return cast(Data, data.evaluation), cast(np.ndarray, data.evaluation_labels)


INTEGER_SCHEMA_HINT = "Hint: Inferred schema contains integer"  # start of an MLflow warning
# Normal rows fit on logged as the run's dataset input; a larger table is logged as a sample
# of about this many (dataset_sample), as MLflow infers the schema and digest with a Python
# pass over every cell: a cost that grows with the table, bounded by the sample's size.
DATASET_ROWS = 10_000
IMAGE_CLASS_PARAM = "image_class"  # the served conditional image model's class parameter
# A table model's parameter: false keeps its warnings about the data unlogged, for a
# caller that has logged them already (the Spark engine's driver, once per file)
LOG_WARNINGS_PARAM = "log_warnings"
# A table model's parameter: K > 0 adds each row's K columns that added most to its score
# (the Spark engine's `batch --explain K`, in the same job as the scores)
EXPLAIN_PARAM = "explain"


def model_signature(detector: Any, example: pd.DataFrame | np.ndarray) -> ModelSignature:
    """Input/output schema of the pyfunc model.

    Tables: outputs and parameters only, no input schema; the input example names the
    columns. MLflow's type checks of declared column types would refuse what the model
    accepts, as `anomaly-vae score` does: integers for a float column, NaN for an integer
    one, a text column empty in every row (float NaN) or holding integer codes; and its
    scoring server reads a CSV request only by a schema whose every column has a concrete
    type (it refused CSV outright when the columns were declared ``Any``). Without one,
    the model gets the columns as sent (JSON) or as pandas reads them (CSV, Parquet),
    checks the values itself and answers bad ones, or a missing column, with a clear
    error. Images: a uint8 tensor.
    """
    with warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold NaN is moot: inputs are not
        # declared, and the integer outputs (row numbers) are never missing.
        warnings.filterwarnings("ignore", INTEGER_SCHEMA_HINT, UserWarning)
        outputs = infer_signature(example, detector.score_frame(example)).outputs
    if isinstance(example, np.ndarray):
        params = None
        if conditional_classes(detector):
            params = ParamSchema([ParamSpec(IMAGE_CLASS_PARAM, "string", "")])
        inputs = infer_signature(example).inputs
        # MLflow annotates params as ParamSchema, though None (its default) means none.
        return ModelSignature(inputs=inputs, outputs=outputs, params=params)  # type: ignore[arg-type]
    params = ParamSchema(
        [ParamSpec(LOG_WARNINGS_PARAM, "boolean", True), ParamSpec(EXPLAIN_PARAM, "long", 0)]
    )
    return ModelSignature(inputs=None, outputs=_ids_as_given(outputs, detector), params=params)


def _ids_as_given(outputs: Schema, detector: Any) -> Schema:
    """``outputs`` with the id column declared ``Any`` and optional: the model returns
    the ids as it was given them (integers for integers, as pandas reads a CSV request or
    JSON numbers; text for text; a missing one as None), and no id column for a request
    without one. Inferred from the input example, which reads ids as text, it was
    declared ``string`` and required, whatever the request held."""
    id_column = _base_detector(detector).effective_config.data.id_column
    return Schema(
        [
            ColSpec(AnyType(), name=spec.name, required=False) if spec.name == id_column else spec
            for spec in cast(list[ColSpec], outputs.inputs)
        ]
    )


def input_example(
    detector: Any,
    data: pd.DataFrame | np.ndarray,
    rows: int = INPUT_EXAMPLE_ROWS,
    kind: str = FIRST_ROWS_EXAMPLE,
) -> pd.DataFrame | np.ndarray:
    """The logged model's input example of ``kind`` (``tracking.input_example``).

    ``"rows"``: the first ``rows`` rows of ``data``'s model input columns (and the id
    column, if any), or its first 2 images ``(2, C, H, W)``. ``"synthetic"``: no row or
    pixel of ``data``, for data that may not be stored: one row made from the model's
    fitted schema (:meth:`~anomaly_vae.data.TablePreprocessor.typical_row`: medians and
    most common values, no id column), or one mid-grey image of ``data``'s shape and type.
    """
    if kind == SYNTHETIC_EXAMPLE:
        if isinstance(data, np.ndarray):  # mid-grey: pixel levels 0 to 255, or floats 0 to 1
            return np.full_like(data[:1], 128 if data.dtype == np.uint8 else 0.5)
        preprocessor = _base_detector(detector).preprocessor_
        return cast(TablePreprocessor, preprocessor).typical_row()
    if isinstance(data, np.ndarray):
        return data[:2]
    base = _base_detector(detector)
    columns = list(cast(TablePreprocessor, base.preprocessor_).input_columns)  # not images
    id_column = base.effective_config.data.id_column
    if id_column is not None and id_column in data.columns:
        columns.insert(0, id_column)
    return data[columns].head(rows)


def log_fit_run(
    detector: Any,
    config: Config,
    model_dir: Path,
    data: TrainingData,
    evaluation: dict[str, Any] | None = None,
    register: bool | None = None,
    scores: np.ndarray | None = None,
    check: str | None = None,
) -> TrackedRun:
    """Log one fit as one MLflow run in the current experiment; register the model.

    ``register`` moves the ``champion`` alias to the new version (default:
    ``config.tracking.register_champion``), unless the threshold asks for a ``check``
    (see :func:`log_model`); ``scores``: as :func:`log_calibration`.
    """
    asked = champion_asked(config, register)
    config = with_register(config, moves_champion(asked, check))
    with mlflow.start_run(run_name=f"fit {config.model.name}") as run:
        log_detector(detector, config, data, evaluation, scores)
        return log_model(detector, config, model_dir, data, run, asked, check)


def champion_asked(config: Config, register: bool | None) -> bool:
    """Whether a run is asked to move the champion alias: ``register`` (``--register``/
    ``--no-register``) when given, else ``config.tracking.register_champion``."""
    return config.tracking.register_champion if register is None else register


def moves_champion(register: bool, check: str | None) -> bool:
    """Whether a run asked to move the champion alias (``register``) moves it to the
    version it registers: not when the version's threshold asks for a ``check`` (why, or
    None: :func:`~anomaly_vae.fitting.check_reason`). Scheduled scoring (``batch --model
    models:/NAME@champion``) follows the alias, so such a version is registered, and goes
    live only when someone moves the alias to it; a fit's and a calibrate run's alike."""
    return register and check is None


def with_register(config: Config, register: bool | None) -> Config:
    """``config`` (a copy when it changes) with ``tracking.register_champion`` as the run
    does it: ``register`` (``--register``/``--no-register``) when given, so that the run's
    parameter and its config.yaml say whether the champion alias moved, not the setting
    the flag overrode."""
    if register is None or register == config.tracking.register_champion:
        return config
    tracking = dataclasses.replace(config.tracking, register_champion=register)
    return dataclasses.replace(config, tracking=tracking)


def log_detector(
    detector: Any,
    config: Config,
    data: TrainingData,
    evaluation: dict[str, Any] | None,
    scores: np.ndarray | None = None,
) -> None:
    """Into the active run: config, losses per epoch, calibration, evaluation, plots.
    ``scores``: as :func:`log_calibration`."""
    # Callers start the run; without one this fails as before, on None.
    run_id = cast(mlflow.ActiveRun, mlflow.active_run()).info.run_id
    log_config(detector, config)
    mlflow.set_tags(
        {"kind": "fit", "model": config.model.name, "score": detector.calibration_["score"]}
    )
    log_sources(data)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        write_config(config, out)
        log_calibration(detector, data, evaluation, out, scores)
        if isinstance(detector, VAEDetector):
            _log_history(MlflowClient(), run_id, detector)
            history = detector.history_
            mlflow.log_metrics(
                {
                    "epochs": len(history.epochs),
                    "best_epoch": history.best_epoch,
                    "training_seconds": history.seconds,
                    # the schedule in effect, after training.min_steps stretched it
                    "epoch_limit": history.epoch_limit,
                    "patience_epochs": history.patience,
                    "batches_per_epoch": history.batches_per_epoch,
                }
            )
            # A fit ended by the epoch limit may still have been improving: worth a look.
            ended_by = "early stopping" if history.stopped_early else "epoch limit"
            mlflow.set_tag("training_ended_by", ended_by)
            _log_latents(detector, data, out)
            if config.tracking.log_views:
                _log_views(detector, data, config.tracking.view_rows, out)
        mlflow.log_artifacts(str(out))


def log_config(detector: Any, config: Config) -> None:
    """Into the active run: ``config`` as parameters (:func:`run_params`, the ``model.*``
    settings that ``detector``'s variants read) and, for a ``VAEDetector``, the value each
    auto setting took for its data as ``auto.<key>``; a fit's and a calibrate run's alike."""
    mlflow.log_params(run_params(config, variants_of(detector)))
    if isinstance(detector, VAEDetector):
        # The config logs auto settings as None; a reviewer needs the values used.
        mlflow.log_params({f"auto.{k}": v for k, v in detector.auto_settings.items()})


def write_config(config: Config, out: Path) -> None:
    """``out/config.yaml``: the resolved config as YAML (it loads back with --config)."""
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def log_sources(data: TrainingData) -> None:
    """Which files the run read (tags ``data``, ``eval_data``; ``normal_classes`` for
    images), and for a table the normal rows fit on (``data.train``: the training,
    validation and calibration rows, not the training split alone that the run's
    description counts) as an MLflow dataset input (schema, digest, source; the UI's
    Datasets): all of them up to ``DATASET_ROWS``, else a sample that its name says is
    one (:func:`dataset_sample`). A table file's SHA-256 is the tag ``data_sha256``, as a
    calibrate run records its file's: which bytes the model was fit on, where the path
    alone says nothing once the file is replaced."""
    mlflow.set_tags(data.sources)
    source = data.sources.get("data")
    if isinstance(data.train, pd.DataFrame) and source is not None:
        frame, name = data.train, Path(source).name
        if len(frame) > DATASET_ROWS:
            frame = dataset_sample(frame, DATASET_ROWS)
            # "normal rows", as the fit's summary counts them ("Trained 'vae' on 15,839
            # normal rows (train 11,879 / ...)"); "training rows" are the train split.
            name = f"{name} (sample of {len(frame):,} of {len(data.train):,} normal rows)"
        with _dataset_warnings_off():
            # mlflow.data adds its from_* constructors at import, unseen by mypy.
            dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
                frame, source=source, name=name
            )
            mlflow.log_input(dataset, context="training")


@contextlib.contextmanager
def _dataset_warnings_off() -> Iterator[None]:
    """MLflow's warnings on logging a dataset that say nothing of this one."""
    with warnings.catch_warnings():
        # MLflow registers two equivalent source kinds for a local path and says so.
        warnings.filterwarnings("ignore", "The specified dataset source", UserWarning)
        # Its hint that integer columns cannot hold NaN is about model signatures; a
        # dataset's schema only describes its rows.
        warnings.filterwarnings("ignore", INTEGER_SCHEMA_HINT, UserWarning)
        yield


class _FileDataset(MetaDataset):
    """A data file logged by reference (a run that never held it whole): its source,
    name and digest, and as its profile its row counts, which MLflow's metadata-only
    dataset has no place for."""

    def __init__(self, source: Any, name: str, digest: str, profile: dict[str, int]) -> None:
        self._profile = profile
        super().__init__(source, name=name, digest=digest)

    @property
    def profile(self) -> dict[str, int]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config["profile"] = json.dumps(self._profile)
        return config


def log_data_file(source: str | Path, labels: np.ndarray, context: str) -> None:
    """Into the active run, what it read of ``source`` (every row or image, with
    ``labels`` ``(n,)``, True = anomaly): metrics ``data_rows``, ``data_normal_rows`` and
    ``data_anomalous_rows`` (images, for an image source); for a table file also the tag
    ``data_sha256`` (of its bytes) and a dataset input (``context``; under Datasets in the
    UI) by reference: its path, name, digest (the SHA-256's first 8 hex digits, as long
    as MLflow's own) and the row counts as profile, no schema (the run read it a part at
    a time, and a schema of some rows could misstate the rest)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    from anomaly_vae.batch import file_digest
    from anomaly_vae.data.images import source_location

    counts = {
        "data_rows": len(labels),
        "data_normal_rows": int(np.count_nonzero(~labels)),
        "data_anomalous_rows": int(np.count_nonzero(labels)),
    }
    mlflow.log_metrics({key: float(value) for key, value in counts.items()})
    path = Path(source)
    if not path.is_file():  # a folder of images or a torchvision set: no one file to hash
        return
    sha256 = file_digest(path)
    mlflow.set_tag("data_sha256", sha256)
    with _dataset_warnings_off():
        location = source_location(path)  # as the tag "data" names it
        profile = {f"num_{key.removeprefix('data_')}": value for key, value in counts.items()}
        dataset = _FileDataset(resolve_dataset_source(location), path.name, sha256[:8], profile)
        mlflow.log_input(dataset, context=context)


def dataset_sample(frame: pd.DataFrame, rows: int) -> pd.DataFrame:
    """About ``rows`` rows of ``frame``, in its order, for the run's dataset input: a
    seeded random sample (the same rows for the same table) plus, for each column with
    missing values, its first row that has one, so that MLflow's schema of the sample
    marks the same columns as optional (``required: false``) as that of the whole
    ``frame``; the column types are the frame's own."""
    chosen = np.random.default_rng(0).choice(len(frame), size=min(rows, len(frame)), replace=False)
    missing = frame.isna().to_numpy()
    first_missing = missing.argmax(axis=0)[missing.any(axis=0)]
    return frame.iloc[np.union1d(chosen, first_missing)]


def strict_json(document: Any) -> str:
    """``document`` as JSON that strict parsers read: an infinite or NaN float (the ROC
    curve's first threshold is +inf in scikit-learn) written as ``null``, where Python's
    ``json`` would write ``Infinity`` or ``NaN``, tokens JSON (RFC 8259) does not have:
    strict parsers, such as JavaScript's ``JSON.parse``, refuse the whole file.

    >>> json.loads(strict_json({"thresholds": [float("inf"), 0.5]}))
    {'thresholds': [None, 0.5]}
    """

    def finite(value: Any) -> Any:
        if isinstance(value, float):
            return value if np.isfinite(value) else None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value

    return json.dumps(finite(document), indent=2, allow_nan=False)


def log_calibration(
    detector: Any,
    data: TrainingData,
    evaluation: dict[str, Any] | None,
    out: Path,
    scores: np.ndarray | None = None,
) -> None:
    """Threshold and evaluation metrics; calibration/evaluation JSON and plots into ``out``.
    ``scores``: the ``(m,)`` anomaly scores of ``data.evaluation`` that ``evaluation`` was
    computed from (:func:`anomaly_vae.fitting.calibrate_and_evaluate` returns them);
    without them its anomalies are scored again for the score histogram."""
    # Where a plot is made, not at import: what only loads a logged model (score --model
    # models:/..., the pyfunc model, batch's run) plots nothing and need not import matplotlib.
    from anomaly_vae import plots

    item = detector.score_item
    rows = dict(detector.n_training_rows_)
    # The rows calibration_fpr and the histogram count: after `calibrate --method quantile`
    # the rows it was given, which replaced the fit's held-out part as calibration rows.
    rows["calibration"] = len(detector.calibration_scores_)
    mlflow.log_metrics(
        {
            "threshold": detector.threshold_,
            "calibration_fpr": detector.calibration_["calibration_fpr"],
            **{f"rows_{k}": v for k, v in rows.items()},
        }
    )
    # The false-positive rate to expect on new normal rows (its estimate and the interval of
    # calibration.expected_fpr_level: calibration.expected_fpr for a quantile threshold,
    # fixed_threshold_fpr for one chosen on labelled rows); absent from older models.
    expected = ("expected_fpr_low", "expected_fpr_mean", "expected_fpr_high")
    calibration = detector.calibration_
    mlflow.log_metrics({k: calibration[k] for k in expected if k in calibration})
    mlflow.set_tag("threshold_method", detector.calibration_.get("method", "quantile"))
    (out / "calibration.json").write_text(strict_json(detector.calibration_))
    anomalous_scores = None
    if evaluation is not None:
        mlflow.log_metrics({k: evaluation[k] for k in EVALUATION_METRICS})
        for name in ("auroc", "aucpr"):  # bootstrap intervals, when the evaluation has them
            if f"{name}_interval" in evaluation:
                low, high = evaluation[f"{name}_interval"]
                mlflow.log_metrics({f"{name}_interval_low": low, f"{name}_interval_high": high})
        mlflow.log_metrics({f"confusion_{k}": v for k, v in evaluation["confusion_matrix"].items()})
        (out / "evaluation.json").write_text(strict_json(evaluation))
        _save(plots.roc_curve(evaluation, item), out / "plots" / "roc_curve.png")
        _save(plots.pr_curve(evaluation, item), out / "plots" / "pr_curve.png")
        if scores is None:
            anomalous_scores = detector.anomaly_score(take_rows(*_labelled(data)))
        else:
            assert data.evaluation_labels is not None  # an evaluation had labels
            anomalous_scores = scores[data.evaluation_labels]
    histogram = plots.score_histogram(
        detector.calibration_scores_,
        detector.threshold_,
        detector.calibration_["score"],
        anomalous_scores,
        item,
    )
    _save(histogram, out / "plots" / "score_histogram.png")


@contextlib.contextmanager
def _registration_messages_off() -> Iterator[None]:
    """Silence MLflow's registration messages ("Successfully registered model",
    "Created version"), printed past logging and ``--quiet``; the commands' summaries
    name the registered version themselves."""
    from mlflow.utils import logging_utils

    stream = logging_utils.MLFLOW_LOGGING_STREAM
    was_enabled = stream.enabled
    stream.enabled = False
    try:
        yield
    finally:
        stream.enabled = was_enabled


def log_model(
    detector: Any,
    config: Config,
    model_dir: Path,
    data: TrainingData,
    run: Any,
    register: bool | None = None,
    check: str | None = None,
) -> TrackedRun:
    """Log the saved model in ``model_dir`` as a pyfunc model of the active run, with the
    input example ``config.tracking.input_example`` asks for (:func:`input_example`);
    register it, and move the champion alias when asked (``register``, default
    ``config.tracking.register_champion``) unless its threshold asks for a ``check``
    (:func:`moves_champion`). The run and the version then have the tag ``needs_check``
    saying why (and that the alias was not moved, when asked), and the result names the
    version the alias stayed on and the command that moves it."""
    asked = champion_asked(config, register)
    champion = moves_champion(asked, check)
    if check is not None:  # before the version copies the run's tags
        mlflow.set_tag(NEEDS_CHECK_TAG, check + (CHAMPION_HELD_NOTE if asked else ""))
    example = input_example(detector, data.train, kind=config.tracking.input_example)
    # MLflow scores the input example to check it; a conditional image model would warn
    # that its example images have no class, about images no user gave.
    with _registration_messages_off(), _package_warnings_off():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_ENTRY),
            artifacts={DETECTOR_ARTIFACT: str(model_dir)},
            signature=model_signature(detector, example),
            input_example=example,
            registered_model_name=config.tracking.registered_model_name,
            pip_requirements=_requirements(),
        )
    version = str(info.registered_model_version) if info.registered_model_version else None
    model_uri = info.model_uri
    kept_on = move = None
    # The runs table and the registry list runs and versions by name and number alone
    # ("fit vae", version 7): a line saying what each is tells them apart at a glance.
    logged = MlflowClient().get_run(run.info.run_id)
    description = model_description(detector, logged)
    mlflow.set_tag(NOTE_TAG, description)
    if version is not None:
        name = config.tracking.registered_model_name
        model_uri = f"models:/{name}/{version}"
        MlflowClient().update_model_version(name, version, description=description)
        # A reviewer of the Models page sees the version's tags, not its run's.
        for key, value in version_tags(logged.data.tags).items():
            MlflowClient().set_model_version_tag(name, version, key, value)
        if champion:
            MlflowClient().set_registered_model_alias(name, CHAMPION_ALIAS, version)
        elif asked:  # held for the check
            kept_on, move = alias_version(name), move_alias_command(name, version)
    return TrackedRun(
        run_id=run.info.run_id,
        model_uri=model_uri,
        model_version=version,
        artifact_uri=run.info.artifact_uri,
        champion=bool(champion and version),
        champion_kept_on=kept_on,
        move_champion=move,
    )


def alias_version(name: str, alias: str = CHAMPION_ALIAS) -> str | None:
    """The version of the registered model ``name`` that ``alias`` names now, or None."""
    aliases = MlflowClient().get_registered_model(name).aliases
    return str(aliases[alias]) if alias in aliases else None


def move_alias_command(name: str, version: str, alias: str = CHAMPION_ALIAS) -> str:
    """A shell command that moves ``alias`` of the registered model ``name`` to
    ``version`` in the tracking store in use: MLflow's client, run by this Python (the
    ``mlflow`` command has no alias command), the store named as MLflow would not find
    the project's embedded one by itself."""
    arguments = ", ".join(json.dumps(value) for value in (name, alias, version))
    code = (
        f"from mlflow import MlflowClient; MlflowClient().set_registered_model_alias({arguments})"
    )
    return (
        f"MLFLOW_TRACKING_URI={shlex.quote(mlflow.get_tracking_uri())} "
        f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    )


NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
# Run tags copied to the model version the run registers, where the run has them: what
# the model is (variant, score, how its threshold was chosen), the data it was fit or
# recalibrated on, for a calibrate run the model it came from, and why its threshold asks
# for a check (when it does).
VERSION_TAGS = (
    "kind",
    "model",
    "score",
    "threshold_method",
    "data",
    "data_sha256",
    "eval_data",
    "normal_classes",
    "source_model",
    "source_run_id",
    "source_model_version",
    NEEDS_CHECK_TAG,
)


def version_tags(run_tags: dict[str, str]) -> dict[str, str]:
    """The tags of a registered model version: those of ``VERSION_TAGS`` that its run
    (``run_tags``: the run's tags) has, in that order.

    >>> version_tags({"data": "/d/a.csv", "training_ended_by": "early stopping", "kind": "fit"})
    {'kind': 'fit', 'data': '/d/a.csv'}
    """
    return {key: run_tags[key] for key in VERSION_TAGS if key in run_tags}


def model_description(detector: Any, run: Any) -> str:
    """One line on what the model of ``run`` (an MLflow ``Run``, its tags and metrics
    logged) is and does: variant, data, training rows (the train split, without the
    validation and calibration rows), threshold and how it was chosen,
    and the run's AUROC when it had labelled rows."""
    tags, metrics = run.data.tags, run.data.metrics
    calibration = detector.calibration_
    unit = f"{detector.score_item}s"
    base = _base_detector(detector)
    # A calibrate run has no "model" tag; an ensemble's effective_config is its first
    # member's, whose variant would be taken for the ensemble's.
    variant = (
        ENSEMBLE if isinstance(detector, EnsembleDetector) else base.effective_config.model.name
    )
    text = tags.get("model") or variant
    recalibrated = tags.get("kind") == "calibrate"  # a threshold set again, on "data"
    if recalibrated:
        text += " recalibrated"
    if "data" in tags:
        text += f" on {Path(tags['data']).name}"
    if not recalibrated:
        text += f" ({base.n_training_rows_['train']:,} training {unit})"
    text += (
        f": flags {calibration['score']} above {detector.threshold_:.4g} "
        f"({calibration['description']}"
    )
    if calibration["method"] == QUANTILE_THRESHOLD:
        text += f", target false-positive rate {100 * calibration['target_fpr']:g}%"
    text += ")"
    if "auroc" in metrics:
        text += f"; AUROC {100 * metrics['auroc']:.2f}% on the run's labelled {unit}"
    return text


FAILED_ARTIFACT = "failed.csv"  # a batch run's inputs that failed, with their reasons
QUARANTINED_ARTIFACT = "quarantined.csv"  # and those it passed over for their failures


def log_failed_inputs(failed: dict[str, str], attempts: dict[str, int] | None = None) -> None:
    """Into the active (batch) run, the inputs that failed (``failed``: ``{path: reason}``,
    as ``BatchReport.failed``), when any did: the artifact ``failed.csv`` (columns
    ``input``, the absolute path as the ledger records it, ``reason`` and ``attempt``,
    its number among the failed attempts at those bytes, ``BatchReport.attempts``, empty
    for a conflict between inputs) and the tag ``failed_inputs``, their file names in a
    line that the runs table can show."""
    attempts = attempts or {}
    table = pd.DataFrame(
        {
            "input": [str(Path(path).resolve()) for path in failed],
            "reason": list(failed.values()),
            "attempt": pd.array([attempts.get(path) for path in failed], dtype="Int64"),
        }
    )
    _log_inputs("failed_inputs", FAILED_ARTIFACT, table)


def log_quarantined_inputs(quarantined: dict[str, Failures]) -> None:
    """Into the active (batch) run, the inputs it passed over for their failed attempts
    (``BatchReport.quarantined``), when there are any: the artifact ``quarantined.csv``
    (``input``, its absolute path, ``attempts``, the failed attempts at its bytes with
    this model, and ``reason``, the latest one's) and the tag ``quarantined_inputs``,
    their file names."""
    table = pd.DataFrame(
        {
            "input": [str(Path(path).resolve()) for path in quarantined],
            "attempts": [failures.attempts for failures in quarantined.values()],
            "reason": [failures.reason for failures in quarantined.values()],
        }
    )
    _log_inputs("quarantined_inputs", QUARANTINED_ARTIFACT, table)


def _log_inputs(tag: str, artifact: str, table: pd.DataFrame) -> None:
    """``table`` (a row per input, its path in ``input``) as the active run's artifact
    ``artifact`` and their names as its tag ``tag`` (:func:`input_names`, cut short);
    nothing for no rows."""
    if table.empty:
        return
    mlflow.set_tag(tag, input_names(table["input"].tolist()))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / artifact
        table.to_csv(path, index=False)
        mlflow.log_artifact(str(path))


def _log_history(client: MlflowClient, run_id: str, detector: VAEDetector) -> None:
    """Per-epoch losses as metric series (step = epoch), in one batched call per 1000."""
    history = detector.history_
    # Epoch end times, spread evenly over the training that has just ended (the history
    # keeps the total only), so that MLflow's wall-time axis shows when training ran.
    end_ms, epoch_ms = time.time() * 1000, history.seconds * 1000 / max(len(history.epochs), 1)
    metrics = [
        Metric(
            key=key,
            value=float(value),
            timestamp=int(end_ms - (len(history.epochs) - epoch) * epoch_ms),
            step=epoch,
        )
        for epoch, losses in enumerate(history.epochs, start=1)
        for key, value in losses.items()
    ]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def _log_latents(detector: VAEDetector, data: TrainingData, out: Path) -> None:
    """Latent means of the validation rows (table + plot), with labelled anomalies overlaid."""
    from anomaly_vae import plots

    rows = detector.split_rows_["validation"]
    validation = take_rows(data.train, rows)
    latents = detector.encode(validation)
    index = None
    if isinstance(validation, pd.DataFrame):
        # The data row in the training file, 1 for the first, as `score` writes and
        # messages count rows: as recorded when it was read, not the frame's index, which
        # for a Parquet file can be an index stored with it that counts no rows.
        index = rows + 1 if data.train_rows is None else data.train_rows[rows]
    table = pd.DataFrame(latents, columns=[f"z{i}" for i in range(latents.shape[1])], index=index)
    groups = np.full(len(latents), "normal", dtype=object)
    id_column = detector.effective_config.data.id_column
    if isinstance(validation, pd.DataFrame) and id_column in validation.columns:
        table.insert(0, id_column, validation[id_column].to_numpy())
    (out / "latents").mkdir(exist_ok=True)
    path = out / "latents" / "validation_latent_means.csv"
    if data.train_names is not None:
        # Images by name, as `score` names them: a position among the validation images
        # (0, 1, ...) would say nothing of which image it was.
        table.insert(0, "image", [data.train_names[i] for i in rows])
        table.to_csv(path, index=False)
    else:
        table.to_csv(path, index_label="row")
    if data.has_evaluation():
        anomalies = take_rows(*_labelled(data))
        latents = np.vstack([latents, detector.encode(anomalies)])
        groups = np.concatenate([groups, np.full(len(anomalies), "anomalous", dtype=object)])
    title = f"Latent means of validation {detector.score_item}s" + (
        " and labelled anomalies" if "anomalous" in groups else ""
    )
    if not getattr(detector.model_, "continuous_latent", True):
        title += f" ({plots.DISCRETE_LATENT_NOTE})"
    _save(plots.latent_scatter(latents, groups, title), out / "plots" / "latent_means.png")


def _log_views(detector: VAEDetector, data: TrainingData, rows: int, out: Path) -> None:
    """The standard views on (a seeded sample of) the labelled evaluation data, or on
    the validation rows when there is none."""
    from anomaly_vae import views

    labels: np.ndarray | None
    evaluation = data.has_evaluation()
    if evaluation:
        source, labels = _labelled(data)
        positions = np.arange(len(source))
    else:
        positions = detector.split_rows_["validation"]
        source = take_rows(data.train, positions)
        labels = None
    if len(source) > rows:
        chosen = np.sort(np.random.default_rng(0).choice(len(source), rows, replace=False))
        source = take_rows(source, chosen)
        positions = positions[chosen]
        labels = None if labels is None else labels[chosen]
    # Rows named by their file and row there, not by their place among the rows drawn;
    # images by their names, as `score` writes them.
    origin = data.row_origin(positions, evaluation)
    all_names = data.names if evaluation else data.train_names
    names = None if all_names is None else [all_names[i] for i in positions]
    # Images of a source of several classes with their class, as `score` writes them; the
    # images drawn on hold several classes just when their source does (a flat folder's
    # are all of its one class; labelled evaluation images, of the normal and another).
    all_classes = data.evaluation_condition if evaluation else data.train_condition
    classes = None
    if all_classes is not None and len(set(all_classes)) > 1:
        classes = [str(all_classes[i]) for i in positions]
    # Fit scored these rows and gave their data's warnings (an unseen category of an
    # --eval file); the views read them again: gathered and dropped.
    with warnings_per_file():
        made = views.standard_views(detector, source, labels, origin, names, classes)
    for view in made:
        views.save_view(view, out / VIEWS_ARTIFACT_PATH)


def _save(fig: Any, path: Path) -> None:
    from anomaly_vae import plots

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=plots.DPI)
    plots.close(fig)


def param_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list) else value


def variants_of(detector: Any) -> list[str]:
    """Registry names of the models in ``detector``: its own, or an ensemble's members'."""
    members = detector.members.values() if isinstance(detector, EnsembleDetector) else [detector]
    return [member.effective_config.model.name for member in members]


def run_params(config: Config, variants: Iterable[str]) -> dict[str, Any]:
    """``config`` flat as MLflow parameters, with only the ``model.*`` settings that one of
    ``variants`` (registry names) reads (their ``config_fields``): a vae run shows no
    codebook size. ``config.yaml`` keeps every setting, to reproduce the run."""
    used = {f"model.{name}" for variant in variants for name in get_model(variant).config_fields}
    return {
        key: param_value(value)
        for key, value in flatten(config).items()
        if not key.startswith("model.") or key in used
    }


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{name}=={version(name)}"
        for name in (
            "torch",
            "scikit-learn",
            "pandas",
            "numpy",
            "mlflow",
            "pyyaml",
            "tqdm",
            "matplotlib",  # the package's plots module; loading the model imports none
        )
    ]


@dataclass
class ModelSource:
    """Where a model came from in MLflow: the run that logged it and, when registered,
    its registered name and version (None where unknown)."""

    run_id: str
    registered_name: str | None = None
    version: str | None = None


def source_of_model(reference: str | None, project_dir: Path | None = None) -> ModelSource:
    """The MLflow origin of a model: from a models:/ or runs:/ URI, or the
    ``mlflow_run_id`` note in a local model folder (default: the latest fit); aliases
    are resolved to the version they point at now."""
    from anomaly_vae.detector import RUN_FILE
    from anomaly_vae.errors import ModelNotFoundError
    from anomaly_vae.fitting import latest_model_dir

    use_tracking(project_dir=project_dir)
    client = MlflowClient()
    if reference is not None and reference.startswith("models:/"):
        name, _, version = reference.removeprefix("models:/").partition("/")
        if "@" in name:
            name, alias = name.split("@", 1)
            found = client.get_model_version_by_alias(name, alias)
        else:
            found = client.get_model_version(name, version)
        if found.run_id is None:  # registered from a path, not from a run's model
            raise ModelNotFoundError(f"{reference} was registered without an MLflow run")
        return ModelSource(found.run_id, name, str(found.version))
    if reference is not None and reference.startswith("runs:/"):
        run_id = reference.removeprefix("runs:/").split("/")[0]
    else:
        folder = Path(reference) if reference is not None else latest_model_dir(project_dir)
        note = None if folder is None else folder / RUN_FILE
        if note is None or not note.is_file():
            raise ModelNotFoundError(f"no MLflow run is recorded for model {reference or folder}")
        run_id = note.read_text().strip()
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if not versions:
        return ModelSource(run_id)
    return ModelSource(run_id, versions[0].name, str(versions[0].version))


def run_of_model(reference: str | None, project_dir: Path | None = None) -> str:
    """The MLflow run that logged a model (see :func:`source_of_model`)."""
    return source_of_model(reference, project_dir).run_id


def log_views_to_run(reference: str | None, paths: list[Path]) -> tuple[str, str]:
    """Log the view files ``paths`` to the run of model ``reference``; ``(run id, artifact
    folder)``.

    Only these files go up, each into ``views/added-<UTC time>/``: other files in their
    folder may belong to another model, and the views logged at fit keep their names.
    """
    run_id = run_of_model(reference)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    artifact_path = f"{VIEWS_ARTIFACT_PATH}/added-{stamp}"
    client = MlflowClient()
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)
    return run_id, artifact_path
