"""The Spark engine scores like the local engine, through a local[2] Spark session."""

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

pytest.importorskip("pyspark", reason="PySpark is not installed (pip install 'anomaly-vae[spark]')")
if shutil.which("java") is None:
    pytest.skip("Java is missing: the Spark engine needs Java 17+", allow_module_level=True)

from anomaly_vae.batch import LEDGER_FILE, Ledger, run_batch
from anomaly_vae.cli import main
from anomaly_vae.errors import ConfigError
from anomaly_vae.fitting import fit_source
from anomaly_vae.scoring import load_detector
from anomaly_vae.spark_engine import SparkScorer, spark_session
from tests.conftest import mixed_table, tiny_config

ROOT = Path(__file__).resolve().parents[1]
SCORED = ("a.csv", "b.csv", "c.csv", "d.csv", "e.csv", "f.parquet")
WITH_IDS = "models:/anomaly-vae/1"
WITHOUT_IDS = "models:/no-ids/1"


def accented(n: int, seed: int) -> pd.DataFrame:
    """:func:`mixed_table` with a category that is not ASCII."""
    table = mixed_table(n, seed)
    table["machine"] = table["machine"].replace("press", "presse à chaud")
    return table


def unlabelled(n: int, seed: int) -> pd.DataFrame:
    """:func:`mixed_table` without id and label columns, with no missing values and a
    column named like R's iris columns (a dot in the name)."""
    table = mixed_table(n, seed).drop(columns=["reading_id", "is_fault"])
    return table.fillna(1.0).rename(columns={"load": "load.kN"})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder whose MLflow store holds two models: ``anomaly-vae`` (id column
    ``reading_id``) and ``no-ids`` (no id column, a dotted column name, no missing
    indicators). The working directory for the module's tests."""
    folder = tmp_path_factory.mktemp("spark")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # Spark's Python workers (started with the session, below) import this checkout's
        # anomaly_vae, as the driver does, not whichever one the environment installed.
        paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        patch.setenv("PYTHONPATH", os.pathsep.join(paths))
        accented(400, seed=0).to_csv("train.csv", index=False)
        # The engines are compared, not the models: a few epochs will do.
        config = tiny_config(
            "training.epochs=20",
            "data.id_column=reading_id",
            "data.label_column=is_fault",
            "tracking.log_views=false",
        )
        fit_source(folder / "train.csv", config, project_dir=folder)
        unlabelled(400, seed=0).to_csv("plain.csv", index=False)
        config = tiny_config(
            "training.epochs=20",
            "data.missing_indicators=false",
            "tracking.log_views=false",
            "tracking.registered_model_name=no-ids",
        )
        fit_source(folder / "plain.csv", config, project_dir=folder)
        yield folder


def batch(source: Path, output_dir: str, model: str, engine: str, *extra: str):
    return CliRunner().invoke(
        main,
        [
            "batch",
            str(source),
            "--output-dir",
            output_dir,
            "--model",
            model,
            "--engine",
            engine,
            "--no-tracking",
            *extra,
        ],
    )


def read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.fixture(scope="module")
def both_engines(project):
    """Both engines' CLI results and outputs for a folder of good and bad inputs."""
    inputs = project / "in"
    inputs.mkdir()
    accented(150, seed=1).to_csv(inputs / "a.csv", index=False)
    # Saved by a spreadsheet in a decimal-comma locale: both engines must read it alike.
    accented(90, seed=2).to_csv(inputs / "b.csv", sep=";", decimal=",", index=False)
    # Saved by a spreadsheet on Windows: the accented category must still match.
    accented(60, seed=3).to_csv(inputs / "c.csv", index=False, encoding="cp1252")
    # Without the id column: rows are identified by their number.
    accented(40, seed=4).drop(columns=["reading_id"]).to_csv(inputs / "d.csv", index=False)
    # "NA" and empty cells are missing values; a column empty in every row has no type.
    table = accented(30, seed=5).astype({"temperature": object, "machine": object})
    table.loc[1, "temperature"] = "NA"
    table.loc[2, "machine"] = None
    table["vibration"] = None
    table.to_csv(inputs / "e.csv", index=False)
    accented(50, seed=6).to_parquet(inputs / "f.parquet", index=False)
    # Bad inputs: each fails alone, with the local engine's reason.
    table = accented(20, seed=7).astype({"load": object})
    table.loc[2, "load"] = "oops"
    table.to_csv(inputs / "text.csv", index=False)
    accented(20, seed=8).drop(columns=["vibration"]).to_csv(inputs / "short.csv", index=False)
    (inputs / "empty.csv").write_text("")
    accented(5, seed=9).head(0).to_csv(inputs / "header.csv", index=False)
    (inputs / "corrupt.parquet").write_bytes(b"PAR1 not a parquet file PAR1")
    results = {
        engine: batch(inputs, f"out_{engine}", WITH_IDS, engine) for engine in ("local", "spark")
    }
    outputs = {
        engine: {name: project / f"out_{engine}" / name for name in SCORED} for engine in results
    }
    return {
        engine: (
            result,
            {name: read(path) for name, path in outputs[engine].items() if path.exists()},
        )
        for engine, result in results.items()
    }


def test_spark_engine_gives_the_local_engines_outputs(both_engines):
    for engine, (result, _) in both_engines.items():
        assert f"scored {len(SCORED)} files (" in result.output, (engine, result.output)
    local, spark = both_engines["local"][1], both_engines["spark"][1]
    assert sorted(spark) == sorted(local) == sorted(SCORED)
    for name in SCORED:
        # Same columns (id, or row number), same types (bool is_anomaly), same scores.
        pd.testing.assert_frame_equal(spark[name], local[name], rtol=1e-5, atol=1e-5)
    assert list(spark["d.csv"]["row"]) == list(range(1, 41))
    assert spark["f.parquet"]["is_anomaly"].dtype == bool


def test_spark_engine_fails_bad_files_alone_with_the_local_engines_reasons(both_engines):
    failures = {}
    for engine, (result, _) in both_engines.items():
        assert result.exit_code == 1, result.output
        failures[engine] = sorted(
            line for line in result.stderr.splitlines() if line.startswith("failed:")
        )
    assert failures["spark"] == failures["local"]
    reasons = "\n".join(failures["spark"])
    assert len(failures["spark"]) == 5, reasons
    assert "column 'load' should be numeric but holds 'oops' (row 3)" in reasons
    assert "missing column 'vibration' that the training data has" in reasons
    assert "empty.csv is empty" in reasons
    assert "header.csv has a header but no data rows" in reasons
    assert "corrupt.parquet is not a readable Parquet file: Parquet file size is" in reasons


def test_spark_engine_counts_failed_attempts_and_quarantines_as_the_local_engine(
    both_engines, project
):
    # The bad files of both_engines failed once with each engine; with a limit of one
    # attempt, both pass them over alike, and retry them alike.
    results = {}
    for engine in both_engines:
        ledger = Ledger(project / f"out_{engine}" / LEDGER_FILE).entries()
        assert ledger.loc[ledger["status"] == "failed", "attempt"].tolist() == [1] * 5, engine
        once = ("--max-attempts", "1")
        passed_over = batch(project / "in", f"out_{engine}", WITH_IDS, engine, *once)
        retried = batch(
            project / "in", f"out_{engine}", WITH_IDS, engine, *once, "--retry-quarantined"
        )
        results[engine] = passed_over, retried
    for engine, (passed_over, retried) in results.items():
        assert passed_over.exit_code == 0, (engine, passed_over.output)
        assert "skipped 6 already scored, 0 failed, 5 quarantined." in passed_over.stdout
        assert (
            "5 inputs quarantined after 1 failed attempt: corrupt.parquet, empty.csv, "
            "header.csv, short.csv, text.csv; fix or replace them, or rerun with "
            "--retry-quarantined"
        ) in passed_over.stderr.splitlines(), engine
        assert "failed:" not in passed_over.stderr, engine
        assert retried.exit_code == 1, (engine, retried.output)
        assert retried.stderr.count("(attempt 2, retried: still quarantined") == 5, engine
    failures = {
        engine: sorted(line for line in retried.stderr.splitlines() if line.startswith("failed:"))
        for engine, (_, retried) in results.items()
    }
    assert failures["spark"] == failures["local"] and len(failures["spark"]) == 5


def test_spark_engine_scores_for_a_model_without_an_id_column(project):
    inputs = project / "plain_in"
    inputs.mkdir()
    unlabelled(70, seed=1).to_csv(inputs / "iris-like.csv", index=False)
    outputs = {}
    for engine in ("local", "spark"):
        result = batch(inputs, f"plain_{engine}", WITHOUT_IDS, engine)
        assert result.exit_code == 0, result.output
        outputs[engine] = pd.read_csv(project / f"plain_{engine}" / "iris-like.csv")
    pd.testing.assert_frame_equal(outputs["spark"], outputs["local"], rtol=1e-5, atol=1e-5)
    assert list(outputs["spark"]["row"]) == list(range(1, 71))


def test_spark_engine_writes_the_local_engines_explanations(project):
    inputs = project / "explain_in"
    inputs.mkdir()
    accented(60, seed=11).to_csv(inputs / "a.csv", index=False)
    accented(40, seed=12).to_parquet(inputs / "b.parquet", index=False)
    outputs = {}
    for engine in ("local", "spark"):
        result = batch(inputs, f"explain_{engine}", WITH_IDS, engine, "--explain", "2")
        assert result.exit_code == 0, result.output
        # Either engine's summary names the model with K, as the ledger does.
        assert "Model anomaly-vae/1 --explain 2: scored 2 files" in result.output, result.output
        folder = project / f"explain_{engine}"
        outputs[engine] = {name: read(folder / name) for name in ("a.csv", "b.parquet")}
    for name, local in outputs["local"].items():
        assert local.columns[-4:].tolist() == ["why_1", "why_1_nats", "why_2", "why_2_nats"]
        pd.testing.assert_frame_equal(outputs["spark"][name], local, rtol=1e-5, atol=1e-5)
    # The ledger tells K apart with either engine: the same K skips, none scores again.
    same = batch(inputs, "explain_spark", WITH_IDS, "spark", "--explain", "2")
    assert "skipped 2 already scored" in same.output, same.output
    plain = batch(inputs, "explain_spark", WITH_IDS, "spark")
    assert "scored 2 files" in plain.output, plain.output
    assert "why_1" not in read(project / "explain_spark" / "a.csv").columns


def test_spark_explain_refuses_a_model_logged_without_the_parameter(project, monkeypatch):
    # A model logged before it took `explain`: MLflow would drop the parameter, and every
    # file would fail for the columns the UDF does not return.
    monkeypatch.setattr("anomaly_vae.tracking.EXPLAIN_PARAM", "not_logged")
    with pytest.raises(ConfigError, match="--explain needs with the Spark engine"):
        SparkScorer(WITH_IDS, load_detector(WITH_IDS), explain_top=1)


def test_the_model_runs_once_per_chunk_in_one_spark_job(project):
    detector = load_detector(WITHOUT_IDS)
    scorer = SparkScorer(WITHOUT_IDS, detector)
    unlabelled(60, seed=2).to_csv("jobs.csv", index=False)
    context = scorer.spark.sparkContext
    context.setJobGroup("jobs-test", "scoring jobs.csv")
    try:
        scorer.score_file(Path("jobs.csv"), project / "jobs_out" / "jobs.csv", chunk_rows=25)
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)  # no job group from here
    # Three chunks of at most 25 rows: one job each, where writing, counting and sampling
    # a Spark output each ran the model again.
    assert len(context.statusTracker().getJobIdsForGroup("jobs-test")) == 3


def test_a_workers_refusal_reaches_the_failure_reason(project, monkeypatch):
    detector = load_detector(WITHOUT_IDS)
    scorer = SparkScorer(WITHOUT_IDS, detector)
    # The driver checks each chunk first; without that check the model refuses the row
    # on an executor, and its message must still be the reason, in one line.
    monkeypatch.setattr(detector, "transform_features", lambda frame: None)
    table = unlabelled(20, seed=3)
    table.loc[4, "vibration"] = np.nan
    (project / "gap").mkdir()
    table.to_csv(project / "gap" / "gap.csv", index=False)
    report = run_batch(project / "gap", project / "gap_out", detector, "no-ids/1", scorer=scorer)
    assert list(report.failed.values()) == [
        "column 'vibration' has 1 missing values and the model was trained without missing "
        "indicators"
    ]


def test_spark_setup_errors_are_one_line_config_errors(project, monkeypatch, tmp_path):
    # Workers whose Python lacks the model's packages (PYSPARK_PYTHON set to another env).
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    session = spark_session()
    monkeypatch.setattr(session.sparkContext, "pythonExec", str(bare / "bin" / "python"))
    with pytest.raises(ConfigError, match="lack pandas") as raised:
        SparkScorer(WITHOUT_IDS, load_detector(WITHOUT_IDS), spark=session)
    assert f"set PYSPARK_PYTHON to this environment's Python, {sys.executable}" in str(raised.value)
    # No Java (a new process: this one's session is running).
    started = subprocess.run(
        [
            sys.executable,
            "-c",
            "from anomaly_vae.spark_engine import spark_session\n"
            "from anomaly_vae.errors import ConfigError\n"
            "try:\n    spark_session()\nexcept ConfigError as exc:\n    print(exc)",
        ],
        cwd=ROOT,
        env={**os.environ, "JAVA_HOME": str(tmp_path / "no-java")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "the Spark engine needs Java 17 or newer, and none was found" in started.stdout, (
        started.stderr
    )
    # No PySpark.
    for name in [m for m in sys.modules if m.split(".")[0] in ("pyspark", "py4j")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"pip install anomaly-vae\[spark\]"):
        SparkScorer(WITHOUT_IDS, None)


def test_spark_engine_keeps_pysparks_pandas_3_and_mlflows_local_env_warnings_out(project):
    """PySpark's "does not yet fully support pandas >= 3" FutureWarning (at each pandas
    conversion) and MLflow's spark_udf(env_manager="local") warning filled every run's
    output, and pandas 3 deprecation warnings a pytest run's; other warnings still show."""
    import logging
    import warnings

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    mlflow_log = logging.getLogger("mlflow.pyfunc")
    mlflow_log.addHandler(handler)
    unlabelled(30, seed=4).to_csv("quiet.csv", index=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scorer = SparkScorer(WITHOUT_IDS, load_detector(WITHOUT_IDS))
            scorer.score_file(Path("quiet.csv"), project / "quiet_out" / "quiet.csv", 100)
            warnings.warn("PySpark says something else", FutureWarning, stacklevel=1)
    finally:
        mlflow_log.removeHandler(handler)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "does not yet fully support pandas" in m], messages
    # pandas 3's Pandas4Warning at each column PySpark's toPandas casts (the engine reads
    # the scores through pyarrow instead)
    assert not [m for m in messages if "The copy keyword is deprecated" in m], messages
    assert "PySpark says something else" in messages  # the filter is targeted
    assert not [r for r in records if "env_manager" in r.getMessage()]
    assert (project / "quiet_out" / "quiet.csv").is_file()


def test_batch_pins_an_alias_to_its_version_for_the_whole_run(project, monkeypatch):
    # The loader, the ledger and Spark's UDF each resolving the alias could mix two
    # models when the alias moves during a run.
    from mlflow import MlflowClient

    from anomaly_vae import scoring

    MlflowClient().set_registered_model_alias("no-ids", "nightly", "1")
    loaded = []
    load = scoring.load_detector
    monkeypatch.setattr(scoring, "load_detector", lambda ref, *a: loaded.append(ref) or load(ref))
    unlabelled(20, seed=9).to_csv("pinned.csv", index=False)
    inputs = project / "pinned_in"
    inputs.mkdir()
    (project / "pinned.csv").rename(inputs / "pinned.csv")
    result = batch(inputs, "pinned_out", "models:/no-ids@nightly", "local")
    assert result.exit_code == 0, result.output
    assert loaded == ["models:/no-ids/1"] and "Model no-ids/1: scored 1 file" in result.output


def test_a_termination_signal_mid_job_stops_the_run(project, monkeypatch):
    # SIGTERM (a scheduler cancelling the run) while PySpark reads a job's results: its
    # cleanup then raises "Exception thrown in awaitResult", which hid the SystemExit,
    # so the file was recorded as failed and the run went on with the others.
    import contextlib
    import signal

    from pyspark.sql.pandas import conversion

    from anomaly_vae.cli import exit_on_termination

    detector = load_detector(WITHOUT_IDS)
    scorer = SparkScorer(WITHOUT_IDS, detector)
    inputs = project / "cancelled"
    inputs.mkdir()
    for name in ("a.csv", "b.csv"):
        unlabelled(2_000, seed=4).to_csv(inputs / name, index=False)
    load = conversion._load_from_socket

    def terminated_on_read(stream):
        os.kill(os.getpid(), signal.SIGTERM)  # handled here, before the results are read
        yield from stream

    @contextlib.contextmanager
    def load_then_terminated(*args):
        with load(*args) as stream:
            yield terminated_on_read(stream)

    monkeypatch.setattr(conversion, "_load_from_socket", load_then_terminated)
    handler = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    exit_on_termination()
    try:
        with pytest.raises(SystemExit) as stopped:
            run_batch(inputs, project / "cancelled_out", detector, "no-ids/1", scorer=scorer)
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in (project / "cancelled_out").iterdir()) == [
        ".anomaly-vae-ledger.sqlite",
        ".anomaly-vae.lock",
    ]


@pytest.mark.slow  # fits and starts (or reuses) a Spark session
def test_the_timing_script_times_both_engines_and_checks_they_agree(project, tmp_path):
    # docs/batch.md's Spark figures come from this script: each engine for each K, and
    # whether their outputs agree.
    from tests.test_time_engines import QUICK_YAML, SCRIPT

    config = tmp_path / "quick.yaml"
    config.write_text(QUICK_YAML)
    out = tmp_path / "timing.json"
    main = runpy.run_path(str(SCRIPT))["main"]
    args = ["--rows", "200", "--warm-up-rows", "20", "--repeats", "1", "--explain", "0", "2"]
    assert main([*args, "--config", str(config), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [(r["engine"], r["explain"]) for r in results["runs"]] == [
        ("local", 0),
        ("spark", 0),
        ("local", 2),
        ("spark", 2),
    ]
    assert set(results["spark_scorer_setup_seconds"]) == {"K=0", "K=2"}
    assert results["spark_session_start_seconds"] is not None
    for k in ("K=0", "K=2"):
        assert results["comparisons"][k]["agree"], results["comparisons"][k]
        assert results["comparisons"][k]["rows"] == 200
