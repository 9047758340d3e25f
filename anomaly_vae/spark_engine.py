"""The Spark engine of batch scoring: the registered model as a Spark UDF
(``mlflow.pyfunc.spark_udf``), one output file per input in the local engine's layout.

Needs the ``spark`` extra (PySpark) and Java 17+. On a cluster, run the batch through
``spark-submit`` with the model URI and input/output paths on shared storage.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from anomaly_vae.data.tables import (
    DECIMAL_COMMA_NUMBER,
    PARQUET_SUFFIXES,
    csv_format,
)
from anomaly_vae.errors import DataError
from anomaly_vae.outputs import ROW_COLUMN, atomic_output

DRIFT_SAMPLE_ROWS = 100_000  # scores per file brought back to the driver for the drift test
JAVA_CHARSETS = {"utf-8": "UTF-8", "latin-1": "ISO-8859-1"}  # of tables.csv_format's encodings


def spark_session(master: str = "local[2]") -> Any:
    """A Spark session whose Python workers run this interpreter (the virtual env's).

    Under ``spark-submit`` (which sets SPARK_ENV_LOADED) the master given there is
    kept; otherwise ``master`` (a local session by default).
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    if "SPARK_ENV_LOADED" not in os.environ:
        builder = builder.master(master)
    return (
        builder.appName("anomaly-vae-batch")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )


class SparkScorer:
    """Scores files with a model URI through a Spark UDF; ``score_file`` has the same
    contract as :func:`anomaly_vae.batch.score_file` (rows, scores; atomic output)."""

    def __init__(self, model_uri: str, detector: Any, spark: Any = None) -> None:
        import mlflow.pyfunc

        self.spark = spark or spark_session()
        self.detector = detector
        names = list(detector.score_frame(_example(detector)).columns)
        id_column = detector.effective_config.data.id_column
        self.output_columns = [c for c in names if c != id_column]
        types = ", ".join(
            f"`{c}` {'boolean' if c == 'is_anomaly' else 'double'}" for c in self.output_columns
        )
        self.udf = mlflow.pyfunc.spark_udf(
            self.spark, model_uri, result_type=types, env_manager="local"
        )

    def score_file(
        self, source: Path, output: Path, chunk_rows: int
    ) -> tuple[int, int, np.ndarray]:
        from pyspark.sql import functions as F

        reader = self.spark.read
        if source.suffix.lower() in PARQUET_SUFFIXES:
            frame = reader.parquet(str(source))
        else:
            separator, encoding = csv_format(source)
            frame = (
                reader.option("header", True)
                .option("inferSchema", True)
                .option("sep", separator)
                .option("encoding", JAVA_CHARSETS[encoding])
                .csv(str(source))
            )
            if separator == ";":
                frame = _decimal_commas(frame)
        base = self.detector.first if hasattr(self.detector, "first") else self.detector
        inputs = list(base.preprocessor_.input_columns)
        missing = [c for c in inputs if c not in frame.columns]
        if missing:
            raise DataError(f"missing column{'s' if len(missing) > 1 else ''} {missing}")
        id_column = base.effective_config.data.id_column
        # zipWithIndex numbers rows in file order, like the local engine's row column.
        indexed = frame.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1]))
        frame = indexed.toDF([*frame.columns, "__row"])
        keep = id_column if id_column in frame.columns else "__row"
        scored = frame.select(
            keep, "__row", self.udf(F.struct(*[F.col(c) for c in inputs])).alias("s")
        ).select(keep, "__row", "s.*")
        if keep == "__row":
            scored = scored.withColumnRenamed("__row", ROW_COLUMN).withColumn(
                "__row", F.col(ROW_COLUMN)
            )
            keep = ROW_COLUMN
        # pandas writes booleans as True/False: keep the local engine's layout.
        scored = scored.withColumn(
            "is_anomaly", F.when(F.col("is_anomaly"), "True").otherwise("False")
        )
        ordered = scored.repartition(1).sortWithinPartitions("__row").drop("__row")
        ordered = ordered.select(keep, *self.output_columns)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".spark", dir=output.parent)
        )
        try:
            if output.suffix.lower() in PARQUET_SUFFIXES:
                ordered.write.mode("overwrite").parquet(str(staging / "data"))
                (part,) = (staging / "data").glob("part-*.parquet")
            else:
                ordered.write.mode("overwrite").option("header", True).csv(str(staging / "data"))
                (part,) = (staging / "data").glob("part-*.csv")
            with atomic_output(output) as temporary:
                os.replace(part, temporary)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        counts = ordered.agg(
            F.count("*").alias("rows"), F.sum(F.when(F.col("is_anomaly") == "True", 1).otherwise(0))
        ).collect()[0]
        fraction = min(1.0, DRIFT_SAMPLE_ROWS / max(counts[0], 1))
        sample = ordered.select("score").sample(fraction=fraction, seed=0).collect()
        return int(counts[0]), int(counts[1] or 0), np.array([r[0] for r in sample], np.float64)


def _decimal_commas(frame: Any) -> Any:
    """The Spark twin of the local reader's rule (``tables._numbers_of``): a text column
    whose every value is a number written with a decimal comma becomes a double."""
    from pyspark.sql import functions as F

    text = [name for name, kind in frame.dtypes if kind == "string"]
    if not text:
        return frame
    pattern = f"^{DECIMAL_COMMA_NUMBER}$"
    totals = frame.agg(
        *[F.count(name).alias(f"values:{name}") for name in text],
        *[F.count_if(~F.col(name).rlike(pattern)).alias(f"other:{name}") for name in text],
    ).collect()[0]
    for name in text:
        if totals[f"values:{name}"] and not totals[f"other:{name}"]:
            frame = frame.withColumn(name, F.regexp_replace(name, ",", ".").cast("double"))
    return frame


def _example(detector: Any) -> Any:
    """A one-row input for discovering the output columns."""
    import pandas as pd

    base = detector.first if hasattr(detector, "first") else detector
    row = {
        c.name: c.center if c.kind == "numeric" else c.categories[0]
        for c in base.preprocessor_.columns
    }
    return pd.DataFrame([row])
