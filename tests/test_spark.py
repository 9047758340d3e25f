"""The Spark engine scores like the local engine, through a local[2] Spark session."""

import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

pytest.importorskip("pyspark", reason="PySpark is not installed (pip install 'anomaly-vae[spark]')")
if shutil.which("java") is None:
    pytest.skip("Java is missing: the Spark engine needs Java 17+", allow_module_level=True)

from anomaly_vae.cli import main
from anomaly_vae.fitting import fit_source
from tests.conftest import mixed_table, tiny_config

FILES = ("a.csv", "b.csv", "c.csv")


def accented(n: int, seed: int) -> pd.DataFrame:
    """:func:`mixed_table` with a category that is not ASCII."""
    table = mixed_table(n, seed)
    table["machine"] = table["machine"].replace("press", "presse à chaud")
    return table


def test_spark_engine_gives_the_local_engines_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    accented(400, seed=0).to_csv("train.csv", index=False)
    config = tiny_config(
        "data.id_column=reading_id", "data.label_column=is_fault", "tracking.log_views=false"
    )
    fit_source(tmp_path / "train.csv", config, project_dir=tmp_path)
    inputs = tmp_path / "in"
    inputs.mkdir()
    accented(150, seed=1).to_csv(inputs / "a.csv", index=False)
    # Saved by a spreadsheet in a decimal-comma locale: both engines must read it alike.
    accented(90, seed=2).to_csv(inputs / "b.csv", sep=";", decimal=",", index=False)
    # Saved by a spreadsheet on Windows: the accented category must still match.
    accented(60, seed=3).to_csv(inputs / "c.csv", index=False, encoding="cp1252")
    outputs = {}
    for engine in ("local", "spark"):
        result = CliRunner().invoke(
            main,
            [
                "batch",
                str(inputs),
                "--output-dir",
                f"out_{engine}",
                "--model",
                "models:/anomaly-vae/1",
                "--engine",
                engine,
                "--no-tracking",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "scored 3 files (300 rows" in result.output
        outputs[engine] = {name: pd.read_csv(tmp_path / f"out_{engine}" / name) for name in FILES}
    for name in FILES:
        local, spark = outputs["local"][name], outputs["spark"][name]
        assert list(spark.columns) == list(local.columns)
        assert spark["reading_id"].tolist() == local["reading_id"].tolist()
        np.testing.assert_allclose(spark["score"], local["score"], rtol=1e-5, atol=1e-5)
        assert spark["is_anomaly"].tolist() == local["is_anomaly"].tolist()
