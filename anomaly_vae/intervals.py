"""Bootstrap confidence intervals of AUROC and AUCPR on a labelled evaluation set.

Labelled evaluation sets often hold few anomalies (tens), and their AUROC and AUCPR
then move by points with a row more or less; the interval says how far. Normal and
anomalous rows are resampled apart (a stratified bootstrap: every resample keeps the
class counts, so both metrics stay defined) with scipy's percentile bootstrap. Both
metrics are computed for a whole batch of resamples at once, equal to scikit-learn's
``roc_auc_score`` and ``average_precision_score`` (ties included).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

# Resampled scores ranked at once: about 80 bytes of working arrays each, so about 80 MB
# (10,000,000 took 790 MB, and was slower: 3.0 s against 1.3 s for 10,000 rows).
BATCH_CELLS = 1_000_000
MIN_CLASS_ROWS = 2  # rows of each class an interval needs (scipy's bootstrap needs 2)


def ranked_metrics(normal: np.ndarray, anomalous: np.ndarray, axis: int = -1) -> np.ndarray:
    """``(2, *batch)``: AUROC and average precision (AUCPR) of anomaly scores
    ``anomalous`` (higher = more anomalous) against ``normal``, along ``axis``; the other
    axes are batch axes, alike in both (scipy's vectorised statistic).

    >>> ranked_metrics(np.array([0.1, 0.4, 0.4]), np.array([0.4, 0.9])).round(4).tolist()
    [0.8333, 0.75]
    """
    normal = np.moveaxis(np.asarray(normal, dtype=np.float64), axis, -1)
    anomalous = np.moveaxis(np.asarray(anomalous, dtype=np.float64), axis, -1)
    n_normal, n_anomalous = normal.shape[-1], anomalous.shape[-1]
    scores = np.concatenate([normal, anomalous], axis=-1)
    is_anomaly = np.zeros(scores.shape)
    is_anomaly[..., n_normal:] = 1.0
    order = np.argsort(-scores, axis=-1, kind="stable")  # highest first
    scores = np.take_along_axis(scores, order, axis=-1)
    is_anomaly = np.take_along_axis(is_anomaly, order, axis=-1)
    # A threshold falls between distinct scores only: each row takes the first and last
    # position of its run of equal scores.
    position = np.arange(scores.shape[-1])
    edge = np.ones((*scores.shape[:-1], 1), dtype=bool)
    differs = scores[..., 1:] != scores[..., :-1]
    starts = np.concatenate([edge, differs], axis=-1)
    ends = np.concatenate([differs, edge], axis=-1)
    run_start = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    run_end = np.where(ends, position, position.size)
    run_end = np.flip(np.minimum.accumulate(np.flip(run_end, -1), axis=-1), -1)
    # Average precision: each anomaly adds the precision of the threshold that flags it.
    flagged_anomalies = np.take_along_axis(np.cumsum(is_anomaly, axis=-1), run_end, axis=-1)
    precision = flagged_anomalies / (run_end + 1)
    average_precision = (is_anomaly * precision).sum(axis=-1) / n_anomalous
    # AUROC as the Mann-Whitney statistic, from the anomalies' ascending mid-ranks.
    rank = position.size - (run_start + run_end) / 2
    rank_sum = (is_anomaly * rank).sum(axis=-1)
    auroc = (rank_sum - n_anomalous * (n_anomalous + 1) / 2) / (n_normal * n_anomalous)
    # Summed in floating point, a perfect ranking can come out a hair above 1.
    return np.clip(np.stack([auroc, average_precision]), 0.0, 1.0)


def metric_intervals(
    labels: np.ndarray, scores: np.ndarray, level: float, resamples: int, seed: int
) -> dict[str, list[float]]:
    """``{"auroc_interval": [low, high], "aucpr_interval": [low, high]}``: percentile
    bootstrap intervals at confidence ``level`` (e.g. 0.95) from ``resamples`` stratified
    resamples of ``labels (n,)`` (True = anomaly) and ``scores (n,)``, seeded by ``seed``.

    Empty when either class has fewer than ``MIN_CLASS_ROWS`` rows: one anomaly gives
    every resample the same ranks to choose from, and no interval worth the name.

    Cost: one sort per resample; about 1.3 s for 10,000 rows and 1,000 resamples on one
    core.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if min(labels.sum(), (~labels).sum()) < MIN_CLASS_ROWS:
        return {}
    result = stats.bootstrap(
        (scores[~labels], scores[labels]),
        ranked_metrics,
        n_resamples=resamples,
        batch=max(1, BATCH_CELLS // len(scores)),
        vectorized=True,
        paired=False,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return {
        "auroc_interval": [float(low[0]), float(high[0])],
        "aucpr_interval": [float(low[1]), float(high[1])],
    }


def shown_metric(evaluation: dict[str, Any], name: str) -> str:
    """``AUROC 93.10% (95% interval 88.02 to 97.13)``: metric ``name`` ("auroc" or
    "aucpr") of an evaluation in percent, with its bootstrap interval when it has one."""
    text = f"{name.upper()} {100 * evaluation[name]:.2f}%"
    if f"{name}_interval" in evaluation:
        low, high = (100 * bound for bound in evaluation[f"{name}_interval"])
        level = 100 * evaluation["interval_level"]
        text += f" ({level:g}% interval {low:.2f} to {high:.2f})"
    return text
