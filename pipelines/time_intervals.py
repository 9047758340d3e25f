"""How long do the bootstrap intervals of AUROC and AUCPR take, by evaluation-set size
and share of anomalies?

    python pipelines/time_intervals.py --out results/intervals

Times :func:`anomaly_vae.intervals.metric_intervals` (1,000 resamples, the default of
``evaluation.interval_resamples``) on synthetic scores: normal rows N(0, 1), anomalies
N(1, 1), so that every anomalous score is distinct (the most bins, the slowest case for
a given share). Writes ``OUT/results.csv`` and prints it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_vae.config import EvaluationConfig
from anomaly_vae.intervals import metric_intervals

ROWS = (10_000, 300_000, 1_000_000)
ANOMALY_SHARES = (0.01, 0.1, 0.5)


def time_once(rows: int, share: float, resamples: int) -> dict[str, float]:
    """Seconds for one call on ``rows`` scores with ``share`` of them anomalous."""
    rng = np.random.default_rng(0)
    labels = rng.random(rows) < share
    scores = rng.normal(0.0, 1.0, rows) + labels
    started = time.perf_counter()
    found = metric_intervals(labels, scores, level=0.95, resamples=resamples, seed=0)
    seconds = time.perf_counter() - started
    low, high = found["auroc_interval"]
    return {
        "rows": rows,
        "anomaly_share": share,
        "seconds": round(seconds, 2),
        "auroc_low": round(low, 4),
        "auroc_high": round(high, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for results.csv.")
    parser.add_argument(
        "--resamples",
        type=int,
        default=EvaluationConfig().interval_resamples,
        help="Bootstrap resamples per call (default: evaluation.interval_resamples).",
    )
    args = parser.parse_args()
    results = pd.DataFrame(
        [time_once(rows, share, args.resamples) for rows in ROWS for share in ANOMALY_SHARES]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "results.csv", index=False)
    print(results.to_string(index=False))


if __name__ == "__main__":
    main()
