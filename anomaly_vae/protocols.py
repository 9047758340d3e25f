"""Data splits of the evaluation protocols in shared/PROTOCOL.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """An ADBench-format file: ``X (n, d)`` float64 and ``y (n,)`` int (1 = anomaly)."""
    with np.load(path, allow_pickle=False) as data:
        return data["X"].astype(np.float64), data["y"].astype(np.int64)


def t_clean_split(
    X: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T-clean: half the normal rows (shuffled with ``default_rng(seed)``) train.

    Returns ``(X_train, X_test, y_test)``; the test set is the other half of the
    normal rows followed by every anomaly.
    """
    normal = np.flatnonzero(y == 0)
    anomalous = np.flatnonzero(y == 1)
    shuffled = normal[np.random.default_rng(seed).permutation(len(normal))]
    n_train = len(normal) // 2
    train, test = shuffled[:n_train], np.concatenate([shuffled[n_train:], anomalous])
    return X[train], X[test], y[test]
