"""Data splits of the evaluation protocols in shared/PROTOCOL.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anomaly_vae.data.images import (
    ImageSet,
    holds_idx_files,
    read_idx_set,
    torchvision_classes,
)
from anomaly_vae.errors import DataError


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


# T-contaminated resizes every file to this many rows before the split (ADBench): small
# files are resampled with replacement up to MIN_ROWS, large ones subsampled to MAX_ROWS.
MIN_ROWS = 1_000
MAX_ROWS = 10_000
TEST_SIZE = 0.3  # the stratified 70/30 split of T-contaminated


def t_contaminated_split(
    X: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T-contaminated: resize the file (see ``MIN_ROWS``/``MAX_ROWS``, drawn with
    ``default_rng(seed)``), then a stratified 70/30 split with ``random_state=seed``.

    Returns ``(X_train, X_test, y_test)``; the training rows hold anomalies too, and
    their labels are not returned because the detector must not see them.
    """
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    if len(X) < MIN_ROWS:
        rows = rng.choice(len(X), size=MIN_ROWS, replace=True)
        X, y = X[rows], y[rows]
    elif len(X) > MAX_ROWS:
        rows = rng.choice(len(X), size=MAX_ROWS, replace=False)
        X, y = X[rows], y[rows]
    X_train, X_test, _, y_test = train_test_split(
        X, y, test_size=TEST_SIZE, stratify=y, random_state=seed
    )
    return X_train, X_test, y_test


def image_datasets_under(root: str | Path) -> list[str]:
    """The folders under the torchvision ``root`` that hold a data set in the MNIST layout
    (``NAME/raw/`` with the idx files): FashionMNIST, MNIST, KMNIST or any other name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(path.name for path in root.iterdir() if holds_idx_files(path))


def load_image_dataset(root: str | Path, name: str) -> tuple[ImageSet, ImageSet]:
    """The training and test split of the MNIST-layout data set ``root/name``; torchvision's
    class names where torchvision knows the set, the label values otherwise."""
    folder, classes = Path(root) / name, torchvision_classes(name)
    return read_idx_set(folder, True, classes), read_idx_set(folder, False, classes)


def i_oneclass_split(
    train: ImageSet, test: ImageSet, normal_class: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """I-oneclass: every training image of ``normal_class`` trains; the whole test set
    is scored, label 1 for every image of another class.

    Returns ``(X_train (n, C, H, W) uint8, X_test (m, C, H, W) uint8, y_test (m,) int)``.
    """
    X_train = train.images[train.labels == normal_class]
    if len(X_train) == 0:
        raise DataError(
            f"no training images of class {normal_class}; classes: 0..{len(train.classes) - 1}"
        )
    return X_train, test.images, (test.labels != normal_class).astype(np.int64)
