"""Thresholds chosen on labelled rows: the F1-optimal one and the one of a target recall."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score

from anomaly_vae.calibration import labelled_summary, labelled_threshold


def _overlapping(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)``: 200 normal and 40 anomalous scores that overlap, with ties."""
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(0, 1, 200), rng.normal(1.5, 1, 40)].round(1)
    return np.r_[np.zeros(200, bool), np.ones(40, bool)], scores


def _every_cut(scores: np.ndarray) -> np.ndarray:
    """A threshold between every pair of neighbouring distinct scores, and below all."""
    distinct = np.unique(scores)
    return np.r_[distinct[0] - 1, (distinct[:-1] + distinct[1:]) / 2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_threshold_is_the_best_cut(seed):
    labels, scores = _overlapping(seed)
    threshold = labelled_threshold(labels, scores, "f1", target_recall=0.9)
    best = max(f1_score(labels, scores > cut) for cut in _every_cut(scores))
    assert f1_score(labels, scores > threshold) == pytest.approx(best)
    assert not np.isin(threshold, scores)  # strictly between two scores: no tie at the cut


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_recall_threshold_is_the_highest_cut_reaching_the_target(target):
    labels, scores = _overlapping(3)
    threshold = labelled_threshold(labels, scores, "recall", target_recall=target)
    assert recall_score(labels, scores > threshold) >= target
    higher_cuts = [cut for cut in _every_cut(scores) if cut > threshold]
    assert all(recall_score(labels, scores > cut) < target for cut in higher_cuts)


def test_separable_scores_are_cut_between_the_classes():
    labels = np.r_[np.zeros(5, bool), np.ones(3, bool)]
    scores = np.array([0.0, 1, 2, 3, 4, 10, 11, 12])
    assert labelled_threshold(labels, scores, "f1", 0.9) == 7.0
    assert labelled_threshold(labels, scores, "recall", 1.0) == 7.0


def test_a_threshold_chosen_on_few_labelled_rows_is_warned_about(caplog):
    import logging

    labels, scores = _overlapping(0)  # 200 normal and 40 anomalous rows: no warning
    with caplog.at_level(logging.WARNING):
        labelled_threshold(labels, scores, "f1", 0.9)
    assert "labelled rows" not in caplog.text
    few = np.r_[np.zeros(5, bool), np.ones(3, bool)]
    with caplog.at_level(logging.WARNING):
        labelled_threshold(few, np.arange(8.0), "recall", 0.9)
    assert "chosen on 3 anomalous and 5 normal labelled rows" in caplog.text


def test_summary_separates_the_labelled_rows_from_the_held_out_normals():
    labels = np.r_[np.zeros(5, bool), np.ones(3, bool)]
    scores = np.array([0.0, 1, 2, 8, 4, 10, 11, 6])
    held_out_normal = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    summary = labelled_summary(labels, scores, 5.0, "recall", 1.0, held_out_normal, 0.01)
    assert summary["method"] == "recall" and summary["target_recall"] == 1.0
    assert summary["labelled_recall"] == 1.0
    assert summary["labelled_precision"] == pytest.approx(3 / 4)
    assert summary["labelled_fpr"] == pytest.approx(1 / 5)
    assert summary["calibration_fpr"] == pytest.approx(4 / 10)  # 6, 7, 8, 9 > 5


def test_one_class_or_an_unknown_method_is_an_error():
    scores = np.arange(4.0)
    with pytest.raises(ValueError, match="both classes"):
        labelled_threshold(np.zeros(4, bool), scores, "f1", 0.9)
    with pytest.raises(ValueError, match="no labelled threshold method"):
        labelled_threshold(np.array([0, 0, 1, 1], bool), scores, "youden", 0.9)


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluation_reports_the_f1_threshold_under_the_flagging_rule(seed):
    from anomaly_vae.calibration import evaluate

    labels, scores = _overlapping(seed)  # ties: a ">=" cut would flag more rows than ">"
    report = evaluate(labels, scores, threshold=0.0)
    flagged = scores > report["f1_optimal_threshold"]  # how the detector flags
    assert f1_score(labels, flagged) == pytest.approx(report["f1_optimal"])
    assert report["f1_optimal_threshold"] == labelled_threshold(labels, scores, "f1", 0.9)
