"""pipelines/threshold_check.py: the predicted count of flagged new rows, and a run on a
tiny ADBench-format file that writes its results and summary."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_vae.calibration import quantile_threshold
from tests.conftest import TINY, correlated_normal, planted_anomalies

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))
import threshold_check

sys.path.pop(0)


def test_the_predicted_count_of_flagged_new_rows_holds_it_90_percent_of_the_time():
    """150 calibration scores, 800 new ones, all standard normal: the count of new scores
    above the quantile threshold lies in the predicted 90% interval in about 90% of 2,000
    draws (at least 90%: the counts are whole numbers, so the interval is wider)."""
    rng = np.random.default_rng(0)
    inside = []
    for _ in range(2000):
        calibration, new = rng.standard_normal(150), rng.standard_normal(800)
        threshold = quantile_threshold(calibration, 0.01, warn=False)
        above = int(np.sum(calibration > threshold))
        low, high = threshold_check.predictive_interval(150, above, 800, 0.9)
        inside.append(low <= np.sum(new > threshold) <= high)
    assert 0.89 <= np.mean(inside) <= 0.95


def test_a_run_reports_each_fit_and_how_often_the_rate_fell_in_the_interval(
    tmp_path, monkeypatch, capsys
):
    X = np.vstack([correlated_normal(1200, seed=0), planted_anomalies(40, seed=1)])
    y = np.r_[np.zeros(1200, int), np.ones(40, int)]
    np.savez(tmp_path / "tiny.npz", X=X, y=y)
    np.savez(tmp_path / "other.npz", X=X, y=y)
    out = tmp_path / "out"
    settings = [arg for item in TINY for arg in ("--set", item)]
    arguments = ["--data-dir", str(tmp_path), "--datasets", "tiny", "--seeds", "0"]
    monkeypatch.setattr(sys, "argv", ["threshold_check.py", *arguments, "--out", str(out)])
    monkeypatch.setattr(sys, "argv", [*sys.argv, *settings])
    threshold_check.main()
    results = pd.read_csv(out / "results.csv")
    (row,) = results.to_dict("records")  # the one file asked for, one seed
    assert row["dataset"] == "tiny" and row["train_rows"] == 600
    assert row["unseen_normal_rows"] == 600  # the other half of the normal rows
    # 90 calibration rows at 1%: the threshold is their highest score.
    assert row["calibration_rows"] == 90 and row["calibration_above"] == 0
    assert row["expected_mean"] == pytest.approx(1 / 91)
    assert row["realised_fpr"] == pytest.approx(row["unseen_flagged"] / 600)
    low, high = row["expected_low"], row["expected_high"]
    assert row["in_interval"] == (low <= row["realised_fpr"] <= high)
    summary = (out / "summary.md").read_text()
    assert "| tiny " in summary and "other" not in summary
    assert f"Realised rate in the stated interval: {int(row['in_interval'])} of 1 fits" in summary
    assert summary in capsys.readouterr().out
