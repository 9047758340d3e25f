"""Thresholds from scores, and labelled evaluation with scikit-learn metrics.

Scores here are anomaly scores: higher = more anomalous; a row is flagged when
its score is strictly above the threshold.

Threshold methods (``calibration.method``): ``quantile`` needs only normal rows (the
held-out calibration rows of a fit); ``f1`` and ``recall`` choose the threshold on
labelled rows, from the precision-recall and the ROC curve.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, cast

import numpy as np
from scipy import stats
from sklearn import metrics

from anomaly_vae.config import LABELLED_THRESHOLD_METHODS as LABELLED_METHODS
from anomaly_vae.config import QUANTILE_THRESHOLD as QUANTILE
from anomaly_vae.config import EvaluationConfig
from anomaly_vae.intervals import MIN_CLASS_ROWS, metric_intervals

logger = logging.getLogger(__name__)

# Points kept of each curve in an evaluation (evaluation.json, the ROC and PR plots):
# scikit-learn's have up to a point per labelled row, megabytes of JSON for a large
# evaluation; 1,000 points along a curve draw it
# to within a thousandth of its length, finer than the plots' pixels. AUROC, AUCPR and
# the F1-optimal threshold are computed from every score.
CURVE_POINTS = 1_000
FEW_LABELLED_ROWS = 10  # fewer labelled rows of a class than this get a warning: one
# more row can move an F1- or recall-chosen threshold past many scores
SCORE_PERCENTILES = (1, 5, 25, 50, 75, 95, 99)  # of the calibration scores, in calibration.json
FEW_ROWS_ABOVE = 5  # fewer calibration rows above a quantile threshold than this: its rate
# on new rows is uncertain by a factor of 4.6 (90% interval of 4 above: 2.0/n to 9.2/n) or
# more (1 above: 0.36/n to 4.7/n), and the summary says how many rows would pin it down

METHOD_DESCRIPTIONS = {
    QUANTILE: "quantile of held-out normal scores",
    "f1": "F1-optimal on the precision-recall curve",
    "recall": "the highest reaching the target recall on the ROC curve",
}
# calibrate --method quantile: its rows are new normal ones, not the fit's held-out rows
RECALIBRATED_QUANTILE_DESCRIPTION = "quantile of the normal scores it was recalibrated on"


def quantile_threshold(
    normal_scores: np.ndarray, target_fpr: float, warn: bool = True, item: str = "row"
) -> float:
    """The (1 - target_fpr) quantile of held-out normal scores.

    On fresh normal data from the same distribution, about ``target_fpr`` of rows
    score above it. ``normal_scores (n,)``. The quantile is taken conservatively
    (the next observed score up, not an interpolation), so at most ``target_fpr``
    of the calibration rows lie above it even when they are few, which is warned
    about unless ``warn`` is False (a threshold that labelled rows replace next);
    ``item``: what a score is of, ``"row"`` or ``"image"``, for the warning.
    """
    scores = np.asarray(normal_scores, dtype=np.float64)
    if warn and scores.size * target_fpr < 1:
        logger.warning(
            "%d calibration %ss cannot resolve a %.2g%% false-positive rate (need %d); "
            "a quantile threshold on them is their highest score",
            scores.size,
            item,
            100 * target_fpr,
            int(np.ceil(1 / target_fpr)),
        )
    return float(np.quantile(scores, 1.0 - target_fpr, method="higher"))


def expected_fpr(n: int, above: int, level: float) -> dict[str, float]:
    """The false-positive rate to expect on new normal rows of a threshold taken at one of
    ``n`` calibration scores, with ``above`` of them strictly above it: its mean and a
    central ``level`` interval (``calibration.expected_fpr_level``), shares in [0, 1] (keys
    ``expected_fpr_mean``, ``expected_fpr_low``, ``expected_fpr_high``,
    ``expected_fpr_level``).

    For exchangeable rows (calibration rows and new rows from the same distribution), the
    share of new rows above the ``k``-th largest of ``n`` scores (the coverage of an
    order statistic) follows ``Beta(k, n + 1 - k)``, whatever the scores' distribution;
    here ``k = above + 1``. Scores tied with the threshold are not flagged, and only make
    the rate lower than this says (the interval is then conservative). A rate in the
    interval is what a share ``level`` of calibration sets would give; the calibration
    rows' own rate, ``above / n``, is lower on average.

    >>> rate = expected_fpr(150, 1, 0.9)  # 1% of 150 scores: the 2nd largest
    >>> [round(100 * rate[f"expected_fpr_{k}"], 2) for k in ("low", "mean", "high")]
    [0.24, 1.32, 3.12]
    """
    if not 0 <= above < n:
        raise ValueError(f"{above} of {n} calibration scores above the threshold")
    _check_level(level)
    k = above + 1
    low, high = stats.beta.ppf([(1 - level) / 2, (1 + level) / 2], k, n + 1 - k)
    return {
        "expected_fpr_mean": k / (n + 1),
        "expected_fpr_low": float(low),
        "expected_fpr_high": float(high),
        "expected_fpr_level": level,
    }


def fixed_threshold_fpr(n: int, above: int, level: float) -> dict[str, float]:
    """The false-positive rate to expect on new normal rows of a threshold chosen without
    ``n`` held-out normal scores (on other rows, labelled ones), ``above`` of which lie
    strictly above it: an estimate and a ``level`` interval (``calibration.
    expected_fpr_level``), shares in [0, 1], under the keys of :func:`expected_fpr`.

    The threshold is fixed with respect to these rows, so the count above it is
    binomial, ``Binomial(n, p)`` for the threshold's rate ``p`` on new rows, whatever the
    scores' distribution and ties (a tied score is not above). The interval is the exact
    (Clopper-Pearson) one, the order-statistic argument of :func:`expected_fpr` on both
    sides: the threshold lies between the ``above``-th and the ``above + 1``-th largest
    score, whose coverages follow ``Beta(above, n + 1 - above)`` and ``Beta(above + 1, n -
    above)``, and the interval runs from the ``(1 - level) / 2`` quantile of the first to
    the ``(1 + level) / 2`` quantile of the second (0 when none is above, 1 when all are).
    It holds ``p`` for at least a share ``level`` of held-out sets, whatever ``p``; the
    estimate, ``above / n``, is unbiased.

    >>> rate = fixed_threshold_fpr(150, 1, 0.9)
    >>> [round(100 * rate[f"expected_fpr_{k}"], 2) for k in ("low", "mean", "high")]
    [0.03, 0.67, 3.12]
    """
    if not 0 <= above <= n or n < 1:
        raise ValueError(f"{above} of {n} held-out scores above the threshold")
    _check_level(level)
    tail = (1 - level) / 2
    low = stats.beta.ppf(tail, above, n + 1 - above) if above > 0 else 0.0
    high = stats.beta.ppf(1 - tail, above + 1, n - above) if above < n else 1.0
    return {
        "expected_fpr_mean": above / n,
        "expected_fpr_low": float(low),
        "expected_fpr_high": float(high),
        "expected_fpr_level": level,
    }


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"the interval's level must be in (0, 1), not {level}")


def rows_to_pin_down(target_fpr: float, above: int = FEW_ROWS_ABOVE) -> int:
    """About the fewest calibration rows whose quantile threshold (:func:`quantile_threshold`)
    has ``above`` of them above it, for distinct scores: ``(n - 1) target_fpr`` of them are.

    >>> rows_to_pin_down(0.01)
    501
    """
    return int(np.ceil(above / target_fpr)) + 1


def calibration_summary(
    normal_scores: np.ndarray, threshold: float, target_fpr: float, level: float
) -> dict[str, Any]:
    """How a quantile threshold was chosen on the calibration scores ``normal_scores (n,)``,
    as saved with the model and logged to MLflow: with the false-positive rate to expect
    on new normal rows and its ``level`` interval (:func:`expected_fpr`), as the threshold
    is one of these scores."""
    scores = np.asarray(normal_scores, dtype=np.float64)
    above = int(np.count_nonzero(scores > threshold))
    return _held_out_summary(scores, threshold, target_fpr) | expected_fpr(
        scores.size, above, level
    )


def _held_out_summary(scores: np.ndarray, threshold: float, target_fpr: float) -> dict[str, Any]:
    """The calibration rows' figures at ``threshold``, whichever method chose it."""
    return {
        "method": QUANTILE,
        "description": METHOD_DESCRIPTIONS[QUANTILE],
        "target_fpr": target_fpr,
        "threshold": threshold,
        "n_calibration": int(scores.size),
        "calibration_fpr": float(np.mean(scores > threshold)),
        "calibration_score_quantiles": {
            f"q{q:g}": float(value)
            for q, value in zip(
                SCORE_PERCENTILES, np.percentile(scores, SCORE_PERCENTILES), strict=True
            )
        },
    }


def labelled_threshold(
    labels: np.ndarray, scores: np.ndarray, method: str, target_recall: float, item: str = "row"
) -> float:
    """A threshold chosen on labelled rows. ``labels (n,)`` bool, True = anomaly, both
    classes present; ``scores (n,)``; ``item``: what a score is of, ``"row"`` or
    ``"image"``, for the warning that few are labelled.

    ``f1``: the threshold of highest F1 on the precision-recall curve. ``recall``: the
    highest threshold that flags at least ``target_recall`` of the anomalies (the ROC
    point of lowest false-positive rate at that recall). The curves flag ``score >= t``;
    the threshold returned lies halfway between ``t`` and the next lower score, so that
    ``score > threshold`` flags the same rows and new scores between them split evenly.
    """
    labels, scores = _checked(labels, scores)
    counts = {"anomalous": int(labels.sum()), "normal": int((~labels).sum())}
    if min(counts.values()) < FEW_LABELLED_ROWS:
        logger.warning(
            "the %s threshold is chosen on %d anomalous and %d normal labelled %ss; with "
            "fewer than %d of a class it can move far with one more %s",
            method,
            counts["anomalous"],
            counts["normal"],
            item,
            FEW_LABELLED_ROWS,
            item,
        )
    if method == "f1":
        flag_from, _ = _best_f1_cut(*metrics.precision_recall_curve(labels, scores))
    elif method == "recall":
        _, true_positive_rate, thresholds = metrics.roc_curve(
            labels, scores, drop_intermediate=False
        )
        flag_from = thresholds[int(np.argmax(true_positive_rate >= target_recall))]
    else:
        raise ValueError(f"no labelled threshold method {method!r}: use one of {LABELLED_METHODS}")
    return _threshold_below(scores, flag_from)


def _best_f1_cut(
    precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray
) -> tuple[float, float]:
    """``(t, F1)``: the cut of best F1 on a precision-recall curve (as
    ``metrics.precision_recall_curve`` returns it, flagging ``score >= t``), and that F1."""
    # precision/recall have one more entry than thresholds (the end point recall = 0).
    f1 = _f1(precision[:-1], recall[:-1])
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def _threshold_below(scores: np.ndarray, flag_from: float) -> float:
    """The threshold for ``score > threshold`` that flags what ``score >= flag_from``
    flags: halfway between ``flag_from`` and the next lower score."""
    below = scores[scores < flag_from]
    return float((flag_from + below.max()) / 2 if below.size else np.nextafter(flag_from, -np.inf))


def labelled_summary(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    method: str,
    target_recall: float,
    normal_scores: np.ndarray,
    target_fpr: float,
    level: float,
) -> dict[str, Any]:
    """How a labelled threshold was chosen, and what it gives: precision, recall and
    false-positive rate on the labelled rows that chose it (optimistic), and the
    false-positive rate on the held-out normal ``normal_scores``, which took no part,
    with the rate to expect on new normal rows and its ``level`` interval
    (:func:`fixed_threshold_fpr`)."""
    labels, scores = _checked(labels, scores)
    flagged = scores > threshold
    held_out = np.asarray(normal_scores, dtype=np.float64)
    # Not calibration_summary: its interval is that of a threshold that is one of the
    # calibration scores; this one was fixed without them, so their count above it is
    # binomial.
    summary = _held_out_summary(held_out, threshold, target_fpr)
    summary |= fixed_threshold_fpr(
        held_out.size, int(np.count_nonzero(held_out > threshold)), level
    )
    summary |= {
        "method": method,
        "description": METHOD_DESCRIPTIONS[method],
        "n_labelled": int(labels.size),
        "n_labelled_anomalous": int(labels.sum()),
        "labelled_precision": float(metrics.precision_score(labels, flagged, zero_division=0)),
        "labelled_recall": float(metrics.recall_score(labels, flagged, zero_division=0)),
        "labelled_fpr": float(flagged[~labels].mean()),
    }
    if method == "recall":
        summary["target_recall"] = target_recall
    return summary


EXPECTED_FPR_KEYS = ("expected_fpr_mean", "expected_fpr_low", "expected_fpr_high")
# The key of a calibration record whose calibration rows are not the fit's held-out ones
# but the normal rows of a `calibrate --method quantile` (kept by later labelled
# thresholds, which are counted on them): what `calibrate` read them from, the identity
# of a table file or of image folders (anomaly_vae.fitting.training_file,
# training_images), or None when not known (Python's calibrate_threshold)
CALIBRATION_ROWS_FROM = "calibration_rows_from"


def calibration_rows_from(summary: dict[str, Any]) -> dict[str, Any] | Literal[False] | None:
    """What the calibration rows of the threshold ``summary`` describes were read from:
    False when they are the fit's held-out rows, else the record under
    :data:`CALIBRATION_ROWS_FROM` (None: not known, as for a model saved before it was
    kept whose rows a quantile calibration replaced)."""
    if CALIBRATION_ROWS_FROM in summary:
        return cast("dict[str, Any] | None", summary[CALIBRATION_ROWS_FROM])
    if summary.get("description") == RECALIBRATED_QUANTILE_DESCRIPTION:
        return None
    return False


def withhold_expected_fpr(summary: dict[str, Any], reason: str) -> None:
    """Drop the expected false-positive rate of a labelled threshold's ``summary`` (in
    place) when its held-out normal rows may have been among the rows that chose it, and
    say why under ``expected_fpr_withheld``: :func:`fixed_threshold_fpr` needs a threshold
    fixed without them."""
    for key in (*EXPECTED_FPR_KEYS, "expected_fpr_level"):
        summary.pop(key, None)
    summary["expected_fpr_withheld"] = reason


def _checked(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels for {scores.size} scores")
    if labels.all() or not labels.any():
        raise ValueError("labelled rows of both classes are needed (normal and anomalous)")
    return labels, scores


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    return 2 * precision * recall / np.maximum(precision + recall, 1e-12)


def evaluate(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    intervals: EvaluationConfig | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Labelled evaluation. ``labels (n,)`` bool, True = anomaly; ``scores (n,)``.

    Returns AUROC, AUCPR (average precision), the ROC and PR curves (at most
    ``CURVE_POINTS`` points of each, :func:`curve_points`; the figures and the F1-optimal
    threshold are computed from every score), the F1-optimal
    threshold (as ``calibration.method`` f1 would choose it: ``score >`` it flags the
    rows of best F1), and the confusion matrix and rates at ``threshold``; with
    ``intervals`` (its ``interval_resamples`` above 0), bootstrap intervals of AUROC and
    AUCPR (:func:`anomaly_vae.intervals.metric_intervals`, seeded by ``seed``).
    """
    labels, scores = _checked(labels, scores)
    fpr, tpr, roc_thresholds = metrics.roc_curve(labels, scores)
    precision, recall, pr_thresholds = metrics.precision_recall_curve(labels, scores)
    f1_flag_from, best_f1 = _best_f1_cut(precision, recall, pr_thresholds)
    roc_points, pr_points = curve_points(fpr, tpr), curve_points(recall, precision)
    predicted = scores > threshold
    tn, fp, fn, tp = metrics.confusion_matrix(labels, predicted, labels=[False, True]).ravel()
    interval: dict[str, Any] = {}
    if intervals is not None and intervals.interval_resamples > 0:
        level, resamples = intervals.interval_level, intervals.interval_resamples
        interval = dict(metric_intervals(labels, scores, level, resamples, seed))
        if interval:
            interval["interval_level"] = level
        else:
            logger.warning(
                "no bootstrap interval of AUROC and AUCPR: the labelled rows hold %d normal "
                "and %d anomalous (it needs %d of each)",
                (~labels).sum(),
                labels.sum(),
                MIN_CLASS_ROWS,
            )
    return {
        "n_normal": int((~labels).sum()),
        "n_anomalous": int(labels.sum()),
        "auroc": float(metrics.roc_auc_score(labels, scores)),
        "aucpr": float(metrics.average_precision_score(labels, scores)),
        **interval,
        # the value calibration.method f1 would choose: "score > it" reaches best_f1
        "f1_optimal_threshold": _threshold_below(scores, f1_flag_from),
        "f1_optimal": best_f1,
        "threshold": float(threshold),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "precision": float(tp / max(tp + fp, 1)),
        "recall": float(tp / max(tp + fn, 1)),
        "f1": float(metrics.f1_score(labels, predicted, zero_division=0)),
        "false_positive_rate": float(fp / max(fp + tn, 1)),
        "curves": {
            "roc": {
                "fpr": fpr[roc_points].tolist(),
                "tpr": tpr[roc_points].tolist(),
                "thresholds": roc_thresholds[roc_points].tolist(),
            },
            "pr": {
                "precision": precision[pr_points].tolist(),
                "recall": recall[pr_points].tolist(),
            },
        },
    }


def curve_points(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> np.ndarray:
    """Positions of at most ``points`` (2 or more) points of the curve through ``(x, y)``
    (``(n,)`` each, in the curve's order) that draw it as all of them do: the last point,
    and the first point at or past each of ``points - 1`` equal steps of the length along
    the curve from the first, so that every point left out lies within one step (the
    curve's length / ``(points - 1)``, in the units of ``x`` and ``y``) along the curve
    of a point kept. Sorted ``(k,)`` int; all ``n`` positions when ``n <= points``.

    >>> curve_points(np.arange(11.0), np.zeros(11), points=3).tolist()
    [0, 5, 10]
    """
    n = len(x)
    if n <= points:
        return np.arange(n)
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    steps = np.linspace(0.0, length[-1], points)[:-1]  # the last point is kept as it is
    return np.unique(np.r_[np.searchsorted(length, steps), n - 1])
