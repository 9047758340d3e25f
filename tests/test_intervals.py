"""Bootstrap intervals of AUROC and AUCPR."""

import numpy as np
import pytest
from sklearn import metrics

from anomaly_vae.intervals import metric_intervals, ranked_metrics


@pytest.mark.parametrize("tied", [False, True])
def test_ranked_metrics_equal_scikit_learns_for_every_resample_of_a_batch(tied):
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, (6, 40))
    anomalous = rng.normal(1, 1, (6, 7))
    if tied:  # whole numbers: many ties, within and across the classes
        normal, anomalous = np.round(normal), np.round(anomalous)
    got = ranked_metrics(normal, anomalous)
    assert got.shape == (2, 6)
    labels = np.r_[np.zeros(40), np.ones(7)]
    for i in range(6):
        scores = np.r_[normal[i], anomalous[i]]
        assert got[0, i] == pytest.approx(metrics.roc_auc_score(labels, scores))
        assert got[1, i] == pytest.approx(metrics.average_precision_score(labels, scores))


def test_intervals_hold_the_estimate_narrow_with_more_anomalies_and_repeat_by_seed():
    rng = np.random.default_rng(1)

    def sample(n_normal, n_anomalous):
        labels = np.r_[np.zeros(n_normal), np.ones(n_anomalous)].astype(bool)
        return labels, np.r_[rng.normal(0, 1, n_normal), rng.normal(1.5, 1, n_anomalous)]

    few = sample(100, 10)
    many = sample(5000, 500)
    width = {}
    for name, (labels, scores) in (("few", few), ("many", many)):
        found = metric_intervals(labels, scores, level=0.95, resamples=500, seed=0)
        point = {
            "auroc": metrics.roc_auc_score(labels, scores),
            "aucpr": metrics.average_precision_score(labels, scores),
        }
        for metric, value in point.items():
            low, high = found[f"{metric}_interval"]
            assert low < value < high
        width[name] = np.diff(found["auroc_interval"]).item()
    assert width["many"] < width["few"] / 3  # 50 times the rows: about a seventh as wide
    again = metric_intervals(*few, level=0.95, resamples=500, seed=0)
    assert again == metric_intervals(*few, level=0.95, resamples=500, seed=0)
    narrower = metric_intervals(*few, level=0.5, resamples=500, seed=0)["auroc_interval"]
    assert np.diff(narrower).item() < width["few"]


def test_too_few_rows_of_a_class_give_no_interval_and_few_resamples_are_refused():
    from anomaly_vae.config import load_config
    from anomaly_vae.errors import ConfigError

    scores = np.arange(12.0)
    for anomalous in (1, 11):  # one anomaly, or one normal row
        labels = np.arange(12) >= 12 - anomalous
        assert metric_intervals(labels, scores, level=0.95, resamples=200, seed=0) == {}
    labels = np.arange(12) >= 10  # two of each class are enough
    assert set(metric_intervals(labels, scores, 0.95, 200, 0)) == {
        "auroc_interval",
        "aucpr_interval",
    }
    with pytest.raises(ConfigError, match="0 \\(no intervals\\) or at least 100"):
        load_config(overrides=["evaluation.interval_resamples=1"])
    assert load_config(overrides=["evaluation.interval_resamples=0"]).evaluation
