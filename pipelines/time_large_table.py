"""Fit time and detection on a large table made of noisy copies of an ADBench file's rows.

The table is the file's T-clean training rows, copied with small noise until it is large.
The development files have at most 23,000 training rows; tables of users (and ADBench
files such as census or donors) reach hundreds of thousands. Each copy adds Gaussian
noise of ``NOISE_SHARE`` of each feature's standard deviation, so no row repeats; the
test split is the file's own (T-clean, seed 0). One torch thread. For each value of
``training.max_epoch_batches`` given, writes a row to ``OUT/results.csv``.

    python pipelines/time_large_table.py --data-dir ../shared/data/adbench \\
        --dataset 32_shuttle --copies 13 --caps 200,0 --out results/large-table
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from anomaly_vae import VAEDetector, load_config
from anomaly_vae.protocols import load_npz, t_clean_split

NOISE_SHARE = 0.01  # noise added to each copy, as a share of each feature's std


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--dataset", default="32_shuttle", help="file stem")
    parser.add_argument("--copies", type=int, default=13)
    parser.add_argument("--caps", default="200,0", help="values of training.max_epoch_batches")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    X, y = load_npz(args.data_dir / f"{args.dataset}.npz")
    X_train, X_test, y_test = t_clean_split(X, y, seed=0)
    rng = np.random.default_rng(0)
    noise = NOISE_SHARE * X_train.std(axis=0)
    large = np.vstack(
        [X_train + rng.normal(scale=noise, size=X_train.shape) for _ in range(args.copies)]
    )
    rows = []
    for cap in args.caps.split(","):
        config = load_config(overrides=[f"training.max_epoch_batches={cap}"])
        start = time.perf_counter()
        detector = VAEDetector(config.detector_config()).fit(large)
        fit_s = time.perf_counter() - start
        scores = detector.anomaly_score(X_test)
        rows.append(
            {
                "dataset": args.dataset,
                "train_rows": len(large),
                "max_epoch_batches": int(cap),
                "epochs": len(detector.history_.epochs),
                "fit_s": round(fit_s, 1),
                "aucroc": round(100 * roc_auc_score(y_test, scores), 2),
                "aucpr": round(100 * average_precision_score(y_test, scores), 2),
            }
        )
        print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out / "results.csv", index=False)


if __name__ == "__main__":
    main()
