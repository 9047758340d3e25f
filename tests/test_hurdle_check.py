"""pipelines/hurdle_check.py: the hurdle's cost of a column with a point mass, and a run on
tiny ADBench-format files that writes its results and summary."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TINY, correlated_normal, planted_anomalies

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))
import hurdle_check

sys.path.pop(0)


def test_a_value_off_the_point_mass_costs_a_few_nats_not_thousands():
    rng = np.random.default_rng(0)
    train = np.where(rng.random(1000) < 0.9, 0.0, rng.normal(5.0, 1.0, 1000))  # 90% at 0
    x = np.array([0.0, 5.0, 50.0])
    surprise = np.array([0.0, 5_000.0, 500_000.0])  # a decoder variance fit to the mass
    hurdle = hurdle_check.hurdle_nll(x, surprise, 1e-3, train, share=0.5)
    assert hurdle is not None
    pi = np.mean(train == 0.0)
    for nll in hurdle.values():
        assert nll[0] == pytest.approx(-np.log(pi))
    # A typical value off the mass: -log(1 - pi) (2.3 nats) within a nat, from the
    # Gaussian term on the other values' scale; the decoder's surprise was 5,000
    assert abs(hurdle["marginal"][1] + np.log1p(-pi)) < 1
    # Far off it costs more, as its distance to the other values says
    assert hurdle["marginal"][2] > 100 * hurdle["marginal"][1]
    # No point mass (or one below the share), no hurdle
    assert hurdle_check.hurdle_nll(x, surprise, 1.0, rng.normal(size=1000), share=0.5) is None
    assert hurdle_check.hurdle_nll(x, surprise, 1e-3, train, share=0.95) is None


def test_a_run_scores_each_file_three_ways(tmp_path, monkeypatch, capsys):
    X = np.vstack([correlated_normal(600, seed=0), planted_anomalies(30, seed=1)])
    y = np.r_[np.zeros(600, int), np.ones(30, int)]
    np.savez(tmp_path / "smooth.npz", X=X, y=y)
    spiked = X.copy()
    spiked[:450, 0] = 0.0  # a point mass in most normal rows
    np.savez(tmp_path / "spiked.npz", X=spiked, y=y)
    out = tmp_path / "out"
    settings = [arg for item in TINY for arg in ("--set", item)]
    arguments = ["--data-dir", str(tmp_path), "--seeds", "0", "--out", str(out), *settings]
    monkeypatch.setattr(sys, "argv", ["hurdle_check.py", *arguments])
    hurdle_check.main()
    results = pd.read_csv(out / "results.csv").set_index(["dataset", "score"])
    assert results.loc[("smooth", "negative_elbo"), "columns"] == 0
    assert results.loc[("spiked", "negative_elbo"), "columns"] == 1
    smooth = results.loc["smooth", "aucroc"]
    assert smooth["marginal"] == smooth["conditional"] == smooth["negative_elbo"]
    assert (
        results.loc[("spiked", "marginal"), "aucroc"]
        != results.loc[("spiked", "negative_elbo"), "aucroc"]
    )
    summary = (out / "summary.md").read_text()
    assert "| spiked " in summary and "| mean " in summary
    assert summary in capsys.readouterr().out
