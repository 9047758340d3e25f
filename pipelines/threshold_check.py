"""How well does the false-positive rate a fit expects of its threshold hold on new rows?

A fit's quantile threshold is one of its held-out calibration scores; its false-positive
rate on new normal rows is uncertain, and the fit states a 90% interval of it
(:func:`anomaly_vae.calibration.expected_fpr`). This checks that interval on real tables.

Per ADBench ``.npz`` file and seed, on the T-clean split (``shared/PROTOCOL.md``: half the
normal rows, shuffled by the seed, to fit on; the other half unseen): the default detector
(no override: pass ``--set`` only for trial runs, not for figures to publish) is fit on
the first half, and its threshold flags some of the unseen normal rows. Reported: the
calibration rows and how many are above the threshold, the interval and mean the fit
states, the realised rate on the unseen normal rows, and whether it lies in the interval.
The unseen rows are a finite sample: their rate scatters about the threshold's rate on
all new rows, so ``in predictive`` also checks their count of flagged rows against the
90% interval that the same order statistic predicts for that many new rows (beta-binomial).

    python pipelines/threshold_check.py --data-dir ../shared/data/adbench \\
        --out results/threshold-check --jobs 1

Writes into OUT: results.csv (one row per file and seed) and summary.md, also printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
import torch
from scipy import stats

from anomaly_vae import VAEDetector, load_config
from anomaly_vae.benchmark.report import markdown_frame
from anomaly_vae.benchmark.runner import map_in_workers
from anomaly_vae.protocols import load_npz, t_clean_split


@dataclass(frozen=True)
class Unit:
    """One fit: an ADBench file, its name and a seed."""

    path: str
    name: str
    seed: int
    overrides: tuple[str, ...] = ()


def predictive_interval(n: int, above: int, fresh: int, level: float) -> tuple[int, int]:
    """The central ``level`` interval of how many of ``fresh`` new normal rows score above
    a threshold with ``above`` of ``n`` calibration scores above it: the rate is
    ``Beta(k, n + 1 - k)`` with ``k = above + 1`` (as the fit states it), and the count
    given the rate binomial, so the count is beta-binomial. ``(low, high)`` counts."""
    k = above + 1
    low, high = stats.betabinom.ppf([(1 - level) / 2, (1 + level) / 2], fresh, k, n + 1 - k)
    return int(low), int(high)


def run_unit(unit: Unit) -> dict:
    """Fit on the unit's training half and score its unseen normal rows: one results row."""
    X, y = load_npz(unit.path)
    train, test, y_test = t_clean_split(X, y, unit.seed)
    unseen = test[y_test == 0]
    config = load_config(overrides=[f"training.seed={unit.seed}", *unit.overrides])
    start = time.perf_counter()
    detector = VAEDetector(config.detector_config()).fit(train)
    fit_s = time.perf_counter() - start
    calibration = detector.calibration_
    n = calibration["n_calibration"]
    above = round(calibration["calibration_fpr"] * n)
    flagged = int(np.sum(detector.anomaly_score(unseen) > detector.threshold_))
    low, high = calibration["expected_fpr_low"], calibration["expected_fpr_high"]
    level = calibration["expected_fpr_level"]
    realised = flagged / len(unseen)
    count_low, count_high = predictive_interval(n, above, len(unseen), level)
    return {
        "dataset": unit.name,
        "seed": unit.seed,
        "train_rows": len(train),
        "calibration_rows": n,
        "calibration_above": above,
        "target_fpr": calibration["target_fpr"],
        "expected_low": low,
        "expected_mean": calibration["expected_fpr_mean"],
        "expected_high": high,
        "unseen_normal_rows": len(unseen),
        "unseen_flagged": flagged,
        "realised_fpr": realised,
        "in_interval": bool(low <= realised <= high),
        "predicted_count_low": count_low,
        "predicted_count_high": count_high,
        "in_predictive": bool(count_low <= flagged <= count_high),
        "threshold": detector.threshold_,
        "fit_s": round(fit_s, 1),
    }


def summarise(results: pd.DataFrame, header: str) -> str:
    """The Markdown summary: a line per file and seed (rates in percent), then how often
    the realised rate lies in the stated interval, and the count in its predictive one."""
    shown = pd.DataFrame(
        {
            "dataset": results["dataset"],
            "seed": results["seed"],
            "calibration rows (above)": [
                f"{n:,} ({a})"
                for n, a in zip(
                    results["calibration_rows"], results["calibration_above"], strict=True
                )
            ],
            "stated 90% interval": [
                f"{100 * lo:.2f}% to {100 * hi:.2f}%"
                for lo, hi in zip(results["expected_low"], results["expected_high"], strict=True)
            ],
            "stated mean": [f"{100 * m:.2f}%" for m in results["expected_mean"]],
            "unseen normal rows flagged": [
                f"{f} of {n:,} ({100 * f / n:.2f}%)"
                for f, n in zip(
                    results["unseen_flagged"], results["unseen_normal_rows"], strict=True
                )
            ],
            "in interval": np.where(results["in_interval"], "yes", "no"),
            "predicted count": [
                f"{lo} to {hi}"
                for lo, hi in zip(
                    results["predicted_count_low"], results["predicted_count_high"], strict=True
                )
            ],
            "in predictive": np.where(results["in_predictive"], "yes", "no"),
        }
    )
    units = len(results)
    above = int((results["realised_fpr"] > results["expected_high"]).sum())
    below = int((results["realised_fpr"] < results["expected_low"]).sum())
    return (
        f"{header}\n\n{markdown_frame(shown)}\n\n"
        f"Realised rate in the stated interval: {int(results['in_interval'].sum())} of "
        f"{units} fits ({above} above it, {below} below); flagged count in its predictive "
        f"interval: {int(results['in_predictive'].sum())} of {units}. Mean stated rate "
        f"{100 * results['expected_mean'].mean():.2f}%, mean realised rate "
        f"{100 * results['realised_fpr'].mean():.2f}%.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the results")
    parser.add_argument(
        "--data-dir", required=True, type=Path, help="a folder of ADBench .npz files"
    )
    parser.add_argument("--datasets", help="only these .npz file stems, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override key=value (repeatable; trial runs only)",
    )
    args = parser.parse_args()
    stems = set(args.datasets.split(",")) if args.datasets else None
    paths = {
        path.stem: str(path)
        for path in sorted(args.data_dir.glob("*.npz"))
        if stems is None or path.stem in stems
    }
    if not paths:
        parser.error(f"no .npz files to check in {args.data_dir}")
    seeds = [int(s) for s in args.seeds.split(",")]
    units = [
        Unit(path, name, seed, tuple(args.overrides))
        for name, path in paths.items()
        for seed in seeds
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = map_in_workers(run_unit, units, args.jobs, args.threads)
    wall = time.perf_counter() - start
    results = pd.DataFrame(rows)
    results.to_csv(args.out / "results.csv", index=False)
    header = (
        f"# Threshold check (T-clean, seeds {args.seeds}, overrides "
        f"{args.overrides or 'none'})\n\n"
        f"{len(units)} fits, {args.jobs} processes x {args.threads} torch threads, wall "
        f"{wall:.0f} s; {os.cpu_count()} CPUs, Python {platform.python_version()}, torch "
        f"{torch.__version__}, scikit-learn {sklearn.__version__}, pandas {pd.__version__}."
    )
    text = summarise(results, header)
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
