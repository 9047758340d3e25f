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

# What an error about a table file says the file should be.
NPZ_FORMAT = (
    "a NumPy .npz archive of numeric arrays X (n, d) and y (n,) with 0 = normal, 1 = anomaly"
)


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """An ADBench-format file: ``X (n, d)`` float64 and ``y (n,)`` int (1 = anomaly);
    ``y`` stored as a column ``(n, 1)`` is taken as ``(n,)``.

    DataError naming the file when it is not one: not an .npz archive, an array missing,
    not numeric (or Python objects, which are never loaded), or labels other than 0/1.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in ("X", "y") if name not in data.files]
            if missing:
                found = ", ".join(data.files) or "none"
                raise DataError(
                    f"{path} is not a valid ADBench .npz file: no array {missing[0]!r} "
                    f"(arrays there: {found}); expected {NPZ_FORMAT}"
                )
            # Read on access: in the block. copy=False: a float64 X (most ADBench files) is
            # used as read; astype copied it, two of a 1.2 GB X at once while loading.
            X, y = data["X"].astype(np.float64, copy=False), data["y"]
    except DataError:
        raise
    except Exception as exc:
        # numpy's message for a file that is not an archive, or for an array of Python
        # objects, advises allow_pickle=True, which would run code from the file.
        message = str(exc)
        if "pickle" in message:
            reason = (
                "arrays of Python objects" if "Object arrays" in message else "not a zip archive"
            )
        else:
            reason = f"{type(exc).__name__}: {message}"
        raise DataError(
            f"{path} is not a valid ADBench .npz file ({reason}); expected {NPZ_FORMAT}"
        ) from None
    if X.ndim == 2 and y.shape == (len(X), 1):  # one label per row, stored as a column
        y = y[:, 0]
    if X.ndim != 2 or y.shape != (len(X),):
        raise DataError(f"{path}: X must be (n, d) and y (n,), got X {X.shape} and y {y.shape}")
    return X, check_labels(y, str(path))


def check_labels(y: np.ndarray, where: str = "y") -> np.ndarray:
    """``y`` as int64 when every label is 0 (normal) or 1 (anomaly) and both occur.

    DataError otherwise, naming ``where``: other codes (e.g. ADBench-like files with -1
    for anomalies) would silently leave the test set without anomalies, whose AUROC is
    then undefined; casting first would turn 0.5 into a normal row.
    """
    valid = np.isin(y, (0, 1))
    if not valid.all():
        others = np.unique(y[~valid])
        shown = ", ".join(str(v) for v in others[:5]) + (", ..." if len(others) > 5 else "")
        raise DataError(
            f"{where}: labels must be 0 (normal) or 1 (anomaly), found {shown} "
            f"in {int((~valid).sum())} of {len(y)} rows"
        )
    labels = y.astype(np.int64)
    if labels.min(initial=1) == 1 or labels.max(initial=0) == 0:
        raise DataError(f"{where}: needs both normal (0) and anomalous (1) rows")
    return labels


def t_clean_split(
    X: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T-clean: half the normal rows (shuffled with ``default_rng(seed)``) train.

    Returns ``(X_train, X_test, y_test)``; the test set is the other half of the
    normal rows followed by every anomaly. DataError for labels other than 0/1.
    """
    y = check_labels(y)
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
    their labels are not returned because the detector must not see them. DataError for
    labels other than 0/1.
    """
    from sklearn.model_selection import train_test_split

    y = check_labels(y)
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
