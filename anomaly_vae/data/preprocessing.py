"""From a table of mixed columns to a float feature matrix, and back to a saved schema.

The schema fitted here is saved with the model as JSON and checked at scoring
time: columns are matched by name (order does not matter), extra columns are
ignored with a warning, and a missing or mistyped column is a DataError.

Feature layout of the matrix, per input column in schema order:
- numeric: one scaled value, then (with missing indicators) one 0/1 "was missing";
- categorical: one 0/1 feature per category seen in training (an unseen category
  or an unseen missing value is every category at once, which no training row is, and
  is warned about; of a cvae's condition columns, no category: a context of its own).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from anomaly_vae.config import DataConfig
from anomaly_vae.data.tables import (
    as_windows_1252,
    quoted_names,
    refuse_repeated_names,
    row_named,
    shown_value,
    similar_names_hint,
    unknown_column,
)
from anomaly_vae.errors import DataError

logger = logging.getLogger(__name__)

MISSING_CATEGORY = "<missing>"  # a categorical NaN is a category of its own
# Saved in a table schema: how the CSV files it was fitted on were read when not UTF-8
# (WINDOWS_1252). A schema without it was fitted when they were read as Latin-1, so its
# column names and categories are translated on loading (latin_1_names_as_read_now).
NON_UTF8_CSV_KEY = "non_utf8_csv"
NON_UTF8_CSV = "windows-1252"
# A text column unique in every one of at least this many training rows is taken for an
# id, not a category (below it, a few distinct labels may well each be seen once); a
# numeric one increasing by whole numbers over as many rows, for a row id or counter
ID_LIKE_MIN_ROWS = 20
# ... and one of whole numbers, each in one row, in any order, that fill at least half the
# range they span (ids 0 to n - 1 shuffled, with held-out rows missing): random whole
# numbers in a span of 2n are all distinct with a chance of about exp(-n / 4), under 1% at
# 20 rows; none of the 295 whole-number feature columns of the 12 ADBench tables and the
# 6 scikit-learn ones is so, whole or in a random 70% of its rows.
ID_LIKE_MAX_SPAN_PER_ROW = 2.0
WHOLE_FLOAT_TEXT = r"^(-?\d+)\.0+$"  # "2.0": an integer code read as a float
# A date as text, with or without a time: 2024-03-01, 2024-03-01T08:00:00Z, 3/1/2024,
# 01.03.2024 08:00 (a fresh date would be a category never seen in training)
DATE_TEXT = r"(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}\.\d{1,2}\.\d{4})(?:[T ].*)?"
SQUARE_LIMIT = float(np.sqrt(np.finfo(np.float64).max))  # ~1.3e154: beyond it a value's
# square, and so a standard deviation, overflows float64
DATES_CHECKED = 1_000  # distinct values of a text column parsed to tell dates from codes
STRAY_TEXT_SHARE = 0.05  # a text column whose non-empty cells are numbers but for at most
# this share is refused at fit as a numeric column with stray text (a typo, "?", "n/a")


def not_features(config: DataConfig) -> set[str]:
    """Names of the columns that are never features: id, label and ignored columns."""
    named = {config.id_column, config.label_column} - {None}
    return {str(name) for name in named} | set(config.ignore_columns)


@dataclass
class ColumnSchema:
    """One input column: its kind and the parameters fitted on training data."""

    name: str
    kind: str  # "numeric" or "categorical"
    center: float = 0.0  # numeric: subtracted before dividing by scale
    scale: float = 1.0
    fill: float = 0.0  # numeric: scaled value that stands in for a missing one (the median)
    step: float = 0.0  # numeric: smallest gap between distinct training values, scaled (the
    # quantisation step of integer-coded data); a constant column has no gap: 1 raw unit
    # (the integer grid) when its value is a whole number, else 0 (no step known)
    categories: list[str] = field(default_factory=list)  # categorical: in feature order
    most_common: str | None = None  # categorical: the training rows' most common value, the
    # missing one only when no row has another (ties: the first in order); None in models
    # saved before it was kept

    def is_known(self, value: Any) -> bool:
        """Whether ``value`` is a category seen in training (always True for numbers).

        >>> ColumnSchema("m", "categorical", categories=["2"]).is_known(2.0)
        True
        """
        if self.kind == "numeric":
            return True
        return bool(self.encoded(pd.Series([value], dtype=object))[1][0] >= 0)

    def encoded(self, values: pd.Series) -> tuple[pd.Series, np.ndarray]:
        """``(values as text, their category codes)`` of a categorical column: the text as
        its categories are written (see _as_text), codes ``(n,)`` index its categories, -1
        for a value not seen in training. A value that is no category but whose
        Windows-1252 reading is one ("\\x80" for "€") is read so: it is what a file that
        is not UTF-8 was read as before it was read as Windows-1252, and what callers of a
        model saved then (its MLflow signature names such columns so too) sent it, as its
        categories were then.

        >>> text, codes = ColumnSchema("unit", "categorical", categories=["€", "kg"]).encoded(
        ...     pd.Series(["\\x80", "kg", "\\x81"])
        ... )
        >>> text.tolist(), codes.tolist()
        (['€', 'kg', '\\x81'], [0, 1, -1])
        """
        text = _as_text(values)
        known = pd.Index(self.categories)
        codes = known.get_indexer(text)
        unseen = codes < 0
        if unseen.any():  # looked up only then: scoring seen values costs one lookup
            renamed = names_as_read_now(pd.unique(text[unseen]), self.categories)
            if renamed:
                text = text.replace(renamed)
                codes = known.get_indexer(text)
        return text, codes

    def feature_names(self, missing_indicators: bool) -> list[str]:
        if self.kind == "numeric":
            return [self.name] + ([f"{self.name}__missing"] if missing_indicators else [])
        return [f"{self.name}={c}" for c in self.categories]


def _quantisation_step(distinct: np.ndarray) -> float:
    """The step of sorted distinct values ``(k,)`` in raw units, 0 when none is known.

    A constant whole-number column (a pixel never inked in training, a flag never set)
    is taken to live on the integer grid like other integer-coded columns; without a step
    its variance would sit at ``model.min_log_variance`` and one unit of change would
    cost hundreds of nats, outweighing every other feature.

    >>> _quantisation_step(np.array([0.0, 2.0, 3.0])), _quantisation_step(np.array([4.0]))
    (1.0, 1.0)
    >>> _quantisation_step(np.array([0.5]))
    0.0
    """
    if len(distinct) > 1:
        return float(np.diff(distinct).min())
    return 1.0 if float(distinct[0]).is_integer() else 0.0


class TablePreprocessor:
    """Fits per-column scaling/encoding on training rows; turns frames into features.

    Parameters
    ----------
    config : DataConfig
        Which columns are ids, labels or forced categorical; how to scale; whether
        missing values get indicator features.
    """

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self.columns: list[ColumnSchema] = []

    @property
    def not_features(self) -> set[str]:
        """Names of the columns that are never features: id, label and ignored columns."""
        return not_features(self.config)

    # -- fitting -------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame) -> TablePreprocessor:
        """Learn the schema from training rows (id, label and ignored columns are skipped)."""
        refuse_repeated_names(frame.columns)
        if self.config.id_column is not None and self.config.id_column not in frame.columns:
            raise unknown_column("id", self.config.id_column, frame)
        features_named_ignored = sorted(
            set(self.config.ignore_columns)
            & set(self.config.categorical_columns + self.config.condition_columns)
        )
        if features_named_ignored:
            raise DataError(
                f"data.ignore_columns also names feature columns: {features_named_ignored}"
            )
        names = [c for c in frame.columns if str(c) not in self.not_features]
        if not names:
            raise DataError(
                "the data has no feature columns besides the id, label and ignored columns"
            )
        for key in ("categorical_columns", "condition_columns", "ignore_columns"):
            unknown = sorted(set(getattr(self.config, key)) - set(map(str, frame.columns)))
            if unknown:
                raise DataError(f"data.{key} names columns not in the data: {unknown}")
        self.columns = [self._fit_column(frame[name], str(name)) for name in names]
        return self

    def _fit_column(self, values: pd.Series, name: str) -> ColumnSchema:
        is_numeric = _holds_numbers(values) and name not in self.config.categorical_columns
        if is_numeric:
            _refuse_complex(values, name)
            # Not astype: an object column's missing values may be pd.NA (X.astype(object)
            # of a nullable Int64 column), which float() refuses with a TypeError.
            numbers = pd.to_numeric(values).astype("float64")
            infinite = np.flatnonzero(np.isinf(numbers.to_numpy()))
            if len(infinite):
                raise DataError(
                    f"column {name!r} holds infinite values ({row_named(numbers, infinite[0])})"
                )
            if numbers.isna().all():
                raise DataError(
                    f"column {name!r} is empty in every training row, so there is nothing "
                    "to learn from it: ignore it (data.ignore_columns, --ignore-col)"
                )
            _warn_counter_like(numbers, name)
            if not self.config.missing_indicators:
                _refuse_missing_at_fit(numbers, name)
            # A huge finite value (a sentinel such as 9.99e307) overflows the sum or the
            # squares: refused below, without numpy's overflow warning first.
            with np.errstate(over="ignore", invalid="ignore"):
                if self.config.scaling == "minmax":
                    center, spread = float(numbers.min()), float(numbers.max() - numbers.min())
                else:
                    center, spread = float(numbers.mean()), float(numbers.std(ddof=0))
            if not (np.isfinite(center) and np.isfinite(spread)):
                _refuse_overflowing_values(numbers, name)
            # A constant column is kept, but not divided by its zero spread.
            scale = spread if spread > 1e-12 else 1.0
            fill = (float(numbers.median()) - center) / scale
            distinct = np.unique(numbers.dropna().to_numpy())
            step = _quantisation_step(distinct) / scale
            return ColumnSchema(name, "numeric", center=center, scale=scale, fill=fill, step=step)
        forced = name in self.config.categorical_columns
        if pd.api.types.is_timedelta64_dtype(values):
            # Not the dates' advice (a fresh timestamp unseen; hour, weekday): a duration
            # is a number once its unit is chosen.
            raise DataError(
                f"column {name!r} holds durations (timedelta), which are not read as numbers: "
                f"{DURATION_ADVICE}, or ignore it (data.ignore_columns, --ignore-col)"
            )
        is_text = not _is_time(values)
        if not is_text or (not forced and _is_date_text(values)):
            codes = "; a code that only looks like a date: data.categorical_columns"
            raise DataError(
                f"column {name!r} holds dates or times, which are not features as they are "
                "(a fresh timestamp would be unseen): ignore it (data.ignore_columns, "
                "--ignore-col), or add what matters of it (hour, weekday) as columns"
                + (codes if is_text else "")
            )
        _refuse_stray_text(values, name, forced)
        text = _as_text(values)
        categories = sorted(text.unique().tolist())
        given = int(text.notna().sum())
        # A few bins (pd.cut with fixed edges) are categories like any other; too many are
        # refused as text is, but as what they are: their advice is not an id column's.
        if not forced and given >= ID_LIKE_MIN_ROWS and len(categories) == given:
            if _holds_intervals(values):
                raise DataError(
                    f"column {name!r} holds intervals (pandas Interval, as pd.cut or pd.qcut "
                    f"makes them), a different one in each of its {given} rows: as a category "
                    f"every new interval would be unseen: {INTERVAL_ADVICE}, or ignore it "
                    "(data.ignore_columns, --ignore-col)"
                )
            raise DataError(
                f"column {name!r} has a different text value in each of its {given} rows, "
                "like an id: as a category every new value would be unseen. Pass it as the "
                "id column (--id-col), ignore it (data.ignore_columns, --ignore-col), or, "
                "to keep it a category, name it in data.categorical_columns"
            )
        if len(categories) > self.config.max_categories:
            if _holds_intervals(values):
                raise DataError(
                    f"column {name!r} holds {len(categories)} distinct intervals (pandas "
                    "Interval, as pd.cut or pd.qcut makes them), more than "
                    f"data.max_categories={self.config.max_categories} as categories: "
                    f"{INTERVAL_ADVICE}, use fewer bins, or ignore it (data.ignore_columns, "
                    "--ignore-col)"
                )
            raise DataError(
                f"column {name!r} has {len(categories)} distinct text values (more than "
                f"data.max_categories={self.config.max_categories}); pass it as the id column, "
                "ignore it (data.ignore_columns, --ignore-col), or raise data.max_categories"
            )
        if not forced and len(categories) > 2 and _all_numbers(values):
            # A CSV's numbers are read as numbers; text of numbers comes from a frame or
            # Parquet file that stored them as text, where a measurement read as
            # categories makes every new value an unseen category.
            logger.warning(
                "column %r holds numbers stored as text, read as %d categories (a number "
                "not seen in training is then an unseen category): if it is a measurement, "
                "store it as numbers (pandas: pd.to_numeric); to keep it a category, name "
                "it in data.categorical_columns",
                name,
                len(categories),
            )
        return ColumnSchema(
            name, "categorical", categories=categories, most_common=_most_common(text)
        )

    # -- applying ------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [n for c in self.columns for n in c.feature_names(self.config.missing_indicators)]

    @property
    def feature_columns(self) -> np.ndarray:
        """``(d,)`` int: for each feature, the position in ``columns`` of the input column
        it comes from (a one-hot category and a missing indicator: their column's). A
        column's features are contiguous, in column order."""
        widths = [len(c.feature_names(self.config.missing_indicators)) for c in self.columns]
        return np.repeat(np.arange(len(self.columns)), widths)

    @property
    def binary_features(self) -> np.ndarray:
        """``(d,)`` bool: which features are 0/1 (indicators, one-hot categories)."""
        flags: list[bool] = []
        for column in self.columns:
            if column.kind == "numeric":
                flags += [False] + ([True] if self.config.missing_indicators else [])
            else:
                flags += [True] * len(column.categories)
        return np.array(flags, dtype=bool)

    @property
    def feature_steps(self) -> np.ndarray:
        """``(d,)`` float: each feature's quantisation step in scaled units (0: none known,
        as for indicators and one-hot categories)."""
        steps: list[float] = []
        for column in self.columns:
            if column.kind == "numeric":
                steps += [column.step] + ([0.0] if self.config.missing_indicators else [])
            else:
                steps += [0.0] * len(column.categories)
        return np.array(steps, dtype=np.float64)

    @property
    def condition_mask(self) -> np.ndarray:
        """``(d,)`` bool: features that come from ``config.condition_columns``."""
        condition = set(self.config.condition_columns)
        return np.array(
            [
                c.name in condition
                for c in self.columns
                for _ in c.feature_names(self.config.missing_indicators)
            ],
            dtype=bool,
        )

    @property
    def input_columns(self) -> list[str]:
        return [c.name for c in self.columns]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Features of ``frame`` as ``(n, d)`` float32, in the fitted layout.

        Raises DataError for a missing column or a column of the wrong type; warns
        about extra columns, which are ignored, and about a numeric column empty in every
        row: once per call, or once per file within :func:`warnings_per_file`.
        """
        self.check_columns(frame)
        # Each column's block goes straight into the float32 result: float64 blocks joined
        # and then cast held three copies of the features at once.
        widths = [len(c.feature_names(self.config.missing_indicators)) for c in self.columns]
        features = np.empty((len(frame), sum(widths)), dtype=np.float32)
        start = 0
        for column, width in zip(self.columns, widths, strict=True):
            block = self._transform_column(frame[column.name], column)
            # A slice assignment would broadcast a block of one column where concatenate
            # refused it: the widths of the names and the blocks must agree.
            assert block.shape[1] == width, (column.name, block.shape, width)
            features[:, start : start + width] = block
            start += width
        return features

    def check_columns(self, frame: pd.DataFrame) -> None:
        """DataError for a column missing or named twice; warns about extra columns."""
        refuse_repeated_names(frame.columns)
        present = set(map(str, frame.columns))
        expected = set(self.input_columns) | self.not_features
        extra = [str(c) for c in frame.columns if str(c) not in expected]
        missing = [c.name for c in self.columns if c.name not in present]
        if missing:
            raise missing_columns(missing, extra)
        gathered = _GATHERED.get()
        if gathered is not None:
            gathered.extra_columns.update(dict.fromkeys(extra))
        elif extra:
            warn_extra_columns(extra)

    def _transform_column(self, values: pd.Series, column: ColumnSchema) -> np.ndarray:
        if column.kind == "numeric":
            numbers = _as_numbers(values, column.name)
            if pd.api.types.is_bool_dtype(values) or _holds_python_booleans(values):
                gathered = _GATHERED.get()
                if gathered is None:
                    _warn_boolean_column(column.name)
                else:
                    gathered.boolean_columns.setdefault(column.name, None)
            missing = np.isnan(numbers)
            if missing.any() and not self.config.missing_indicators:
                raise MissingValuesError(column.name, int(missing.sum()))
            gathered = _GATHERED.get()
            if gathered is not None:
                gathered.numeric_columns.setdefault(column.name, None)
                if not missing.all():
                    gathered.filled_columns.add(column.name)
            elif len(missing) > 1 and missing.all():
                _warn_empty_column(column.name, len(missing))
            scaled = np.where(missing, column.fill, (numbers - column.center) / column.scale)
            _check_float32_range(scaled, values, column.name)
            if self.config.missing_indicators:
                return np.stack([scaled, missing.astype(np.float64)], axis=1)
            return scaled[:, None]
        text, codes = column.encoded(values)
        one_hot = np.zeros((len(values), len(column.categories)), dtype=np.float64)
        seen = codes >= 0  # -1: a category not seen in training
        one_hot[np.flatnonzero(seen), codes[seen]] = 1.0
        if seen.all() or column.name in self.config.condition_columns:
            return one_hot  # a condition's unseen value is no context at all (cvae warns)
        # Every category at once, a pattern no training row has: it costs more than the
        # category the model expects. All zeros could cost less, for a column the other
        # columns do not predict (independent Bernoulli features).
        one_hot[~seen] = 1.0
        unseen, rows = list(text[~seen].unique()), int((~seen).sum())
        gathered = _GATHERED.get()
        if gathered is None:
            warn_unseen_category(column.name, unseen, rows)
        else:
            gathered.add_unseen_category(column.name, unseen, rows, self)
        return one_hot

    def inverse_transform(self, features: np.ndarray) -> pd.DataFrame:
        """Features ``(n, d)`` (e.g. decoded means) back to a table in the original units.

        Numeric columns are unscaled (NaN where the missing indicator is above 0.5);
        categorical columns take their most likely category (NaN for the missing one).
        """
        out: dict[str, Any] = {}
        start = 0
        for column in self.columns:
            width = len(column.feature_names(self.config.missing_indicators))
            block = features[:, start : start + width]
            start += width
            if column.kind == "numeric":
                values = block[:, 0] * column.scale + column.center
                if self.config.missing_indicators:
                    values = np.where(block[:, 1] > 0.5, np.nan, values)
                out[column.name] = values
            else:
                chosen = np.asarray(column.categories, dtype=object)[block.argmax(axis=1)]
                out[column.name] = np.where(chosen == MISSING_CATEGORY, None, chosen)
        return pd.DataFrame(out)

    def typical_row(self) -> pd.DataFrame:
        """One row of the input columns that holds no training row, from the fitted schema
        alone: each numeric column's training median (float) and each categorical column's
        most common training value (text; None for the missing one; the first category
        in a model saved before the most common was kept). No id, label or ignored column.
        """
        row: dict[str, Any] = {}
        for column in self.columns:
            if column.kind == "numeric":
                row[column.name] = column.center + column.fill * column.scale  # the median
            else:
                value = column.most_common or column.categories[0]
                row[column.name] = None if value == MISSING_CATEGORY else value
        return pd.DataFrame([row], columns=self.input_columns)

    # -- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"columns": [asdict(c) for c in self.columns], NON_UTF8_CSV_KEY: NON_UTF8_CSV}

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: DataConfig) -> TablePreprocessor:
        pre = cls(config)
        pre.columns = [ColumnSchema(**c) for c in data["columns"]]
        for column in pre.columns:  # models saved before _canonical_text may hold "2.0"
            column.categories = _canonical_text(pd.Series(column.categories, dtype=object)).tolist()
        if read_as_latin_1(data):
            names = latin_1_names_as_read_now([c.name for c in pre.columns])
            for column, name in zip(pre.columns, names, strict=True):
                column.name = name
                column.categories = latin_1_names_as_read_now(column.categories)
        return pre


def read_as_latin_1(schema: dict[str, Any]) -> bool:
    """Whether a saved table schema was fitted when CSV files that are not UTF-8 were read
    as Latin-1 (it lacks :data:`NON_UTF8_CSV_KEY`)."""
    return schema.get(NON_UTF8_CSV_KEY) is None


def latin_1_names_as_read_now(names: list[str]) -> list[str]:
    """Column names or categories of a schema fitted when CSV files that are not UTF-8
    were read as Latin-1, as such a file reads now (as Windows-1252): "\\x80" becomes
    "€", so an old model matches the same file's values. Kept as they are when two would
    become one (then they did not come from one such file: "€" itself was among them).

    >>> latin_1_names_as_read_now(["\\x80", "1\\x965", "ok"])
    ['€', '1–5', 'ok']
    >>> latin_1_names_as_read_now(["\\x80", "€"])
    ['\\x80', '€']
    """
    translated = [as_windows_1252(name) for name in names]
    return translated if len(set(translated)) == len(set(names)) else names


def names_as_read_now(names: Iterable[Any], known: Sequence[str]) -> dict[str, str]:
    """``{name: the same bytes read as Windows-1252}`` for each of ``names`` not among
    ``known`` (a model's input columns) whose reading is: a column as the MLflow
    signature of a model logged before files that are not UTF-8 were read as
    Windows-1252 names it, and as callers sent it since ("Preis \\x80"), while the model
    loads it as such a file reads now ("Preis €", see :func:`latin_1_names_as_read_now`).

    >>> names_as_read_now(["Preis \\x80", "x"], ["Preis €", "x"])
    {'Preis \\x80': 'Preis €'}
    """
    wanted = set(known)
    return {
        name: as_windows_1252(name)
        for name in names
        if isinstance(name, str) and name not in wanted and as_windows_1252(name) in wanted
    }


class MissingValuesError(DataError):
    """Missing values in the column of numbers ``column`` of a model trained without
    missing indicators, which has no feature to give them: ``count`` of the rows scored.

    A file scored a part at a time adds those of its later parts (:meth:`count_parts`):
    the first failing part's count alone ("has 13 missing values", of 42 in the file)
    was taken for the file's. No row is named: a row number within a part (a Spark
    batch's, say) is no row of the file."""

    def __init__(self, column: str, count: int) -> None:
        super().__init__(column, count)
        self.column, self.count = column, count
        self.at_least = False  # counting stopped at a part that could not be read

    def __str__(self) -> str:
        count = f"at least {self.count}" if self.at_least else str(self.count)
        return (
            f"column {self.column!r} has {count} missing values and the model was trained "
            "without missing indicators"
        )

    def count_parts(self, parts: Iterable[pd.DataFrame]) -> None:
        """Add the missing values in ``column`` of ``parts``, the rest of the file (read a
        part at a time: memory holds one). A part that cannot be read, or a cell that is
        no number, ends the count, which is then "at least"."""
        try:
            for part in parts:
                numbers = _as_numbers(part[self.column], self.column)
                self.count += int(np.isnan(numbers).sum())
        except DataError:
            self.at_least = True


@dataclass
class UnseenValues:
    """Values of one column not seen in training, over the parts of one file."""

    values: dict[Any, None] = field(default_factory=dict)  # in order of appearance
    rows: dict[int, int] = field(default_factory=dict)  # id(model) -> rows: per model,
    # as each model of an ensemble sees the same rows

    def add(self, unseen: list[Any], rows: int, model: object) -> None:
        self.values.update(dict.fromkeys(unseen))
        self.rows[id(model)] = self.rows.get(id(model), 0) + rows

    @property
    def row_count(self) -> int:
        return max(self.rows.values())


@dataclass
class GatheredWarnings:
    """What :meth:`TablePreprocessor.transform` found worth a warning, over every part
    of one file scored within :func:`warnings_per_file`."""

    extra_columns: dict[str, None] = field(default_factory=dict)  # in order of appearance
    numeric_columns: dict[str, None] = field(default_factory=dict)
    filled_columns: set[str] = field(default_factory=set)  # numeric, a value in some row
    unseen_conditions: dict[str, UnseenValues] = field(default_factory=dict)  # by column
    known_conditions: dict[str, list[str]] = field(default_factory=dict)
    unseen_categories: dict[str, UnseenValues] = field(default_factory=dict)  # by column
    boolean_columns: dict[str, None] = field(default_factory=dict)  # numeric, held True/False

    def add_unseen_category(self, name: str, unseen: list[Any], rows: int, owner: object) -> None:
        """Note ``rows`` rows of one part whose category in ``name`` ``owner`` never saw."""
        self.unseen_categories.setdefault(name, UnseenValues()).add(unseen, rows, owner)

    def add_unseen_condition(
        self, name: str, unseen: list[Any], rows: int, known: list[str], model: object
    ) -> None:
        """Note ``rows`` rows of one part whose condition ``name`` was unseen by ``model``."""
        self.unseen_conditions.setdefault(name, UnseenValues()).add(unseen, rows, model)
        self.known_conditions[name] = known

    def log(self, rows: int) -> None:
        """Log each warning once, for a file of ``rows`` rows."""
        if self.extra_columns:
            warn_extra_columns(list(self.extra_columns))
        for name in self.numeric_columns:
            if name not in self.filled_columns and rows > 1:
                _warn_empty_column(name, rows)
        for name, seen in self.unseen_conditions.items():
            warn_unseen_condition(
                name, list(seen.values), seen.row_count, self.known_conditions[name]
            )
        for name, seen in self.unseen_categories.items():
            warn_unseen_category(name, list(seen.values), seen.row_count)
        for name in self.boolean_columns:
            _warn_boolean_column(name)


_GATHERED: ContextVar[GatheredWarnings | None] = ContextVar("gathered_warnings", default=None)


@contextlib.contextmanager
def warnings_per_file() -> Iterator[GatheredWarnings]:
    """Gather, rather than log, the warnings of every transform within it.

    A file scored in parts (progress steps, batch chunks) would otherwise warn once per
    part, and call a column empty "in all rows" when it is so in one part only. The
    caller logs them once at the end, with the file's row count::

        with warnings_per_file() as gathered:
            for part in parts:
                detector.score_frame(part)
        gathered.log(rows)
    """
    gathered = GatheredWarnings()
    token = _GATHERED.set(gathered)
    try:
        yield gathered
    finally:
        _GATHERED.reset(token)


def gathered_warnings() -> GatheredWarnings | None:
    """The warnings being gathered by :func:`warnings_per_file`, or None outside it."""
    return _GATHERED.get()


def warn_extra_columns(names: list[str]) -> None:
    """Warn that the columns ``names`` of the data, not seen in training, are ignored."""
    logger.warning(
        "ignoring column%s not seen in training: %s",
        "s" if len(names) > 1 else "",
        ", ".join(names),
    )


def _warn_boolean_column(name: str) -> None:
    logger.warning(
        "column %r holds True/False, and the model was trained on numbers in it: read as 1 "
        "and 0, which means something only if it held 0/1 flags in training",
        name,
    )


def _warn_empty_column(name: str, rows: int) -> None:
    logger.warning(
        "column %r is empty in all %d rows scored: each row is scored on its "
        "missingness, not on a value (a dead sensor?)",
        name,
        rows,
    )


def warn_unseen_condition(name: str, unseen: list[Any], rows: int, known: list[str]) -> None:
    """Warn that ``rows`` rows hold condition values of column ``name`` not seen in training."""
    logger.warning(
        "%d row(s) have a %s not seen in training (%s); they are scored given "
        "no %s, so their scores are not comparable (known: %s)",
        rows,
        name,
        ", ".join(repr(v) for v in unseen[:3]),
        name,
        ", ".join(known),
    )


def warn_unseen_category(name: str, unseen: list[Any], rows: int) -> None:
    """Warn that ``rows`` rows hold categories of column ``name`` not seen in training."""
    named = [("a missing value" if v == MISSING_CATEGORY else repr(v)) for v in unseen[:3]]
    more = f" and {len(unseen) - 3} more" if len(unseen) > 3 else ""
    logger.warning(
        "column %r holds %s not seen in training (%d row%s): encoded as unlike every known "
        "category, which raises their scores",
        name,
        ", ".join(named) + more,
        rows,
        "" if rows == 1 else "s",
    )


# What pandas' infer_dtype calls an object column of numbers only (no text, no booleans)
NUMBER_OBJECTS = ("integer", "floating", "mixed-integer-float", "decimal")


def _holds_numbers(values: pd.Series) -> bool:
    """Whether a training column is numeric: a numeric dtype other than bool, or an object
    column holding nothing but numbers (``X.astype(object)``, an array built from mixed
    lists, decimals from a database or a Parquet decimal column), which as text would make
    every distinct number a category of its own."""
    if pd.api.types.is_numeric_dtype(values):
        return not pd.api.types.is_bool_dtype(values)
    return values.dtype == object and pd.api.types.infer_dtype(values) in NUMBER_OBJECTS


def _most_common(text: pd.Series) -> str:
    """The most common value of a categorical column's ``text`` (as :func:`_as_text` gives
    it), other than the missing one unless every value is missing; ties: the first in
    sorted order.

    >>> _most_common(pd.Series(["b", "a", "b", "a", MISSING_CATEGORY, MISSING_CATEGORY, "c"]))
    'a'
    """
    counts = text[text != MISSING_CATEGORY].value_counts()
    if counts.empty:
        return MISSING_CATEGORY
    return str(min(counts.index[counts == counts.max()]))


def _as_text(values: pd.Series) -> pd.Series:
    """Categorical values as strings, with NaN as its own category (see _canonical_text)."""
    return _canonical_text(values.astype(object).where(values.notna(), MISSING_CATEGORY))


def _canonical_text(values: pd.Series) -> pd.Series:
    """Values as strings, a whole number written as an integer: a column of integer codes
    becomes floats wherever one value is missing, and 2.0 must stay the category 2.

    >>> _canonical_text(pd.Series([2, 2.0, "2.50", "a", -3.0], dtype=object)).tolist()
    ['2', '2', '2.50', 'a', '-3']
    """
    return values.astype(str).str.replace(WHOLE_FLOAT_TEXT, r"\1", regex=True)


def _refuse_stray_text(values: pd.Series, name: str, forced: bool) -> None:
    """DataError when a text column is numbers but for a few cells (``"abc"``, ``"?"``).

    Such a column is almost always a numeric one with a typo or a missing-value marker;
    taken as categories, every distinct number would become a category of its own and
    a new number at scoring time an unseen one. A column in data.categorical_columns
    (``forced``) is taken as categories whatever it holds.
    """
    _refuse_nested(values, name)
    if forced or pd.api.types.is_bool_dtype(values):
        return
    _refuse_numbers_with_booleans(values, name)
    present = values.notna()
    distinct = pd.Series(values[present].unique())  # parsed once per value, not per cell
    words = distinct[pd.to_numeric(distinct, errors="coerce").isna()]
    stray = values.isin(words)
    if not stray.any() or stray.sum() > STRAY_TEXT_SHARE * present.sum():
        return
    position = int(np.flatnonzero(stray.to_numpy())[0])
    raise DataError(
        f"column {name!r} holds numbers but for {int(stray.sum())} text cell(s) such as "
        f"{shown_value(values.iloc[position])} ({row_named(values, position)}): correct "
        "or empty those cells, or list the column in data.categorical_columns if it is a category"
    )


BOOLEAN_TEXT = ("True", "False", "true", "false", "TRUE", "FALSE")  # as pandas reads a CSV's


def _holds_python_booleans(values: pd.Series) -> bool:
    """Whether an object column holds True or False in some cell (with numbers, which
    :func:`_as_numbers` reads them among as 1 and 0, as it does a bool column)."""
    if values.dtype != object:
        return False
    if pd.api.types.infer_dtype(values, skipna=True) not in ("mixed", "mixed-integer"):
        return False
    return any(isinstance(v, bool | np.bool_) for v in values)


def _refuse_numbers_with_booleans(values: pd.Series, name: str) -> None:
    """DataError when a column holds numbers and, in other cells, booleans (``True``, or
    the text ``"True"`` of a CSV file), whatever their share.

    Neither numbers alone (numeric) nor booleans alone (categories), such a column was
    taken as categories, each number one of its own (so refused as too many text values,
    or a new number unseen at scoring), and in a CSV file refused as stray text below 5%
    of its cells; read as numbers, True would be 1, which is right only for 0/1 flags.
    """
    if not (values.dtype == object or pd.api.types.is_string_dtype(values)):
        return
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind == "string":  # text: booleans only as words, found without a Python loop
        booleans = values.isin(BOOLEAN_TEXT).to_numpy()
    elif kind in ("mixed", "mixed-integer"):  # what infer_dtype calls numbers and bools
        booleans = np.array([isinstance(v, bool | np.bool_) for v in values], dtype=bool)
    else:
        return
    others = values[~booleans & values.notna().to_numpy()]
    if not booleans.any() or others.empty:
        return
    if pd.to_numeric(others, errors="coerce").isna().any():
        return  # words among them: a text column, whose booleans are categories
    position = int(np.flatnonzero(booleans)[0])
    raise DataError(
        f"column {name!r} holds numbers and booleans, such as "
        f"{shown_value(values.iloc[position])} ({row_named(values, position)}): if True and "
        "False stand for 1 and 0, write them so; to keep the column's values as categories, "
        "list it in data.categorical_columns"
    )


def _all_numbers(values: pd.Series) -> bool:
    """Whether every non-empty cell of a text column ``(n,)`` reads as a number."""
    distinct = pd.Series(values.dropna().unique())  # parsed once per value, not per cell
    if distinct.empty or distinct.map(lambda value: isinstance(value, bool)).any():
        return False
    return bool(pd.to_numeric(distinct, errors="coerce").notna().all())


def _refuse_overflowing_values(numbers: pd.Series, name: str) -> None:
    """DataError naming the first value of ``numbers`` (float64) whose square overflows
    float64 (the largest one when the overflow came from many large values together):
    the column's centre or spread is not finite, so it cannot be scaled or saved."""
    magnitude = numbers.abs().fillna(0.0).to_numpy()
    overflowing = np.flatnonzero(magnitude > SQUARE_LIMIT)
    position = int(overflowing[0]) if len(overflowing) else int(magnitude.argmax())
    raise DataError(
        f"column {name!r} holds {shown_value(numbers.iloc[position])} ("
        f"{row_named(numbers, position)}), too large to scale the column by: correct it, "
        "or empty it if it is a code for a missing value"
    )


def _is_date_text(values: pd.Series) -> bool:
    """Whether every value of a text column is a date, as a CSV file writes them: shaped
    as DATE_TEXT and a real calendar date (a grade "20/20/20" or a CAS number
    "7732-18-5" is not). A time of day alone ("08:00", a shift) may well be a category."""
    text = values.dropna()
    if text.empty or not pd.api.types.is_string_dtype(text):
        return False
    distinct = pd.Series(text.astype(str).unique()[:DATES_CHECKED])
    if not distinct.str.fullmatch(DATE_TEXT).all():
        return False
    try:
        with warnings.catch_warnings():  # mixed time zones or formats: still dates
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(distinct, errors="coerce", format="mixed", utc=True)
    except (ValueError, TypeError, OverflowError):
        return False
    return bool(parsed.notna().all())


def _warn_counter_like(numbers: pd.Series, name: str) -> None:
    """Warn when a numeric training column ``(n,)`` holds a different whole number in
    every one of at least ``ID_LIKE_MIN_ROWS`` rows, increasing row by row, or in any
    order filling most of their range (``ID_LIKE_MAX_SPAN_PER_ROW``): a row id or a
    counter, as a feature, puts later rows' ids beyond what training saw, so new normal
    rows are flagged for their ids alone."""
    if len(numbers) < ID_LIKE_MIN_ROWS or numbers.isna().any():
        return
    values = numbers.to_numpy()
    if not bool(np.all(values == np.floor(values))):
        return
    if bool(np.all(np.diff(values) > 0)):
        logger.warning(
            "column %r holds a different whole number in each of its %d rows, increasing "
            "row by row, like a row id or a counter: as a feature, every new row's larger "
            "value would look anomalous. Pass it as the id column (--id-col) or ignore it "
            "(--ignore-col) unless it is a measurement",
            name,
            len(values),
        )
        return
    distinct = np.unique(values)
    span = float(distinct[-1] - distinct[0]) + 1
    if len(distinct) == len(values) and span <= ID_LIKE_MAX_SPAN_PER_ROW * len(values):
        logger.warning(
            "column %r holds a different whole number in each of its %d rows, from %s to "
            "%s with few gaps, like row ids in no order: as a feature, a new row's id beyond "
            "them would look anomalous. Pass it as the id column (--id-col) or ignore it "
            "(--ignore-col) unless it is a measurement",
            name,
            len(values),
            f"{distinct[0]:.0f}",
            f"{distinct[-1]:.0f}",
        )


# What to do with a column of durations (a pandas timedelta, a Parquet duration column)
DURATION_ADVICE = "pass them as numbers in a unit (in pandas: .dt.total_seconds())"
INTERVAL_ADVICE = (
    "pass them as numbers (in pandas: pd.IntervalIndex(column).mid, or its .left and "
    ".right as two columns)"
)


def _holds_intervals(values: pd.Series) -> bool:
    """Whether a column holds pandas Intervals: an interval dtype, a categorical of
    intervals (what ``pd.cut`` and ``pd.qcut`` return) or Intervals in an object column."""
    return pd.api.types.infer_dtype(values.astype(object), skipna=True) == "interval"


def _is_time(values: pd.Series) -> bool:
    """Whether a column holds dates or times: a datetime, timedelta or period dtype, or
    Python dates in an object column (a Parquet ``date32`` column, as Spark writes a
    DateType, reads so). A time of day alone (``datetime.time``) is not one."""
    return (
        pd.api.types.is_datetime64_any_dtype(values)
        or pd.api.types.is_timedelta64_dtype(values)
        or isinstance(values.dtype, pd.PeriodDtype)
        or (
            values.dtype == object
            and pd.api.types.infer_dtype(values, skipna=True) in ("date", "datetime")
        )
    )


NESTED_TYPES = (list, tuple, dict, set, np.ndarray)  # a Parquet list, struct or map cell


def _refuse_nested(values: pd.Series, name: str) -> None:
    """DataError for a column of lists or records (a Parquet list, struct or map column):
    neither a number nor a category (pandas cannot even compare such cells)."""
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) != "mixed":
        return
    nested = values.map(lambda value: isinstance(value, NESTED_TYPES)).to_numpy(dtype=bool)
    if nested.any():
        position = int(np.flatnonzero(nested)[0])
        value = values.iloc[position]
        value = value.tolist() if isinstance(value, np.ndarray) else value
        raise DataError(
            f"column {name!r} holds lists or records, such as {value!r:.40} ("
            f"{row_named(values, position)}), which are not features: ignore it "
            "(data.ignore_columns, --ignore-col), or spread what matters of it over columns"
        )


def _refuse_complex(values: pd.Series, name: str) -> None:
    """DataError for a column of complex numbers, which as float64 would lose their
    imaginary part (numpy only warns), so rows differing there would score alike."""
    if values.dtype.kind == "c":
        raise DataError(
            f"column {name!r} holds complex numbers, which are not features: pass their real "
            "and imaginary parts (or magnitude and phase) as columns of their own"
        )


def _as_numbers(values: pd.Series, name: str) -> np.ndarray:
    """A numeric column as ``(n,)`` float64 with NaN for missing; DataError for text."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("float64").to_numpy()
    if pd.api.types.is_timedelta64_dtype(values):
        raise DataError(
            f"column {name!r} should be numeric but holds durations (timedelta): "
            f"{DURATION_ADVICE}, in the unit of the training data"
        )
    if _is_time(values):
        # pd.to_numeric would turn them into nanoseconds since 1970, scored as huge numbers.
        raise DataError(f"column {name!r} should be numeric but holds dates or times")
    if pd.api.types.is_numeric_dtype(values):
        _refuse_complex(values, name)
        numbers = values.astype("float64").to_numpy()
    else:
        coerced = pd.to_numeric(values, errors="coerce")
        bad = coerced.isna() & values.notna()
        if bad.any():
            position = int(np.flatnonzero(bad.to_numpy())[0])
            value = values.iloc[position]
            if isinstance(value, pd.Interval):
                # pd.cut's bins of a measurement: fit gives this advice for such a column.
                raise DataError(
                    f"column {name!r} should be numeric but holds intervals (pandas "
                    f"Interval, as pd.cut or pd.qcut makes them), such as {shown_value(value)} "
                    f"({row_named(values, position)}): {INTERVAL_ADVICE}"
                )
            raise DataError(
                f"column {name!r} should be numeric but holds "
                f"{shown_value(value)} ({row_named(values, position)})"
            )
        numbers = coerced.astype("float64").to_numpy()
    infinite = np.isinf(numbers)
    if infinite.any():
        position = int(np.flatnonzero(infinite)[0])
        raise DataError(f"column {name!r} holds infinite values ({row_named(values, position)})")
    return numbers


FLOAT32_LIMIT = float(np.finfo(np.float32).max)


def _check_float32_range(scaled: np.ndarray, values: pd.Series, name: str) -> None:
    """DataError for a value whose scaled form (``(n,)`` float64) does not fit the model's
    float32: it would become infinite in the cast, and its scores NaN."""
    beyond = np.abs(scaled) > FLOAT32_LIMIT
    if beyond.any():
        position = int(np.flatnonzero(beyond)[0])
        raise DataError(
            f"column {name!r} holds {shown_value(values.iloc[position])} ("
            f"{row_named(values, position)}), too far from the training values to score "
            "in float32"
        )


def check_cells(frame: pd.DataFrame, config: DataConfig) -> None:
    """DataError, naming the row, for a feature cell that no row of a table may hold: an
    infinite number, one too large to scale a column by (1e300), or stray text in a column
    of numbers (``"?"``).

    Run on a whole file before its labelled anomalies and held-out rows are set aside, so
    that a bad cell is found wherever it sits, before training, and a column of numbers
    with a ``"?"`` outside the training rows is not taken for categories.
    """
    skipped = not_features(config)
    for name in frame.columns:
        if str(name) in skipped:
            continue
        values = frame[name]
        if pd.api.types.is_bool_dtype(values) or _is_time(values):
            continue
        if pd.api.types.is_numeric_dtype(values):
            numbers = _as_numbers(values, str(name))  # refuses infinite values
            if (np.abs(numbers) > SQUARE_LIMIT).any():  # NaN compares False
                _refuse_overflowing_values(pd.Series(numbers, index=values.index), str(name))
        else:
            _refuse_stray_text(values, str(name), str(name) in config.categorical_columns)


def unseen_columns(frame: pd.DataFrame, reference: pd.DataFrame, config: DataConfig) -> list[str]:
    """The columns of ``frame`` that a model fit on ``reference`` ignores: neither one of
    its columns nor an id, label or ignored column (as :meth:`TablePreprocessor.check_columns`
    finds them)."""
    known = set(map(str, reference.columns)) | not_features(config)
    return [str(name) for name in frame.columns if str(name) not in known]


def missing_columns(missing: list[str], extra: list[str]) -> DataError:
    """The error for a file read for a model (scored, calibrated on, an --eval file) that
    lacks its feature columns ``missing``, in one wording wherever it is read; ``extra``,
    the file's columns the model does not know, may hold them spelled otherwise."""
    return DataError(
        f"missing column{'s' if len(missing) > 1 else ''} {quoted_names(missing)} "
        f"that the training data has{similar_names_hint(missing, extra)}"
    )


def refuse_missing_values(frame: pd.DataFrame, reference: pd.DataFrame, config: DataConfig) -> None:
    """Without ``config.missing_indicators``, DataError naming the first row for a missing
    value in ``frame`` in a column of numbers of ``reference`` (the training file; it may
    be ``frame``), as fitting its training rows raises it.

    Fit runs it before training on the whole training file and on an --eval file, whose
    rows it scores after training: the evaluation rows' missing values were found only
    then, when the model refused them. A column empty in every row of ``reference`` is
    left to the fit, which refuses it as empty."""
    if config.missing_indicators:
        return
    skipped = not_features(config) | set(config.categorical_columns)
    present = set(map(str, frame.columns))  # a column missing is check_same_kinds' error
    for name in reference.columns:
        if str(name) in skipped or str(name) not in present:
            continue
        if _holds_numbers(reference[name]) and not reference[name].isna().all():
            # check_cells and check_same_kinds ran first: no text, no infinite values
            _refuse_missing_at_fit(pd.to_numeric(frame[name], errors="coerce"), str(name))


def _refuse_missing_at_fit(numbers: pd.Series, name: str) -> None:
    """DataError for the missing values of the column of numbers ``name`` (``numbers``,
    NaN = missing, indexed as its rows) in a fit without missing indicators."""
    missing = np.flatnonzero(numbers.isna().to_numpy())
    if len(missing):
        raise DataError(
            f"column {name!r} has {len(missing)} missing values (the first in "
            f"{row_named(numbers, int(missing[0]))}); set data.missing_indicators=true"
        )


def check_same_kinds(frame: pd.DataFrame, reference: pd.DataFrame, config: DataConfig) -> None:
    """DataError when ``frame`` lacks a feature column of ``reference`` (a file read for
    the same model), or holds text in one of its numeric columns; names the row."""
    skipped = not_features(config)
    features = [str(name) for name in reference.columns if str(name) not in skipped]
    missing = [name for name in features if name not in set(map(str, frame.columns))]
    if missing:
        raise missing_columns(missing, unseen_columns(frame, reference, config))
    for name in features:
        if name in config.categorical_columns:  # categories, whatever they are written as
            continue
        numeric = pd.api.types.is_numeric_dtype(reference[name])
        if numeric and not pd.api.types.is_bool_dtype(reference[name]):
            _as_numbers(frame[name], name)
