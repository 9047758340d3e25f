"""What a benchmark runs on: the protocols, the data sets found in a data folder, and
the splits of each (see shared/PROTOCOL.md and :mod:`anomaly_vae.protocols`)."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from anomaly_vae.data.images import IDX_FILES, gzipped_idx_hint
from anomaly_vae.errors import ConfigError, DataError
from anomaly_vae.protocols import (
    i_oneclass_split,
    image_datasets_under,
    load_image_dataset,
    load_npz,
    t_clean_split,
    t_contaminated_split,
)

TABLE_SPLITS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
    "t-clean": t_clean_split,
    "t-contaminated": t_contaminated_split,
}
IMAGE_PROTOCOL = "i-oneclass"
PROTOCOLS = (*TABLE_SPLITS, IMAGE_PROTOCOL)
DEFAULT_SEEDS = {"t-clean": (0, 1, 2), "t-contaminated": (0, 1, 2), IMAGE_PROTOCOL: (0,)}
DEFAULT_CLASSES = tuple(range(10))  # the ten classes of MNIST-like image sets

HASH_CHUNK = 1 << 20  # bytes read at a time to hash a data file (large ones need not fit)

Split = tuple[np.ndarray, np.ndarray, np.ndarray]  # X_train, X_test, y_test (1 = anomaly)


def data_kind(protocol: str) -> str:
    """``"image"`` for the image protocol, ``"table"`` otherwise."""
    check_protocol(protocol)
    return "image" if protocol == IMAGE_PROTOCOL else "table"


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; available: {', '.join(PROTOCOLS)}")


def natural_key(name: str) -> list[Any]:
    """Sort ``2_annthyroid`` before ``18_Ionosphere``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


@dataclass
class Dataset:
    """One data set of a protocol: ``load()`` reads it once, ``split(loaded, cls, seed)``
    gives the protocol's split (``cls`` is None for tables)."""

    protocol: str
    name: str
    location: Path

    def load(self) -> Any:
        if self.protocol == IMAGE_PROTOCOL:
            return load_image_dataset(self.location, self.name)
        return load_npz(self.location)

    def files(self) -> list[Path]:
        """The files ``load()`` reads: the .npz file, or the four idx files of an image set."""
        if self.protocol == IMAGE_PROTOCOL:
            raw = self.location / self.name / "raw"
            return [raw / name for names in IDX_FILES.values() for name in names]
        return [self.location]

    def digest(self) -> str:
        """SHA-256 of the bytes of ``files()`` (hex), so that a results folder can tell
        whether its rows were made from these data; "" when a file cannot be read (then
        ``load()`` fails too, and the failure is recorded)."""
        digest = hashlib.sha256()
        try:
            for path in self.files():
                with path.open("rb") as file:
                    for chunk in iter(functools.partial(file.read, HASH_CHUNK), b""):
                        digest.update(chunk)
        except OSError:
            return ""
        return digest.hexdigest()

    def split(self, loaded: Any, cls: int | None, seed: int) -> Split:
        if self.protocol == IMAGE_PROTOCOL:
            train, test = loaded
            # run_benchmark gives each i-oneclass unit its class; a None would select no
            # training image, which i_oneclass_split reports.
            return i_oneclass_split(train, test, cast(int, cls))
        X, y = loaded
        return TABLE_SPLITS[self.protocol](X, y, seed)


def find_datasets(protocol: str, data_dir: Path, names: list[str] | None = None) -> list[Dataset]:
    """The data sets of ``protocol`` in ``data_dir``: the ``.npz`` files by stem (tables) or
    the MNIST-layout folders (images); ``names`` picks some. DataError lists what is there."""
    check_protocol(protocol)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder")
    if protocol == IMAGE_PROTOCOL:
        available = {name: data_dir for name in image_datasets_under(data_dir)}
        what = (
            "data sets in torchvision's MNIST layout "
            "(NAME/raw/ with the idx files, e.g. FashionMNIST)"
        )
    else:
        available = npz_files(data_dir)
        what = ".npz files"
    listing = ", ".join(sorted(available, key=natural_key)) or "none"
    hint = ""
    if protocol == IMAGE_PROTOCOL:
        hint = gzipped_idx_hint([path for path in data_dir.iterdir() if path.is_dir()])
    if names is None:
        if not available:
            raise DataError(f"{data_dir} holds no {what}{hint}")
        names = sorted(available, key=natural_key)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise DataError(f"no data set {unknown[0]!r} in {data_dir}; {what} there: {listing}{hint}")
    return [Dataset(protocol, name, available[name]) for name in dict.fromkeys(names)]


def npz_files(data_dir: Path) -> dict[str, Path]:
    """The ``.npz`` files in ``data_dir`` by stem, whatever the case of the suffix
    (``X.NPZ``); hidden files (macOS's ``._X.npz`` copies) and folders are none.
    DataError when two files share a stem (``a.npz`` and ``a.NPZ``)."""
    found: dict[str, Path] = {}
    for path in sorted(data_dir.iterdir()):
        if path.suffix.lower() != ".npz" or path.name.startswith(".") or not path.is_file():
            continue
        if path.stem in found:
            raise DataError(f"{found[path.stem]} and {path} have the same name; rename one")
        found[path.stem] = path
    return found
