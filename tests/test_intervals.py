"""Bootstrap intervals of AUROC and AUCPR."""

import numpy as np
import pytest
from sklearn import metrics

from anomaly_vae.intervals import _score_bins, grouped_metrics, metric_intervals


@pytest.mark.parametrize("tied", [False, True])
def test_metrics_of_resampled_counts_equal_scikit_learns_with_those_weights(tied):
    # A resample weighs each row by how often it was drawn; the metrics, from counts per
    # bin of scores, must equal scikit-learn's with those weights on the rows.
    rng = np.random.default_rng(0)
    normal, anomalous = rng.normal(0, 1, 40), rng.normal(1, 1, 7)
    if tied:  # whole numbers: many ties, within and across the classes
        normal, anomalous = np.round(normal), np.round(anomalous)
    normal_bin, anomalous_bin, bins = _score_bins(normal, anomalous)
    labels = np.r_[np.zeros(40), np.ones(7)]
    for draws in range(6):
        weights = rng.integers(0, 3, size=47) if draws else np.ones(47, dtype=int)
        weights[[0, 40]] = 1  # each class keeps a row
        got = grouped_metrics(
            np.bincount(normal_bin, weights[:40], minlength=bins),
            np.bincount(anomalous_bin, weights[40:], minlength=bins),
        )
        scores = np.r_[normal, anomalous]
        expected = [
            metrics.roc_auc_score(labels, scores, sample_weight=weights),
            metrics.average_precision_score(labels, scores, sample_weight=weights),
        ]
        np.testing.assert_allclose(got, expected, rtol=1e-12)


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


@pytest.mark.parametrize("bin_cost", [0, 10**9])  # multinomial counts, or rows drawn
def test_both_ways_of_resampling_draw_each_bin_as_often_as_it_holds_rows(bin_cost, monkeypatch):
    from anomaly_vae import intervals

    monkeypatch.setattr(intervals, "MULTINOMIAL_BIN_COST", bin_cost)
    row_bin = np.repeat([0, 2, 3], [50, 30, 20])  # bin 1 holds no row
    counts = intervals._resampled_counts(row_bin, 4, 4000, np.random.default_rng(0))
    assert counts.shape == (4000, 4) and (counts.sum(axis=1) == 100).all()
    np.testing.assert_allclose(counts.mean(axis=0), [50, 0, 30, 20], atol=0.5)
    shares = np.array([0.5, 0.0, 0.3, 0.2])  # binomial spread of each bin's count
    np.testing.assert_allclose(counts.std(axis=0), np.sqrt(100 * shares * (1 - shares)), rtol=0.05)


def test_intervals_agree_with_scipys_percentile_bootstrap():
    from scipy import stats

    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(58), np.ones(165)].astype(bool)
    scores = np.r_[rng.normal(0, 1, 58), rng.normal(2.5, 1, 165)]

    def both(normal, anomalous, axis=-1):
        joined = np.concatenate([normal, anomalous], axis=axis)
        truth = np.r_[np.zeros(normal.shape[axis]), np.ones(anomalous.shape[axis])]
        rows = np.moveaxis(joined, axis, -1).reshape(-1, len(truth))
        found = [
            (metrics.roc_auc_score(truth, row), metrics.average_precision_score(truth, row))
            for row in rows
        ]
        return np.array(found).T.reshape(2, *np.moveaxis(joined, axis, -1).shape[:-1])

    scipy_result = stats.bootstrap(
        (scores[~labels], scores[labels]),
        both,
        n_resamples=300,
        vectorized=True,
        paired=False,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    ours = metric_intervals(labels, scores, level=0.95, resamples=300, seed=0)
    # The same draws with scipy 1.17; other versions may draw otherwise, hence the margin.
    np.testing.assert_allclose(ours["auroc_interval"], np.array(scipy_result)[:, 0], atol=0.01)
    np.testing.assert_allclose(ours["aucpr_interval"], np.array(scipy_result)[:, 1], atol=0.01)
