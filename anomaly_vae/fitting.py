"""The `fit` workflow: read a table or images, keep labelled anomalies out of
training, fit and calibrate a detector, evaluate when labels allow, save, track."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeAlias, cast

import numpy as np
import pandas as pd

from anomaly_vae.batch import file_digest, holds_only_tables, scoring_progress, warnings_named
from anomaly_vae.calibration import evaluate, withhold_expected_fpr
from anomaly_vae.config import (
    LABELLED_THRESHOLD_METHODS,
    QUANTILE_THRESHOLD,
    Config,
    EvaluationConfig,
    ModelConfig,
    TrainingConfig,
)
from anomaly_vae.data import label_vector, read_table
from anomaly_vae.data.images import (
    ImageSet,
    class_list,
    is_image_source,
    list_images,
    read_images,
    resized_grey,
    source_location,
    source_name,
    torchvision_source,
)
from anomaly_vae.data.preprocessing import (
    check_cells,
    check_same_kinds,
    refuse_missing_values,
    unseen_columns,
    warn_extra_columns,
)
from anomaly_vae.detector import (
    MIN_TRAINING_ROWS,
    RUN_FILE,
    VAEDetector,
    refuse_id_named_like_scores,
)
from anomaly_vae.errors import DataError
from anomaly_vae.models import get_model
from anomaly_vae.training import EpochCallback, phase_line, shows_phases

logger = logging.getLogger(__name__)

MODELS_DIR = Path("mlruns") / "models"  # local saved models, relative to the project folder
LATEST_FILE = "LATEST"  # names the newest model folder in MODELS_DIR

Data: TypeAlias = pd.DataFrame | np.ndarray  # a table, or images (n, C, H, W)
INPUT_EXAMPLE_ROWS = 5  # a table's first rows logged as its model's input example


@dataclass
class TrainingData:
    """Normal data to fit on, and the labelled evaluation data set aside from it."""

    train: Data
    evaluation: Data | None = None
    evaluation_labels: np.ndarray | None = None  # (m,) bool, True = anomaly
    excluded_anomalies: int = 0  # labelled anomalies kept out of training
    # A torchvision data set: images of other classes in its training split, never used
    # (its test split is the evaluation data)
    unused_other_classes: int = 0
    names: list[str] | None = None  # image names of `evaluation`, for reports
    train_names: list[str] | None = None  # image names of `train` (file paths, "train/123")
    # Images: the class name of every image of `train` / `evaluation` (n,), the condition
    # of a conditional model; None for tables, whose conditions are columns.
    train_condition: np.ndarray | None = None
    evaluation_condition: np.ndarray | None = None
    # What the run read, as MLflow tags: "data"/"eval_data" (where), "data_sha256" (a table
    # file's bytes), "normal_classes" (images: the classes trained on)
    sources: dict[str, str] = field(default_factory=dict)
    # Tables: the 1-based row of each row of `train` / `evaluation` in the file it was read
    # from (train None: DATA's rows in order), the last `eval_file_rows` evaluation rows
    # from the --eval file. Views logged at fit name rows by them: a position in the
    # evaluation set, or in a sample of it, is no row a reader can look up.
    train_rows: np.ndarray | None = None
    evaluation_rows: np.ndarray | None = None
    eval_file_rows: int = 0
    # What the fit knows of the --eval file holding rows of `train`, whose held-out
    # calibration rows are then among the rows a labelled threshold is chosen on:
    # "same" / "copy" when it is the training file or a copy of it
    # (same_training_file), and the positions in `train` (k,) of the rows whose ids
    # (--id-col) it holds (None without an id column, or for a quantile threshold)
    eval_is_training_file: str | None = None
    train_ids_in_eval: np.ndarray | None = None

    def has_evaluation(self) -> bool:
        labels = self.evaluation_labels
        return labels is not None and bool(labels.any()) and not bool(labels.all())

    def row_origin(self, positions: np.ndarray, evaluation: bool) -> pd.DataFrame | None:
        """``file`` (its name) and ``row`` (1-based) of the rows at ``positions (k,)`` of
        ``evaluation`` (False: of ``train``) in the table file each was read from; None
        for images, or for rows whose file rows were not recorded."""
        if not isinstance(self.train, pd.DataFrame) or "data" not in self.sources:
            return None
        data_file = Path(self.sources["data"]).name
        if not evaluation:
            rows = positions + 1 if self.train_rows is None else self.train_rows[positions]
            return pd.DataFrame({"file": data_file, "row": rows})
        if self.evaluation_rows is None:
            return None
        first_of_eval_file = len(self.evaluation_rows) - self.eval_file_rows
        eval_file = Path(self.sources.get("eval_data", "")).name
        files = np.where(positions >= first_of_eval_file, eval_file, data_file)
        return pd.DataFrame({"file": files, "row": self.evaluation_rows[positions]})


@dataclass
class FitResult:
    detector: Any  # VAEDetector (or an ensemble from the family pipeline)
    model_dir: Path
    rows: dict[str, int]  # training rows per split, labelled anomalies excluded, evaluation rows
    evaluation: dict[str, Any] | None
    data: TrainingData | None = None
    run: Any = None  # tracking.TrackedRun when the fit was logged to MLflow
    # (m,) anomaly scores of data.evaluation that `evaluation` was computed from (None
    # without one): the run's score histogram draws its anomalies' scores from them
    evaluation_scores: np.ndarray | None = None
    # Why the threshold asks for a check before use (check_reason), or None: then
    # registering does not move the champion alias to the model
    check: str | None = None


def load_training_data(
    source: str | Path,
    config: Config,
    eval_source: str | Path | None = None,
    normal_class: str | None = None,
) -> TrainingData:
    """Read ``source`` (a table file or an image source) and set evaluation data aside.

    Tables: with ``config.data.label_column``, rows labelled 1 never reach training;
    they and a held-out ``config.evaluation.fraction`` of the normal rows are the
    evaluation set, to which every row of ``eval_source`` is added.
    Images: ``normal_class`` names the normal class, or several separated by commas
    (``"bag,coat"``). For a torchvision dataset the training split's normal images are
    trained on and the whole test split evaluates (other classes = anomalies); for a
    folder, the other classes and a held-out fraction of the normal classes evaluate.
    """
    if holds_only_tables(Path(source)):
        # Read as images it would be "no images" (or, with --label-col, "--label-col is
        # for tables"), which does not say what the files are; as `score` says it.
        raise DataError(
            f"{source} is a folder of table files, which would be read as images: fit on "
            "one file (a fit reads one table: put the rows of several in one CSV or "
            "Parquet file)"
        )
    check_label_options(is_image_source(source), config.data.label_column, normal_class)
    if is_image_source(source):
        if eval_source is not None:
            # It was read by no one: the fit reported its own evaluation as if on it.
            raise DataError(
                "--eval adds a labelled table file; for images, the labelled images are "
                "class subfolders of DATA (--normal-class names the normal ones, the others "
                "and a held-out share of the normal ones evaluate)"
            )
        _refuse_table_columns(config)
        data = _load_images(str(source), config, normal_class)
        data.sources["data"] = source_location(source)
        if data.train_condition is not None:
            data.sources["normal_classes"] = class_list(sorted(set(data.train_condition)))
        return data
    if config.data.label_column is not None and config.data.label_column == config.data.id_column:
        raise DataError(
            f"{config.data.label_column!r} is named as both the label and the id column"
        )
    # As the detector's fit does, before a large file is read
    refuse_id_named_like_scores(config.data.id_column, config.model.name)
    say_reading(source, config.training)
    frame = read_table(source, _id_columns(config), config.data.categorical_columns)
    with naming_file(source):
        check_cells(frame, config.data)
        # Its held-out and anomalous rows too, scored only after training
        refuse_missing_values(frame, frame, config.data)
    data = _split_table(frame, config, source)
    data.sources["data"] = source_location(source)
    if Path(source).is_file():  # hashed once: the run's tag and the saved model's identity
        data.sources["data_sha256"] = file_digest(Path(source))
    if eval_source is not None:
        if config.data.label_column is None:
            raise DataError("--eval needs --label-col: the evaluation file must be labelled")
        say_reading(eval_source, config.training)
        extra = read_table(eval_source, _id_columns(config), config.data.categorical_columns)
        with naming_file(eval_source):
            extra_labels = label_vector(extra, config.data.label_column, config.data.anomaly_label)
            check_same_kinds(extra, frame, config.data)
            check_cells(extra, config.data)
            refuse_missing_values(extra, frame, config.data)  # before training, not after
        data.eval_is_training_file = _warn_eval_is_training_file(source, eval_source, data)
        if data.eval_is_training_file is None:  # else every id is shared, and that is said
            _warn_training_ids(extra, frame, config, eval_source)
        if config.calibration.method in LABELLED_THRESHOLD_METHODS:  # the rows it is for
            data.train_ids_in_eval = _rows_with_ids_in(data.train, extra, config)
        unseen = unseen_columns(extra, frame, config.data)
        if unseen:
            with warnings_named(str(eval_source)):  # as its errors are named
                warn_extra_columns(unseen)
            # Scored among the held-out rows of the training file, they would be warned of
            # again, as of no file
            extra = extra.drop(columns=unseen)
        data.sources["eval_data"] = source_location(eval_source)
        extra_rows = np.arange(1, len(extra) + 1)
        if data.evaluation is None:
            data.evaluation, data.evaluation_labels = extra, extra_labels
            data.evaluation_rows = extra_rows
        else:
            data.evaluation = pd.concat([data.evaluation, extra], ignore_index=True)
            data.evaluation_labels = np.concatenate([data.evaluation_labels, extra_labels])
            data.evaluation_rows = np.concatenate(
                [cast(np.ndarray, data.evaluation_rows), extra_rows]
            )
        data.eval_file_rows = len(extra)
    return data


@contextlib.contextmanager
def naming_file(source: str | Path) -> Iterator[None]:
    """Around checks of the cells of the table file ``source``: their DataError, which
    names a column and row, names the file first (``FILE: column 'x' ...``). A fit reads
    two files with --eval, and a row number alone does not say which one it counts in."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from exc


def say_reading(source: str | Path, training: TrainingConfig) -> None:
    """With ``training.progress`` on, a phase line as a table file of ``PHASE_LINE_BYTES``
    or more starts to be read (a file that large is read with no other sign of progress);
    its row count is not known before."""
    path = Path(source)
    size = path.stat().st_size if path.is_file() else 0
    if size and shows_phases(training, file_bytes=size):
        phase_line(f"reading {path.name} ({size / 1e6:,.0f} MB)")


IMAGE_LABELS = "--normal-class names the normal classes and the others are the anomalies"


def _refuse_table_columns(config: Config) -> None:
    """DataError for table columns named to a fit on images, which has none: they were
    ignored without a word, as data.label_column is not."""
    named = {
        "--id-col (data.id_column)": config.data.id_column is not None,
        "--ignore-col (data.ignore_columns)": bool(config.data.ignore_columns),
    }
    given = [option for option, set_ in named.items() if set_]
    if given:
        raise DataError(
            f"{' and '.join(given)} name{'s' if len(given) == 1 else ''} table columns; "
            "images have none: `score` names each image by its file, in its image column"
        )


def check_label_options(
    images: bool,
    label_column: str | None,
    normal_class: str | None,
    image_labels: str = IMAGE_LABELS,
) -> None:
    """DataError for the labels of the other kind of data: a label column for images
    (``image_labels`` says what images take instead), normal classes for a table
    (either would be ignored)."""
    if images and label_column is not None:
        raise DataError(f"--label-col is for tables; for images, {image_labels}")
    if not images and normal_class is not None:
        raise DataError("--normal-class is for image sources; tables use --label-col")


def _id_columns(config: Config) -> list[str]:
    """The id column, read as text: ids are passed through as written."""
    return [] if config.data.id_column is None else [config.data.id_column]


def _warn_training_ids(
    extra: pd.DataFrame, frame: pd.DataFrame, config: Config, eval_source: str | Path
) -> None:
    """Warn when rows of the --eval file carry the ids of rows of the training file: the
    evaluation would count rows the model may have trained on as held out."""
    id_column = config.data.id_column
    if id_column is None or id_column not in extra.columns or id_column not in frame.columns:
        return
    shared = _ids_among(extra[id_column], frame[id_column])
    if shared.any():
        logger.warning(
            "%d rows of %s have ids of rows in the training file (e.g. %r): if they are the "
            "same rows, the evaluation counts rows the model may have trained on",
            int(shared.sum()),
            eval_source,
            str(extra[id_column][shared].iloc[0]),
        )


def _ids_among(ids: pd.Series, others: pd.Series) -> np.ndarray:
    """``(len(ids),)`` bool: which of ``ids`` (not missing) is one of ``others``, both
    compared as text: a Parquet file's integer ids are a CSV file's text ids."""
    known = set(others.dropna().astype(str))
    return (ids.notna() & ids.astype(str).isin(known)).to_numpy()


def _rows_with_ids_in(train: Data, extra: pd.DataFrame, config: Config) -> np.ndarray | None:
    """Positions (k,) of the rows of ``train`` whose id (``data.id_column``, compared as
    :func:`_ids_among` does) is one of the rows of ``extra``; None without an id column
    in both."""
    id_column = config.data.id_column
    if id_column is None or not isinstance(train, pd.DataFrame):
        return None
    if id_column not in train.columns or id_column not in extra.columns:
        return None
    return np.flatnonzero(_ids_among(train[id_column], extra[id_column]))


def _warn_eval_is_training_file(
    source: str | Path, eval_source: str | Path, data: TrainingData
) -> str | None:
    """Warn, and return :func:`same_training_file`'s ``"same"`` or ``"copy"``, when the
    --eval file ``eval_source`` is the training file ``source`` or a copy of it (its
    SHA-256, taken only when the sizes match); None otherwise. With or without ids, its
    rows are then rows the model trained on, as evaluation rows."""
    fitted_on = training_file(source, sha256=data.sources.get("data_sha256"))
    same = same_training_file(fitted_on, eval_source)
    if same is not None:
        logger.warning(
            "%s is %sthe training file: the evaluation counts rows the model trained on "
            "as held out, so its figures are optimistic; evaluate on rows the model did "
            "not train on",
            eval_source,
            "" if same == "same" else f"a copy of {source}, ",
        )
    return same


def calibration_rows_evaluated(detector: Any, data: TrainingData) -> str | None:
    """Why the fit's held-out calibration rows of ``detector`` (an ensemble: its first
    member's, which all share) may be among ``data``'s labelled evaluation rows, which
    a labelled threshold (f1, recall) is chosen on, or None when the fit knows of no
    such rows: the --eval file is the training file or a copy of it, or holds the ids
    of calibration rows. The interval of its false-positive rate on new normal rows
    (:func:`~anomaly_vae.calibration.fixed_threshold_fpr`) then does not hold."""
    eval_file = Path(data.sources.get("eval_data", "")).name
    if data.eval_is_training_file is not None:
        data_file = Path(data.sources.get("data", "")).name
        what = "is" if data.eval_is_training_file == "same" else f"is a copy of {data_file},"
        return (
            f"{eval_file} {what} the file the model was fit on, so the fit's held-out "
            "normal rows are among the labelled rows that chose the threshold"
        )
    if data.train_ids_in_eval is None or not data.train_ids_in_eval.size:
        return None
    calibration = getattr(detector, "first", detector).split_rows_["calibration"]
    shared = int(np.isin(calibration, data.train_ids_in_eval).sum())
    if not shared:  # ids of training or validation rows only: not the interval's rows
        return None
    return (
        f"{shared:,} of the fit's {len(calibration):,} held-out normal rows have the ids of "
        f"rows of {eval_file}, so they may be among the labelled rows that chose the threshold"
    )


def _split_table(frame: pd.DataFrame, config: Config, source: str | Path) -> TrainingData:
    """Labelled anomalies and a held-out share of the normal rows of ``frame`` (read from
    ``source``) set aside for evaluation."""
    if config.data.label_column is None:
        return TrainingData(frame)
    column, anomaly_label = config.data.label_column, config.data.anomaly_label
    with naming_file(source):  # as an --eval file's label errors are named
        labels = label_vector(frame, column, anomaly_label)
    if not labels.any():
        return TrainingData(frame)
    if labels.all():  # else "need at least 20 normal rows to fit on, got 0", after the hold-out
        marks = "1" if anomaly_label is None else f"the anomaly label {anomaly_label!r}"
        raise DataError(
            f"no row of {source} is labelled normal: label column {column!r} holds {marks} "
            "in every row, and fit trains on normal rows"
        )
    train_rows, eval_rows = _hold_out(labels, config, "row")
    return TrainingData(
        frame.iloc[train_rows],
        frame.iloc[eval_rows],
        labels[eval_rows],
        excluded_anomalies=int(labels.sum()),
        train_rows=train_rows + 1,
        evaluation_rows=eval_rows + 1,
    )


def _load_images(source: str, config: Config, normal_class: str | None) -> TrainingData:
    size = config.data.image_size
    torchvision = ":" in source and not Path(source).exists()  # its test split evaluates
    # A torchvision training split is resized after its normal images are picked: its
    # other classes are never used, and resizing all of them (54,000 of Fashion-MNIST's
    # 60,000) held ten times the normal class's pixels and took most of the read's time.
    images = read_images_with_progress(
        source, size=None if torchvision else size, progress=config.training.progress
    )
    if normal_class is None:
        if len(images.classes) > 1:
            raise DataError(
                f"{source} has classes {class_list(images.classes)}: name the normal one "
                "with --normal-class (several: --normal-class a,b)"
            )
        normal_class = images.classes[0]
    normal = images.class_indices(str(normal_class))
    _check_conditional_classes(config, [images.classes[i] for i in normal])
    is_anomaly = ~np.isin(images.labels, normal)
    classes = images.label_names()
    if torchvision:
        test = read_images(source, train=False, size=size)
        train_rows = np.flatnonzero(~is_anomaly)
        train = images.images[train_rows]
        return TrainingData(
            train if size is None else resized_grey(train, size),
            test.images,
            ~np.isin(test.labels, normal),
            unused_other_classes=int(is_anomaly.sum()),
            names=test.names,
            train_names=[images.names[i] for i in train_rows],
            train_condition=classes[train_rows],
            evaluation_condition=test.label_names(),
        )
    if not is_anomaly.any():
        return TrainingData(images.images, train_condition=classes, train_names=images.names)
    train_rows, eval_rows = _hold_out(is_anomaly, config, "image")
    return TrainingData(
        images.images[train_rows],
        images.images[eval_rows],
        is_anomaly[eval_rows],
        excluded_anomalies=int(is_anomaly.sum()),
        names=[images.names[i] for i in eval_rows],
        train_names=[images.names[i] for i in train_rows],
        train_condition=classes[train_rows],
        evaluation_condition=classes[eval_rows],
    )


def read_images_with_progress(
    source: str | Path,
    train: bool = True,
    size: int | None = None,
    grey_model: bool = False,
    progress: bool = False,
    model_size: tuple[int, int] | None = None,
) -> ImageSet:
    """:func:`~anomaly_vae.data.images.read_images`, with ``progress`` a bar counting the
    images decoded on a terminal (off one, a line a minute), as `score` counts those it
    scores: a folder is decoded whole before training starts (2,000 JPEGs of 256 x 256,
    resized to 64, took 8 s in silence), and before `view` draws. A torchvision split is
    in memory already. ``model_size``: the ``(H, W)`` of a model's images, which every
    file's header is checked against before any is decoded, naming each odd file."""
    listing = list_images(source, train, size, grey_model, model_size)
    if model_size is not None:
        listing.check()
    try:
        if not progress or listing.pixels is not None:
            return listing.read(0, len(listing))
        name = source_name(source)
        with scoring_progress(name, "images", True, True, len(listing), verb="reading") as count:
            return listing.read(0, len(listing), count)
    finally:
        listing.log_colour()


def _check_conditional_classes(config: Config, normal_classes: list[str]) -> None:
    """A conditional image model learns p(image | class): refuse it one class to learn."""
    if get_model(config.model.name).uses_condition and len(normal_classes) < 2:
        raise DataError(
            f"{config.model.name} models an image given its class and needs two or more "
            f"normal classes (--normal-class a,b); {class_list(normal_classes)} alone is one: "
            "use model.name=vae"
        )


def _hold_out(is_anomaly: np.ndarray, config: Config, item: str) -> tuple[np.ndarray, np.ndarray]:
    """(training rows: normal minus a held-out fraction; evaluation rows: held-out normal
    rows then every anomaly). DataError when fewer normal rows (``item``: "row" or
    "image") than a fit needs are left, saying how many the hold-out took: the
    detector's error counts only those it is given."""
    normal = np.flatnonzero(~is_anomaly)
    rng = np.random.default_rng(config.training.seed)
    held_out = rng.permutation(normal)[: round(config.evaluation.fraction * len(normal))]
    train_rows = np.setdiff1d(normal, held_out)
    if len(train_rows) < MIN_TRAINING_ROWS:
        raise DataError(
            f"need at least {MIN_TRAINING_ROWS} normal {item}s to fit on, got "
            f"{len(train_rows)}: {len(held_out)} of the {len(normal)} normal {item}s are "
            f"held out for evaluation (evaluation.fraction={config.evaluation.fraction:g}); "
            f"give more normal {item}s, or lower evaluation.fraction"
        )
    return train_rows, np.concatenate([held_out, np.flatnonzero(is_anomaly)])


def check_threshold_labels(config: Config, data: TrainingData) -> None:
    """Before any training: a labelled ``calibration.method`` needs labelled rows of
    both classes."""
    method = config.calibration.method
    if method in LABELLED_THRESHOLD_METHODS and not data.has_evaluation():
        raise DataError(
            f"calibration.method={method} chooses the threshold on labelled rows: give "
            "--label-col with anomalous rows (or --eval FILE; images: --normal-class with "
            "other classes present), or use calibration.method=quantile"
        )


def calibrate_and_evaluate(
    detector: Any,
    data: TrainingData,
    settings: EvaluationConfig,
) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """Move the threshold to the labelled evaluation rows when ``calibration.method``
    asks for it, then report AUROC, AUCPR (with the intervals ``settings`` asks for),
    curves and the confusion matrix on them; the step is named as a fit names its steps.
    Returns ``(evaluation, scores)``, the scores it was computed from kept for the run's
    score histogram (scoring them again cost a second pass over the anomalies); both
    None without labelled rows of both classes.

    The rows are scored in parts (:func:`~anomaly_vae.scoring.scores_in_parts`), with the
    scores of the rows scored whole: scored whole, the model's float input of every row
    and its intermediates were held at once, memory that grew with a large --eval file
    (500,000 rows of 30 columns: 150 MB more at the peak; 1,500,000 rows: 340 MB)."""
    # Here, not at the top: scoring imports this module (latest_model_dir).
    from anomaly_vae.scoring import scores_in_parts

    if data.evaluation is None:
        return None, None
    if not data.has_evaluation():
        logger.warning("no evaluation: the labelled evaluation rows are all of one class")
        return None, None
    assert data.evaluation_labels is not None  # has_evaluation() checked
    say_evaluating(detector, len(data.evaluation))
    scores = scores_in_parts(detector, data.evaluation, data.evaluation_condition, "evaluation")
    evaluation = threshold_and_evaluation(detector, data.evaluation_labels, scores, settings)
    if evaluation["threshold_chosen_on_these_rows"]:
        # As `calibrate` on the training file: the count of calibration rows above a
        # threshold some of them chose is no longer binomial.
        reason = calibration_rows_evaluated(detector, data)
        if reason is not None:
            withhold_expected_fpr(detector.calibration_, reason)
    return evaluation, scores


def say_evaluating(detector: Any, rows: int, phases: TrainingConfig | None = None) -> None:
    """The phase line of the evaluation on ``rows`` labelled rows (or images), when
    ``phases`` (by default the detector's ``training`` settings) shows it for so many."""
    if shows_phases(phases or detector.effective_config.training, rows):
        phase_line(f"evaluating on {rows:,} labelled {detector.score_item}s")


def threshold_and_evaluation(
    detector: Any, labels: np.ndarray, scores: np.ndarray, settings: EvaluationConfig
) -> dict[str, Any]:
    """:func:`calibrate_and_evaluate` of rows already scored: ``labels (m,)`` bool of both
    classes, True = anomaly, and their anomaly ``scores (m,)``."""
    config = detector.effective_config
    chosen_here = config.calibration.method in LABELLED_THRESHOLD_METHODS
    if chosen_here:
        detector.threshold_from_scores(
            labels, scores, config.calibration.method, config.calibration.target_recall
        )
    evaluation = evaluate(labels, scores, detector.threshold_, settings, config.training.seed)
    # A threshold chosen on these rows flatters the confusion matrix at it (not AUROC/AUCPR).
    evaluation["threshold_chosen_on_these_rows"] = chosen_here
    return evaluation


# A threshold chosen on labelled rows (f1, recall), at fit or by `calibrate`, asks for a
# check, and `--register` does not move the champion alias to it, when it flags more than
# this many times the model's target share of the fit's held-out normal rows
ALARMING_FPR_FACTOR = 5


def check_reason(detector: Any, method: str) -> str | None:
    """Why ``detector``'s threshold, just chosen by ``method`` (at fit, or by
    `calibrate`), asks for a check before use, or None: chosen on labelled rows (f1,
    recall), it flags more than ``ALARMING_FPR_FACTOR`` times the model's
    ``calibration.target_fpr`` of the fit's held-out normal rows (few or mislabelled
    normal rows can put a threshold inside normal operation). A quantile threshold flags
    its target share of the rows given, by construction."""
    if method == QUANTILE_THRESHOLD:
        return None
    calibration = detector.calibration_
    target = detector.effective_config.calibration.target_fpr
    if calibration["calibration_fpr"] <= ALARMING_FPR_FACTOR * target:
        return None
    return (
        f"it flags {100 * calibration['calibration_fpr']:.2f}% of the fit's "
        f"{calibration['n_calibration']:,} held-out normal {detector.score_item}s, more than "
        f"{ALARMING_FPR_FACTOR} times the {100 * target:g}% the model was fit to flag"
    )


def unread_model_settings(config: Config) -> list[str]:
    """``model.KEY=VALUE`` of each model setting changed from its default that the
    variant ``model.name`` does not read (its ``config_fields``): ``model.codebook_size``
    set for a ``vae``, say, most likely meant ``model.name=vq-vae``."""
    reads = set(get_model(config.model.name).config_fields)
    defaults = ModelConfig()
    return [
        f"model.{key.name}={getattr(config.model, key.name)}"
        for key in dataclasses.fields(ModelConfig)
        if key.name not in reads and getattr(config.model, key.name) != getattr(defaults, key.name)
    ]


def fit_source(
    source: str | Path,
    config: Config,
    eval_source: str | Path | None = None,
    normal_class: str | None = None,
    project_dir: Path | None = None,
    model_dir: Path | None = None,
    register: bool | None = None,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Fit one detector on ``source`` and do everything around it (see
    :func:`load_training_data` for how labels and evaluation data are handled)."""
    project_dir = project_dir or Path.cwd()
    # Not in a family fit, whose settings serve every variant: only the one trained here.
    unread = unread_model_settings(config)
    if unread:
        logger.warning(
            "model %r ignores these settings, meant for another variant (model.name): %s",
            config.model.name,
            ", ".join(unread),
        )
    data = load_training_data(source, config, eval_source, normal_class)
    check_threshold_labels(config, data)
    if config.tracking.enabled:
        from anomaly_vae import tracking  # MLflow import is slow; only when tracking

        tracking.check_store(
            config.tracking.experiment, project_dir, announce=config.training.progress
        )
    detector = VAEDetector(config.detector_config()).fit(
        data.train, condition=data.train_condition, on_epoch=on_epoch
    )
    evaluation, scores = calibrate_and_evaluate(detector, data, config.evaluation)
    mark_training_file(detector, source, data)
    model_dir = save_model(detector, project_dir, model_dir)
    rows = fit_rows(detector, data)
    result = FitResult(detector, model_dir, rows, evaluation, data, evaluation_scores=scores)
    result.check = check_reason(detector, config.calibration.method)
    if config.tracking.enabled:
        if shows_phases(config.training, len(data.train)):
            phase_line("logging the run to MLflow")
        with tracking.logging_after(f"the model is saved in {model_dir}"):
            tracking.use_tracking(config.tracking.experiment, project_dir)
            result.run = tracking.log_fit_run(
                detector, config, model_dir, data, evaluation, register, scores, result.check
            )
        record_run(model_dir, result.run.run_id)
    return result


def record_run(model_dir: Path, run_id: str) -> None:
    """Note in the model folder which MLflow run logged it (``RUN_FILE``, for `view
    --log`); the next save into the folder removes it."""
    (Path(model_dir) / RUN_FILE).write_text(run_id + "\n")


fit_table = fit_source  # the name used for tables


def fit_rows(detector: Any, data: TrainingData) -> dict[str, int]:
    rows = dict(detector.n_training_rows_)
    rows["labelled_anomalies_excluded"] = data.excluded_anomalies
    rows["unused_other_classes"] = data.unused_other_classes
    rows["evaluation"] = 0 if data.evaluation is None else len(data.evaluation)
    return rows


def training_file(
    source: str | Path, digest: bool = True, sha256: str | None = None
) -> dict[str, Any] | None:
    """The identity of a table file a model is fit on, saved with it so that
    `calibrate` can tell when it is given the same file or a copy of it: its real path,
    its size in bytes and, with ``digest``, the SHA-256 of its bytes (``sha256`` when the
    caller has it already, else read). None for images (see :func:`training_images`)."""
    if is_image_source(source) or not Path(source).is_file():
        return None
    # The real path: a link to the training file is the training file.
    identity = {"path": os.path.realpath(source), "bytes": Path(source).stat().st_size}
    if digest:
        identity["sha256"] = sha256 or file_digest(Path(source))
    return identity


def same_training_file(fitted_on: dict[str, Any] | None, source: str | Path) -> str | None:
    """``"same"`` when ``source`` is the file :func:`training_file` described as
    ``fitted_on``, ``"copy"`` when it holds the same bytes elsewhere, else None. Only a
    file of the training file's size is hashed; a model saved before the digest was kept
    knows its training file by real path and size alone."""
    given = training_file(source, digest=False)
    if fitted_on is None or "bytes" not in fitted_on:  # None, or an image folder's
        return None
    if given is None or given["bytes"] != fitted_on["bytes"]:
        return None
    if "sha256" not in fitted_on:
        return "same" if given["path"] == fitted_on["path"] else None
    if file_digest(Path(source)) != fitted_on["sha256"]:
        return None  # the file at that path was rewritten since, or another of that size
    return "same" if given["path"] == fitted_on["path"] else "copy"


def training_images(source: str | Path, names: list[str] | None) -> dict[str, Any] | None:
    """The identity of the images of the folder ``source`` named ``names`` (file paths
    under it, as the reader lists them), saved with a model fit on them so that
    `calibrate` can tell when its normal images include them: the real path of
    ``source`` (``folder``) and of each folder they were read from (``image_folders``:
    their class subfolders, or ``source`` itself when flat). Paths only, no digest: a
    copy of the folder elsewhere is not recognised. None for a torchvision set, whose
    training split `calibrate` never reads (it reads the test split)."""
    root = Path(source)
    if torchvision_source(source) is not None or not root.is_dir() or not names:
        return None
    folders = set()
    for name in names:
        try:
            parts = Path(name).relative_to(root).parts
            folder = root / parts[0] if len(parts) > 1 else root
        except ValueError:  # not written under ``source`` (a home folder expanded)
            folder = Path(name).parent
        folders.add(os.path.realpath(folder))
    return {"folder": os.path.realpath(root), "image_folders": sorted(folders)}


def same_training_images(
    fitted_on: dict[str, Any] | None, source: str | Path, names: list[str]
) -> str | None:
    """``"same"`` when the image folder ``source`` is the one :func:`training_images`
    described as ``fitted_on``, ``"shared"`` when the folders of its images ``names`` (its
    normal ones, say) are, hold or lie in a folder the model's training images were
    read from (``good/`` of a fit on ``images/`` with --normal-class good, or the parent
    of a flat folder fit on), else None."""
    if fitted_on is None or "image_folders" not in fitted_on:
        return None
    given = training_images(source, names)
    if given is None:
        return None
    trained = [Path(folder) for folder in fitted_on["image_folders"]]
    overlap = any(
        Path(folder).is_relative_to(other) or other.is_relative_to(folder)
        for folder in given["image_folders"]
        for other in trained
    )
    if not overlap:
        return None
    return "same" if given["folder"] == fitted_on["folder"] else "shared"


def mark_training_file(detector: Any, source: str | Path, data: TrainingData) -> None:
    """Record :func:`training_file` of ``source`` on ``detector`` (each member of an
    ensemble), as ``training_source_``, with the SHA-256 ``data`` was read with; for an
    image folder, :func:`training_images` of the images it was trained on
    (``data.train_names``)."""
    # hashed once, whatever the members
    identity = training_file(source, sha256=data.sources.get("data_sha256")) or (
        training_images(source, data.train_names)
    )
    for model in getattr(detector, "members", {"": detector}).values():
        model.training_source_ = None if identity is None else dict(identity)


def save_model(detector: Any, project_dir: Path, model_dir: Path | None = None) -> Path:
    """Save ``detector`` (to a new timestamped folder by default) and mark it the latest."""
    model_dir = model_dir or _new_model_dir(project_dir)
    detector.save(model_dir)
    _mark_latest(project_dir, model_dir)
    return model_dir


def _new_model_dir(project_dir: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return project_dir / MODELS_DIR / stamp


def _mark_latest(project_dir: Path, model_dir: Path) -> None:
    models = project_dir / MODELS_DIR
    models.mkdir(parents=True, exist_ok=True)
    temporary = models / f".{LATEST_FILE}.tmp"
    target = model_dir.resolve()
    # Relative inside the project, so that a project folder moved or copied keeps it.
    if target.is_relative_to(models.resolve()):
        target = target.relative_to(models.resolve())
    temporary.write_text(f"{target}\n")
    temporary.replace(models / LATEST_FILE)


def latest_model_dir(project_dir: Path | None = None) -> Path | None:
    """The folder of the newest model fit in ``project_dir`` (None if there is none)."""
    models = (project_dir or Path.cwd()) / MODELS_DIR
    marker = models / LATEST_FILE
    if not marker.is_file():
        return None
    return (models / marker.read_text().strip()).resolve()  # an absolute path stays as it is
