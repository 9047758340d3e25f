"""A rank-averaged ensemble of fitted detectors (the family's extra candidate).

Each member's score is turned into its percentile among that member's scores of
the reference rows (normal rows none of the members trained on: the shared
validation split), and the percentiles are averaged. The result (in [0, 1] within
the reference range, above 1 beyond it) has higher = more anomalous, and is
calibrated like a single detector: the threshold is the ``1 - target_fpr`` quantile
of the ensemble scores of the calibration rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_vae.config import QUANTILE_THRESHOLD, DetectorConfig
from anomaly_vae.data import take_rows
from anomaly_vae.detector import (
    CONFIG_FILE,
    ENSEMBLE_FILE,
    MEMBERS_FOLDER,
    ThresholdedScores,
    VAEDetector,
    as_table_or_images,
    save_atomic,
    saving_model_folder,
)
from anomaly_vae.errors import DataError, ModelNotFoundError, reading_model
from anomaly_vae.explanation import EXPLAINED_COLUMNS, ensemble_not_explained

SCORE_NAME = "ensemble_rank"


def member_score_column(name: str) -> str:
    """The column of member ``name``'s score in the ensemble's scores."""
    return f"score_{name}"


class EnsembleDetector(ThresholdedScores):
    """Mean percentile of member scores. Same scoring API as :class:`VAEDetector`:
    ``anomaly_score`` / ``score_frame`` / ``threshold_`` are higher = more anomalous;
    ``score_samples`` negates; ``predict`` gives -1 for anomalies."""

    score_name = SCORE_NAME

    map_scale_: float | None  # the error its anomaly map files show white (images)

    def __init__(self, members: dict[str, VAEDetector], references: dict[str, np.ndarray]) -> None:
        self.members = members
        self.references = {name: np.sort(values) for name, values in references.items()}

    @classmethod
    def from_members(
        cls,
        members: dict[str, VAEDetector],
        train: pd.DataFrame | np.ndarray,
        condition: np.ndarray | None = None,
    ) -> EnsembleDetector:
        """Build from members fit on the same ``train`` data (``condition``: the images'
        classes, as the members were given them) with the same split. ``train`` is any
        array-like the members' fit takes (:func:`anomaly_vae.detector.as_table_or_images`),
        ``condition`` any ``(n,)`` array-like: its rows are taken by position.

        DataError for members not fit in this session (loaded ones keep no split), fit
        with different splits, or fit on another number of rows than ``train`` has."""
        train = as_table_or_images(train)
        if condition is not None:
            condition = np.asarray(condition)
        _refuse_other_splits(members, len(train))
        first = next(iter(members.values()))
        validation, calibration = (first.split_rows_[k] for k in ("validation", "calibration"))

        def part(rows: np.ndarray) -> tuple[pd.DataFrame | np.ndarray, np.ndarray | None]:
            return take_rows(train, rows), None if condition is None else condition[rows]

        references = {
            name: member.anomaly_score(*part(validation)) for name, member in members.items()
        }
        ensemble = cls(members, references)
        calibration_scores = ensemble.anomaly_score(*part(calibration))
        settings = first.effective_config.calibration
        ensemble.threshold_from_normal_scores(
            calibration_scores,
            settings.target_fpr,
            provisional=settings.method != QUANTILE_THRESHOLD,  # as its members' (detector.py)
        )
        ensemble.n_training_rows_ = dict(first.n_training_rows_)
        # Its own maps' scale (see VAEDetector.map_scale_), from the calibration images.
        ensemble.map_scale_ = None
        if ensemble.data_kind_ == "image":
            images, classes = part(calibration)
            ensemble.map_scale_ = ensemble.normal_map_scale(np.asarray(images), classes)
        return ensemble

    @property
    def effective_config(self) -> DetectorConfig:
        return next(iter(self.members.values())).effective_config

    @property
    def first(self) -> VAEDetector:
        return next(iter(self.members.values()))

    @property
    def data_kind_(self) -> str:
        """``"table"`` or ``"image"``, as the members'."""
        return self.first.data_kind_

    # The input a scikit-learn user checks, as the members': every member was fit on the
    # same data, and each checks it again when it scores. Tables only (AttributeError for
    # images, as the detector has none), and feature_names_in_ only when fit on a DataFrame.
    @property
    def n_features_in_(self) -> int:
        """Number of input columns used as features (tables only)."""
        return self.first.n_features_in_

    @property
    def feature_names_in_(self) -> np.ndarray:
        """Their names, ``(n_features_in_,)`` object array of str; only when the members
        were fit on a DataFrame."""
        return self.first.feature_names_in_

    def all_scores(
        self, X: pd.DataFrame | np.ndarray, condition: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Each member's configured score (``score_<name>``) and the ensemble's."""
        scores = {
            member_score_column(name): m.anomaly_score(X, condition)
            for name, m in self.members.items()
        }
        percentiles = [
            reference_percentile(self.references[name], scores[member_score_column(name)])
            for name in self.members
        ]
        scores[SCORE_NAME] = np.mean(percentiles, axis=0)
        return scores

    def anomaly_map(self, X: np.ndarray, condition: np.ndarray | None = None) -> np.ndarray:
        """The members' per-pixel ``|x - x_hat|`` averaged, ``(n, C, H, W)`` float32 in
        [0, 1] (see :meth:`VAEDetector.anomaly_map`): where the members together
        reconstruct an image worst."""
        maps = [member.anomaly_map(X, condition) for member in self.members.values()]
        return np.stack(maps).mean(axis=0, dtype=np.float32)

    def _map_batch_rows(self) -> int:
        # Its normal_map_scale averages the members' upsampled maps of a batch: as few
        # images as the member with the smallest scoring passes takes.
        return min(member._map_batch_rows() for member in self.members.values())

    def explain(self, X: pd.DataFrame | np.ndarray, top: int = EXPLAINED_COLUMNS) -> pd.DataFrame:
        """Always DataError: an ensemble's score is a mean of its members' ranks, which no
        column's nats add up to; each member explains its own rows
        (``ensemble.members[name].explain(X)``), as ``score --explain`` says."""
        raise ensemble_not_explained()

    def save(self, path: str | Path) -> Path:
        """Write the ensemble to the folder ``path``: each member saved as a detector in
        ``members/<name>/``, then ``ensemble.json`` (references, threshold), as the
        detector saves (:func:`~anomaly_vae.detector.saving_model_folder`): a save
        that fails half-way leaves no ensemble that loads, and no folder it created; a
        detector or the members of an ensemble saved there before are removed."""
        path = Path(path)
        document = {
            "kind": "ensemble",
            "members": list(self.members),
            "references": {name: values.tolist() for name, values in self.references.items()},
            "threshold": self.threshold_,
            "calibration": self.calibration_,
            "calibration_scores": self.calibration_scores_.tolist(),
            "map_scale": getattr(self, "map_scale_", None),
            "rows": self.n_training_rows_,
        }
        # Serialised before any file is written, as the detector's save does.
        text = json.dumps(document, indent=2, allow_nan=False)
        with saving_model_folder(path, ENSEMBLE_FILE):
            for name, member in self.members.items():
                member.save(path / MEMBERS_FOLDER / name)
            save_atomic(path / ENSEMBLE_FILE, lambda f: f.write_text(text))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EnsembleDetector:
        path = Path(path)
        if not (path / ENSEMBLE_FILE).is_file():
            single = (path / CONFIG_FILE).is_file()
            raise ModelNotFoundError(
                f"{path} is not a saved anomaly-vae ensemble"
                + (": it holds one detector (load_saved or VAEDetector.load)" if single else "")
            )
        with reading_model(path):
            document = json.loads((path / ENSEMBLE_FILE).read_text())
            members = {
                name: VAEDetector.load(path / MEMBERS_FOLDER / name) for name in document["members"]
            }
            ensemble = cls(members, {k: np.asarray(v) for k, v in document["references"].items()})
            ensemble.threshold_ = float(document["threshold"])
            ensemble.offset_ = -ensemble.threshold_
            ensemble.calibration_ = document["calibration"]
            ensemble.calibration_scores_ = np.asarray(document["calibration_scores"])
            ensemble.n_training_rows_ = document["rows"]
            ensemble.map_scale_ = document.get("map_scale")  # absent: saved before scales
        return ensemble


def _refuse_other_splits(members: dict[str, VAEDetector], rows: int) -> None:
    """DataError unless every member was fit in this session with one split of ``rows``
    rows: the references are the first member's validation rows, which must be rows no
    member trained on. Without this, a loaded member failed with an AttributeError, a
    ``train`` shorter than the fit's with an IndexError, and members fit with other
    seeds, or a longer ``train``, gave references and a threshold silently wrong."""
    if not members:
        raise DataError("an ensemble needs at least one member")
    unsplit = [name for name, member in members.items() if not hasattr(member, "split_rows_")]
    if unsplit:
        raise DataError(
            f"member {unsplit[0]!r} has no record of the rows it trained on (split_rows_, "
            "set by fit and not saved): build the ensemble from detectors fit in this "
            "session, or load a saved ensemble with load_saved"
        )
    splits = {name: member.split_rows_ for name, member in members.items()}
    (first_name, first), *others = splits.items()
    for name, split in others:
        if any(not np.array_equal(split[part], first[part]) for part in first):
            raise DataError(
                f"members {first_name!r} and {name!r} were fit with different splits of "
                "their rows: fit every member on the same rows with the same training.seed, "
                "training.validation_fraction and calibration.fraction"
            )
    fitted = sum(len(rows) for rows in first.values())
    if rows != fitted:
        item = next(iter(members.values())).score_item
        raise DataError(
            f"train has {rows:,} {item}s and the members were fit on {fitted:,}: pass the "
            "data they were fit on, in the same order"
        )


def reference_percentile(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Share of the sorted ``reference`` scores at or below each score, ``(n,)``.

    Above the largest reference score it goes on growing linearly (1 + excess /
    reference range) instead of stopping at 1: rows more extreme than every reference
    row must still rank among themselves, and a threshold must stay reachable. A NaN
    score (a row the member cannot score) stays NaN, so the ensemble flags the row as
    the member does; searchsorted would rank it above every reference score, at 1.
    """
    percentile = np.searchsorted(reference, scores, side="right") / len(reference)
    spread = max(float(reference[-1] - reference[0]), 1e-12)
    beyond = scores > reference[-1]
    percentile[beyond] = 1.0 + (scores[beyond] - reference[-1]) / spread
    percentile[np.isnan(scores)] = np.nan
    return percentile


def load_saved(path: str | Path) -> VAEDetector | EnsembleDetector:
    """Load a saved detector or ensemble folder, whichever it is."""
    path = Path(path)
    if (path / ENSEMBLE_FILE).is_file():
        return EnsembleDetector.load(path)
    return VAEDetector.load(path)
