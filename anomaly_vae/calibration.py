"""Thresholds from scores, and labelled evaluation with scikit-learn metrics.

Scores here are anomaly scores: higher = more anomalous; a row is flagged when
its score is strictly above the threshold.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn import metrics

logger = logging.getLogger(__name__)


def quantile_threshold(normal_scores: np.ndarray, target_fpr: float) -> float:
    """The (1 - target_fpr) quantile of held-out normal scores.

    On fresh normal data from the same distribution, about ``target_fpr`` of rows
    score above it. ``normal_scores (n,)``. The quantile is taken conservatively
    (the next observed score up, not an interpolation), so at most ``target_fpr``
    of the calibration rows lie above it even when they are few.
    """
    scores = np.asarray(normal_scores, dtype=np.float64)
    if scores.size * target_fpr < 1:
        logger.warning(
            "%d calibration rows cannot resolve a %.2g%% false-positive rate (need %d); "
            "the threshold is the highest calibration score",
            scores.size,
            100 * target_fpr,
            int(np.ceil(1 / target_fpr)),
        )
    return float(np.quantile(scores, 1.0 - target_fpr, method="higher"))


def calibration_summary(
    normal_scores: np.ndarray, threshold: float, target_fpr: float
) -> dict[str, Any]:
    """How the threshold was chosen, as saved with the model and logged to MLflow."""
    scores = np.asarray(normal_scores, dtype=np.float64)
    return {
        "method": "quantile of held-out normal scores",
        "target_fpr": target_fpr,
        "threshold": threshold,
        "n_calibration": int(scores.size),
        "calibration_fpr": float(np.mean(scores > threshold)),
        "calibration_score_quantiles": {
            f"q{q:g}": float(np.quantile(scores, q / 100)) for q in (1, 5, 25, 50, 75, 95, 99)
        },
    }


def evaluate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Labelled evaluation. ``labels (n,)`` bool, True = anomaly; ``scores (n,)``.

    Returns AUROC, AUCPR (average precision), the ROC and PR curves, the F1-optimal
    threshold, and the confusion matrix and rates at ``threshold``.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.all() or not labels.any():
        raise ValueError("evaluation needs both normal and anomalous rows")
    fpr, tpr, roc_thresholds = metrics.roc_curve(labels, scores)
    precision, recall, pr_thresholds = metrics.precision_recall_curve(labels, scores)
    # precision/recall have one more entry than thresholds (the end point recall = 0).
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    predicted = scores > threshold
    tn, fp, fn, tp = metrics.confusion_matrix(labels, predicted, labels=[False, True]).ravel()
    return {
        "n_normal": int((~labels).sum()),
        "n_anomalous": int(labels.sum()),
        "auroc": float(metrics.roc_auc_score(labels, scores)),
        "aucpr": float(metrics.average_precision_score(labels, scores)),
        # precision_recall_curve flags score >= t, so the F1-optimal rule is "score >= t".
        "f1_optimal_threshold": float(pr_thresholds[best]),
        "f1_optimal": float(f1[best]),
        "threshold": float(threshold),
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "precision": float(tp / max(tp + fp, 1)),
        "recall": float(tp / max(tp + fn, 1)),
        "f1": float(metrics.f1_score(labels, predicted, zero_division=0)),
        "false_positive_rate": float(fp / max(fp + tn, 1)),
        "curves": {
            "roc": {
                "fpr": fpr.tolist(),
                "tpr": tpr.tolist(),
                "thresholds": roc_thresholds.tolist(),
            },
            "pr": {"precision": precision.tolist(), "recall": recall.tolist()},
        },
    }
