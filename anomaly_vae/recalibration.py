"""The `calibrate` workflow: choose a saved model's threshold again on new data, without
retraining, and save the result as a new model (the source model is left as it is: a
schedule may be scoring with it, and registered versions do not change).

The new data are labelled rows (methods ``f1`` and ``recall``), or normal rows from
operation (method ``quantile``: their ``1 - target_fpr`` quantile, as at fit)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomaly_vae.calibration import evaluate
from anomaly_vae.config import (
    QUANTILE_THRESHOLD,
    Config,
    EvaluationConfig,
    TrainingConfig,
    load_config,
)
from anomaly_vae.data import label_vector, read_table
from anomaly_vae.data.images import (
    class_list,
    is_image_source,
    read_images,
    source_location,
    torchvision_source,
)
from anomaly_vae.data.tables import ANOMALY_LABEL_VIA_OPTION
from anomaly_vae.errors import DataError
from anomaly_vae.fitting import (
    TrainingData,
    calibrate_and_evaluate,
    check_label_options,
    record_run,
    same_training_file,
    save_model,
    say_reading,
)
from anomaly_vae.scoring import (
    check_data_kind,
    load_detector,
    scores_in_parts,
    warn_unknown_classes,
)
from anomaly_vae.training import phase_line, shows_phases

logger = logging.getLogger(__name__)


@dataclass
class CalibrationResult:
    detector: Any  # VAEDetector or EnsembleDetector, its threshold moved
    model_dir: Path  # where the recalibrated model was saved
    previous_threshold: float
    evaluation: dict[str, Any] | None  # on the labelled rows (None: no labelled anomalies)
    run: Any = None  # tracking.TrackedRun when logged to MLflow
    above_previous: float | None = None  # quantile: share of the normal rows above the
    # previous threshold (far above the target: drift, or anomalies among them)


def labelled_data(
    source: str | Path,
    detector: Any,
    label_column: str | None,
    normal_class: str | None,
    anomaly_label: str | None = None,
    method: str = "f1",
    phases: TrainingConfig | None = None,
) -> TrainingData:
    """Every row of a table, or every image of a folder or torchvision test split, as the
    evaluation part of a :class:`TrainingData`, with its labels (True = anomaly).

    Tables: ``label_column`` (1 = anomaly, or the rows holding ``anomaly_label``, by
    default the model's ``data.anomaly_label``). Images: classes other than
    ``normal_class`` (one, or several separated by commas) are anomalies. For ``method``
    quantile a table without ``label_column``, or a flat folder of images, is all normal
    rows; the other methods need labels. ``phases``: whether a large table file's reading
    is named (its ``progress``; default: not named).
    """
    labels_required = method != QUANTILE_THRESHOLD
    check_data_kind(detector, source, is_image_source(source))
    check_label_options(is_image_source(source), label_column, normal_class)
    if is_image_source(source):
        size = detector.effective_config.data.image_size
        images = read_images(str(source), train=False, size=size)
        if normal_class is None and len(images.classes) > 1:
            raise DataError(
                f"{source} has classes {class_list(images.classes)}: name the normal one "
                "with --normal-class (several: --normal-class a,b)"
                + ("" if labels_required else ", or give a flat folder of normal images")
            )
        if normal_class is None and labels_required:
            raise DataError(
                f"--method {method} chooses the threshold on labelled images: give a folder "
                "with one subfolder per class and name the normal one with --normal-class, "
                "or use --method quantile on a folder of normal images"
            )
        normal = [0] if normal_class is None else images.class_indices(str(normal_class))
        labels = ~np.isin(images.labels, normal)
        classes = images.label_names()
        warn_unknown_classes(detector, classes)
        return TrainingData(
            images.images,
            images.images,
            labels,
            names=images.names,
            train_condition=classes,
            evaluation_condition=classes,
        )
    if label_column is None and labels_required:
        raise DataError(
            f"--method {method} chooses the threshold on labelled rows: name their label "
            "column with --label-col (0 = normal, 1 = anomaly), or use --method quantile "
            "on rows of normal operation"
        )
    if phases is not None:
        say_reading(source, phases)
    frame = read_table(
        source, categorical_columns=detector.effective_config.data.categorical_columns
    )
    fit_label = detector.effective_config.data.label_column
    if label_column is None and fit_label is not None and fit_label in frame.columns:
        # The model's own label column, as at fit: left unread, its anomalies would count
        # as normal rows and lift a quantile threshold above them.
        label_column = fit_label
        logger.warning(
            "%s holds the model's label column %r: its anomalies are kept out of the "
            "normal rows (--label-col names another)",
            Path(source).name,
            fit_label,
        )
    if label_column is None:
        return TrainingData(frame, frame, np.zeros(len(frame), dtype=bool))
    anomaly_label = anomaly_label or detector.effective_config.data.anomaly_label
    labels = label_vector(frame, label_column, anomaly_label, ANOMALY_LABEL_VIA_OPTION)
    if label_column not in getattr(detector, "first", detector).preprocessor_.input_columns:
        # Labels that came after the fit: not a column the model knows, nor one to warn of.
        frame = frame.drop(columns=label_column)
    return TrainingData(frame, frame, labels)


def calibrate_model(
    source: str | Path,
    model_ref: str | None,
    method: str,
    target_recall: float | None = None,
    label_column: str | None = None,
    anomaly_label: str | None = None,
    normal_class: str | None = None,
    project_dir: Path | None = None,
    model_dir: Path | None = None,
    track: bool = True,
    register: bool = False,
    target_fpr: float | None = None,
    evaluation_settings: EvaluationConfig | None = None,
    progress: bool = False,
) -> CalibrationResult:
    """Load ``model_ref`` (see :func:`~anomaly_vae.scoring.load_detector`), choose its
    threshold on ``source`` by ``method``, save it as a new model and, with ``track``,
    log it in the source's experiment and register it as a new version of the source's
    registered model (both traced through the run that logged the source; else
    ``tracking.experiment`` and ``tracking.registered_model_name``); ``register`` moves
    the champion alias to it.

    ``f1`` and ``recall`` choose on labelled rows of both classes; ``recall`` flags
    ``target_recall`` of the anomalies (default: the model's ``calibration.target_recall``).
    ``quantile`` takes the ``1 - target_fpr`` quantile (default: the model's) of the
    normal rows of ``source`` (every row when it has no labels), which become the model's
    calibration rows.
    ``evaluation_settings`` sets the bootstrap intervals of the figures on ``source``
    (default: the defaults of :class:`~anomaly_vae.config.EvaluationConfig`).
    ``progress``: a bar (off a terminal, a line a minute) over the rows scored, and from
    ``PHASE_LINE_ROWS`` rows (a table file of ``PHASE_LINE_BYTES``) a line on stderr as
    each step around it starts, as in a fit.
    """
    project_dir = project_dir or Path.cwd()
    detector = load_detector(model_ref, project_dir)
    origin = _origin(model_ref, project_dir, progress) if track else None  # before any alias moves
    by_quantile = method == QUANTILE_THRESHOLD
    # This run's progress, not the one saved with the model (its fit's --quiet or not).
    phases = dataclasses.replace(detector.effective_config.training, progress=progress)
    data = labelled_data(
        source, detector, label_column, normal_class, anomaly_label, method, phases
    )
    _warn_training_file(source, detector)
    unit = f"{detector.score_item}s"
    if not by_quantile and not data.has_evaluation():
        raise DataError(
            f"{source} needs labelled {unit} of both classes (normal and anomalous) for "
            f"--method {method}; {unit} of normal operation alone take --method quantile"
        )
    previous = detector.threshold_
    intervals = evaluation_settings or EvaluationConfig()
    seed = detector.effective_config.training.seed
    settings = detector.effective_config.calibration  # saved with the model: how it was chosen
    settings.method = method
    labels = data.evaluation_labels
    assert data.evaluation is not None and labels is not None  # labelled_data labels every row
    if by_quantile and labels.all():
        raise DataError(f"{source} has no normal {unit} to take the quantile of")
    torchvision = torchvision_source(source)
    name = torchvision[0] if torchvision else Path(source).name
    scores = scores_in_parts(detector, data.evaluation, data.evaluation_condition, name, progress)
    if by_quantile:
        above_previous = float(np.mean(scores[~labels] > previous))
        detector.threshold_from_normal_scores(scores[~labels], target_fpr)
        settings.target_fpr = detector.calibration_["target_fpr"]
        evaluation = None
        if data.has_evaluation():
            if shows_phases(phases, len(labels)):
                phase_line(f"evaluating on {len(labels):,} labelled {unit}")
            evaluation = evaluate(labels, scores, detector.threshold_, intervals, seed)
            # Its normal rows chose the threshold: the false-positive rate there flatters.
            evaluation["threshold_chosen_on_these_rows"] = True
    else:
        if target_recall is not None:
            settings.target_recall = target_recall
        evaluation, _ = calibrate_and_evaluate(detector, data, intervals, scores, phases)
    saved = save_model(detector, project_dir, model_dir)
    result = CalibrationResult(detector, saved, previous, evaluation)
    if by_quantile:
        result.above_previous = above_previous
    if track:
        from anomaly_vae import tracking

        assert origin is not None  # resolved above when track
        if shows_phases(phases, len(scores)):
            phase_line("logging the run to MLflow")
        with tracking.logging_after(f"the model is saved in {saved}"):
            result.run = _track(result, data, scores, source, origin, project_dir, register)
        record_run(saved, result.run.run_id)
    return result


def _warn_training_file(source: str | Path, detector: Any) -> None:
    """Warn when ``source`` is the file ``detector`` was fit on, or a copy of it (see
    :func:`~anomaly_vae.fitting.same_training_file`): its normal rows include training
    rows, which score lower than new rows do."""
    fitted_on = getattr(getattr(detector, "first", detector), "training_source_", None)
    same = same_training_file(fitted_on, source)
    if same is None:
        return
    assert fitted_on is not None  # same_training_file compared with it
    what = "the file" if same == "same" else f"a copy of {fitted_on['path']}, the file"
    logger.warning(
        "%s is %s this model was fit on: its normal rows include rows the model trained "
        "on, which score lower than new rows, so the threshold and the figures on it are "
        "optimistic; calibrate on rows the model did not train on",
        Path(source).name,
        what,
    )


@dataclass
class _Origin:
    """What the calibrate run records of its source model, and where it logs."""

    description: str  # the reference given, or the local folder of the latest fit
    experiment: str  # the source run's experiment, else tracking.experiment
    registered_name: str  # the source's registered model, else tracking.registered_model_name
    tags: dict[str, str]  # source run id and registered version, where known


def _origin(model_ref: str | None, project_dir: Path, progress: bool = False) -> _Origin:
    """Resolve the source model in MLflow (aliases to the version they point at now), and
    check the tracking store can be reached, before the threshold is chosen (``progress``:
    a store created now is named first, as its creation takes seconds)."""
    from mlflow import MlflowClient

    from anomaly_vae import tracking
    from anomaly_vae.errors import ModelNotFoundError
    from anomaly_vae.fitting import latest_model_dir

    defaults = load_config().tracking
    # No experiment: it is the source's, if known.
    tracking.check_store(project_dir=project_dir, announce=progress)
    description = model_ref or f"latest local fit ({latest_model_dir(project_dir)})"
    origin = _Origin(description, defaults.experiment, defaults.registered_model_name, {})
    try:
        source = tracking.source_of_model(model_ref, project_dir)
    except (ModelNotFoundError, *tracking.STORE_FAILURES):
        return origin  # fit without tracking, or a reference MLflow cannot trace
    client = MlflowClient()
    experiment_id = client.get_run(source.run_id).info.experiment_id
    origin.experiment = client.get_experiment(experiment_id).name
    origin.tags["source_run_id"] = source.run_id
    if source.registered_name is not None:
        origin.registered_name = source.registered_name
        origin.tags["source_model_version"] = f"{source.registered_name}/{source.version}"
    return origin


def _track(
    result: CalibrationResult,
    data: TrainingData,
    scores: np.ndarray,
    source: str | Path,
    origin: _Origin,
    project_dir: Path,
    register: bool,
) -> Any:
    """One MLflow run, in the source model's experiment: the source model, the data, the
    old and new threshold, the evaluation and its plots (``scores``: those of
    ``data.evaluation``, not computed again), and the recalibrated model as a new version
    of the source's registered model."""
    import tempfile

    import mlflow

    from anomaly_vae import tracking

    assert data.evaluation is not None  # labelled_data's rows are all evaluation rows
    config: Config = load_config()
    config.tracking.registered_model_name = origin.registered_name
    tracking.use_tracking(origin.experiment, project_dir)
    calibration = result.detector.calibration_
    with mlflow.start_run(run_name="calibrate") as run:
        tags = {
            "source_model": origin.description,
            "kind": "calibrate",
            "data": source_location(source),
        }
        mlflow.set_tags(tags | origin.tags)
        target = "target_fpr" if calibration["method"] == QUANTILE_THRESHOLD else "target_recall"
        mlflow.log_params({k: calibration[k] for k in ("method", target) if k in calibration})
        mlflow.log_metrics(
            {"previous_threshold": result.previous_threshold, "data_rows": len(data.evaluation)}
        )
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch)
            tracking.log_calibration(result.detector, data, result.evaluation, out, scores)
            mlflow.log_artifacts(str(out))
        return tracking.log_model(result.detector, config, result.model_dir, data, run, register)
