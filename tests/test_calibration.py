"""Thresholds chosen on labelled rows: the F1-optimal one and the one of a target recall;
the false-positive rate to expect on new rows of a quantile threshold and of a labelled one."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score, recall_score

from anomaly_vae.calibration import (
    CALIBRATION_ROWS_FROM,
    RECALIBRATED_QUANTILE_DESCRIPTION,
    calibration_rows_from,
    calibration_summary,
    expected_fpr,
    fixed_threshold_fpr,
    labelled_summary,
    labelled_threshold,
    quantile_threshold,
    rows_to_pin_down,
    withhold_expected_fpr,
)
from anomaly_vae.config import CalibrationConfig

LEVEL = CalibrationConfig().expected_fpr_level  # the interval's level a fit states by default


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
    summary = labelled_summary(labels, scores, 5.0, "recall", 1.0, held_out_normal, 0.01, LEVEL)
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


def test_evaluation_curves_are_thinned_to_their_shape_and_the_figures_use_every_score():
    """evaluate() kept a curve point per distinct score (evaluation.json of 9 MB for
    140,000 labelled rows); at most CURVE_POINTS of each are kept now, the end points and
    the shape, while AUROC, AUCPR and the F1-optimal threshold are those of every score."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
    from sklearn.metrics import roc_curve as full_roc_curve

    from anomaly_vae.calibration import CURVE_POINTS, evaluate

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(20_000, bool), np.ones(4_000, bool)]
    scores = np.r_[rng.normal(0, 1, 20_000), rng.normal(1.5, 1, 4_000)]
    report = evaluate(labels, scores, threshold=1.0)
    assert report["auroc"] == roc_auc_score(labels, scores)
    assert report["aucpr"] == average_precision_score(labels, scores)
    assert report["f1_optimal_threshold"] == labelled_threshold(labels, scores, "f1", 0.9)
    fpr, tpr, thresholds = full_roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    assert len(fpr) > 4 * CURVE_POINTS and len(precision) > 20 * CURVE_POINTS  # thinned below
    roc, pr = report["curves"]["roc"], report["curves"]["pr"]
    for curve, full in [
        (roc, {"fpr": fpr, "tpr": tpr, "thresholds": thresholds}),
        (pr, {"recall": recall, "precision": precision}),
    ]:
        (x_name, x), (y_name, y) = list(full.items())[:2]
        assert 100 < len(curve[x_name]) <= CURVE_POINTS
        assert len({len(values) for values in curve.values()}) == 1  # aligned
        # End points, and points of the full curve only (thresholds beside their points).
        assert (curve[x_name][0], curve[y_name][0]) == (x[0], y[0])
        assert (curve[x_name][-1], curve[y_name][-1]) == (x[-1], y[-1])
        kept = {tuple(point) for point in zip(*full.values(), strict=True)}
        assert {tuple(point) for point in zip(*(curve[name] for name in full), strict=True)} <= kept
        # The shape: every point of the full curve lies near a kept one.
        step = np.hypot(np.diff(x), np.diff(y)).sum() / (CURVE_POINTS - 1)
        thinned = np.c_[curve[x_name], curve[y_name]]
        gaps = [np.hypot(*(thinned - point).T).min() for point in np.c_[x, y][::7]]
        assert max(gaps) <= step
    # The thinned ROC curve's area is the AUROC to within a hair.
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(report["auroc"], abs=1e-3)


CALIBRATION_SETS = 2000  # per case: the share of sets whose rate lies in the interval is
# then known to within 0.0067 (one sd of a binomial share at 0.9), the tails to 0.0049


def _rates_and_intervals(
    n: int, target_fpr: float, seed: int, step: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rate, low, high)``, each ``(CALIBRATION_SETS,)``: for calibration sets of ``n``
    standard normal scores (rounded down to multiples of ``step``, which makes ties, when
    given), the quantile threshold as a fit takes it, the share of all new scores above
    it (exact, from the normal distribution: a fresh sample of infinitely many rows) and
    the interval its calibration summary gives."""
    rng = np.random.default_rng(seed)
    rates, lows, highs = (np.empty(CALIBRATION_SETS) for _ in range(3))
    for i in range(CALIBRATION_SETS):
        scores = rng.standard_normal(n)
        if step is not None:
            scores = np.floor(scores / step) * step
        threshold = quantile_threshold(scores, target_fpr, warn=False)
        summary = calibration_summary(scores, threshold, target_fpr, LEVEL)
        # A new score is above the threshold when its normal draw is, or (rounded) when
        # it reaches the next multiple of step.
        rates[i] = stats.norm.sf(threshold if step is None else threshold + step)
        lows[i], highs[i] = summary["expected_fpr_low"], summary["expected_fpr_high"]
    return rates, lows, highs


@pytest.mark.parametrize(
    "n, target_fpr",
    # 60 rows: the threshold is the highest score, 150 the 2nd highest, 1,000 the 10th;
    # the 5% quantile of 150 scores the 8th.
    [(60, 0.01), (150, 0.01), (1000, 0.01), (150, 0.05)],
)
def test_the_expected_rate_interval_holds_the_rate_on_new_rows_90_percent_of_the_time(
    n, target_fpr
):
    """The interval is that of the order statistic the threshold is: with k off by one
    either way (the interval of the next score up or down), the share inside falls to
    about 0.8 at 150 rows, and at 1,000 rows a tail doubles to about 0.1."""
    rates, lows, highs = _rates_and_intervals(n, target_fpr, seed=n)
    assert LEVEL == 0.9
    inside = np.mean((lows <= rates) & (rates <= highs))
    assert inside == pytest.approx(0.9, abs=0.025)
    assert np.mean(rates < lows) == pytest.approx(0.05, abs=0.02)
    assert np.mean(rates > highs) == pytest.approx(0.05, abs=0.02)


def test_tied_scores_at_the_threshold_only_lower_the_rate():
    """Scores in steps of 0.25 standard deviations: rows tied with the threshold are not
    flagged, so the rate is above the interval no more often than for distinct scores."""
    rates, _, highs = _rates_and_intervals(150, 0.01, seed=7, step=0.25)
    assert np.mean(rates > highs) < 0.05 + 0.015


def test_the_expected_rate_is_the_order_statistic_coverage():
    # 1 of 150 scores above: the 2nd largest, whose coverage is Beta(2, 149).
    rate = expected_fpr(150, 1, LEVEL)
    assert rate["expected_fpr_mean"] == pytest.approx(2 / 151)
    assert rate["expected_fpr_low"] == pytest.approx(stats.beta(2, 149).ppf(0.05))
    assert rate["expected_fpr_high"] == pytest.approx(stats.beta(2, 149).ppf(0.95))
    # The summary counts the scores above the threshold; ties with it are not above.
    scores = np.r_[np.arange(147.0), 147.0, 147.0, 148.0]
    summary = calibration_summary(scores, 147.0, 0.01, LEVEL)
    assert summary["expected_fpr_mean"] == pytest.approx(2 / 151)
    with pytest.raises(ValueError, match="150 of 150"):
        expected_fpr(150, 150, LEVEL)


@pytest.mark.parametrize("target_fpr", [0.01, 0.05, 0.003, 0.001, 0.25])
def test_rows_to_pin_down_is_the_fewest_rows_with_5_above_the_threshold(target_fpr):
    def above(n: int) -> int:
        scores = np.arange(float(n))
        return int(np.sum(scores > quantile_threshold(scores, target_fpr, warn=False)))

    n = rows_to_pin_down(target_fpr)
    assert above(n) == 5 and above(n - 1) == 4


def test_the_level_sets_the_width_of_the_quantile_interval():
    scores = np.arange(150.0)
    wide, narrow = (calibration_summary(scores, 147.0, 0.01, level) for level in (0.9, 0.5))
    assert narrow["expected_fpr_level"] == 0.5
    assert narrow["expected_fpr_low"] == pytest.approx(stats.beta(3, 148).ppf(0.25))
    assert narrow["expected_fpr_high"] == pytest.approx(stats.beta(3, 148).ppf(0.75))
    assert wide["expected_fpr_low"] < narrow["expected_fpr_low"]
    assert narrow["expected_fpr_high"] < wide["expected_fpr_high"]
    assert narrow["expected_fpr_mean"] == wide["expected_fpr_mean"]
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        expected_fpr(150, 1, 1.0)


def test_a_labelled_thresholds_interval_is_the_exact_binomial_one():
    """1 of 150 held-out normal scores above a threshold chosen without them: the
    threshold lies between the largest and the 2nd largest, whose coverages are
    Beta(1, 150) and Beta(2, 149)."""
    labels = np.r_[np.zeros(5, bool), np.ones(3, bool)]
    scores = np.array([0.0, 1, 2, 8, 4, 10, 11, 6])
    held_out = np.r_[np.arange(148.0), 148.5, 148.5, 150.0]  # 148.5 ties with it: not above
    summary = labelled_summary(labels, scores, 148.5, "f1", 0.9, held_out[1:], 0.01, 0.8)
    assert summary["expected_fpr_level"] == 0.8
    assert summary["expected_fpr_low"] == pytest.approx(stats.beta(1, 150).ppf(0.1))
    assert summary["expected_fpr_high"] == pytest.approx(stats.beta(2, 149).ppf(0.9))
    assert summary["expected_fpr_mean"] == pytest.approx(1 / 150) == summary["calibration_fpr"]
    # None above: from 0; all above: to 1.
    assert fixed_threshold_fpr(20, 0, 0.9)["expected_fpr_low"] == 0
    assert fixed_threshold_fpr(20, 0, 0.9)["expected_fpr_high"] == pytest.approx(
        1 - 0.05 ** (1 / 20)
    )
    assert fixed_threshold_fpr(20, 20, 0.9)["expected_fpr_high"] == 1
    with pytest.raises(ValueError, match="21 of 20"):
        fixed_threshold_fpr(20, 21, 0.9)


@pytest.mark.parametrize("n", [30, 150, 1000])
def test_a_labelled_thresholds_interval_holds_its_rate_at_least_at_the_level(n):
    """Exact coverage, whatever the threshold's rate p on new rows: the count of held-out
    normal rows above a threshold fixed without them is Binomial(n, p), and the interval
    holds p for at least the level's share of counts. The quantile's interval (the one
    order statistic, Beta(above + 1, n - above)) falls short here: at n = 150 and p = 0.5%
    it misses p below in 17% of held-out sets."""
    for level in (0.5, 0.9):
        counts = np.arange(n + 1)
        intervals = [fixed_threshold_fpr(n, int(a), level) for a in counts]
        low = np.array([i["expected_fpr_low"] for i in intervals])
        high = np.array([i["expected_fpr_high"] for i in intervals])
        for p in np.geomspace(0.5 / n, 0.5, 40):
            chance = stats.binom(n, p).pmf(counts)
            assert chance[(low <= p) & (p <= high)].sum() >= level - 1e-9
            # Each side misses at most its half of the rest.
            assert chance[low > p].sum() <= (1 - level) / 2 + 1e-9
            assert chance[high < p].sum() <= (1 - level) / 2 + 1e-9


def test_a_labelled_threshold_chosen_on_other_rows_states_its_rate_on_new_rows():
    """Simulated end to end (300 draws, seeded): an F1 threshold chosen on 60 normal and
    20 anomalous labelled scores, and 150 held-out normal scores that took no part; the
    rate on new normal rows (exact, from the normal distribution) lies in the stated 90%
    interval in at least about 90% of draws, and below and above it each about 5% or
    less (the exact interval is conservative: counts are whole)."""
    rng = np.random.default_rng(36)
    draws = 300
    rates, lows, highs = (np.empty(draws) for _ in range(3))
    labels = np.r_[np.zeros(60, bool), np.ones(20, bool)]
    for i in range(draws):
        scores = np.r_[rng.standard_normal(60), rng.normal(2.5, 1, 20)]
        threshold = labelled_threshold(labels, scores, "f1", 0.9)
        held_out = rng.standard_normal(150)
        summary = labelled_summary(labels, scores, threshold, "f1", 0.9, held_out, 0.01, LEVEL)
        rates[i] = stats.norm.sf(threshold)
        lows[i], highs[i] = summary["expected_fpr_low"], summary["expected_fpr_high"]
    # One sd of a share near 0.9 over 300 draws is 0.017.
    assert np.mean((lows <= rates) & (rates <= highs)) >= 0.9 - 0.035
    assert np.mean(rates < lows) <= 0.05 + 0.03
    assert np.mean(rates > highs) <= 0.05 + 0.03


def test_a_withheld_rate_says_why_and_keeps_no_interval():
    labels = np.r_[np.zeros(5, bool), np.ones(3, bool)]
    scores = np.array([0.0, 1, 2, 8, 4, 10, 11, 6])
    summary = labelled_summary(labels, scores, 5.0, "f1", 0.9, np.arange(10.0), 0.01, LEVEL)
    withhold_expected_fpr(summary, "the held-out rows chose it")
    assert not [key for key in summary if key.startswith("expected_fpr_") and "withheld" not in key]
    assert summary["expected_fpr_withheld"] == "the held-out rows chose it"
    assert summary["calibration_fpr"] == pytest.approx(4 / 10)


def test_calibration_rows_are_the_fits_unless_a_quantile_calibration_replaced_them():
    """False: the fit's held-out rows; a record: where `calibrate` read them; None: a
    quantile calibration replaced them and where from is not known (a model saved before
    the record was kept says so only by its description)."""
    fit = calibration_summary(np.arange(30.0), 26.5, 0.01, LEVEL)
    assert calibration_rows_from(fit) is False
    old = fit | {"description": RECALIBRATED_QUANTILE_DESCRIPTION}
    assert calibration_rows_from(old) is None
    recorded = fit | {CALIBRATION_ROWS_FROM: {"path": "/data/reviewed.csv", "bytes": 10}}
    assert calibration_rows_from(recorded) == {"path": "/data/reviewed.csv", "bytes": 10}
