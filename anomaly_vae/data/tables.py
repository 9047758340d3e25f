"""Reading tables (CSV or Parquet) into pandas, with one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_vae.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (any other suffix) or Parquet (``.parquet``/``.pq``) file.

    Raises DataError, naming the file, when it is missing, unreadable, empty or
    has no data rows.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path} is a folder; expected a CSV or Parquet file")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path} is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV file: {_first_line(exc)}") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or _first_line(exc)}") from exc
    except Exception as exc:  # pyarrow raises its own types for corrupt Parquet
        if path.suffix.lower() in PARQUET_SUFFIXES:
            raise DataError(f"{path} is not a readable Parquet file: {_first_line(exc)}") from exc
        raise
    if frame.shape[0] == 0:
        raise DataError(f"{path} has a header but no data rows")
    return frame


def as_frame(data: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """A DataFrame view of ``data``; arrays get the column names ``x0, x1, ...``."""
    if isinstance(data, pd.DataFrame):
        return data
    array = np.asarray(data)
    if array.ndim != 2:
        raise DataError(
            f"expected a 2-D table of shape (n_rows, n_columns), got shape {array.shape}"
        )
    return pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])


def take_rows(data: pd.DataFrame | np.ndarray, rows: np.ndarray) -> pd.DataFrame | np.ndarray:
    """Rows of a table or an image array, by position or boolean mask."""
    rows = np.asarray(rows)
    if isinstance(data, pd.DataFrame):
        return data.iloc[np.flatnonzero(rows) if rows.dtype == bool else rows]
    return data[rows]


def label_vector(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The label column as ``(n,)`` bool, True = anomaly. Accepts 0/1 or booleans."""
    if column not in frame.columns:
        raise DataError(f"label column {column!r} is not in the data; columns: {_names(frame)}")
    values = frame[column]
    if values.isna().any():
        raise DataError(f"label column {column!r} has {int(values.isna().sum())} empty values")
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=bool)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any() or not numeric.isin([0, 1]).all():
        bad = values[numeric.isna() | ~numeric.isin([0, 1])].iloc[0]
        raise DataError(
            f"label column {column!r} must hold 0 (normal) and 1 (anomaly); found {bad!r}"
        )
    return numeric.to_numpy() == 1


def _names(frame: pd.DataFrame, limit: int = 12) -> str:
    names = [str(c) for c in frame.columns]
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
