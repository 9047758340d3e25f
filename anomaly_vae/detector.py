"""VAEDetector: the scikit-learn-style anomaly detector at the core of anomaly-vae."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import operator
import platform
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from anomaly_vae import __version__
from anomaly_vae.calibration import (
    CALIBRATION_ROWS_FROM,
    RECALIBRATED_QUANTILE_DESCRIPTION,
    calibration_rows_from,
    calibration_summary,
    labelled_summary,
    labelled_threshold,
    quantile_threshold,
)
from anomaly_vae.config import (
    LABELLED_THRESHOLD_METHODS,
    QUANTILE_THRESHOLD,
    Config,
    DetectorConfig,
    from_dict,
    renamed_to_current,
    resolve_patience,
    resolve_score,
    to_dict,
    validate,
)
from anomaly_vae.data import TablePreprocessor, as_frame
from anomaly_vae.data.augmentation import ShiftedImages
from anomaly_vae.data.images import ImagePreprocessor, class_list
from anomaly_vae.data.preprocessing import (
    gathered_warnings,
    latin_1_names_as_read_now,
    read_as_latin_1,
    warn_unseen_condition,
)
from anomaly_vae.data.tables import quoted_names, refuse_sparse, shown_value
from anomaly_vae.errors import ConfigError, DataError, ModelNotFoundError, reading_model
from anomaly_vae.explanation import (
    EXPLAIN_METHOD,
    EXPLAIN_METHODS,
    EXPLAINED_COLUMNS,
    IMAGES_NOT_EXPLAINED,
    REPAIR_CANDIDATES,
    REPAIR_STEPS,
    column_contributions,
    column_starts,
    explanation_columns,
    named_like_explanation,
    top_columns,
)
from anomaly_vae.latent_density import LATENT_SCORES, LatentNeighbours
from anomaly_vae.models import get_model
from anomaly_vae.models.base import BaseVAE
from anomaly_vae.noise import hashed_noise_for_rows, noise_bank, noise_for_rows, scoring_noise
from anomaly_vae.outputs import (
    FLAG_COLUMN,
    ROW_COLUMN,
    SCORE_COLUMN,
    insert_id_column,
    make_folder,
    refuse_id_named_like_outputs,
)
from anomaly_vae.training import EpochCallback, TrainingHistory, phase_line, shows_phases, train

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
CONFIG_FILE = "detector.json"
WEIGHTS_FILE = "weights.pt"
LATENT_FILE = "latent_reference.pt"  # training latent means of the latent scores
ENSEMBLE_FILE = "ensemble.json"  # marks an ensemble's folder (ensemble.py)
MEMBERS_FOLDER = "members"  # an ensemble's members, each a saved detector (ensemble.py)
# The MLflow run that logged the model saved in a folder, written after the save by a
# tracked fit or calibrate (fitting.record_run); `view --log` and calibrate read it.
RUN_FILE = "mlflow_run_id"
# Every name a detector's or an ensemble's save (and the run note after it) writes into
# a model folder, the two descriptions first: a save removes them all before it writes
# its own, so that a folder holds only the model saved last (an ensemble saved over a
# detector left its detector.json, which VAEDetector.load read; a fit with --no-tracking
# the run note of the fit before, whose run `view --log` then logged to). Nothing else
# there is touched.
SAVED_MODEL_NAMES = (
    CONFIG_FILE,
    ENSEMBLE_FILE,
    WEIGHTS_FILE,
    LATENT_FILE,
    MEMBERS_FOLDER,
    RUN_FILE,
)
# Normal rows (images) fit takes at least: it splits them into training, validation and
# calibration rows, a split that is meaningless below this.
MIN_TRAINING_ROWS = 20
# Rows of the smallest scoring pass: a shorter one (a few rows scored, the last part of a
# table, a small fit's calibration rows) is padded to it with copies of its last row.
# torch's CPU matrix products take other kernels for a few rows (here: 1 row on one
# thread, up to 11 on two), whose float32 sums round otherwise: a row scored alone got
# another score than in a larger pass, and the top calibration row, whose score is the
# threshold under 100 calibration rows, was flagged when scored alone again.
MIN_PASS_ROWS = 32
# An anomaly map's grey level is its pixel error over a fixed scale, the same for every
# image a model scores, so that maps compare: white is an error that at most 1 in 100 of
# the fit's held-out normal images reach anywhere (each image's largest error; their 0.99
# quantile). Scaled by 1 (error 1 = white), held-out Fashion-MNIST sneakers' maps under
# a model of sneakers peaked at a median 85/255 (now 133; boots' 134, now 208); scaled
# per image, every map's peak is white, a normal image's as an anomaly's
# (pipelines/map_check.py, docs/images.md).
MAP_SCALE_QUANTILE = 0.99


def map_peaks(maps: np.ndarray) -> np.ndarray:
    """``(n,)`` each map's largest value, channels averaged as the map files are, from
    maps ``(n, C, H, W)`` (pixel error, 0-1). The same before and after a pooled model's
    maps are upsampled, which only repeats each value over its block."""
    return maps.mean(axis=1).reshape(len(maps), -1).max(axis=1)


def map_scale_of_peaks(peaks: np.ndarray) -> float | None:
    """The error shown white in anomaly maps, from the :func:`map_peaks` ``(n,)`` of
    normal images' maps: their ``MAP_SCALE_QUANTILE`` quantile. None when it is 0 (every
    normal image reconstructed exactly): no scale can be read off them, and maps are then
    shown unscaled."""
    if not len(peaks):
        return None
    scale = float(np.quantile(peaks, MAP_SCALE_QUANTILE))
    return scale if scale > 0 else None


def save_atomic(target: Path, write: Any) -> None:
    """``write(temporary_path)``, then rename the temporary file to ``target``; the
    temporary file is deleted if ``write`` fails."""
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        write(temporary)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def saving_model_folder(path: Path, description: str) -> Iterator[None]:
    """Around writing a saved model's files into the folder ``path``, its
    ``description`` file (what loaders read first) written last, by the block.

    The description of a model saved there before is removed first: a save that
    fails or is interrupted half-way (an error, Ctrl-C) then leaves a folder that
    does not load, never the earlier description beside some of the new files (an
    ensemble's new members under its old references and threshold). Then every other
    file of an earlier model (``SAVED_MODEL_NAMES``: a detector's beside an ensemble, the
    members of an earlier ensemble), so that the folder holds only what this save
    writes, besides files that are not a model's. A folder this save created is
    removed again, so nothing half-written is left behind.
    """
    created = not path.exists()
    make_folder(path)
    try:
        for name in dict.fromkeys((description, *SAVED_MODEL_NAMES)):
            if (path / name).is_dir() and not (path / name).is_symlink():
                if _holds_saved_members(path / name):
                    shutil.rmtree(path / name)
            else:
                (path / name).unlink(missing_ok=True)
        yield
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise


def _holds_saved_members(folder: Path) -> bool:
    """Whether ``folder`` (a ``members/`` beside a model) holds only an ensemble's saved
    members, folders of a detector's files: a user's own ``members/`` folder in a folder
    a model is saved into is left alone."""
    return all(
        member.is_dir() and {p.name for p in member.iterdir()} <= set(SAVED_MODEL_NAMES)
        for member in folder.iterdir()
    )


def available_scores(model_name: str) -> tuple[str, ...]:
    """Every score a detector with this model can drive ``predict`` by: the model's own
    and the latent scores the detector adds (latent_density.py)."""
    return get_model(model_name).score_names + LATENT_SCORES


SCORED_CLASS_COLUMN = "scored_class"  # a conditional image model's class of each image


def output_columns(model_name: str) -> tuple[str, ...]:
    """The columns that scores of a model ``model_name`` can have besides the id column:
    every score, the score in use and the flag (``score_frame``), and the row numbers
    written for rows without an id (``outputs.identify_rows``)."""
    return (*available_scores(model_name), SCORE_COLUMN, FLAG_COLUMN, ROW_COLUMN)


def refuse_id_named_like_scores(id_column: str | None, model_name: str) -> None:
    """DataError, before a table model ``model_name`` is fit, when its ``id_column``
    (passed through to the scores) has the name of a column its scores can add: one of
    :func:`output_columns`, or one that ``score --explain K`` adds for some K (``why_1``,
    ``why_1_nats``, ...): a model fit so could not explain its rows, its id sharing a
    name with an explanation column or passing for one."""
    refuse_id_named_like_outputs(id_column, output_columns(model_name))
    if named_like_explanation(id_column):
        raise DataError(
            f"the id column {id_column!r} is named as score --explain names its columns "
            f"({', '.join(explanation_columns(2))}, ...); rename it in the data and give "
            "the new name as the id column (--id-col, data.id_column)"
        )


def as_table_or_images(X: Any) -> pd.DataFrame | np.ndarray:
    """``X`` as fit takes it (and an ensemble built on fitted members): a DataFrame or
    array as it is; any other array-like (a list of rows or of images, a torch tensor, an
    object with ``__array__`` and no ``__len__``) as its numpy array, as scikit-learn's
    ``check_array`` converts it; DataError for a sparse matrix. Without this, such an
    object failed with ``TypeError: object ... has no len()``, and a tensor of images was
    taken for a table."""
    refuse_sparse(X)
    if isinstance(X, (pd.DataFrame, np.ndarray)):
        return X
    try:
        return np.asarray(X)
    except ValueError as exc:  # rows of different lengths
        first_line = (str(exc).splitlines() or [""])[0]
        raise DataError(f"X is not a table or images of one shape: {first_line}") from exc


def _is_image_array(X: Any) -> bool:
    return isinstance(X, np.ndarray) and X.ndim >= 3


def _refuse_ambiguous_classes(values: np.ndarray) -> None:
    """Image classes are names or integer indices; floats (an integer column with a gap
    reads as float) and booleans would silently become names no image was trained on."""
    if values.dtype.kind in "fbc":
        raise DataError(
            f"image classes must be names or integer indices, not {values.dtype} values"
        )


def _refuse_other_labels(labels: np.ndarray) -> None:
    """DataError naming what ``labels`` hold besides 0/1 and False/True: missing labels
    (NaN, None, pd.NA), which are no class, apart from other codes."""
    invalid = pd.Series(labels.ravel(), dtype=object)[~np.isin(labels, (0, 1)).ravel()]
    if invalid.empty:
        return
    missing = int(invalid.isna().sum())
    if missing:
        raise DataError(
            f"{missing:,} of {labels.size:,} labels are missing: a missing label is no "
            "class; leave those rows out or label them 0/1 (1 = anomaly)"
        )
    others = invalid.unique()
    shown = ", ".join(map(str, others[:3])) + (", ..." if len(others) > 3 else "")
    raise DataError(
        f"labels must be 0/1 or False/True (1 = anomaly), found {shown} in "
        f"{len(invalid):,} of {labels.size:,} labels"
    )


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows (n, ...)`` with copies of its last row after it up to ``size`` rows (itself
    when it has as many; ``n >= 1``)."""
    if len(rows) >= size:
        return rows
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)])


def _width(conditions: np.ndarray | None) -> int:
    return 0 if conditions is None else conditions.shape[1]


_Scores = TypeVar("_Scores", bound="ThresholdedScores")


class ThresholdedScores:
    """The scikit-learn scoring methods, from ``all_scores``, ``score_name`` and
    ``threshold_`` (shared by :class:`VAEDetector` and the family ensemble).

    ``anomaly_score`` / ``score_frame`` / ``threshold_``: higher = more anomalous;
    ``score_samples`` is the negation; ``predict`` gives -1 for anomalies.
    """

    threshold_: float
    offset_: float
    calibration_: dict[str, Any]
    calibration_scores_: np.ndarray  # (n_calibration,) held-out normal rows' scores
    n_training_rows_: dict[str, int]  # rows of each part of the fit's split

    @property
    def score_name(self) -> str:
        """The score that drives ``threshold_`` and ``predict``."""
        raise NotImplementedError

    @property
    def effective_config(self) -> DetectorConfig:
        """The configuration the scores come from."""
        raise NotImplementedError

    @property
    def score_item(self) -> str:
        """What one score is of, for messages and plot labels: ``"image"`` for an image
        model, else ``"row"``."""
        # data_kind_ is a fitted attribute here and the ensemble's property
        return "image" if getattr(self, "data_kind_", None) == "image" else "row"

    def all_scores(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def anomaly_map(self, X: np.ndarray, condition: np.ndarray | None = None) -> np.ndarray:
        """Per-pixel error of images, ``(n, C, H, W)`` float32 in [0, 1] (image models)."""
        raise NotImplementedError

    def normal_map_scale(self, X: np.ndarray, condition: np.ndarray | None = None) -> float | None:
        """The error this model's anomaly maps should show white, read off normal images
        ``X (n, C, H, W)`` (``condition (n,)``: their classes, for a conditional model):
        :func:`map_scale_of_peaks` of their :meth:`anomaly_map`'s peaks. What
        ``map_scale_`` is set from: at fit the held-out normal images, in `calibrate` the
        normal images given (a detector takes its maps before they are upsampled, whose
        peaks are the same, at fit as here).

        A batch of images at a time, keeping only each map's peak: the float32 maps of
        every image at once, with the errors they are upsampled from beside them, took
        over twice the maps' size."""
        size = self._map_batch_rows()
        peaks = np.empty(len(X), np.float32)
        for start in range(0, len(X), size):
            part = slice(start, start + size)
            peaks[part] = self._map_peaks(X[part], None if condition is None else condition[part])
        return map_scale_of_peaks(peaks)

    def _map_batch_rows(self) -> int:
        """Images per pass of :meth:`normal_map_scale`."""
        raise NotImplementedError

    def _map_peaks(self, X: np.ndarray, condition: np.ndarray | None) -> np.ndarray:
        """``(n,)`` :func:`map_peaks` of the :meth:`anomaly_map` of images ``X``."""
        return map_peaks(self.anomaly_map(X, condition))

    def score_frame(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> pd.DataFrame:
        """Every score of every row, as the CLI and MLflow model report them.

        One row per input row (same index for tables): the id column (when configured
        and present), every score, ``score`` (the one in use, higher = more anomalous)
        and ``is_anomaly`` (``score > threshold_``, or a score that is NaN).
        """
        return self._frame_of_scores(self.all_scores(X, condition), X)

    def _frame_of_scores(
        self, scores: dict[str, np.ndarray], X: pd.DataFrame | np.ndarray
    ) -> pd.DataFrame:
        """:meth:`score_frame` of ``X`` from its ``scores``, each ``(n,)``."""
        index = X.index if isinstance(X, pd.DataFrame) else None
        out = pd.DataFrame(scores, index=index)
        out[SCORE_COLUMN] = out[self.score_name]
        # A row the model cannot score (NaN) is not shown to be normal: flag it.
        out[FLAG_COLUMN] = ~(out[SCORE_COLUMN] <= self.threshold_)
        id_column = self.effective_config.data.id_column
        if isinstance(X, pd.DataFrame) and id_column is not None and id_column in X.columns:
            insert_id_column(out, id_column, X[id_column])
        return out

    def anomaly_score(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> np.ndarray:
        """``(n,)`` the score in use, higher = more anomalous."""
        return self.all_scores(X, condition)[self.score_name]

    def score_samples(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> np.ndarray:
        """``(n,)`` scikit-learn convention: the negated anomaly score (higher = more normal).

        ``condition``: as for :meth:`anomaly_score` (an image model fit on several normal
        classes: each image's class; None scores each under the class that fits it best)."""
        return -self.anomaly_score(X, condition)

    def decision_function(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> np.ndarray:
        """``(n,)`` ``score_samples - offset_``: negative for anomalies, positive otherwise."""
        return self.score_samples(X, condition) - self.offset_

    def predict(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> np.ndarray:
        """``(n,)`` int: -1 for anomalies (and rows whose score is NaN), +1 for normal rows."""
        return np.where(self.decision_function(X, condition) >= 0, 1, -1)

    def calibrate_threshold(
        self: _Scores,
        X: pd.DataFrame | np.ndarray,
        y: Any = None,
        method: str = "f1",
        target_recall: float | None = None,
        condition: np.ndarray | None = None,
        target_fpr: float | None = None,
    ) -> _Scores:
        """Move ``threshold_`` to one chosen on new rows, without retraining; returns ``self``.

        ``X``: rows (or images); ``y (n,)``: 1 or True = anomaly, 0 or False = normal.
        ``method``: ``"f1"`` (F1-optimal, precision-recall curve) or ``"recall"`` (the
        highest threshold flagging ``target_recall`` of the anomalies, default the model's
        ``calibration.target_recall``, ROC curve), both on
        labelled rows of both classes; `fit --label-col` passes ``calibration.method`` and
        ``calibration.target_recall``. ``calibration_`` then holds the precision, recall
        and false-positive rate on these rows (optimistic: they chose the threshold) and the
        false-positive rate on the fit's held-out normal calibration rows (not optimistic).

        ``"quantile"``: the ``1 - target_fpr`` quantile (default: the model's
        ``calibration.target_fpr``) of the normal rows' scores, every row of ``X`` when
        ``y`` is None. They must be rows the model did not train on, from the operation the
        threshold is for; they replace ``calibration_scores_``, the fit's held-out rows.
        """
        if not hasattr(self, "threshold_"):
            raise NotFittedError("fit the detector before calibrating its threshold")
        methods = (*LABELLED_THRESHOLD_METHODS, QUANTILE_THRESHOLD)
        if method not in methods:
            raise ValueError(
                f"no threshold method {method!r}: use one of {', '.join(map(repr, methods))}"
            )
        labels = None if y is None else np.asarray(y)
        if labels is not None:
            _refuse_other_labels(labels)
        if labels is None and method != QUANTILE_THRESHOLD:
            raise DataError(f"method {method!r} chooses the threshold on labelled rows: pass y")
        scores = self.anomaly_score(X, condition)
        if labels is not None and labels.shape != scores.shape:
            raise DataError(f"y needs one label per row ({len(scores)}), got shape {labels.shape}")
        if method == QUANTILE_THRESHOLD:
            normal = scores if labels is None else scores[~labels.astype(bool)]
            return self.threshold_from_normal_scores(normal, target_fpr, recalibrated=True)
        assert labels is not None  # refused above for every method but the quantile
        if target_recall is None:
            target_recall = self.effective_config.calibration.target_recall
        return self.threshold_from_scores(labels.astype(bool), scores, method, target_recall)

    def threshold_from_normal_scores(
        self: _Scores,
        normal_scores: np.ndarray,
        target_fpr: float | None = None,
        *,
        provisional: bool = False,
        recalibrated: bool = False,
    ) -> _Scores:
        """:meth:`calibrate_threshold` by quantile, for normal rows already scored:
        ``normal_scores (n,)`` from :meth:`anomaly_score`; returns ``self``.
        ``provisional``: a labelled ``calibration.method`` replaces this threshold next,
        so too few rows for ``target_fpr`` are not warned about. ``recalibrated``: the
        rows are new ones, not the fit's held-out rows, and ``calibration_`` says so."""
        if target_fpr is None:
            target_fpr = self.calibration_["target_fpr"]
        if not 0 < target_fpr < 1:
            raise ValueError(f"target_fpr must be in (0, 1), not {target_fpr}")
        scores = np.asarray(normal_scores, dtype=np.float64)
        if scores.size == 0:
            raise DataError("no normal rows to take the quantile of")
        if not np.isfinite(scores).all():
            raise DataError(
                f"{int((~np.isfinite(scores)).sum())} of {scores.size} normal rows score "
                "NaN or infinity: the model cannot set a threshold on them"
            )
        self.threshold_ = quantile_threshold(
            scores, target_fpr, warn=not provisional, item=self.score_item
        )
        self.offset_ = -self.threshold_
        level = self.effective_config.calibration.expected_fpr_level
        self.calibration_ = calibration_summary(scores, self.threshold_, target_fpr, level) | {
            "score": self.score_name
        }
        if recalibrated:
            self.calibration_["description"] = RECALIBRATED_QUANTILE_DESCRIPTION
            # Where they came from: `calibrate` records its file (or folder); unknown here
            self.calibration_[CALIBRATION_ROWS_FROM] = None
        self.calibration_scores_ = scores
        return self

    def threshold_from_scores(
        self: _Scores, labels: np.ndarray, scores: np.ndarray, method: str, target_recall: float
    ) -> _Scores:
        """:meth:`calibrate_threshold` for rows already scored: ``labels (n,)`` bool,
        ``scores (n,)`` from :meth:`anomaly_score`; returns ``self``."""
        if not 0 < target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], not {target_recall}")
        threshold = labelled_threshold(labels, scores, method, target_recall, self.score_item)
        self.threshold_ = threshold
        self.offset_ = -threshold
        rows_from = calibration_rows_from(self.calibration_)
        self.calibration_ = labelled_summary(
            labels,
            scores,
            threshold,
            method,
            target_recall,
            self.calibration_scores_,
            self.calibration_["target_fpr"],
            self.effective_config.calibration.expected_fpr_level,
        ) | {"score": self.calibration_["score"]}
        if rows_from is not False:  # the calibration rows stay those of `calibrate`
            self.calibration_[CALIBRATION_ROWS_FROM] = rows_from
        return self


class VAEDetector(ThresholdedScores, OutlierMixin, BaseEstimator):
    """Anomaly detector: a VAE fit on normal rows, scored by how badly it explains a row.

    Score direction, stated once: ``anomaly_score``, ``score_frame`` and
    ``threshold_`` use **higher = more anomalous** (what the CLI and MLflow model
    report). Following scikit-learn (as ``IsolationForest``), ``score_samples`` is
    its negation (higher = more normal), ``decision_function = score_samples -
    offset_`` is negative for anomalies, and ``predict`` returns -1 for anomalies,
    +1 for normal rows. A row is an anomaly when ``anomaly_score > threshold_``.

    Parameters
    ----------
    config : DetectorConfig, optional
        Architecture, training, scoring, calibration and column handling. ``None``
        means the documented defaults of :class:`~anomaly_vae.config.DetectorConfig`.
        There is no ``random_state``: ``config.training.seed`` seeds the split, the
        weights and the scoring noise, so the same seed and data give the same scores.

    Attributes (after ``fit``)
    --------------------------
    threshold_ : float
        Anomaly-score threshold: the ``1 - calibration.target_fpr`` quantile of
        held-out normal scores, or one chosen on labelled rows by
        :meth:`calibrate_threshold`.
    offset_ : float
        ``-threshold_``, so that ``decision_function`` is 0 at the threshold.
    calibration_ : dict
        How the threshold was chosen (method, target and observed FPR, quantiles).
    history_ : TrainingHistory
        Per-epoch training and validation losses.
    model_ : BaseVAE
        The fitted torch module.
    preprocessor_ : TablePreprocessor
        The column schema and scaling fitted on the training rows.
    n_features_in_ : int
        Number of input columns used as features (tables only).
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Their names, as text; set only when ``X`` was a DataFrame (then arrays are
        refused at scoring, and the reverse).
    split_rows_ : dict[str, ndarray]
        Positions in ``X`` of the train / validation / calibration rows (not saved).
    config_ : DetectorConfig
        A copy of ``config`` taken by ``fit`` (after ``load``: the saved one), which the
        model, its scores and :meth:`save` follow: ``config`` changed in place or by
        ``set_params`` after ``fit`` takes effect at the next ``fit``, as in scikit-learn.

    Examples
    --------
    >>> import numpy as np
    >>> from anomaly_vae import VAEDetector, DetectorConfig
    >>> rng = np.random.default_rng(0)
    >>> normal = rng.normal(size=(300, 4))
    >>> config = DetectorConfig()
    >>> config.training.epochs = 5
    >>> detector = VAEDetector(config).fit(normal)
    >>> detector.predict(np.full((1, 4), 8.0)).tolist()
    [-1]
    """

    preprocessor_: TablePreprocessor | ImagePreprocessor  # as data_kind_ is "table" or "image"
    _noise: torch.Tensor | None  # the scoring noise, drawn when first needed
    # Saved before scoring noise was shared by all rows (noise.py): the size of the bank
    # each row's noise was picked from by its hash, on which the threshold was set
    noise_bank_size_: int | None

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config

    def set_params(self, **params: Any) -> VAEDetector:
        """scikit-learn's ``set_params``; ``config`` is set whole.

        A nested key (``config__model__latent_dim``, as a grid search's parameter grid
        names one) is a ConfigError saying what to pass instead: scikit-learn's own
        error was an AttributeError that ``DetectorConfig`` has no ``set_params``."""
        nested = [key for key in params if key.startswith("config__")]
        if nested:
            setting = nested[0].removeprefix("config__").replace("__", ".")
            raise ConfigError(
                f"{nested[0]!r} is not a parameter: the config is set whole, e.g. "
                f"set_params(config=load_config(overrides=['{setting}=...'])"
                ".detector_config()); a grid search varies whole configs, "
                "{'config': [config_a, config_b]} (docs/python.md)"
            )
        return cast(VAEDetector, super().set_params(**params))

    @property
    def _table_preprocessor(self) -> TablePreprocessor:
        """``preprocessor_`` where only a table model's code reaches."""
        return cast(TablePreprocessor, self.preprocessor_)

    @property
    def _image_preprocessor(self) -> ImagePreprocessor:
        """``preprocessor_`` where only an image model's code reaches."""
        return cast(ImagePreprocessor, self.preprocessor_)

    @property
    def effective_config(self) -> DetectorConfig:
        """The configuration of the fitted model (``config_``) once fitted or loaded;
        before that ``config``, or the defaults when it is None."""
        fitted = self.__dict__.get("config_")
        if fitted is not None:
            return cast(DetectorConfig, fitted)
        return self.config if self.config is not None else DetectorConfig()

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        # Missing table cells are filled with the training median beside an indicator.
        tags.input_tags.allow_nan = True
        return tags

    # -- fitting ----------------------------------------------------------------------------
    def fit(
        self,
        X: pd.DataFrame | np.ndarray,
        y: Any = None,
        condition: np.ndarray | None = None,
        on_epoch: EpochCallback | None = None,
    ) -> VAEDetector:
        """Fit on normal data ``X``; ``y`` is ignored (scikit-learn convention).

        ``X`` is a table (DataFrame or ``(n, d)`` array) or images (``(n, C, H, W)`` or
        ``(n, H, W)`` array, uint8 pixels or floats in [0, 1]). Conditional models take
        their condition from ``config.data.condition_columns`` for tables and from
        ``condition`` for images: ``(n,)`` class names (the classes are the distinct
        names, in sorted order) or class indices 0 to K - 1. The rows are split (seeded)
        into training, validation (early stopping) and calibration (threshold) parts.
        ``on_epoch(epoch, losses)`` is called after every epoch. Id and label columns
        named in ``config.data`` are not features.
        """
        # Whatever this fit does, nothing of an earlier one stays: a fit refused for its
        # config would leave the earlier model beside this config (saved so, it does not
        # load), and a refit would keep the earlier training file (training_source_).
        self._forget_fit()
        X = as_table_or_images(X)
        config = self.effective_config
        if isinstance(config, Config):
            # A whole Config would fit, and then not load: its saved sections differ.
            raise ConfigError(
                f"VAEDetector takes a DetectorConfig, not {type(config).__name__}: pass "
                "config.detector_config()"
            )
        if not isinstance(config, DetectorConfig):
            raise ConfigError(
                f"VAEDetector takes a DetectorConfig, not {type(config).__name__}: e.g. "
                "load_config(overrides=[...]).detector_config()"
            )
        validate(config)
        # The fitted model's own copy: a config object shared by detectors (changed in
        # place for the next experiment) or set_params after fit left this model's weights
        # beside another architecture (saved so, it did not load) and changed its scoring.
        config = copy.deepcopy(config)
        threads = torch.get_num_threads()
        # Seeding and thread settings stay inside the fit: a caller's own torch random
        # stream and thread count are as they were before.
        with torch.random.fork_rng(devices=[]):
            try:
                return self._fit(config, X, condition, on_epoch)
            except BaseException:
                # A fit that fails part way would leave this fit's preprocessor or model
                # beside an earlier fit's threshold: scored silently wrong. Unfitted instead.
                self._forget_fit()
                raise
            finally:
                torch.set_num_threads(threads)

    def fit_predict(
        self,
        X: pd.DataFrame | np.ndarray,
        y: Any = None,
        condition: np.ndarray | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """``fit(X, condition=condition).predict(X, condition)``: ``(n,)`` -1 / +1.

        scikit-learn's own passes ``condition`` to ``fit`` alone, so the images of a
        model fit on several normal classes were predicted under their best class."""
        return self.fit(X, y, condition=condition, **kwargs).predict(X, condition)

    def _forget_fit(self) -> None:
        """Drop every fitted attribute (trailing ``_``) and the fit's private state."""
        for name in list(self.__dict__):
            fitted = name.endswith("_") and not name.startswith("__")
            if fitted or name in ("_noise", "_uses_condition", "_array_width"):
                del self.__dict__[name]

    def _fit(
        self,
        config: DetectorConfig,
        X: pd.DataFrame | np.ndarray,
        condition: np.ndarray | None,
        on_epoch: EpochCallback | None,
    ) -> VAEDetector:
        self.config_ = config
        model_class = get_model(config.model.name)
        self.data_kind_ = "image" if _is_image_array(X) else "table"
        score = resolve_score(config.scoring.score, self.data_kind_, len(X))
        if score not in available_scores(config.model.name):
            raise ConfigError(
                f"model {config.model.name!r} has no score {score!r}; "
                f"its scores: {', '.join(available_scores(config.model.name))}"
            )
        if self.data_kind_ not in model_class.data_kinds:
            raise DataError(
                f"model {config.model.name!r} accepts {' and '.join(model_class.data_kinds)} "
                f"data, not {self.data_kind_}s"
            )
        if len(X) < MIN_TRAINING_ROWS:
            # Not "training rows": the summary's and the run's are the training split.
            item = self.score_item
            raise DataError(
                f"need at least {MIN_TRAINING_ROWS} normal {item}s to fit on (split into "
                f"training, validation and calibration {item}s), got {len(X)}"
            )
        self._set_threads(config)
        phases = shows_phases(config.training, len(X))
        if phases:
            phase_line(f"preparing the features of {len(X):,} {self.score_item}s")
        if self.data_kind_ == "image":
            self.preprocessor_ = ImagePreprocessor(
                config.data.image_pool, config.data.image_size
            ).fit(X, model_class.image_side_multiple(config.model))
            self.condition_classes_ = 0
            self.condition_names_: list[str] = []
            if model_class.uses_condition:
                self._set_image_classes(config.model.name, condition, len(X))
        else:
            refuse_id_named_like_scores(config.data.id_column, config.model.name)
            frame = as_frame(X)
            table = TablePreprocessor(config.data).fit(frame)
            self.preprocessor_ = table
            self.n_features_in_ = len(table.columns)
            if isinstance(X, pd.DataFrame):
                self.feature_names_in_ = np.array(table.input_columns, dtype=object)
            else:
                # An array's id and ignored columns (x3, ...) are among its columns but not
                # n_features_in_: arrays scored must have this width, not the features'.
                self._array_width = frame.shape[1]
        self._uses_condition = model_class.uses_condition
        needs_context = model_class.uses_condition and self.data_kind_ == "table"
        if needs_context and not config.data.condition_columns:
            raise DataError(
                f"{config.model.name} scores a row given its context, and "
                "data.condition_columns names none: name them (e.g. --set "
                "'data.condition_columns=[machine]') or use model.name=vae"
            )
        train_rows, val_rows, cal_rows = self._split(len(X), config)
        splits = (train_rows, val_rows, cal_rows)
        if self.data_kind_ == "image":
            # Each part pooled from the uint8 images, a block at a time: the model input
            # of every image, beside copies of its parts, held the pooled images twice.
            transform = self._image_preprocessor.transform
            conditions = self._image_conditions(condition, len(X), lambda rows: transform(X, rows))
            x_train, x_val, x_cal = (transform(X, rows) for rows in splits)
        else:
            features, conditions = self._model_input(X, condition)
            x_train, x_val, x_cal = (features[rows] for rows in splits)
            del features  # its parts are copies: not kept through training beside them
        k = config.scoring.latent_neighbours
        if score in LATENT_SCORES and len(train_rows) < k:
            # Before training: the reference of the latent scores is drawn from the
            # training rows, and LatentNeighbours refused it with a ValueError traceback.
            raise ConfigError(
                f"scoring.latent_neighbours={k} is more than the "
                f"{len(train_rows):,} training {self.score_item}s "
                f"that {score} finds neighbours among: lower it, or use another scoring.score"
            )
        torch.manual_seed(config.training.seed)  # weight initialisation
        self.model_ = self._build_model(config, x_train.shape[1:], _width(conditions))

        def rows_of(array: np.ndarray | None, rows: np.ndarray) -> torch.Tensor | None:
            return None if array is None else torch.from_numpy(array[rows])

        batch_input = None
        if self.data_kind_ == "image":
            side = min(self._image_preprocessor.shape[1:])
            shift = round(config.training.image_shift * side)
            if shift >= 1:
                shifted = ShiftedImages(np.asarray(X), self._image_preprocessor, shift, train_rows)
                batch_input = shifted.batch

        patience = resolve_patience(config.training.patience, self.data_kind_)
        self.history_: TrainingHistory = train(
            self.model_,
            torch.from_numpy(x_train),
            torch.from_numpy(x_val),
            dataclasses.replace(config.training, patience=patience),
            on_epoch=on_epoch,
            condition_train=rows_of(conditions, train_rows),
            condition_val=rows_of(conditions, val_rows),
            batch_input=batch_input,
        )
        self.split_rows_ = {"train": train_rows, "validation": val_rows, "calibration": cal_rows}
        self.n_training_rows_ = {name: len(rows) for name, rows in self.split_rows_.items()}
        self._noise = None
        self.noise_bank_size_ = None
        self.latent_neighbours_: LatentNeighbours | None = None
        cal_conditions = None if conditions is None else conditions[cal_rows]
        if phases:
            phase_line(
                f"calibrating the threshold on {len(cal_rows):,} held-out {self.score_item}s"
            )
        calibration = self._scores_of_features(x_cal, cal_conditions)
        # From the held-out normal images, as the threshold is: the training images' own
        # errors are smaller than a new normal image's.
        self.map_scale_: float | None = None
        if self.data_kind_ == "image":
            self.map_scale_ = map_scale_of_peaks(
                map_peaks(self._pixel_error(x_cal, cal_conditions))
            )
        if score in LATENT_SCORES:
            neighbours = self._latent_reference(x_train, conditions, train_rows)
            cal_latents = self._latent_means(x_cal, cal_conditions)
            cal_distance = neighbours.distance(torch.from_numpy(cal_latents))
            neighbours.calibrate(calibration["negative_elbo"], cal_distance)
            calibration |= neighbours.scores(calibration["negative_elbo"], cal_distance)
            self.latent_neighbours_ = neighbours
        self.score_name_ = score
        # A labelled calibration.method (fit --label-col, or calibrate_threshold) moves
        # the threshold on; these held-out scores stay, for the false-positive rate it
        # reports at the labelled threshold.
        return self.threshold_from_normal_scores(
            calibration[score],
            config.calibration.target_fpr,
            provisional=config.calibration.method != QUANTILE_THRESHOLD,
        )

    def _set_image_classes(self, model_name: str, condition: Any, n: int) -> None:
        """The classes of a conditional image model, from the training images' ``condition``."""
        if condition is None:
            # Without one it would train as a plain VAE under a conditional name.
            raise DataError(
                f"{model_name} scores an image given its class, and none was given: in "
                "Python, fit(images, condition=classes); with `anomaly-vae fit`, name two "
                "or more normal classes (--normal-class a,b)"
            )
        values = np.asarray(condition)
        if values.shape != (n,):
            raise DataError(f"condition needs one class per image ({n}), got shape {values.shape}")
        _refuse_ambiguous_classes(values)
        if pd.isna(values).any():
            raise DataError("every training image needs its class; some have none")
        if values.dtype.kind in "iu":
            if values.min() < 0:
                raise DataError("image class indices start at 0")
            absent = sorted(set(range(int(values.max()) + 1)) - set(np.unique(values).tolist()))
            if absent:
                raise DataError(
                    f"no training image has class index {absent[0]}: give indices 0 to K - 1 "
                    "with images of each, or class names"
                )
            self.condition_names_ = [str(i) for i in range(int(values.max()) + 1)]
        else:
            self.condition_names_ = sorted({str(v) for v in pd.unique(values)})
        self.condition_classes_ = len(self.condition_names_)

    def _class_indices(self, condition: Any, n: int) -> np.ndarray:
        """``(n,)`` int64 class index of every image, -1 where unknown: ``condition`` None,
        -1, or a name not among ``condition_names_``."""
        if condition is None:
            return np.full(n, -1, dtype=np.int64)
        values = np.asarray(condition)
        if values.ndim == 0:
            values = np.full(n, values)
        if values.shape != (n,):
            raise DataError(f"condition needs one class per image ({n}), got shape {values.shape}")
        _refuse_ambiguous_classes(values)
        if values.dtype.kind in "iu":
            if values.min(initial=0) < -1 or values.max(initial=0) >= self.condition_classes_:
                raise DataError(
                    f"image classes must be in 0..{self.condition_classes_ - 1} (-1: unknown)"
                )
            return values.astype(np.int64)
        names = pd.Series(values, dtype=object).map(str, na_action="ignore")
        return pd.Index(self.condition_names_).get_indexer(names).astype(np.int64)

    def _image_conditions(
        self, condition: Any, n: int, model_input: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray | None:
        """``(n, K)`` one-hot class of each of ``n`` images for a conditional image model
        (None for other models). An image of unknown class is given the class under which
        its negative ELBO is lowest: it is as normal as the class that explains it best.
        ``model_input(rows)``: the model input of those images, asked for only then."""
        if not self.condition_classes_:
            return None
        classes = np.eye(self.condition_classes_, dtype=np.float32)
        indices = self._class_indices(condition, n)
        unknown = np.flatnonzero(indices < 0)
        if len(unknown):
            features = model_input(unknown)
            elbos = [
                self._model_scores(features, np.repeat(one_hot[None], len(unknown), 0))
                for one_hot in classes
            ]
            stacked = np.stack([elbo["negative_elbo"] for elbo in elbos], axis=1)
            indices[unknown] = np.argmin(np.nan_to_num(stacked, nan=np.inf), axis=1)
        return classes[indices]

    def _latent_reference(
        self, x_train: np.ndarray, conditions: np.ndarray | None, train_rows: np.ndarray
    ) -> LatentNeighbours:
        """The latent scores' reference: latent means of at most
        ``scoring.latent_reference_rows`` training rows (a seeded sample), not yet calibrated.
        ``x_train``: the model input of ``train_rows``, in their order; ``conditions``: of
        every row."""
        cfg = self.effective_config
        rows, features = train_rows, x_train
        if len(train_rows) > cfg.scoring.latent_reference_rows:
            rng = np.random.default_rng(cfg.training.seed)
            rows = np.sort(rng.choice(train_rows, cfg.scoring.latent_reference_rows, replace=False))
            order = np.argsort(train_rows)  # where each of the rows is in x_train
            features = x_train[order[np.searchsorted(train_rows[order], rows)]]
        means = self._latent_means(features, None if conditions is None else conditions[rows])
        return LatentNeighbours(torch.from_numpy(means), cfg.scoring.latent_neighbours)

    def _latent_means(self, features: np.ndarray, conditions: np.ndarray | None) -> np.ndarray:
        """Posterior means ``(n, latent_dim)`` float32 of preprocessed rows, in batches."""
        return self._batched_features(self.model_.latent_mean, features, conditions)

    @staticmethod
    def _split(n: int, config: DetectorConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.random.default_rng(config.training.seed).permutation(n)
        n_cal = max(1, round(config.calibration.fraction * n))
        n_val = max(1, round(config.training.validation_fraction * n))
        return order[n_cal + n_val :], order[n_cal : n_cal + n_val], order[:n_cal]

    def _build_model(
        self, config: DetectorConfig, input_shape: tuple[int, ...], condition_dim: int
    ) -> BaseVAE:
        binary = self.preprocessor_.binary_features
        if binary is not None and self.data_kind_ == "table":
            binary = binary[~self._condition_mask()]
        binary_tensor = None if binary is None else torch.from_numpy(binary)
        model_class = get_model(config.model.name)
        try:
            model = model_class(tuple(input_shape), config.model, binary_tensor, condition_dim)
        except (MemoryError, RuntimeError) as exc:
            # torch's allocator reports a size no machine has as a RuntimeError traceback
            if isinstance(exc, RuntimeError) and "allocate memory" not in str(exc):
                raise
            raise ConfigError(
                f"the {config.model.name} model's weights do not fit in memory: lower its "
                "sizes (model.hidden_dims, model.latent_dim, model.conv_channels, ...)"
            ) from exc
        if self.data_kind_ == "table" and config.model.quantisation_floor:
            steps = self._table_preprocessor.feature_steps[~self._condition_mask()]
            model.set_feature_steps(torch.from_numpy(steps))
        return model

    @staticmethod
    def _set_threads(config: DetectorConfig) -> None:
        if config.training.num_threads > 0:
            torch.set_num_threads(config.training.num_threads)

    def _condition_mask(self) -> np.ndarray:
        """``(d,)`` bool: a table model's features that are the condition of a conditional
        model (an image model's condition is its class, not features)."""
        if not self._uses_condition:
            return np.zeros(len(self._table_preprocessor.feature_names), dtype=bool)
        return self._table_preprocessor.condition_mask

    def _model_input(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(features (n, *input_shape) float32, condition (n, c) float32 or None)``."""
        if self.data_kind_ == "image":
            features = self.preprocessor_.transform(X)
            conditions = self._image_conditions(condition, len(features), features.__getitem__)
            return features, conditions
        frame = as_frame(X)
        self._refuse_other_kind_of_table(X, frame)
        features = self.preprocessor_.transform(frame)
        mask = self._condition_mask()
        if not mask.any():
            return features, None
        self._warn_unseen_conditions(frame)
        return np.ascontiguousarray(features[:, ~mask]), np.ascontiguousarray(features[:, mask])

    def _refuse_other_kind_of_table(self, X: Any, frame: pd.DataFrame) -> None:
        """DataError for an array given to a model fit on named columns, or a DataFrame
        without the names ``x0, x1, ...`` given to a model fit on an array (``frame`` is
        ``as_frame(X)``): the schema check would list every column as missing."""
        expected = self._table_preprocessor.input_columns
        width = self.__dict__.get("_array_width") or len(expected)
        array_names = [f"x{i}" for i in range(width)]
        named_as_array = set(expected) <= set(array_names)
        has_all = set(expected) <= set(map(str, frame.columns))
        if isinstance(X, pd.DataFrame):
            fit_on_array = getattr(self, "feature_names_in_", None) is None
            if fit_on_array and named_as_array and not has_all:
                raise self._frame_for_array_model_error(expected, array_names, frame)
            return
        if not has_all and not named_as_array:
            raise DataError(
                f"the model was fit on a table with named columns ({quoted_names(expected)}) "
                "and an array has none: pass a DataFrame with these columns"
            )
        if frame.shape[1] != width:
            raise DataError(f"expected {width} columns, got {frame.shape[1]}")

    def _frame_for_array_model_error(
        self, expected: list[str], array_names: list[str], frame: pd.DataFrame
    ) -> DataError:
        """What a DataFrame lacking some of the ``expected`` input columns needs, for a
        model fit on an array (columns ``array_names``). It said the frame must have
        exactly ``x0, x1, ...``, when an ignored or id column may be left out (and other
        columns are ignored, with a warning)."""
        present = set(map(str, frame.columns))
        missing = [name for name in expected if name not in present]
        message = (
            f"the model was fit on an array, whose columns are named "
            f"{quoted_names(array_names)}: a DataFrame needs its input columns by these "
            f"names, {quoted_names(expected)}, and lacks {quoted_names(missing)}"
        )
        left_out = [name for name in array_names if name not in expected]
        if left_out:
            id_column = self.effective_config.data.id_column
            kinds = sorted({"the id column" if n == id_column else "ignored" for n in left_out})
            message += f" ({quoted_names(left_out)}, {' or '.join(kinds)}, may be left out)"
        return DataError(f"{message}; or pass an array")

    def _warn_unseen_conditions(self, frame: pd.DataFrame) -> None:
        """Warn about condition values not seen in training: such a row is scored given an
        empty context (no category set), against which its score means little."""
        conditions = set(self.effective_config.data.condition_columns)
        for column in self._table_preprocessor.columns:
            if column.name not in conditions or column.name not in frame.columns:
                continue
            values = frame[column.name]
            unseen = [v for v in values.dropna().unique() if not column.is_known(v)]
            if not unseen:
                continue
            rows = int(values.isin(unseen).sum())
            gathered = gathered_warnings()
            if gathered is None:
                warn_unseen_condition(column.name, unseen, rows, column.categories)
            else:
                gathered.add_unseen_condition(column.name, unseen, rows, column.categories, self)

    # -- scoring ----------------------------------------------------------------------------
    def transform_features(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The model's float32 input for ``X`` (checks the column schema or image shape)."""
        check_is_fitted(self, "model_")
        features, _ = (
            self._model_input(X)
            if self.data_kind_ == "table"
            else (self.preprocessor_.transform(X), None)
        )
        return features

    def _scores_of_features(
        self, features: np.ndarray, conditions: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """All scores of preprocessed rows, in batches; each ``(n,)`` float64."""
        scores = self._model_scores(features, conditions)
        neighbours = getattr(self, "latent_neighbours_", None)
        if neighbours is not None:
            latents = torch.from_numpy(self._latent_means(features, conditions))
            scores |= neighbours.scores(scores["negative_elbo"], neighbours.distance(latents))
        return scores

    def _model_scores(
        self, features: np.ndarray, conditions: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The model's own scores of preprocessed rows, in batches; each ``(n,)`` float64."""
        cfg = self.effective_config.scoring
        seed = self.effective_config.training.seed
        bank_size = getattr(self, "noise_bank_size_", None)
        shared_noise = getattr(self, "_noise", None)
        if shared_noise is None:
            shared_noise = self._noise = (
                scoring_noise(cfg.mc_samples, self.model_.noise_dim, seed)
                if bank_size is None
                else noise_bank(bank_size, cfg.mc_samples, self.model_.noise_dim, seed)
            )
        self.model_.eval()
        # Each batch's scores go into arrays made once: kept as a small array per batch
        # and concatenated, they were left between the batches' freed intermediates,
        # which glibc then could not reuse or give back (scoring 500,000 rows of 30
        # columns grew by 580 MB of RSS, 20 times the scores).
        out = {name: np.empty(len(features)) for name in self.model_.score_names}
        size = self._batch_rows()
        smallest = min(MIN_PASS_ROWS, size)
        for start in range(0, len(features), size):
            rows = len(features[start : start + size])
            batch = _padded(features[start : start + size], smallest)
            condition = None
            if conditions is not None:
                condition = torch.from_numpy(_padded(conditions[start : start + size], smallest))
            noise = (
                noise_for_rows(len(batch), shared_noise)
                if bank_size is None
                else hashed_noise_for_rows(batch, shared_noise)
            )
            scores = self.model_.scores(torch.from_numpy(batch), noise, condition)
            for name in self.model_.score_names:
                out[name][start : start + rows] = scores[name][:rows].numpy()  # float32: exact
        return out

    @property
    def scoring_batch_rows(self) -> int:
        """Rows per scoring pass (:meth:`_batch_rows`): whoever scores in parts keeps to
        whole numbers of them, so that each pass holds the rows it holds when the data
        is scored whole (float32 sums can round otherwise in other batch shapes)."""
        check_is_fitted(self, "model_")
        return self._batch_rows()

    def _batch_rows(self) -> int:
        """Rows per scoring pass: ``scoring.batch_size``, fewer for wide inputs."""
        cfg = self.effective_config.scoring
        values_per_row = cfg.mc_samples * math.prod(self.model_.input_shape)
        return max(1, min(cfg.batch_size, cfg.max_batch_values // values_per_row))

    def all_scores(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Every score the model computes for ``X``, each ``(n,)``, higher = more anomalous."""
        check_is_fitted(self, "model_")
        return self._scores_of_features(*self._model_input(X, condition))

    def score_frame(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> pd.DataFrame:
        """:meth:`ThresholdedScores.score_frame`; a conditional image model adds
        ``scored_class``, the class each image was scored under: its own, or for an image
        of a class not trained on, the trained class that explains it best."""
        check_is_fitted(self, "model_")
        if not (self.data_kind_ == "image" and self.condition_classes_):
            return super().score_frame(X, condition)
        features, conditions = self._model_input(X, condition)
        out = self._frame_of_scores(self._scores_of_features(features, conditions), X)
        assert conditions is not None  # a conditional image model's images have classes
        names = np.array(self.condition_names_, dtype=object)
        out[SCORED_CLASS_COLUMN] = names[conditions.argmax(axis=1)]
        return out

    @property
    def auto_settings(self) -> dict[str, Any]:
        """``{config key: value in effect}`` for every setting whose config value is None
        (auto), as fit resolved it for this data (the config keeps None)."""
        check_is_fitted(self, "model_")
        config = self.effective_config
        resolved = {
            "scoring.score": (config.scoring.score, self.score_name_),
            "training.patience": (
                config.training.patience,
                resolve_patience(config.training.patience, self.data_kind_),
            ),
            "model.trim_fraction": (config.model.trim_fraction, self.model_.trim_fraction),
            "model.min_log_variance": (
                config.model.min_log_variance,
                self.model_.min_log_variance,
            ),
        }
        if self.data_kind_ == "image":
            resolved["data.image_pool"] = (config.data.image_pool, self._image_preprocessor.pool)
        return {key: value for key, (setting, value) in resolved.items() if setting is None}

    @property
    def score_name(self) -> str:
        """The score that drives the threshold and ``predict`` (``scoring.score``, with
        auto resolved at fit)."""
        check_is_fitted(self, "score_name_")
        return self.score_name_

    def _batched(
        self, function: Any, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None
    ) -> np.ndarray:
        """Apply ``function(features, condition)`` to ``X`` in scoring batches; concatenate."""
        check_is_fitted(self, "model_")
        return self._batched_features(function, *self._model_input(X, condition))

    def _batched_features(
        self, function: Any, features: np.ndarray, conditions: np.ndarray | None
    ) -> np.ndarray:
        """:meth:`_batched` on preprocessed rows."""
        size = self._batch_rows()
        smallest = min(MIN_PASS_ROWS, size)  # as in _model_scores
        self.model_.eval()
        # Into one array made at the first batch, as _model_scores does: not a list of
        # the batches' outputs beside their concatenation (twice the output at the end).
        out: np.ndarray | None = None
        with torch.no_grad():
            for start in range(0, len(features), size):
                rows = len(features[start : start + size])
                batch = torch.from_numpy(_padded(features[start : start + size], smallest))
                cond = None
                if conditions is not None:
                    cond = torch.from_numpy(_padded(conditions[start : start + size], smallest))
                output = function(batch, cond)[:rows].numpy()
                if out is None:
                    out = np.empty((len(features), *output.shape[1:]), output.dtype)
                out[start : start + rows] = output
        return np.empty((0,), np.float32) if out is None else out

    def encode(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> np.ndarray:
        """Posterior latent means ``(n, latent_dim)`` float32."""
        check_is_fitted(self, "model_")
        return self._batched(self.model_.latent_mean, X, condition)

    def reconstruct(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> np.ndarray:
        """Expected reconstructions in model input units, ``(n, *input_shape)`` float32."""
        check_is_fitted(self, "model_")
        return self._batched(self.model_.reconstruct, X, condition)

    def condition_vector(self, values: dict[str, Any] | int | str) -> np.ndarray:
        """The ``(c,)`` condition of a conditional model: from ``{column: value}`` for
        tables (the ``data.condition_columns``), or a class name or index for images."""
        check_is_fitted(self, "model_")
        if not self.model_.condition_dim:
            raise DataError("this model takes no condition")
        if self.data_kind_ == "image":
            if isinstance(values, dict):
                raise DataError("an image model's condition is its class: give class=NAME")
            # By name first, as --normal-class names classes at fit; else by index.
            text = str(values)
            index = -1
            if text in self.condition_names_:
                index = self.condition_names_.index(text)
            elif text.isdigit() and int(text) < self.condition_classes_:
                index = int(text)
            if index < 0:
                raise DataError(
                    f"class {shown_value(values)} was not seen in training; known classes: "
                    f"{class_list(self.condition_names_)} (or their indices, 0 to "
                    f"{self.condition_classes_ - 1})"
                )
            return np.eye(self.condition_classes_, dtype=np.float32)[index]
        columns = self.effective_config.data.condition_columns
        if not isinstance(values, dict):
            raise DataError(
                f"a table model's condition is a value for each condition column "
                f"({quoted_names(columns)}), e.g. {{{columns[0]!r}: ...}}; "
                f"got {shown_value(values)}"
            )
        unknown = [name for name in values if name not in columns]
        if unknown:
            raise DataError(
                f"{unknown[0]!r} is not a condition column of this model; its condition "
                f"columns: {quoted_names(columns)}"
            )
        missing = set(columns) - set(values)
        if missing:
            raise DataError(f"give a value for every condition column; missing: {sorted(missing)}")
        row = {
            c.name: values.get(c.name, c.center if c.kind == "numeric" else c.categories[0])
            for c in self._table_preprocessor.columns
        }
        for column in self._table_preprocessor.columns:
            if column.name in values and not column.is_known(values[column.name]):
                raise DataError(
                    f"{column.name}={shown_value(values[column.name])} was not seen in "
                    f"training; known values: {', '.join(column.categories)}"
                )
        features = self.preprocessor_.transform(pd.DataFrame([row]))
        return features[0, self._condition_mask()]

    def feature_surprise(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-feature surprise in nats, ``(n, *input_shape)`` (see BaseVAE.feature_surprise)."""
        check_is_fitted(self, "model_")
        return self._batched(self.model_.feature_surprise, X, condition)

    def explain(
        self,
        X: pd.DataFrame | np.ndarray,
        top: int = EXPLAINED_COLUMNS,
        method: str = EXPLAIN_METHOD,
    ) -> pd.DataFrame:
        """Which original columns made each row of the table ``X`` anomalous, and how much.

        One row per row of ``X`` (same index for a DataFrame): ``why_1`` (the column that
        added most to the row's score), ``why_1_nats`` (what it added, nats), up to
        ``why_{top}``; ``top`` is capped at the columns scored. ``method`` (see
        anomaly_vae/explanation.py):

        - ``"repair"``: how much the row's surprise drops when the column is replaced by
          what the row's other columns predict of it (:meth:`BaseVAE.repair_gain`),
          tried for each row's ``max(top, REPAIR_CANDIDATES)`` columns of largest
          ``"posterior"`` contribution (so the ``top`` named were all tried);
        - ``"posterior"``: the column's surprise at the row's own posterior mean
          (:meth:`feature_surprise`): (x - mean)^2 / (2 var) for a numeric value and the
          cross-entropy of a one-hot category or missing indicator, summed into their
          column.

        Neither is the raw per-feature NLL, whose log-normaliser differs from feature to
        feature. A conditional model's condition columns are never named. DataError for
        an image model: its anomaly maps (:meth:`anomaly_map`, ``score --maps``) show
        where an image is wrong.
        """
        check_is_fitted(self, "model_")
        if self.data_kind_ == "image":
            raise DataError(IMAGES_NOT_EXPLAINED)
        top = operator.index(top)  # a TypeError naming the type for 2.0, not numpy's later
        if top < 1:  # before the scoring pass
            raise ValueError(f"top must be at least 1, not {top}")
        if method not in EXPLAIN_METHODS:
            raise ValueError(f"unknown method {method!r}; available: {', '.join(EXPLAIN_METHODS)}")
        table = self._table_preprocessor
        feature_columns = table.feature_columns[~self._condition_mask()]
        names = [table.columns[i].name for i in dict.fromkeys(feature_columns.tolist())]
        features, conditions = self._model_input(X)
        index = X.index if isinstance(X, pd.DataFrame) else None
        if not len(features):  # no rows, as score_frame answers them (no pass to shape it)
            return top_columns(np.empty((0, len(names))), names, top, index)
        surprise = self._batched_features(self.model_.feature_surprise, features, conditions)
        contributions = column_contributions(surprise, feature_columns)
        if method == "repair":
            contributions = self._repair_gains(
                features, conditions, feature_columns, contributions, max(top, REPAIR_CANDIDATES)
            )
        return top_columns(contributions, names, top, index)

    def _repair_gains(
        self,
        features: np.ndarray,
        conditions: np.ndarray | None,
        feature_columns: np.ndarray,
        surprise: np.ndarray,
        tried: int = REPAIR_CANDIDATES,
    ) -> np.ndarray:
        """:meth:`BaseVAE.repair_gain` of the preprocessed rows ``features (n, d)``, ``(n,
        c)`` float64 nats, for each row's ``tried`` columns of largest
        ``surprise (n, c)`` (their posterior contributions), NaN for its other columns
        (``feature_columns (d,)``: each model feature's column). Rows go through in passes
        of at most ``scoring.max_batch_values`` values (``scoring.batch_size`` rows at
        most) once multiplied by the columns tried, padded to ``MIN_PASS_ROWS`` rows as
        the scores are: a row's contributions do not depend on the rows explained with it.
        """
        starts = column_starts(feature_columns)
        widths = np.diff(np.r_[starts, len(feature_columns)])
        groups = np.repeat(np.eye(len(starts), dtype=bool), widths, axis=1)  # (c, d)
        neutral = torch.from_numpy(self._neutral_features(groups))
        # Each column tried costs REPAIR_STEPS + 1 passes of the row, so a wide table's
        # columns are not all tried: trying 8 named the planted column as often as trying
        # all, within 0.3 points on the 14 tables of docs/scores.md (25_musk: 166 columns).
        candidates = np.argsort(-surprise, axis=1, kind="stable")[:, :tried]
        cfg = self.effective_config.scoring
        values_per_row = candidates.shape[1] * groups.shape[1]
        size = max(1, min(cfg.batch_size, cfg.max_batch_values // values_per_row))
        smallest = min(MIN_PASS_ROWS, size)
        out = np.full(surprise.shape, np.nan)
        self.model_.eval()
        for start in range(0, len(features), size):
            part = slice(start, start + size)
            rows = len(features[part])
            batch = torch.from_numpy(_padded(features[part], smallest))
            condition = None
            if conditions is not None:
                condition = torch.from_numpy(_padded(conditions[part], smallest))
            chosen = torch.from_numpy(groups[_padded(candidates[part], smallest)])  # (r, m, d)
            gain = self.model_.repair_gain(batch, chosen, neutral, condition, REPAIR_STEPS)[:rows]
            np.put_along_axis(out[part], candidates[part], gain.numpy(), axis=1)
        return out

    def _neutral_features(self, groups: np.ndarray) -> np.ndarray:
        """What stands in for a left-out column, ``(d,)`` float32 in the model's feature
        layout (``groups (c, d)``: the features of each scored column): a numeric column's
        training median (what a missing value is filled with) marked not missing; a
        categorical column's category the model expects most for the row of those
        medians with no category set (and no condition, for a conditional model): the
        category that goes with the other columns' stand-ins in the model's eyes, which
        the column's most frequent training category need not be (no category set, as
        for an unseen one, is a pattern no training row has)."""
        table = self._table_preprocessor
        indicators = table.config.missing_indicators
        values: list[float] = []
        for column in table.columns:
            if column.kind == "numeric":
                values += [column.fill] + ([0.0] if indicators else [])
            else:
                values += [np.nan] * len(column.categories)
        neutral = np.array(values, dtype=np.float32)[~self._condition_mask()]
        categorical = np.isnan(neutral)
        if categorical.any():
            # Decoded from the row of medians with no category set, through the encoder
            # every variant has (VQ-VAE's latent has no prior mean to decode).
            model = self.model_
            start = torch.from_numpy(np.where(categorical, 0.0, neutral)[None])
            condition = torch.zeros(1, model.condition_dim) if model.condition_dim else None
            with torch.no_grad():
                latent = model.latent_mean(start, condition)
                expected = model.mean_output(model.decode(latent, condition))[0].numpy()
            for group in groups:
                if categorical[group].any():
                    chosen = np.flatnonzero(group)[np.argmax(expected[group])]
                    neutral[group] = 0.0
                    neutral[chosen] = 1.0
        return neutral

    def anomaly_map(self, X: np.ndarray, condition: np.ndarray | None = None) -> np.ndarray:
        """Per-pixel ``|x - x_hat|`` of images, ``(n, C, H, W)`` (the input size) float32
        in [0, 1], pixel levels (1 = black against white), ``x_hat`` the expected
        reconstruction clipped to [0, 1]; with ``data.image_pool`` p each value covers a
        p x p block. ``map_scale_`` is the error the map files show white."""
        self._check_image_model()
        features, conditions = self._model_input(X, condition)
        return self._image_preprocessor.upsample(self._pixel_error(features, conditions))

    def _check_image_model(self) -> None:
        check_is_fitted(self, "model_")
        if self.data_kind_ != "image":
            raise DataError("anomaly maps are for image models")

    def _map_batch_rows(self) -> int:
        # As scoring passes are sized, and so the same batches as one anomaly_map call:
        # the peaks come out as they did from the maps of every image at once.
        return self._batch_rows()

    def _map_peaks(self, X: np.ndarray, condition: np.ndarray | None) -> np.ndarray:
        # The pixel error before it is upsampled, as fit reads it: the same peaks, from a
        # p x p times smaller array for a pooled model.
        self._check_image_model()
        return map_peaks(self._pixel_error(*self._model_input(X, condition)))

    def _pixel_error(self, features: np.ndarray, conditions: np.ndarray | None) -> np.ndarray:
        """``|x - x_hat|`` of preprocessed images ``features (n, *input_shape)`` in [0, 1].

        The decoder mean is unbounded and overshoots the pixel range (on a boot scored by
        a model of sneakers it ran from -0.29 to 1.29): unclipped, a black background
        pixel showed an error where the reconstruction was black too, only "blacker".
        Clipped, the map shows only errors a picture can have."""
        reconstruction = self._batched_features(self.model_.reconstruct, features, conditions)
        return np.abs(features - np.clip(reconstruction, 0.0, 1.0))

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to the folder ``path``: JSON + a weights state dict."""
        check_is_fitted(self, "model_")
        path = Path(path)
        neighbours = getattr(self, "latent_neighbours_", None)
        config = to_dict(self.effective_config)
        bank_size = getattr(self, "noise_bank_size_", None)
        if bank_size is not None:  # as it was saved (see _load)
            config["scoring"]["noise_bank_size"] = bank_size
        document = {
            "format_version": FORMAT_VERSION,
            "model": self.effective_config.model.name,
            "config": config,
            "input_shape": list(self.model_.input_shape),
            "condition_dim": self.model_.condition_dim,
            "data_kind": self.data_kind_,
            "condition_classes": getattr(self, "condition_classes_", 0),
            "condition_names": getattr(self, "condition_names_", []),
            "schema": self.preprocessor_.to_dict(),
            "feature_names_in": (
                None
                if getattr(self, "feature_names_in_", None) is None
                else [str(name) for name in self.feature_names_in_]
            ),
            "array_width": self.__dict__.get("_array_width"),
            "threshold": self.threshold_,
            "calibration": self.calibration_,
            "calibration_scores": [float(s) for s in self.calibration_scores_],
            "map_scale": getattr(self, "map_scale_", None),
            "latent_neighbours": None if neighbours is None else neighbours.to_dict(),
            "training": {
                "rows": self.n_training_rows_,
                "best_epoch": self.history_.best_epoch,
                "epochs_run": len(self.history_.epochs),
                "stopped_early": self.history_.stopped_early,
                "seconds": self.history_.seconds,
                "epoch_limit": self.history_.epoch_limit,
                "patience": self.history_.patience,
                "batches_per_epoch": self.history_.batches_per_epoch,
                "history": self.history_.epochs,
                "source": getattr(self, "training_source_", None),
            },
            "versions": {
                "anomaly_vae": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
        # Serialised before any file is written: a value JSON cannot hold (NaN) fails here,
        # not after the weights have replaced those of a model saved in this folder before.
        text = json.dumps(document, indent=2, allow_nan=False)
        # Each file is written whole under a temporary name, then renamed into place,
        # the description last: a reader never sees a half-written file.
        with saving_model_folder(path, CONFIG_FILE):
            save_atomic(path / WEIGHTS_FILE, lambda f: torch.save(self.model_.state_dict(), f))
            if neighbours is not None:
                reference = {"reference": neighbours.reference}
                save_atomic(path / LATENT_FILE, lambda f: torch.save(reference, f))
            save_atomic(path / CONFIG_FILE, lambda f: f.write_text(text))
        return path

    @classmethod
    def load(cls, path: str | Path) -> VAEDetector:
        """Rebuild a detector saved by :meth:`save` (no pickle: JSON + ``weights_only``).

        ModelNotFoundError when ``path`` is not a saved model or is damaged.
        """
        path = Path(path)
        if not path.exists():
            raise ModelNotFoundError(f"model folder {path} does not exist")
        # Checked first: a folder saved over before this version held a detector's files
        # beside a later ensemble, which is the model there (load_saved reads it).
        if (path / ENSEMBLE_FILE).is_file():
            raise ModelNotFoundError(
                f"{path} holds a family ensemble ({ENSEMBLE_FILE}), not one detector: load "
                "it with anomaly_vae.ensemble.load_saved (either kind) or EnsembleDetector.load"
            )
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise ModelNotFoundError(
                f"{path} is not a saved anomaly-vae model "
                f"(expected {CONFIG_FILE} and {WEIGHTS_FILE})"
            )
        with reading_model(path):
            return cls._load(path)

    @classmethod
    def _load(cls, path: Path) -> VAEDetector:
        document = json.loads((path / CONFIG_FILE).read_text())
        if document.get("format_version") != FORMAT_VERSION:
            raise ModelNotFoundError(
                f"{path} has model format {document.get('format_version')}; "
                f"this anomaly-vae reads format {FORMAT_VERSION}"
            )
        # Saved before scoring noise was shared by all rows (noise.py); no longer a setting,
        # but its threshold was set on scores drawn so, which it goes on drawing.
        bank_size = document["config"].get("scoring", {}).pop("noise_bank_size", None)
        try:
            config = from_dict(renamed_to_current(document["config"]), DetectorConfig)
        except ConfigError as exc:
            # Alone, "unknown config key ..." did not say that it is the model's own.
            raise ModelNotFoundError(
                f"{path} holds a config this anomaly-vae does not read (saved by another "
                f"version, or edited): {exc}"
            ) from exc
        detector = cls(config)
        detector.config_ = copy.deepcopy(config)  # as fit keeps it (see fit)
        detector.noise_bank_size_ = None if bank_size is None else int(bank_size)
        detector.data_kind_ = document["data_kind"]
        detector._uses_condition = get_model(config.model.name).uses_condition
        if detector.data_kind_ == "image":
            detector.preprocessor_ = ImagePreprocessor.from_dict(document["schema"])
            detector._image_preprocessor.image_size = config.data.image_size
            detector.condition_classes_ = document["condition_classes"]
            detector.condition_names_ = document.get("condition_names") or [
                str(i) for i in range(detector.condition_classes_)
            ]
        else:
            table = TablePreprocessor.from_dict(document["schema"], config.data)
            detector.preprocessor_ = table
            detector.n_features_in_ = len(table.columns)
            names = document.get("feature_names_in")
            if names is not None:
                if read_as_latin_1(document["schema"]):  # as the schema's (see from_dict)
                    names = latin_1_names_as_read_now(names)
                detector.feature_names_in_ = np.array(names, dtype=object)
            # Absent before 2026-12 (None: a frame's fit): an array fit then had no
            # id or ignored columns, and its width was its features'.
            if document.get("array_width") is not None:
                detector._array_width = int(document["array_width"])
        detector.model_ = detector._build_model(
            config, tuple(document["input_shape"]), document["condition_dim"]
        )
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        detector.model_.load_state_dict(state)
        detector.model_.eval()
        detector.threshold_ = float(document["threshold"])
        detector.offset_ = -detector.threshold_
        detector.calibration_ = document["calibration"]
        detector.score_name_ = detector.calibration_["score"]
        detector.calibration_scores_ = np.asarray(document["calibration_scores"])
        # Absent from models saved before maps had a scale: their maps stay unscaled.
        detector.map_scale_ = document.get("map_scale")
        detector.latent_neighbours_ = None
        if document.get("latent_neighbours") is not None:
            if not (path / LATENT_FILE).is_file():
                raise ModelNotFoundError(f"{path} lacks {LATENT_FILE}, which its scores need")
            reference = torch.load(path / LATENT_FILE, map_location="cpu", weights_only=True)
            detector.latent_neighbours_ = LatentNeighbours.from_dict(
                document["latent_neighbours"], reference["reference"]
            )
        training = document["training"]
        detector.n_training_rows_ = training["rows"]
        detector.training_source_ = training.get("source")
        detector.history_ = TrainingHistory(
            epochs=training["history"],
            best_epoch=training["best_epoch"],
            stopped_early=training["stopped_early"],
            seconds=training["seconds"],
            epoch_limit=training.get("epoch_limit", 0),
            patience=training.get("patience", 0),
            batches_per_epoch=training.get("batches_per_epoch", 0),
        )
        detector._noise = None
        if not math.isfinite(detector.threshold_):
            raise ModelNotFoundError(f"{path} holds a non-finite threshold")
        return detector
