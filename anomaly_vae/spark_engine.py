"""The Spark engine of batch scoring: the registered model as a Spark UDF
(``mlflow.pyfunc.spark_udf``), one output file per input in the local engine's layout.

The driver reads each input and writes its output with the local engine's code
(:func:`anomaly_vae.batch.score_file`), ``chunk_rows`` rows at a time; only the model
runs on the Spark executors, once per row. So both engines read a file alike (types,
missing values, empty files, decimal commas), number its rows alike and write the same
columns with the same types, and a bad file fails with the local engine's message.

Needs the ``spark`` extra (PySpark) and Java 17+. On a cluster, run the batch through
``spark-submit`` with the model URI; the input and output folders need only be
readable and writable by the driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly_vae.batch import score_file
from anomaly_vae.errors import ConfigError, DataError
from anomaly_vae.explanation import refuse_unexplained
from anomaly_vae.outputs import insert_id_column

SPARK_TYPES = {
    "float64": "double",
    "float32": "float",
    "bool": "boolean",
    "int64": "bigint",
    "str": "string",  # an explanation's column names (pandas 3's text dtype)
    "object": "string",  # the same under pandas 2
}
# the Spark SQL type of each pandas dtype the model's output columns can have
POSITION = "__position"  # row position within a chunk, carried through Spark
WORKER_MODULES = ("pandas", "pyarrow", "mlflow", "torch", "anomaly_vae")  # the workers
# import these to run the model (mlflow's models-from-code entry imports anomaly_vae)
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", re.MULTILINE)
# the "Type: message" line that ends a Python traceback (the worker's, inside Spark's error)

# PySpark 4.x warns at each of its pandas conversions that it does not yet fully support
# pandas 3 (some 20 lines a run); the engine checks its outputs against the local engine's
# (tests/test_spark.py), so the warning tells an operator nothing.
PANDAS_3_WARNING = "PySpark does not yet fully support pandas >= 3.0.0"
# MLflow warns that spark_udf(env_manager="local") does not recreate the training
# environment: the engine means it (workers run this environment, see check_workers).
LOCAL_ENV_WARNING = 'Calling `spark_udf()` with `env_manager="local"`'


@contextlib.contextmanager
def _without_pandas_3_warning() -> Iterator[None]:
    """PySpark's pandas-3 FutureWarning ignored for the duration; other warnings stand."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", re.escape(PANDAS_3_WARNING), FutureWarning)
        yield


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``start``."""

    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def spark_session(master: str = "local[2]") -> Any:
    """A Spark session whose Python workers run this interpreter (the virtual env's).

    Under ``spark-submit`` (which sets SPARK_ENV_LOADED) the master given there is
    kept; otherwise ``master`` (a local session by default). Raises ConfigError when
    PySpark is not installed or Java cannot start.
    """
    try:
        from pyspark.errors import PySparkRuntimeError
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError("the Spark engine needs PySpark: pip install anomaly-vae[spark]") from exc

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    if "SPARK_ENV_LOADED" not in os.environ:
        builder = builder.master(master)
    try:
        with _without_pandas_3_warning():  # PySpark checks the pandas version at start
            return (
                builder.appName("anomaly-vae-batch")
                .config("spark.ui.enabled", "false")
                # Stage bars would fill scheduled runs' logs; batch draws its own on a
                # terminal.
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.shuffle.partitions", "2")
                # Chunks travel to the executors and their scores back as Arrow batches,
                # not row by row.
                .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                .getOrCreate()
            )
    except PySparkRuntimeError as exc:
        if exc.getCondition() != "JAVA_GATEWAY_EXITED":
            raise
        raise ConfigError(_java_problem()) from exc


def _java_problem() -> str:
    """Why Spark's Java process did not start, in one line (spark-class runs
    ``$JAVA_HOME/bin/java``, else the ``java`` on PATH)."""
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home, "bin", "java") if java_home else shutil.which("java")
    if java is None or not Path(java).is_file():
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "no java on PATH"
        return f"the Spark engine needs Java 17 or newer, and none was found ({where})"
    return (
        f"Spark's Java process ({java}) exited at start (its output is above); the Spark "
        "engine needs Java 17 or newer"
    )


def check_workers(spark: Any) -> None:
    """ConfigError unless Spark's Python workers can import what the model needs.

    A worker Python without them (``PYSPARK_PYTHON`` naming another environment) would
    otherwise fail every file with a worker traceback.
    """
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    modules = WORKER_MODULES

    # Defined here so that cloudpickle ships the function itself: a worker without
    # anomaly_vae could not import it by name.
    def absent(_: Any) -> list[str]:
        import importlib.util

        return [name for name in modules if importlib.util.find_spec(name) is None]

    python = spark.sparkContext.pythonExec
    hint = f"set PYSPARK_PYTHON to this environment's Python, {sys.executable}"
    try:
        missing = spark.sparkContext.parallelize([0], 1).flatMap(absent).collect()
    except (PySparkException, Py4JError) as exc:
        raise ConfigError(
            f"Spark's Python workers ({python}) cannot start: {_one_line(exc)}; {hint}"
        ) from exc
    if missing:
        raise ConfigError(
            f"Spark's Python workers ({python}) lack {', '.join(missing)}, which the model "
            f"needs; {hint}"
        )


class SparkScorer:
    """Scores files with a model URI through a Spark UDF; ``score_file`` has the same
    contract as :func:`anomaly_vae.batch.score_file` (rows, scores; atomic output).

    It stands in for the detector there: :meth:`score_frame` gives the detector's
    ``score_frame`` of a chunk, computed by the model's UDF on the executors, followed,
    with ``explain_top`` K > 0, by the detector's ``explain(chunk, K)`` columns, computed
    in the same job (the model's parameter ``explain``). ConfigError when the model was
    logged without that parameter; DataError when ``detector`` cannot explain rows.
    """

    def __init__(
        self,
        model_uri: str,
        detector: Any,
        spark: Any = None,
        progress: bool = False,
        explain_top: int = 0,
    ) -> None:
        import mlflow.models
        import mlflow.pyfunc

        from anomaly_vae.tracking import EXPLAIN_PARAM, LOG_WARNINGS_PARAM

        if explain_top:
            refuse_unexplained(detector)  # before a Spark session is started
        self.spark = spark or spark_session()
        with _without_pandas_3_warning():
            check_workers(self.spark)
        self.detector = detector
        self.progress = progress
        self.explain_top = explain_top
        self.base = getattr(detector, "first", detector)  # an ensemble's input schema
        example = detector.score_frame(_example(detector))
        self.explained: list[str] = []  # the explanation's columns, K capped as explain caps it
        if explain_top:
            why = detector.explain(_example(detector), explain_top)
            self.explained = list(why.columns)
            example = example.join(why)
        id_column = self.effective_config.data.id_column
        self.output_types = example.drop(columns=[id_column], errors="ignore").dtypes
        types = ", ".join(
            f"{_quoted(name)} {SPARK_TYPES[str(kind)]}" for name, kind in self.output_types.items()
        )
        mlflow_log = logging.getLogger("mlflow.pyfunc")
        drop = _DropMessage(LOCAL_ENV_WARNING)
        mlflow_log.addFilter(drop)
        try:
            with _without_pandas_3_warning():
                # The driver checks each chunk first (score_frame) and warns once per
                # file; the executors' copies of those warnings would repeat per chunk.
                # (Models logged before the parameter existed would warn that it is
                # ignored.)
                signature = mlflow.models.get_model_info(model_uri).signature
                # Columns by the names the signature gives them (a model logged before
                # Windows-1252 names "Preis €" "Preis \x80"; see names_as_read_now)
                self.signature_names = signature_names(signature, self.base)
                known = (
                    [spec.name for spec in signature.params.params]
                    if signature and signature.params
                    else []
                )
                if explain_top and EXPLAIN_PARAM not in known:
                    # MLflow would drop the parameter with a warning, and every file
                    # would fail for the columns its UDF does not return.
                    raise ConfigError(
                        f"{model_uri} was logged before models took the parameter "
                        f"{EXPLAIN_PARAM!r}, which --explain needs with the Spark engine: "
                        "score with --engine local, or register a newer version of the "
                        "model (fit, or calibrate it)"
                    )
                params: dict[str, Any] = {}
                if LOG_WARNINGS_PARAM in known:
                    params[LOG_WARNINGS_PARAM] = False
                if explain_top:
                    params[EXPLAIN_PARAM] = explain_top
                self.udf = mlflow.pyfunc.spark_udf(
                    self.spark,
                    model_uri,
                    result_type=types,
                    env_manager="local",
                    params=params or None,
                )
        finally:
            mlflow_log.removeFilter(drop)

    @property
    def effective_config(self) -> Any:
        return self.detector.effective_config

    def score_file(
        self, source: Path, output: Path, chunk_rows: int
    ) -> tuple[int, int, np.ndarray]:
        """Score ``source`` into ``output`` with the local engine's reader and writer and
        this scorer's :meth:`score_frame`; returns ``(rows, rows flagged, drift sample)``."""
        return score_file(self, source, output, chunk_rows, self.progress)

    def score_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The detector's ``score_frame(frame)``, computed on the Spark executors: one row
        per row of ``frame`` (same index), the id column when present, every score,
        ``is_anomaly`` and, with ``explain_top``, the explanation's columns, with the local
        engine's dtypes.

        Raises DataError for data the model refuses, with the local engine's message.
        """
        # Checked here first: a bad cell is reported as the local engine reports it, with
        # its row number in the chunk (a worker's message would count within its batch).
        self.base.transform_features(frame)
        id_column = self.effective_config.data.id_column
        if len(frame):
            scores = self._spark_scores(frame)
        else:
            scores = pd.DataFrame(
                {name: pd.Series(dtype=kind) for name, kind in self.output_types.items()}
            )
        scores.index = frame.index
        if id_column is not None and id_column in frame.columns:
            insert_id_column(scores, id_column, frame[id_column])
        return scores

    def _spark_scores(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The UDF's output for the model's columns of ``frame`` (``len(frame)`` rows in
        its order, a fresh index); DataError when the Spark job fails."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

        columns = self.base.preprocessor_.columns
        # Explicit types (Spark cannot infer one for a column empty in every row), and
        # plain names: Spark would read a dot in "Sepal.Length" as a struct field.
        names = [f"c{i}" for i in range(len(columns))]
        values = {
            name: _numbers(frame[c.name]) if c.kind == "numeric" else _texts(frame[c.name])
            for name, c in zip(names, columns, strict=True)
        }
        schema = StructType(
            [
                StructField(POSITION, LongType(), nullable=False),
                *[
                    StructField(name, DoubleType() if c.kind == "numeric" else StringType())
                    for name, c in zip(names, columns, strict=True)
                ],
            ]
        )
        chunk = pd.DataFrame({POSITION: np.arange(len(frame), dtype=np.int64), **values})
        model_input = F.struct(
            *[
                F.col(name).alias(self.signature_names.get(c.name, c.name))
                for name, c in zip(names, columns, strict=True)
            ]
        )
        with spark_job_errors(), _without_pandas_3_warning():
            scored = (
                self.spark.createDataFrame(chunk, schema)
                .select(POSITION, self.udf(model_input).alias("scores"))
                .select(POSITION, "scores.*")
                # The one Spark job of this chunk: the model runs once per row. Arrow to
                # pandas by pyarrow, not toPandas: PySpark's conversion casts every column
                # with astype(copy=False), which pandas 3 deprecates (a Pandas4Warning per
                # column and chunk); the types are set below either way.
                .toArrow()
                .to_pandas()
            )
        # collect keeps this plan's row order; the position makes that explicit.
        scored = scored.sort_values(POSITION, kind="stable").drop(columns=POSITION)
        return scored.astype(self.output_types.to_dict()).reset_index(drop=True)


def signature_names(signature: Any, detector: Any) -> dict[str, str]:
    """``{input column of detector: the name the model's MLflow signature gives it}``
    where the two differ: the signature of a model logged before files that are not
    UTF-8 were read as Windows-1252 names its columns as they were read then."""
    from anomaly_vae.data.preprocessing import names_as_read_now

    if signature is None or signature.inputs is None or detector.data_kind_ != "table":
        return {}
    known = detector.preprocessor_.input_columns
    return {
        now: old for old, now in names_as_read_now(signature.inputs.input_names(), known).items()
    }


def _numbers(values: pd.Series) -> pd.Series:
    """A numeric column as float64, NaN where missing, as the model reads it
    (``preprocessing._as_numbers``; its text cells were refused before)."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    return pd.to_numeric(values, errors="coerce").astype("float64")


def _texts(values: pd.Series) -> pd.Series:
    """A categorical column as text, None where missing: each value as the model makes
    it text (``preprocessing._as_text``), so the worker sees the local engine's
    categories whatever type the reader gave the column."""
    present = values.notna().to_numpy()
    text = np.full(len(values), None, dtype=object)
    text[present] = values.astype(object)[present].astype(str).to_numpy(dtype=object)
    return pd.Series(text, index=values.index, dtype=object)


@contextlib.contextmanager
def spark_job_errors() -> Iterator[None]:
    """Turn a failed Spark job into a DataError of one line: the model's own message
    when a worker raised one, else the first line of Spark's error."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    try:
        yield
    except (PySparkException, Py4JError) as exc:
        stop = _interruption(exc)
        if stop is not None:
            raise stop from None
        raise DataError(_one_line(exc)) from exc


def _interruption(exc: BaseException) -> BaseException | None:
    """The SystemExit or KeyboardInterrupt behind ``exc``, if any. A termination signal
    (SystemExit from the CLI's handler, see ``cli.exit_on_termination``) or Ctrl-C that
    arrives while PySpark reads a job's results is replaced by the error its cleanup
    raises then (``getResult``: "Exception thrown in awaitResult"), which would pass for
    a bad file: the run would go on scoring the others."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (SystemExit, KeyboardInterrupt)):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _one_line(exc: BaseException) -> str:
    """The gist of a Spark error: the last ``Type: message`` line of the Python traceback
    it carries (the message alone for the model's refusals), else its first line."""
    text = str(getattr(exc, "java_exception", None) or exc).split("\nJVM stacktrace:")[0]
    found = EXCEPTION_LINE.findall(text)
    if found:
        kind, message = found[-1]
        # The served model turns the library's errors into MlflowExceptions, same message.
        if kind.startswith("anomaly_vae.") or kind.endswith("MlflowException"):
            return message.strip()
        return f"{kind.rsplit('.', 1)[-1]}: {message.strip()}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _quoted(name: str) -> str:
    """``name`` as a Spark SQL identifier (backquoted)."""
    return "`" + name.replace("`", "``") + "`"


def _example(detector: Any) -> pd.DataFrame:
    """A one-row input for discovering the output columns."""
    base = detector.first if hasattr(detector, "first") else detector
    row = {
        c.name: c.center if c.kind == "numeric" else c.categories[0]
        for c in base.preprocessor_.columns
    }
    return pd.DataFrame([row])
