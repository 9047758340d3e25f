"""The `calibrate` workflow: choose a saved model's threshold again on new data, without
retraining, and save the result as a new model (the source model is left as it is: a
schedule may be scoring with it, and registered versions do not change).

The new data are labelled rows (methods ``f1`` and ``recall``), or normal rows from
operation (method ``quantile``: their ``1 - target_fpr`` quantile, as at fit)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np
import pandas as pd

from anomaly_vae import scoring
from anomaly_vae.batch import (
    checked_table,
    read_chunks,
    reading_total,
    scoring_progress,
    table_columns,
    warnings_named,
)
from anomaly_vae.calibration import (
    CALIBRATION_ROWS_FROM,
    calibration_rows_from,
    evaluate,
    withhold_expected_fpr,
)
from anomaly_vae.config import (
    FIRST_ROWS_EXAMPLE,
    QUANTILE_THRESHOLD,
    Config,
    EvaluationConfig,
    TrackingConfig,
    TrainingConfig,
    load_config,
)
from anomaly_vae.data.images import (
    class_list,
    is_image_source,
    read_images,
    source_location,
    source_name,
)
from anomaly_vae.data.preprocessing import MissingValuesError, warnings_per_file
from anomaly_vae.data.tables import ANOMALY_LABEL_VIA_OPTION, LabelColumn, unknown_column
from anomaly_vae.errors import DataError
from anomaly_vae.fitting import (
    INPUT_EXAMPLE_ROWS,
    Data,
    TrainingData,
    check_label_options,
    check_reason,
    naming_file,
    record_run,
    same_training_file,
    same_training_images,
    save_model,
    say_evaluating,
    say_reading,
    threshold_and_evaluation,
    training_file,
    training_images,
)
from anomaly_vae.scoring import (
    check_data_kind,
    load_detector,
    scores_in_parts,
    warn_unknown_classes,
    whole_batches,
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
    check: str | None = None  # why the threshold asks for a check before use (check_reason)
    # Images: the map scale before (the fit's, or an earlier calibrate's; None: unscaled)
    # and how many normal images the new one (detector.map_scale_) was read off
    previous_map_scale: float | None = None
    map_scale_images: int | None = None


@dataclass
class LabelledRows:
    """The rows (or images) a threshold is chosen on, as far as `calibrate` keeps them:
    a table's labels are read first, alone, and its rows read and scored a part at a
    time when :attr:`score` is called; the table is never held whole."""

    # (n,) bool, True = anomaly; None for a table without labels, every row normal
    # (how many is known once the table is read)
    labels: np.ndarray | None
    # () -> ((n,) anomaly scores, the logged model's input example: a table's first rows,
    # or the images); for a table, DataError when a part cannot be read or scored
    score: Callable[[], tuple[np.ndarray, Data]]
    # error -> raises the error the whole table's reading gives first, else ``error``:
    # an error found on the labels alone (a table's checked before its rows are read)
    # comes as it came when the table was read whole before it
    refuse: Callable[[DataError], NoReturn]
    # Images: the file path (or "test/123") of each, as listed; None for a table
    names: list[str] | None = None
    # Images: () -> the error the model's anomaly maps should show white, read off the
    # normal images as fit reads it off its held-out ones (normal_map_scale); None for a
    # table
    map_scale: Callable[[], float | None] | None = None


def labelled_rows(
    source: str | Path,
    detector: Any,
    label_column: str | None,
    normal_class: str | None,
    anomaly_label: str | None = None,
    method: str = "f1",
    phases: TrainingConfig | None = None,
    progress: bool = False,
) -> LabelledRows:
    """Every row of a table, or every image of a folder or torchvision test split, with
    its label (True = anomaly).

    Tables: ``label_column`` (1 = anomaly, or the rows holding ``anomaly_label``, by
    default the model's ``data.anomaly_label``). Images: classes other than
    ``normal_class`` (one, or several separated by commas) are anomalies. For ``method``
    quantile a table without ``label_column``, or a flat folder of images, is all normal
    rows; the other methods need labels. ``phases``: whether a large table file's reading
    is named (its ``progress``; default: not named); ``progress``: a bar (off a terminal,
    a line a minute) over the rows scored (see :func:`_table_rows`).
    """
    labels_required = method != QUANTILE_THRESHOLD
    check_data_kind(detector, source, is_image_source(source))
    check_label_options(is_image_source(source), label_column, normal_class)
    if not is_image_source(source):
        if label_column is None and labels_required:
            raise DataError(
                f"--method {method} chooses the threshold on labelled rows: name their label "
                "column with --label-col (0 = normal, 1 = anomaly), or use --method quantile "
                "on rows of normal operation"
            )
        return _table_rows(Path(source), detector, label_column, anomaly_label, phases, progress)
    size = detector.effective_config.data.image_size
    grey_model = scoring.image_channels(detector) == 1  # colour images read as grey, said once
    images = read_images(str(source), False, size, grey_model, scoring.image_size(detector))
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
    classes = images.label_names()
    warn_unknown_classes(detector, classes)
    name = source_name(source)

    labels = ~np.isin(images.labels, normal)

    def score() -> tuple[np.ndarray, Data]:
        return scores_in_parts(detector, images.images, classes, name, progress), images.images

    def map_scale() -> float | None:
        return detector.normal_map_scale(images.images[~labels], classes[~labels])

    return LabelledRows(labels, score, _raise, images.names, map_scale)


def _raise(error: DataError) -> NoReturn:
    """:attr:`LabelledRows.refuse` of images, read whole already."""
    raise error


def _table_rows(
    path: Path,
    detector: Any,
    label_column: str | None,
    anomaly_label: str | None,
    phases: TrainingConfig | None,
    progress: bool,
) -> LabelledRows:
    """The rows of the table file ``path``: its labels read at once, its rows read and
    scored when :attr:`LabelledRows.score` is called.

    The labels come from a first pass that reads the label column alone (the file's
    header, format and the field count of every row checked once for both passes), so
    that an error of the labels, or the lack of one class (the caller's check), comes
    before the scoring, which takes far longer than reading one column (docs/usage.md,
    `calibrate`). Such an error is raised through :attr:`LabelledRows.refuse`, which
    reads the whole table first, without scoring, for a reading error (in any column)
    that came first when the table was read whole.

    The scoring pass reads ``PROGRESS_CHUNK_ROWS`` rows at a time (in whole scoring
    batches, as :func:`~anomaly_vae.scoring.scores_in_parts` scores a table held whole,
    so the scores are the same), so that memory holds a part, the labels and the
    scores, not the table (docs/usage.md, `calibrate`). A bad cell found by the scoring is
    named by its row in the file once the rest is read (a reading error comes first,
    as when read whole); the scoring's warnings about the data are logged once, over
    all the rows."""
    config = detector.effective_config.data
    if phases is not None:
        say_reading(path, phases)
    checked = checked_table(path, (), config.categorical_columns)
    # scoring's setting, read when called: tests set a small part
    chunk = whole_batches(detector, scoring.PROGRESS_CHUNK_ROWS)

    def parts(columns: list[str] | None = None) -> Iterator[tuple[pd.DataFrame, int]]:
        return read_chunks(path, chunk, (), config.categorical_columns, columns, checked)

    def refuse(error: DataError) -> NoReturn:
        rows = sum(len(part) for part, _ in parts())  # a reading error is raised here
        if not rows:
            raise DataError(f"{path} has a header but no data rows")  # as read_table says it
        raise error

    header = table_columns(path, checked)
    label_column = _label_column(label_column, config.label_column, header, path)
    drop: list[str] = []  # the label column, when the model does not take it as a feature
    labels = None
    if label_column is not None:
        if label_column not in getattr(detector, "first", detector).preprocessor_.input_columns:
            # Labels that came after the fit: not a column the model knows, nor one to
            # warn of.
            drop = [label_column]
        try:
            anomaly = anomaly_label or config.anomaly_label
            labels = _read_labels(path, parts, header, label_column, anomaly)
        except DataError as error:
            refuse(error)

    def score() -> tuple[np.ndarray, Data]:
        return _score_table(path, detector, parts, drop, labels, progress)

    return LabelledRows(labels, score, refuse)


def _read_labels(
    path: Path,
    parts: Callable[[list[str]], Iterator[tuple[pd.DataFrame, int]]],
    header: list[str],
    column: str,
    anomaly_label: str | None,
) -> np.ndarray:
    """The ``(n,)`` labels (True = anomaly) of the label ``column`` of the table file
    ``path`` (its columns: ``header``), read alone in the ``parts`` of the scoring pass
    (each part's values as read with every column); DataError as
    :func:`~anomaly_vae.data.tables.label_vector` on the whole table, or for a header
    alone."""
    # A label's error names the file, as fit names its files' (a reading error does already).
    with naming_file(path):
        if column not in header:
            raise unknown_column("label", column, pd.DataFrame(columns=header))
        labels = LabelColumn(column, anomaly_label, ANOMALY_LABEL_VIA_OPTION)
    rows = 0
    for part, _ in parts([column]):
        with naming_file(path):
            labels.add(part)
        rows += len(part)
    if not rows:
        raise DataError(f"{path} has a header but no data rows")  # as read_table says it
    with naming_file(path):
        return labels.labels()


def _score_table(
    path: Path,
    detector: Any,
    parts: Callable[[], Iterator[tuple[pd.DataFrame, int]]],
    drop: list[str],
    labels: np.ndarray | None,
    progress: bool,
) -> tuple[np.ndarray, pd.DataFrame]:
    """The scoring pass of :func:`_table_rows`: ``((n,) anomaly scores, the first
    INPUT_EXAMPLE_ROWS rows without the ``drop`` columns)``."""
    example: pd.DataFrame | None = None
    scores, rows, failure = [np.empty(0)], 0, None
    total, in_bytes = reading_total(path) or (None, False)
    unit = f"{detector.score_item}s"
    counting = scoring_progress(path.name, unit, progress, True, total, bytes_total=in_bytes)
    with counting as count, warnings_per_file() as gathered:
        for part, read in parts():
            if part.empty:
                continue  # a header alone reads as one part of no rows
            if example is None:
                # A copy: a slice would keep the whole part alive (copy-on-write)
                example = part.head(INPUT_EXAMPLE_ROWS).drop(columns=drop).copy()
            rows += len(part)
            if failure is None:
                try:
                    scores.append(detector.anomaly_score(part.drop(columns=drop) if drop else part))
                except DataError as exc:
                    failure = exc  # a reading error further on came first: read on for it
            elif isinstance(failure, MissingValuesError):
                failure.count_parts([part])  # the file's count, not its first part's
            count(len(part), read)
    if example is None:  # as read_table says it
        raise DataError(f"{path} has a header but no data rows")
    if labels is not None and rows != len(labels):
        raise DataError(
            f"{path} changed while it was read: {len(labels):,} labels, then {rows:,} rows "
            "to score; calibrate on a file that is no longer being written"
        )
    if failure is not None:
        with naming_file(path):  # as fit and score name a bad cell's file
            raise failure
    with warnings_named(str(path)):  # as its errors are named
        gathered.log(rows)
    return np.concatenate(scores), example


def _label_column(
    given: str | None, fit_label: str | None, header: list[str], path: Path
) -> str | None:
    """The label column of a table of the columns ``header``: the one ``given``, else
    the model's own (``fit_label``) when the table has it."""
    if given is None and fit_label is not None and fit_label in header:
        # The model's own label column, as at fit: left unread, its anomalies would count
        # as normal rows and lift a quantile threshold above them.
        logger.warning(
            "%s holds the model's label column %r: its anomalies are kept out of the "
            "normal rows (--label-col names another)",
            path.name,
            fit_label,
        )
        return fit_label
    return given


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
    input_example: str | None = None,
    expected_fpr_level: float | None = None,
) -> CalibrationResult:
    """Load ``model_ref`` (see :func:`~anomaly_vae.scoring.load_detector`), choose its
    threshold on ``source`` by ``method``, save it as a new model and, with ``track``,
    log it in the source's experiment and register it as a new version of the source's
    registered model (both traced through the run that logged the source; else
    ``tracking.experiment`` and ``tracking.registered_model_name``); ``register`` moves
    the champion alias to it, unless its threshold asks for a check
    (:func:`~anomaly_vae.fitting.check_reason`; then ``champion_kept_on`` and
    ``move_champion`` of the result's run say where the alias stayed and how to move it).

    ``f1`` and ``recall`` choose on labelled rows of both classes; ``recall`` flags
    ``target_recall`` of the anomalies (default: the model's ``calibration.target_recall``).
    ``quantile`` takes the ``1 - target_fpr`` quantile (default: the model's) of the
    normal rows of ``source`` (every row when it has no labels), which become the model's
    calibration rows.
    Images, by any method: the model's anomaly map scale (``map_scale_``) is read again
    off the normal images of ``source``, as fit reads it off its held-out ones.
    ``evaluation_settings`` sets the bootstrap intervals of the figures on ``source``
    (default: the defaults of :class:`~anomaly_vae.config.EvaluationConfig`).
    ``input_example``: the logged model's (``tracking.input_example``); None: the one the
    source's run logged with (its parameter ``tracking.input_example``), else the default.
    ``expected_fpr_level``: the level of the interval of the false-positive rate to expect
    on new normal rows (default: the model's ``calibration.expected_fpr_level``), saved
    with the new model.
    ``progress``: a bar (off a terminal, a line a minute) over the rows scored, and from
    ``PHASE_LINE_ROWS`` rows (a table file of ``PHASE_LINE_BYTES``) a line on stderr as
    each step around it starts, as in a fit. A table file is read and scored a part at
    a time (see :func:`_table_rows`): memory holds its labels and scores, not its rows.
    """
    project_dir = project_dir or Path.cwd()
    detector = load_detector(model_ref, project_dir)
    origin = _origin(model_ref, project_dir, progress) if track else None  # before any alias moves
    by_quantile = method == QUANTILE_THRESHOLD
    # This run's progress, not the one saved with the model (its fit's --quiet or not).
    phases = dataclasses.replace(detector.effective_config.training, progress=progress)
    data = labelled_rows(
        source, detector, label_column, normal_class, anomaly_label, method, phases, progress
    )
    # Before the scoring, as the labels' checks: the file's SHA-256 takes a pass over it,
    # the scoring many.
    training_rows_in_source = _warn_training_file(source, detector, data)
    unit = f"{detector.score_item}s"
    labels = data.labels
    both_classes = labels is not None and bool(labels.any()) and not bool(labels.all())
    if not by_quantile and not both_classes:
        data.refuse(
            DataError(
                f"{source} needs labelled {unit} of both classes (normal and anomalous) for "
                f"--method {method}; {unit} of normal operation alone take --method quantile"
            )
        )
    previous = detector.threshold_
    intervals = evaluation_settings or EvaluationConfig()
    seed = detector.effective_config.training.seed
    settings = detector.effective_config.calibration  # saved with the model: how it was chosen
    settings.method = method
    if expected_fpr_level is not None:
        settings.expected_fpr_level = expected_fpr_level
    if by_quantile and labels is not None and labels.all():
        data.refuse(DataError(f"{source} has no normal {unit} to take the quantile of"))
    scores, example = data.score()
    if labels is None:  # a table of normal operation, as many rows as scores
        labels = np.zeros(len(scores), dtype=bool)
    previous_map_scale = getattr(detector, "map_scale_", None)
    map_scale_images = None
    if data.map_scale is not None:
        # The maps' white level is set on normal images, as the threshold: new normal
        # images whose errors are larger (another camera, more noise) would otherwise show
        # bright, normal images as anomalies, under the fit's scale.
        map_scale_images = int((~labels).sum())
        if shows_phases(phases, len(scores)):
            phase_line(f"reading the anomaly maps' scale off {map_scale_images:,} normal {unit}")
        detector.map_scale_ = data.map_scale()
    # Whose rows a labelled threshold's false-positive rate is counted on: the fit's
    # held-out ones (False), or an earlier quantile calibration's (see below)
    rows_from = calibration_rows_from(detector.calibration_)
    if by_quantile:
        above_previous = float(np.mean(scores[~labels] > previous))
        detector.threshold_from_normal_scores(scores[~labels], target_fpr, recalibrated=True)
        # So that a later labelled calibrate on this file knows its normal rows are the
        # calibration rows (a table file's SHA-256 takes one more pass over it)
        detector.calibration_[CALIBRATION_ROWS_FROM] = _rows_identity(source, data, labels)
        settings.target_fpr = detector.calibration_["target_fpr"]
        evaluation = None
        if both_classes:
            say_evaluating(detector, len(labels), phases)
            evaluation = evaluate(labels, scores, detector.threshold_, intervals, seed)
            # Its normal rows chose the threshold: the false-positive rate there flatters.
            evaluation["threshold_chosen_on_these_rows"] = True
    else:
        if target_recall is not None:
            settings.target_recall = target_recall
        say_evaluating(detector, len(labels), phases)
        evaluation = threshold_and_evaluation(detector, labels, scores, intervals)
        # When the calibration rows may be among the normal rows that chose the threshold,
        # its rate on them is no longer binomial.
        reason = _calibration_rows_chose(source, data, labels, rows_from, training_rows_in_source)
        if reason is not None:
            withhold_expected_fpr(detector.calibration_, reason)
    saved = save_model(detector, project_dir, model_dir)
    result = CalibrationResult(detector, saved, previous, evaluation)
    if by_quantile:
        result.above_previous = above_previous
    result.check = check_reason(detector, method)
    if map_scale_images is not None:
        result.previous_map_scale = previous_map_scale
        result.map_scale_images = map_scale_images
    if track:
        from anomaly_vae import tracking

        assert origin is not None  # resolved above when track
        if shows_phases(phases, len(scores)):
            phase_line("logging the run to MLflow")
        with tracking.logging_after(f"the model is saved in {saved}"):
            if input_example is not None:
                origin.input_example = input_example
            result.run = _track(
                result, labels, example, scores, source, origin, project_dir, register, intervals
            )
        record_run(saved, result.run.run_id)
    return result


def _warn_training_file(source: str | Path, detector: Any, data: LabelledRows) -> bool:
    """Warn, and return True, when ``source`` is the file ``detector`` was fit on, or a
    copy of it (see :func:`~anomaly_vae.fitting.same_training_file`), or for images when the normal
    images of ``data`` are read from the folders it was trained on
    (:func:`~anomaly_vae.fitting.same_training_images`): its normal rows include
    training rows, which score lower than new rows do."""
    fitted_on = getattr(getattr(detector, "first", detector), "training_source_", None)
    if data.names is None:
        same = same_training_file(fitted_on, source)
        what = {"same": "is the file", "copy": "is a copy of {}, the file"}
    else:
        labels = np.zeros(len(data.names), bool) if data.labels is None else data.labels
        normal = [name for name, anomaly in zip(data.names, labels, strict=True) if not anomaly]
        same = same_training_images(fitted_on, source, normal)
        what = {"same": "is the folder", "shared": "holds images of {}, the folder"}
    if same is None:
        return False
    assert fitted_on is not None  # compared with it
    item = detector.score_item  # "row", "image"
    logger.warning(
        "%s %s this model was fit on: its normal %ss include %ss the model trained on, "
        "which score lower than new %ss, so the threshold and the figures on it are "
        "optimistic; calibrate on %ss the model did not train on",
        source_name(source),
        what[same].format(fitted_on.get("path") or fitted_on.get("folder")),
        item,
        item,
        item,
        item,
    )
    return True


def _normal_names(data: LabelledRows, labels: np.ndarray) -> list[str]:
    assert data.names is not None  # images
    return [name for name, anomaly in zip(data.names, labels, strict=True) if not anomaly]


def _rows_identity(
    source: str | Path, data: LabelledRows, labels: np.ndarray
) -> dict[str, Any] | None:
    """What the normal rows of ``data`` (``labels (n,)``, True = anomaly) were read from:
    :func:`~anomaly_vae.fitting.training_file` of a table file, or
    :func:`~anomaly_vae.fitting.training_images` of the normal images' folders; None for
    a torchvision set or a folder of table files (not recognised later)."""
    if data.names is None:
        return training_file(source)
    return training_images(source, _normal_names(data, labels))


def _calibration_rows_chose(
    source: str | Path,
    data: LabelledRows,
    labels: np.ndarray,
    rows_from: dict[str, Any] | Literal[False] | None,
    training_rows_in_source: bool,
) -> str | None:
    """Why the calibration rows a labelled threshold's false-positive rate is counted on
    may be among the labelled rows of ``source`` that chose it, or None when they are
    not known to be: ``rows_from`` is
    :func:`~anomaly_vae.calibration.calibration_rows_from` of the model's threshold before,
    False for the fit's held-out rows (in ``source`` when it holds training rows,
    ``training_rows_in_source``)."""
    name, unit = source_name(source), "images" if data.names is not None else "rows"
    chose = f"so they may be among the labelled {unit} that chose the threshold"
    if rows_from is False:
        if not training_rows_in_source:
            return None
        return (
            f"{name} holds {unit} the model was fit on, so the fit's held-out normal {unit} "
            f"may be among the labelled {unit} that chose the threshold"
        )
    earlier = (
        f"the calibration {unit} are the normal {unit} of an earlier calibrate --method quantile"
    )
    if rows_from is None:
        return f"{earlier}, and the model does not record where they were read from, {chose}"
    if data.names is None:
        same = same_training_file(rows_from, source) is not None
    else:
        same = same_training_images(rows_from, source, _normal_names(data, labels)) is not None
    if not same:
        return None
    origin = Path(rows_from.get("path") or rows_from["folder"]).name
    held = "" if origin == name else f" ({name} holds them)"
    return f"{earlier} on {origin}{held}, {chose}"


INPUT_EXAMPLE_PARAM = "tracking.input_example"  # the run parameter that records it


@dataclass
class _Origin:
    """What the calibrate run records of its source model, and where it logs."""

    description: str  # the reference given, or the local folder of the latest fit
    experiment: str  # the source run's experiment, else tracking.experiment
    registered_name: str  # the source's registered model, else tracking.registered_model_name
    tags: dict[str, str]  # source run id and registered version, where known
    # The source run's tracking.input_example, else the default: a fit that logged no real
    # rows is calibrated into a model that logs none either
    input_example: str = FIRST_ROWS_EXAMPLE


def _origin(model_ref: str | None, project_dir: Path, progress: bool = False) -> _Origin:
    """Resolve the source model in MLflow (aliases to the version they point at now), and
    check the tracking store can be reached, before the threshold is chosen (``progress``:
    a store created now is named first, as its creation takes seconds)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from anomaly_vae import tracking
    from anomaly_vae.detector import RUN_FILE
    from anomaly_vae.errors import ModelNotFoundError
    from anomaly_vae.fitting import latest_model_dir
    from anomaly_vae.store import embedded_store

    defaults = load_config().tracking
    folder = latest_model_dir(project_dir) if model_ref is None else Path(model_ref)
    description = model_ref or f"latest local fit ({folder})"
    # A model whose run is recorded, but in another project's store (calibrate run in
    # another folder, or MLFLOW_TRACKING_URI naming another store), cannot be logged
    # beside its source: refused before the threshold is chosen, as `view --log` refuses.
    advice = (
        "run calibrate in the project folder where the model was fit, set "
        "MLFLOW_TRACKING_URI to its tracking store, or pass --no-tracking"
    )
    store = embedded_store(project_dir)
    logged = folder is not None and (folder / RUN_FILE).is_file()
    if store is not None and not store.is_file() and logged:
        # Checked before check_store, which would leave an empty store here.
        raise ModelNotFoundError(
            f"model {description} was logged to MLflow, and there is no MLflow tracking "
            f"store at {store}: {advice}"
        )
    # No experiment: it is the source's, if known.
    uri = tracking.check_store(project_dir=project_dir, announce=progress)
    origin = _Origin(
        description,
        defaults.experiment,
        defaults.registered_model_name,
        {},
        defaults.input_example,
    )
    try:
        source = tracking.source_of_model(model_ref, project_dir)
    except (ModelNotFoundError, *tracking.STORE_FAILURES):
        return origin  # fit without tracking, or a reference MLflow cannot trace
    client = MlflowClient()
    try:
        run = client.get_run(source.run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ModelNotFoundError(
            f"the MLflow run {source.run_id} that logged model {description} is not in the "
            f"tracking store {uri}: {advice}"
        ) from exc
    origin.experiment = client.get_experiment(run.info.experiment_id).name
    origin.input_example = run.data.params.get(INPUT_EXAMPLE_PARAM, origin.input_example)
    origin.tags["source_run_id"] = source.run_id
    if source.registered_name is not None:
        origin.registered_name = source.registered_name
        origin.tags["source_model_version"] = f"{source.registered_name}/{source.version}"
    return origin


def _track(
    result: CalibrationResult,
    labels: np.ndarray,
    example: Data,
    scores: np.ndarray,
    source: str | Path,
    origin: _Origin,
    project_dir: Path,
    register: bool,
    intervals: EvaluationConfig,
) -> Any:
    """One MLflow run, in the source model's experiment: the source model, the data (a
    table file by path, SHA-256 and row counts), the recalibrated model's settings as a
    fit logs its own, the old and new threshold, the evaluation (with the bootstrap
    ``intervals``) and its plots (``scores (n,)``: those of the rows, not computed again,
    of ``labels (n,)``), and the recalibrated model (its input ``example``: the first
    rows, or the images) as a new version of the source's registered model; ``register``
    moves the champion alias to it, unless the threshold asks for a check
    (``result.check``: then :func:`~anomaly_vae.tracking.log_model` tags the run and the
    version ``needs_check`` and leaves the alias where it was)."""
    import tempfile

    import mlflow

    from anomaly_vae import tracking

    # What the logging reads of the rows: their labels (their scores are given) and the
    # model's input example, the first rows; a table's other rows were never kept.
    logged = TrainingData(example, evaluation_labels=labels)
    moves = tracking.moves_champion(register, result.check)
    config = _run_config(result.detector, origin, intervals, moves)
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
        tracking.log_config(result.detector, config)
        tracking.log_data_file(source, labels, context="calibration")
        mlflow.log_metric("previous_threshold", result.previous_threshold)
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch)
            tracking.write_config(config, out)
            tracking.log_calibration(result.detector, logged, result.evaluation, out, scores)
            mlflow.log_artifacts(str(out))
        return tracking.log_model(
            result.detector, config, result.model_dir, logged, run, register, result.check
        )


def _run_config(
    detector: Any, origin: _Origin, intervals: EvaluationConfig, register: bool
) -> Config:
    """The calibrate run's configuration, logged as a fit logs its own: the recalibrated
    model's settings (its calibration section the new threshold's), the ``intervals`` of
    its figures, and where it is tracked (the source's experiment and registered model;
    ``register``: whether the champion alias moves)."""
    from anomaly_vae.ensemble import EnsembleDetector
    from anomaly_vae.family import ENSEMBLE

    # A copy: the detector's own is saved with it, and an ensemble's is its first member's.
    settings = copy.deepcopy(detector.effective_config)
    config = Config(
        **{field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)},
        evaluation=copy.deepcopy(intervals),
        tracking=TrackingConfig(
            experiment=origin.experiment,
            registered_model_name=origin.registered_name,
            register_champion=register,
            log_views=False,  # a calibrate run logs none
            input_example=origin.input_example,  # given, or the source fit's
        ),
    )
    if isinstance(detector, EnsembleDetector):
        config.model.name = ENSEMBLE  # as the family's run of the ensemble names it
    return config
