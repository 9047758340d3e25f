"""Write held-out tables in ADBench format from data sets that ship with scikit-learn.

Our defaults were tuned on the 12 development files in ``../shared/data/adbench``; these
tables, which no default was chosen on, check that they carry over, in particular to
kinds of columns the development files lack: integer pixel counts and 0/1 features that
are rarely set. One class of each set is the anomaly, sampled (seeded) down to
``ANOMALY_SHARE`` of the normal rows as ADBench does for its classification-derived files:

- ``digits_C``: the 8x8 digits (64 pixel counts 0-16), digit C anomalous;
- ``digits_ink_C``: the same pixels as 0/1 ink (count above 7);
- ``breast_cancer``: malignant tumours anomalous (30 real-valued features);
- ``wine``: cultivar 0 anomalous (13 features).

    python pipelines/sklearn_tables.py --out results/sklearn-tables
    anomaly-vae benchmark --protocol t-clean --data-dir results/sklearn-tables \\
        --jobs 2 --threads 1 --out results/bench-sklearn
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine

ANOMALY_SHARE = 0.1  # anomalies per normal row, as in ADBench's downsampled files
INK_THRESHOLD = 7  # digits_ink: a pixel count above this is ink
ANOMALOUS_DIGITS = (0, 5)


def one_class_anomalous(
    X: np.ndarray, target: np.ndarray, anomalous: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: every row of the other classes (y = 0) and a seeded sample of class
    ``anomalous`` (y = 1), ``ANOMALY_SHARE`` times as many as the normal rows."""
    normal = np.flatnonzero(target != anomalous)
    candidates = np.flatnonzero(target == anomalous)
    count = min(len(candidates), max(1, round(ANOMALY_SHARE * len(normal))))
    anomalies = rng.choice(candidates, count, replace=False)
    rows = np.concatenate([normal, np.sort(anomalies)])
    y = np.r_[np.zeros(len(normal), dtype=int), np.ones(count, dtype=int)]
    return X[rows].astype(np.float64), y


def tables(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every table by file stem."""
    rng = np.random.default_rng(seed)
    digits = load_digits()
    out = {}
    for digit in ANOMALOUS_DIGITS:
        out[f"digits_{digit}"] = one_class_anomalous(digits.data, digits.target, digit, rng)
        ink = (digits.data > INK_THRESHOLD).astype(np.float64)
        out[f"digits_ink_{digit}"] = one_class_anomalous(ink, digits.target, digit, rng)
    cancer = load_breast_cancer()  # target 0 = malignant
    out["breast_cancer"] = one_class_anomalous(cancer.data, cancer.target, 0, rng)
    wine = load_wine()
    out["wine"] = one_class_anomalous(wine.data, wine.target, 0, rng)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the .npz files")
    parser.add_argument("--seed", type=int, default=0, help="seeds the anomaly sampling")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (X, y) in tables(args.seed).items():
        np.savez(args.out / f"{name}.npz", X=X, y=y)
        print(f"{name}: {X.shape[0]} rows x {X.shape[1]} features, {int(y.sum())} anomalies")


if __name__ == "__main__":
    main()
