"""pipelines/explain_check.py: anomalies are planted where the plan says, and the run writes
its summary."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TINY

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))
import explain_check

sys.path.pop(0)


@pytest.fixture
def rows() -> pd.DataFrame:
    """Six rows: ``a`` and ``b`` with six distinct values, ``c`` all 1 but one."""
    return pd.DataFrame(
        {
            "a": np.arange(6.0),
            "b": 10.0 * np.arange(6.0)[::-1],
            "c": [1.0, 1.0, 1.0, 1.0, 1.0, 2.0],
        }
    )


def test_a_shift_moves_the_planned_column_only_by_its_sds(rows):
    plan = explain_check.plan_anomalies(rows, np.array([0, 1]), np.random.default_rng(0))
    sd = np.array([2.0, 3.0, 5.0])
    shifted = explain_check.planted(rows, plan, "1.5", sd)
    moved = shifted.to_numpy() - rows.to_numpy()
    expected = np.zeros_like(moved)
    expected[np.arange(len(rows)), plan.column] = plan.sign * 1.5 * sd[plan.column]
    np.testing.assert_allclose(moved, expected)
    assert set(plan.column) <= {0, 1} and set(plan.sign) <= {-1.0, 1.0}


def test_a_swap_takes_a_different_value_of_the_column_from_another_row(rows):
    plan = explain_check.Plan(
        column=np.array([0, 1, 2, 2, 0, 1]),
        sign=np.ones(6),
        donor=np.array([3, 0, 5, -1, 1, 2]),  # -1: no other row has a different value
    )
    swapped = explain_check.planted(rows, plan, explain_check.SWAP, np.ones(3))
    assert swapped.index.tolist() == [0, 1, 2, 4, 5]  # a row without a donor is left out
    for row in swapped.index:
        column = rows.columns[plan.column[row]]
        assert swapped.loc[row, column] == rows.loc[plan.donor[row], column]
        others = rows.columns.drop(column)
        assert swapped.loc[row, others].equals(rows.loc[row, others])
    # Drawn donors always hold a different value: in `c` only row 5 differs from rows 0-4.
    drawn = explain_check.plan_anomalies(rows, np.array([2]), np.random.default_rng(0))
    assert drawn.donor[:5].tolist() == [5] * 5 and drawn.donor[5] in range(5)


def test_eligible_columns_have_more_than_min_distinct_values():
    frame = pd.DataFrame({"codes": np.arange(40) % 10, "levels": np.arange(40) % 11})
    assert explain_check.eligible_columns(frame).tolist() == [1]


def test_the_z_rule_ranks_by_absolute_z_and_a_moved_constant_column_first():
    mean, sd = np.array([0.0, 0.0, 7.0]), np.array([1.0, 2.0, 0.0])  # column 2 was constant
    values = np.array([[0.5, -4.0, 7.0], [1.0, 0.5, 7.0], [0.0, 0.0, 7.5]])
    ranked = explain_check.z_ranking(values, mean, sd)
    assert ranked.tolist() == [[1, 0, 2], [0, 1, 2], [2, 0, 1]]


def test_a_run_writes_its_results_and_summary(tmp_path, monkeypatch, capsys):
    overrides = [argument for setting in TINY for argument in ("--set", setting)]
    out = tmp_path / "out"
    arguments = ["--tables", "wine", "--seeds", "0", "--out", str(out), *overrides]
    monkeypatch.setattr(sys, "argv", ["explain_check.py", *arguments])
    explain_check.main()
    results = pd.read_csv(out / "results.csv")
    assert results["kind"].tolist() == ["shift 1.5", "shift 3", "shift 5", "swap"]
    assert (results["rows"] == 21).all()  # cultivar 1: 71 rows, 50 to fit on, 21 held out
    assert (results["vae_top3"] >= results["vae_top1"]).all()
    summary = (out / "summary.md").read_text()
    assert "| wine " in summary and summary in capsys.readouterr().out
