"""Batch scoring: exactly once per input and model, whatever happens."""

import contextlib
import io
import logging
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from anomaly_vae import VAEDetector
from anomaly_vae.batch import LEDGER_FILE, Ledger, output_lock, run_batch
from anomaly_vae.cli import main
from anomaly_vae.errors import DataError
from tests.conftest import MLFLOW_GLOBALS, mixed_table, mlflow_globals, tiny_config, tiny_fit


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    config = tiny_config("data.id_column=reading_id", "data.label_column=is_fault")
    VAEDetector(config.detector_config()).fit(mixed_table(500, seed=0)).save(folder)
    return folder


def batch(model_dir, inputs, out, *extra):
    return CliRunner().invoke(
        main,
        [
            "batch",
            str(inputs),
            "--output-dir",
            str(out),
            "--model",
            str(model_dir),
            "--no-tracking",
            *extra,
        ],
    )


def test_scores_each_input_once_and_a_changed_input_again(model_dir, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    mixed_table(120, seed=1).to_csv(inputs / "a.csv", index=False)
    mixed_table(80, seed=2).to_parquet(inputs / "b.parquet")
    first = batch(model_dir, inputs, out, "--chunk-rows", "50")
    assert first.exit_code == 0, first.output
    assert "scored 2 files (200 rows" in first.output
    a = pd.read_csv(out / "a.csv")
    assert a["reading_id"].tolist() == mixed_table(120, seed=1)["reading_id"].tolist()
    assert len(pd.read_parquet(out / "b.parquet")) == 80
    again = batch(model_dir, inputs, out)
    assert "scored 0 files" in again.output and "skipped 2 already scored" in again.output
    mixed_table(30, seed=3).to_csv(inputs / "a.csv", index=False)  # the input changes
    changed = batch(model_dir, inputs, out)
    assert "scored 1 file (30 rows" in changed.output
    assert len(pd.read_csv(out / "a.csv")) == 30
    ledger = Ledger(out / LEDGER_FILE).entries()
    assert ledger["status"].tolist() == ["done"] * 3 and ledger["rows"].tolist() == [120, 80, 30]
    # Changed back: scored again, since the output holds the 30 rows' scores by now.
    mixed_table(120, seed=1).to_csv(inputs / "a.csv", index=False)
    back = batch(model_dir, inputs, out)
    assert "scored 1 file (120 rows" in back.output and "skipped 1 already" in back.output
    assert len(pd.read_csv(out / "a.csv")) == 120
    (out / "b.parquet").unlink()  # an output deleted by hand is written again
    assert "scored 1 file (80 rows" in batch(model_dir, inputs, out).output


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_on_a_terminal_only_and_not_when_quiet(model_dir, tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    mixed_table(120, seed=1).to_csv(inputs / "a.csv", index=False)
    mixed_table(80, seed=2).to_csv(inputs / "b.csv", index=False)
    detector = VAEDetector.load(model_dir)
    drawn = {}
    for run, progress in (("terminal", True), ("quiet", False)):
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)  # tqdm draws where stderr is a terminal
        report = run_batch(inputs, tmp_path / run, detector, "m", chunk_rows=50, progress=progress)
        monkeypatch.undo()
        assert report.rows == 200
        drawn[run] = terminal.getvalue()
    assert "2/2" in drawn["terminal"] and "file" in drawn["terminal"]  # files done
    # A row counter per file, beside the share of its bytes read
    assert "a.csv:   0%" in drawn["terminal"] and "B/s, 0 rows]" in drawn["terminal"]
    assert drawn["quiet"] == ""
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "terminal" / "a.csv"), pd.read_csv(tmp_path / "quiet" / "a.csv")
    )
    assert "--quiet" in CliRunner().invoke(main, ["batch", "--help"]).output


def test_a_bad_input_is_recorded_and_the_others_still_scored(model_dir, tmp_path, caplog):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    mixed_table(50, seed=1).to_csv(inputs / "good.csv", index=False)
    mixed_table(50, seed=1).drop(columns="load").to_csv(inputs / "bad.csv", index=False)
    before = (inputs / "bad.csv").read_bytes()
    result = batch(model_dir, inputs, out)
    assert result.exit_code == 1
    assert "1 failed" in result.output and "missing column 'load'" in result.output
    # Listed once, at the end: not also as a warning while the run goes.
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in warned if "missing column" in r.getMessage()]
    assert (out / "good.csv").is_file() and not (out / "bad.csv").exists()
    assert (inputs / "bad.csv").read_bytes() == before  # left untouched
    ledger = Ledger(out / LEDGER_FILE).entries().set_index("status")
    assert "missing column 'load'" in ledger.loc["failed", "reason"]


def test_a_second_run_on_the_same_output_folder_exits(model_dir, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    mixed_table(50, seed=1).to_csv(inputs / "a.csv", index=False)
    with output_lock(out):
        result = batch(model_dir, inputs, out)
        # The lock is checked before the model is loaded (a slow load from a tracking
        # server would keep a run that cannot score waiting): a missing model is not read.
        no_model = batch(tmp_path / "no-such-model", inputs, out)
    assert result.exit_code == 75 and "another batch run is scoring into" in result.output
    assert no_model.exit_code == 75 and "another batch run is scoring into" in no_model.output
    assert not (out / "a.csv").exists()


def test_a_run_that_fails_before_scoring_leaves_no_output_folder(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "new" / "out"
    inputs.mkdir()
    mixed_table(50, seed=1).to_csv(inputs / "a.csv", index=False)
    result = batch(tmp_path / "no-such-model", inputs, out)  # a mistyped --model
    assert result.exit_code == 1 and "no-such-model" in result.output
    assert not out.exists()


def test_killed_mid_file_and_restarted_every_row_exactly_once(model_dir, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    big = pd.concat([mixed_table(5000, seed=s) for s in range(12)], ignore_index=True)
    big.to_csv(inputs / "big.csv", index=False)
    mixed_table(100, seed=9).to_csv(inputs / "small.csv", index=False)
    command = [
        sys.executable,
        "-m",
        "anomaly_vae",
        "batch",
        str(inputs),
        "--output-dir",
        str(out),
        "--model",
        str(model_dir),
        "--no-tracking",
        "--chunk-rows",
        "500",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120

    # Kill it as soon as the big file is part written: on a fast machine the whole file
    # is scored within half a second, so any wait here races the rename.
    def part_written() -> bool:
        with contextlib.suppress(FileNotFoundError):  # renamed between glob and stat
            return any(path.stat().st_size for path in out.glob(".big.csv.*.tmp"))
        return False

    while not part_written():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "big.csv").exists()  # never half-written under its real name
    subprocess.run(command, check=True, capture_output=True)
    scored = pd.read_csv(out / "big.csv")
    assert len(scored) == len(big) and scored["reading_id"].is_unique
    assert scored["reading_id"].tolist() == big["reading_id"].tolist()
    assert not list(out.glob(".*.tmp"))
    done = Ledger(out / LEDGER_FILE).entries()
    assert sorted(done["input"].map(lambda p: p.split("/")[-1])) == ["big.csv", "small.csv"]
    np.testing.assert_array_equal(done["status"], ["done", "done"])


def test_each_batch_run_is_logged_to_mlflow_with_drift(model_dir, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    inputs = tmp_path / "in"
    inputs.mkdir()
    mixed_table(200, seed=1).to_csv(inputs / "same.csv", index=False)
    shifted = mixed_table(200, seed=2)
    shifted["load"] += 15  # every row off the normal relation: the scores drift
    shifted.to_csv(inputs / "shifted.csv", index=False)
    result = CliRunner().invoke(
        main, ["batch", str(inputs), "--output-dir", "out", "--model", str(model_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "above the warning level" in result.output
    runs = mlflow.search_runs(experiment_names=["anomaly-vae-batch"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["metrics.files_scored"] == 2 and run["metrics.rows_scored"] == 400
    assert 0.4 < run["metrics.anomaly_rate"] <= 0.6  # the shifted half is flagged
    assert run["metrics.drift_ks"] > 0.1
    assert run["metrics.drift_p_value"] < 0.01  # and so large a gap is no chance
    # K of --explain is a tag beside the model (0: none), for either engine; the ledger
    # alone recorded it.
    assert run["tags.model"] == batch_identity(model_dir) and run["tags.explain"] == "0"
    explained = CliRunner().invoke(
        main,
        ["batch", str(inputs), "--output-dir", "out", "--model", str(model_dir), "--explain", "1"],
    )
    assert explained.exit_code == 0 and "scored 2 files" in explained.output, explained.output
    latest = mlflow.search_runs(experiment_names=["anomaly-vae-batch"]).iloc[0]
    assert latest["tags.model"] == run["tags.model"] and latest["tags.explain"] == "1"
    # Nothing failed: no list of failures
    assert "tags.failed_inputs" not in runs.columns
    assert not mlflow.MlflowClient().list_artifacts(run["run_id"])


def test_a_batch_run_in_mlflow_names_the_inputs_that_failed_and_why(
    model_dir, tmp_path, monkeypatch
):
    # The reasons were only in the ledger and on stderr; the run counted the failures.
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    inputs = tmp_path / "in"
    inputs.mkdir()
    mixed_table(50, seed=1).to_csv(inputs / "good.csv", index=False)
    mixed_table(50, seed=1).drop(columns="load").to_csv(inputs / "bad.csv", index=False)
    mixed_table(5, seed=1).head(0).to_csv(inputs / "empty.csv", index=False)
    result = CliRunner().invoke(
        main, ["batch", "in", "--output-dir", "out", "--model", str(model_dir), "--quiet"]
    )
    assert result.exit_code == 1 and "2 failed" in result.output
    (run,) = mlflow.search_runs(experiment_names=["anomaly-vae-batch"], output_format="list")
    assert run.data.tags["failed_inputs"] == "bad.csv, empty.csv"
    failed = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/failed.csv"))
    ledger = Ledger(tmp_path / "out" / LEDGER_FILE).entries()
    ledger = ledger[ledger["status"] == "failed"][["input", "reason", "attempt"]]
    ledger = ledger.astype({"attempt": "int64"})  # the first failed attempt of each
    # The ledger's absolute paths, its reasons and attempts, which the run's stderr listed
    pd.testing.assert_frame_equal(
        failed.sort_values("input", ignore_index=True),
        ledger.sort_values("input", ignore_index=True),
    )
    assert failed["input"].tolist() == [str(inputs / "bad.csv"), str(inputs / "empty.csv")]
    assert "missing column 'load'" in failed["reason"][0]
    assert "has a header but no data rows" in failed["reason"][1]
    # Many failures: the tag is cut short, and says how many there were; the file has all.
    from anomaly_vae.tracking import log_failed_inputs

    many = {f"in/input-{i:03d}-with-a-long-name.csv": "unreadable" for i in range(100)}
    with mlflow.start_run() as many_run:
        log_failed_inputs(many)
    tag = mlflow.get_run(many_run.info.run_id).data.tags["failed_inputs"]
    assert len(tag) < 550 and tag.startswith("input-000-") and tag.endswith(", ... (100 in all)")


def test_a_small_batch_of_normal_rows_is_no_drift(model_dir, tmp_path, monkeypatch):
    """Few scores differ from the calibration scores by chance: 8 fresh normal rows put the
    KS statistic above 0.1, which alone warned of drift on every small scheduled run."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    inputs = tmp_path / "in"
    inputs.mkdir()
    mixed_table(8, seed=3).to_csv(inputs / "few.csv", index=False)
    result = CliRunner().invoke(
        main, ["batch", str(inputs), "--output-dir", "out", "--model", str(model_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "above the warning level" not in result.output
    run = mlflow.search_runs(experiment_names=["anomaly-vae-batch"]).iloc[0]
    assert run["metrics.drift_ks"] > 0.1  # what warned before
    assert run["metrics.drift_p_value"] > 0.01
    assert "a gap this size is common by chance" in result.output
    assert "for 8 scores against " in result.output


def test_drift_warns_when_the_gap_is_large_and_unlikely_by_chance():
    from anomaly_vae.batch import drift_statistic

    rng = np.random.default_rng(0)
    calibration = rng.normal(size=500)
    assert not drift_statistic(rng.normal(size=10), calibration).warns  # few: noisy
    assert drift_statistic(rng.normal(1.0, size=200), calibration).warns  # shifted
    assert not drift_statistic(rng.normal(size=5_000), calibration).warns  # same
    empty = drift_statistic(np.empty(0), calibration)
    assert np.isnan(empty.statistic) and not empty.warns


def test_inputs_with_the_same_name_fail_instead_of_overwriting(model_dir, tmp_path):
    out = tmp_path / "out"
    for folder, rows in (("A", 19), ("B", 40), ("C", 25)):
        (tmp_path / folder).mkdir()
        name = "own.csv" if folder == "C" else "x.csv"
        mixed_table(rows, seed=rows).to_csv(tmp_path / folder / name, index=False)
    result = batch(model_dir, tmp_path / "[ABC]" / "*.csv", out)
    assert result.exit_code == 1
    assert "scored 1 file (25 rows" in result.output and "2 failed" in result.output
    assert "2 inputs are named x.csv" in result.output
    assert sorted(p.name for p in out.glob("*.csv")) == ["own.csv"]
    ledger = Ledger(out / LEDGER_FILE).entries()
    assert sorted(ledger["status"]) == ["done", "failed", "failed"]


def test_an_output_folder_holding_the_inputs_is_refused(model_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    mixed_table(50, seed=1).to_csv(inputs / "a.csv", index=False)
    before = (inputs / "a.csv").read_bytes()
    result = batch(model_dir, inputs, inputs)
    assert result.exit_code == 1 and "holds the inputs" in result.output
    assert (inputs / "a.csv").read_bytes() == before
    assert sorted(p.name for p in inputs.iterdir()) == ["a.csv"]  # no ledger or lock either


def test_outputs_get_the_permissions_of_any_new_file(model_dir, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    mixed_table(50, seed=1).to_csv(inputs / "a.csv", index=False)
    mixed_table(50, seed=2).to_parquet(inputs / "b.parquet")
    previous = os.umask(0o022)
    try:
        assert batch(model_dir, inputs, out).exit_code == 0
    finally:
        os.umask(previous)
    for name in ("a.csv", "b.parquet"):
        assert (out / name).stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0o600


def test_an_input_named_like_an_earlier_ones_output_does_not_replace_it(model_dir, tmp_path):
    out = tmp_path / "out"
    for folder, rows in (("A", 19), ("B", 40)):
        (tmp_path / folder).mkdir()
        mixed_table(rows, seed=rows).to_csv(tmp_path / folder / "x.csv", index=False)
    assert batch(model_dir, tmp_path / "A", out).exit_code == 0
    later = batch(model_dir, tmp_path / "B", out)
    assert later.exit_code == 1 and "holds the scores of" in later.output
    assert len(pd.read_csv(out / "x.csv")) == 19  # A's scores stay
    (tmp_path / "A" / "x.csv").unlink()  # A's input is gone: B's may take the name
    assert batch(model_dir, tmp_path / "B", out).exit_code == 0
    assert len(pd.read_csv(out / "x.csv")) == 40


def test_a_missing_source_fails_and_row_numbers_count_from_the_file_start(model_dir, tmp_path):
    missing = batch(model_dir, tmp_path / "nosuch", tmp_path / "out")
    assert missing.exit_code == 1 and "no such folder or file" in missing.output
    typo = batch(model_dir, tmp_path / "nosuch" / "*.csv", tmp_path / "out")
    assert typo.exit_code == 1 and f"there is no folder {tmp_path / 'nosuch'}" in typo.output
    assert not (tmp_path / "out").exists()
    inputs = tmp_path / "in"
    inputs.mkdir()
    table = mixed_table(60, seed=1).astype({"load": str})
    table.loc[57, "load"] = "oops"  # the 58th data row
    table.to_csv(inputs / "a.csv", index=False)
    table.to_parquet(inputs / "b.parquet")
    result = batch(model_dir, inputs, tmp_path / "out", "--chunk-rows", "10")
    assert result.exit_code == 1
    assert result.output.count("holds 'oops' (row 58)") == 2  # a.csv and b.parquet
    empty = tmp_path / "empty"
    empty.mkdir()
    assert batch(model_dir, empty, tmp_path / "out2").exit_code == 0  # nothing new: fine


def test_a_parquet_file_is_read_chunk_rows_at_a_time_across_its_row_groups(tmp_path):
    """With a categorical column (pandas saves it dictionary-encoded), its parts ended
    where its row groups did (row groups of 300 read 256 at a time came as 256, 44, 212,
    88, ... rows), so that a part held other rows than the chunk_rows asked for, and
    scoring it other than whole scoring batches; every part but the last now holds
    chunk_rows rows, in the file's order, numbered from its start."""
    from anomaly_vae.batch import read_chunks

    table = mixed_table(1000, seed=1).astype({"machine": "category"})
    table.to_parquet(tmp_path / "a.parquet", row_group_size=300)
    parts = list(read_chunks(tmp_path / "a.parquet", 256))
    assert [len(part) for part, _ in parts] == [256, 256, 256, 232]
    assert [read for _, read in parts] == [256, 512, 768, 1000]
    pd.testing.assert_frame_equal(pd.concat([part for part, _ in parts]), table)


def test_one_column_read_in_chunks_is_that_column_of_the_chunks_of_every_column(tmp_path):
    """calibrate reads its label column alone before it scores the rows: the same rows a
    chunk, the same values (a CSV file's number formats and checks judged once, given as
    ``checked``), and the header's names as the chunks name their columns (a Parquet
    file's saved index is no column)."""
    from anomaly_vae.batch import checked_table, read_chunks, table_columns

    table = mixed_table(300, seed=1, anomalies=30).set_index("reading_id")
    table["load"] = table["load"].map(lambda x: f"{x:.3f}".replace(".", ","))  # ';' file
    table.to_csv(tmp_path / "a.csv", sep=";")
    table.to_parquet(tmp_path / "a.parquet", row_group_size=70)
    for name in ("a.csv", "a.parquet"):
        path = tmp_path / name
        checked = checked_table(path, (), ["machine"])
        whole = list(read_chunks(path, 64, (), ["machine"], checked=checked))
        for column in ("load", "is_fault"):
            alone = list(read_chunks(path, 64, (), ["machine"], [column], checked))
            assert [len(part) for part, _ in alone] == [len(part) for part, _ in whole]
            for (one, _), (every, _) in zip(alone, whole, strict=True):
                assert list(one.columns) == [column]
                pd.testing.assert_series_equal(one[column], every[column])
        assert table_columns(path, checked) == list(whole[0][0].columns)
        if name == "a.csv":  # its decimal commas were read as such
            assert whole[0][0]["load"].dtype == float


def test_a_file_read_in_chunks_warns_once_judged_over_the_whole_file(model_dir, tmp_path, caplog):
    inputs = tmp_path / "in"
    inputs.mkdir()
    table = mixed_table(30, seed=1).assign(comment="x")
    table.loc[10:19, "vibration"] = np.nan  # empty in the second chunk only
    table.to_csv(inputs / "a.csv", index=False)
    table.assign(vibration=np.nan).to_parquet(inputs / "b.parquet")
    with caplog.at_level(logging.WARNING):
        result = batch(model_dir, inputs, tmp_path / "out", "--chunk-rows", "10")
    assert result.exit_code == 0, result.output
    # Once per file, and each named, so that a run's log says which input it is about.
    for name in ("a.csv", "b.parquet"):
        assert caplog.text.count(f"{name}: ignoring column not seen in training: comment") == 1
    assert caplog.text.count("empty in all") == 1
    assert "b.parquet: column 'vibration' is empty in all 30 rows scored" in caplog.text


def test_an_input_naming_a_column_twice_fails_naming_it(model_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    inputs = tmp_path / "in"
    inputs.mkdir()
    table = mixed_table(30, seed=1)
    table.to_csv(inputs / "a.csv", index=False, header=[*table.columns[:-1], "load"])
    arrays = [pa.array(table[name]) for name in table.columns]
    pq.write_table(pa.Table.from_arrays(arrays, [*table.columns[:-1], "load"]), inputs / "b.pq")
    result = batch(model_dir, inputs, tmp_path / "out", "--chunk-rows", "10")
    assert result.exit_code == 1
    assert result.output.count("has more than one column named 'load'") == 2


def test_date_times_in_a_numeric_column_are_refused_not_scored(model_dir, tmp_path):
    from anomaly_vae.errors import DataError

    table = mixed_table(20, seed=1)
    table["temperature"] = pd.Timestamp("2024-01-01")
    with pytest.raises(DataError, match="'temperature' should be numeric but holds dates"):
        VAEDetector.load(model_dir).score_frame(table)


def test_the_ledger_knows_an_output_however_its_folder_was_named(model_dir, tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    mixed_table(40, seed=1).to_csv(tmp_path / "in" / "a.csv", index=False)
    monkeypatch.chdir(tmp_path)
    assert "scored 1 file" in batch(model_dir, "in", "out").output  # relative names
    monkeypatch.chdir(tmp_path / "in")
    again = batch(model_dir, tmp_path / "in", tmp_path / "out")  # absolute, elsewhere
    assert again.exit_code == 0 and "skipped 1 already scored" in again.output


def test_the_drift_sample_follows_the_scores_of_periodic_data():
    from scipy.stats import ks_2samp

    from anomaly_vae.batch import DRIFT_SAMPLE_PER_CHUNK, drift_sample

    # A chunk of a file that repeats 300 rows: every 50th row would see 6 of them.
    scores = np.tile(np.arange(300.0), 334)[:100_000]
    sample = drift_sample(scores)
    assert len(sample) == DRIFT_SAMPLE_PER_CHUNK
    assert ks_2samp(sample, scores).statistic < 0.05
    np.testing.assert_array_equal(drift_sample(scores), sample)  # the same run to run


def test_the_pipeline_script_is_the_batch_command(monkeypatch, capsys):
    """Its usage line names the script, without the `batch` of `anomaly-vae batch`."""
    script = Path(__file__).parents[1] / "pipelines" / "batch_score.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("Usage: pipelines/batch_score.py [OPTIONS] SOURCE")


def test_the_pipeline_script_takes_verbose_before_the_commands_options(model_dir, tmp_path):
    # It called the logging set-up with verbose=False: under spark-submit the per-input
    # lines of `anomaly-vae --verbose batch` could not be had.
    script = Path(__file__).parents[1] / "pipelines" / "batch_score.py"
    (tmp_path / "in").mkdir()
    mixed_table(30, seed=1).to_csv(tmp_path / "in" / "a.csv", index=False)
    logged = {}
    for flags in ([], ["--verbose"]):
        out = tmp_path / f"out{len(flags)}"
        args = [*flags, str(tmp_path / "in"), "--output-dir", str(out), "--model", str(model_dir)]
        done = subprocess.run(
            [sys.executable, str(script), *args, "--no-tracking"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert (out / "a.csv").is_file()
        logged[bool(flags)] = done.stderr
    assert "a.csv: scored 30 rows" in logged[True]
    assert "a.csv: scored 30 rows" not in logged[False]


@pytest.fixture(scope="module")
def image_model_dir(tmp_path_factory):
    from tests.test_images import IMAGE_MODEL, bars

    folder = tmp_path_factory.mktemp("image-model")
    config = tiny_config("model.name=vae", *IMAGE_MODEL[1:])
    VAEDetector(config.detector_config()).fit(bars(300, seed=0)).save(folder)
    return folder


def _images(folder: Path, images: np.ndarray, prefix: str = "i") -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(folder / f"{prefix}{i}.png")


def test_an_image_model_scores_each_folder_once_and_a_changed_folder_again(
    image_model_dir, tmp_path
):
    from tests.test_images import bars

    inputs, out = tmp_path / "incoming", tmp_path / "incoming" / "scored"
    _images(inputs / "day1", np.concatenate([bars(6, seed=1), bars(2, seed=2, vertical=True)]))
    _images(inputs / "day2", bars(5, seed=3))
    first = batch(image_model_dir, inputs, out)
    assert first.exit_code == 0, first.output
    assert "scored 2 folders (13 images" in first.output
    day1 = pd.read_csv(out / "day1.csv")
    assert [Path(name).name for name in day1["image"]] == [f"i{i}.png" for i in range(8)]
    assert day1["score"][6:].min() > day1["score"][:6].max()  # the vertical bars
    # The output folder inside the source is not taken for an input.
    again = batch(image_model_dir, inputs, out)
    assert again.exit_code == 0 and "skipped 2 already scored" in again.output
    _images(inputs / "day2", bars(1, seed=4), prefix="late")  # an image arrives late
    changed = batch(image_model_dir, inputs, out)
    assert "scored 1 folder (6 images" in changed.output and "skipped 1" in changed.output
    assert len(pd.read_csv(out / "day2.csv")) == 6
    # One folder given: itself, as it holds images.
    alone = batch(image_model_dir, inputs / "day2", tmp_path / "alone")
    assert alone.exit_code == 0 and "scored 1 folder (6 images" in alone.output
    assert (tmp_path / "alone" / "day2.csv").is_file()


def test_an_image_folder_that_cannot_be_read_fails_and_the_others_are_scored(
    image_model_dir, tmp_path
):
    from tests.test_images import bars

    inputs, out = tmp_path / "in", tmp_path / "out"
    _images(inputs / "good", bars(3, seed=5))
    _images(inputs / "bad", bars(2, seed=6))
    (inputs / "bad" / "broken.png").write_bytes(b"not a png")
    result = batch(image_model_dir, f"{inputs}/*", out)
    assert result.exit_code == 1
    assert "scored 1 folder (3 images" in result.output and "1 failed" in result.output
    assert "broken.png is not a readable image" in result.output
    assert (out / "good.csv").is_file() and not (out / "bad.csv").exists()


def test_image_batch_inputs_are_complete_folders_of_images_outside_the_output(
    image_model_dir, tmp_path
):
    from tests.test_images import bars

    inputs, out = tmp_path / "incoming", tmp_path / "incoming" / "scored"
    _images(inputs / "day1", bars(3, seed=11))
    (inputs / "new-empty").mkdir()  # a day folder just created
    _images(inputs / ".day2", bars(2, seed=12))  # still being filled, then renamed
    _images(inputs / "day3.tmp", bars(2, seed=13))
    first = batch(image_model_dir, inputs, out)
    assert first.exit_code == 0, first.output
    assert "scored 1 folder (3 images" in first.output and "0 failed" in first.output
    (inputs / "day1" / ".DS_Store").write_bytes(b"not an image")  # not part of the input
    (inputs / "day1" / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS's copy")  # nor this
    again = batch(image_model_dir, inputs, out)
    assert "skipped 1 already scored" in again.output and "0 failed" in again.output
    # An output folder among an input's images would be read with them, or change it.
    for output, where in [(inputs / "day1", "is"), (inputs / "day1" / "scored", "is inside")]:
        refused = batch(image_model_dir, inputs / "day1", output)
        assert refused.exit_code == 1, refused.output
        assert f"{output} {where} the input folder" in " ".join(refused.output.split())
    # Folders of one name from two sources, run by run into one output folder.
    _images(tmp_path / "other" / "day1", bars(2, seed=14))
    clash = batch(image_model_dir, tmp_path / "other", out)
    assert clash.exit_code == 1 and "holds the scores of" in clash.output
    assert len(pd.read_csv(out / "day1.csv")) == 3


def test_a_hidden_output_folder_in_an_image_input_is_taken_as_score_takes_one(
    image_model_dir, tmp_path
):
    """batch refused --output-dir day1/.scores inside the image folder day1, where score
    takes -o day1/.scores.csv and --maps day1/.maps: no read of the folder sees a hidden
    folder. One rule for both now (read_with_images); a hidden output folder leaves the
    input as it was, so a rerun skips it."""
    from tests.test_images import bars

    day1 = tmp_path / "incoming" / "day1"
    _images(day1, bars(3, seed=11))
    for source in (day1, day1.parent):  # day1 itself, or the folder of days
        out = day1 / ".scores" / source.name
        first = batch(image_model_dir, source, out)
        assert first.exit_code == 0, first.output
        assert "scored 1 folder (3 images" in first.output
        assert len(pd.read_csv(out / "day1.csv")) == 3
        again = batch(image_model_dir, source, out)
        assert "skipped 1 already scored" in again.output and "0 failed" in again.output
    refused = batch(image_model_dir, day1, day1 / "scores")
    assert refused.exit_code == 1
    assert (
        f"the output folder {day1 / 'scores'} is inside the input folder {day1}: choose an "
        f"--output-dir outside it (e.g. beside the folders scored), or a hidden folder in "
        f"it ({day1 / '.scores'}), which is never read as images"
    ) in refused.output
    scored = CliRunner().invoke(
        main,
        ["score", str(day1), "--model", str(image_model_dir), "-o", str(day1 / ".s.csv")],
    )
    assert scored.exit_code == 0, scored.output


def test_a_model_of_the_other_kind_is_refused_not_run_on_nothing(
    image_model_dir, model_dir, tmp_path
):
    from tests.test_images import bars

    tables, folders = tmp_path / "tables", tmp_path / "folders"
    tables.mkdir()
    mixed_table(20, seed=2).to_csv(tables / "a.csv", index=False)
    _images(folders / "day1", bars(3, seed=16))
    for model, source, message in (
        (image_model_dir, tables, "holds 1 table file and no inputs of this image model"),
        (model_dir, folders, "holds 1 folder of images and no inputs of this table model"),
    ):
        refused = batch(model, source, tmp_path / "out")
        assert refused.exit_code == 1 and message in refused.output, refused.output
        assert "is --model the model meant for this folder?" in refused.output
    empty = tmp_path / "empty"
    empty.mkdir()  # nothing new is still no error
    assert batch(model_dir, empty, tmp_path / "out2").exit_code == 0


def test_image_scores_written_beside_the_day_folders_are_not_inputs_next_run(
    image_model_dir, tmp_path
):
    from tests.test_images import bars

    _images(tmp_path / "incoming" / "day1", bars(3, seed=17))
    for _ in range(2):  # the first run's day1.csv sits among the inputs
        result = batch(image_model_dir, tmp_path / "incoming", tmp_path / "incoming")
        assert result.exit_code == 0, result.output
    assert "skipped 1 already scored" in result.output


def test_run_batch_scores_image_folders_as_the_command_does(image_model_dir, tmp_path, caplog):
    from tests.test_images import bars

    _images(tmp_path / "in" / "day1", bars(4, seed=15))
    detector = VAEDetector.load(image_model_dir)
    with caplog.at_level(logging.INFO, logger="anomaly_vae.batch"):
        report = run_batch(tmp_path / "in", tmp_path / "out", detector, "m1")
    assert report.rows == 4 and report.scored == [str(tmp_path / "in" / "day1")]
    assert len(pd.read_csv(tmp_path / "out" / "day1.csv")) == 4
    assert "day1: scored 4 images (" in caplog.text  # it said "4 rows"


def test_image_folders_in_a_batch_run_are_counted_as_they_are_scored(
    image_model_dir, tmp_path, monkeypatch
):
    # A folder of images was scored with no bar, as a table file's rows are counted; then
    # with a bar without a total, though the folder's listing counts its images.
    from anomaly_vae import scoring
    from tests.test_images import bars

    _images(tmp_path / "in" / "day1", bars(4, seed=15))
    asked = []
    counting = scoring.scoring_progress

    def recorded(name, unit, progress, progress_lines=False, total=None, bytes_total=False):
        asked.append((name, unit, progress, progress_lines, total, bytes_total))
        return counting(name, unit, progress, progress_lines, total, bytes_total)

    monkeypatch.setattr(scoring, "scoring_progress", recorded)
    detector = VAEDetector.load(image_model_dir)
    run_batch(tmp_path / "in", tmp_path / "out", detector, "m1", progress=True)
    # A bar on a terminal, over the folder's 4 images; no lines a minute in the run's
    # log, as for tables
    assert asked == [("day1", "images", True, False, 4, False)]


def test_ids_are_written_as_they_were_read(model_dir, tmp_path):
    # Leading zeros, an empty id among integers, and integers beyond float64's 2**53:
    # read as numbers they would come out as 7, 1.0 and 9007199254740992.0.
    ids = ["007", "1", "", "9007199254740993", "9007199254740995"]
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    rows = mixed_table(len(ids), seed=1).assign(reading_id=ids)
    rows.to_csv(inputs / "a.csv", index=False)
    rows.to_csv(inputs / "b.csv", sep=";", decimal=",", index=False)
    assert batch(model_dir, inputs, out, "--chunk-rows", "2").exit_code == 0
    for name in ("a.csv", "b.csv"):
        written = (out / name).read_text().splitlines()[1:]
        assert [line.split(",")[0] for line in written] == ids


def test_an_output_that_cannot_be_written_is_named_not_the_input(model_dir, tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    mixed_table(50, seed=1).to_csv(inputs / "a.csv", index=False)
    (tmp_path / "taken").write_text("a file, where the output folder would go")
    result = batch(model_dir, inputs, tmp_path / "taken" / "out")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "cannot write" in result.output and "taken is a file, not a folder" in result.output

    # A folder this user may not write into (chmod does not stop root, so simulated).
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("anomaly_vae.outputs.tempfile.mkstemp", refuse)
    out = tmp_path / "out"
    result = batch(model_dir, inputs, out)
    assert result.exit_code == 1
    reason = f"cannot write {out / 'a.csv'}: Permission denied"
    assert f"failed: {inputs / 'a.csv'}: {reason}" in result.output
    assert Ledger(out / LEDGER_FILE).entries()["reason"].tolist() == [reason]


def test_only_visible_csv_and_parquet_files_are_inputs(model_dir, tmp_path, caplog):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    table = mixed_table(30, seed=1)
    table.to_csv(inputs / "a.csv", index=False)
    table.to_csv(inputs / ".b.csv", index=False)  # still being written, then renamed
    table.to_csv(inputs / "c.tsv", index=False, sep="\t")
    (inputs / "README").write_text("daily drops\n")
    with caplog.at_level(logging.INFO, logger="anomaly_vae.batch"):
        result = batch(model_dir, inputs, out)
    assert "scored 1 file (30 rows" in result.output, result.output
    assert "not inputs (not .csv, .parquet, .pq): 'README', 'c.tsv'" in caplog.text
    assert caplog.text.count("not inputs") == 1  # a first run listed the folder twice
    alone = batch(model_dir, inputs / "c.tsv", out)
    assert alone.exit_code == 1 and "c.tsv: batch scores .csv, .parquet, .pq files" in alone.output


def test_a_registry_model_is_found_in_the_projects_own_store(tmp_path, monkeypatch):
    # docs/batch.md's command: no MLFLOW_TRACKING_URI, the champion of the store in mlruns/.
    # The alias was once resolved in MLflow's default store (an empty mlflow.db made in
    # the working folder), so every such run failed with a traceback.
    import mlflow

    # conftest's list of MLflow's private state (tracking and registry URIs, active
    # experiment), each checked to exist: an MLflow that moved one fails here, loudly,
    # rather than this test setting a name MLflow no longer reads and passing on the store
    # an earlier test left. Found only once MLflow is imported, as it is above.
    state = mlflow_globals()
    assert [name for _, name in state] == [name for _, name in MLFLOW_GLOBALS], mlflow.__version__

    def as_in_a_new_process():  # MLflow keeps the store it was pointed at, also in os.environ
        for module, name in state:
            monkeypatch.setattr(module, name, None)
        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            monkeypatch.delenv(variable, raising=False)

    monkeypatch.chdir(tmp_path)
    as_in_a_new_process()
    mixed_table(300, seed=0).to_csv("t.csv", index=False)
    fit = tiny_fit(
        "t.csv", "--id-col", "reading_id", "--register", "--set=tracking.log_views=false"
    )
    assert fit.exit_code == 0, fit.output
    as_in_a_new_process()
    Path("incoming").mkdir()
    mixed_table(50, seed=1).to_csv("incoming/a.csv", index=False)
    result = CliRunner().invoke(main, ["batch", "incoming", "--output-dir", "scored"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv("scored/a.csv")) == 50
    assert not (tmp_path / "mlflow.db").exists()  # no store of MLflow's own made here
    assert Ledger(Path("scored") / LEDGER_FILE).entries()["model"].tolist() == ["anomaly-vae/1"]
    as_in_a_new_process()
    missing = CliRunner().invoke(
        main, ["batch", "incoming", "--output-dir", "other", "--model", "models:/anomaly-vae@x"]
    )
    assert missing.exit_code == 1
    assert "cannot load model models:/anomaly-vae@x: " in missing.output
    assert "sets the champion alias" in missing.output and not Path("other").exists()
    latest = batch("models:/anomaly-vae/latest", "incoming", "latest")
    assert latest.exit_code == 0 and "Model anomaly-vae/1: scored 1 file" in latest.output
    none = batch("models:/other/latest", "incoming", "none")
    assert none.exit_code == 1  # once pinned to a version 0 that no registry has
    assert "Error: cannot load model models:/other/latest: no version of 'other'" in none.output


def test_a_model_replaced_behind_a_file_uri_scores_the_inputs_again(model_dir, tmp_path):
    # The URI stays the same when the model behind it changes; it was the ledger's
    # model name, so every input was skipped as "already scored" by the new model.
    import shutil

    current = tmp_path / "current"
    shutil.copytree(model_dir, current)
    (tmp_path / "in").mkdir()
    mixed_table(40, seed=5).to_csv(tmp_path / "in" / "a.csv", index=False)
    first = batch(current.as_uri(), tmp_path / "in", tmp_path / "out")
    assert first.exit_code == 0 and "scored 1 file" in first.output, first.output
    shutil.rmtree(current)
    config = tiny_config("data.id_column=reading_id", "training.epochs=3")
    VAEDetector(config.detector_config()).fit(mixed_table(300, seed=1)).save(current)
    second = batch(current.as_uri(), tmp_path / "in", tmp_path / "out")
    assert second.exit_code == 0 and "scored 1 file" in second.output, second.output
    scores = pd.read_csv(tmp_path / "out" / "a.csv")
    expected = VAEDetector.load(current).score_frame(mixed_table(40, seed=5))
    np.testing.assert_allclose(scores["score"], expected["score"], rtol=1e-6)
    assert f"Model {batch_identity(model_dir)}:" in first.output  # as for the folder


def batch_identity(folder):
    from anomaly_vae.batch import model_identity

    return model_identity(None, folder)


def test_scores_of_an_input_that_changed_and_then_failed_are_set_aside(model_dir, tmp_path):
    # They stayed in place under the input's name: a reader of the folder took the scores
    # of the file as it was for those of the file as it is.
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    table = mixed_table(40, seed=1)
    table.to_csv(inputs / "a.csv", index=False)
    assert batch(model_dir, inputs, out).exit_code == 0
    before = (out / "a.csv").read_bytes()
    table.drop(columns="temperature").to_csv(inputs / "a.csv", index=False)  # now refused
    failed = batch(model_dir, inputs, out)
    assert failed.exit_code == 1
    assert "the scores of the file as it was were moved to a.csv.stale" in failed.output
    assert not (out / "a.csv").exists() and (out / "a.csv.stale").read_bytes() == before
    table.to_csv(inputs / "a.csv", index=False)  # fixed: scored again, nothing stale left
    assert batch(model_dir, inputs, out).exit_code == 0
    assert (out / "a.csv").read_bytes() == before and not (out / "a.csv.stale").exists()


def test_verbose_logs_each_input_as_it_is_scored(model_dir, tmp_path, caplog):
    # Off a terminal (cron, a scheduler) no bar is drawn: without these lines a run of
    # many files, or of one large file, showed nothing until its summary.
    inputs = tmp_path / "in"
    inputs.mkdir()
    mixed_table(30, seed=1).to_csv(inputs / "a.csv", index=False)
    mixed_table(20, seed=2).to_csv(inputs / "b.csv", index=False)
    with caplog.at_level(logging.INFO, logger="anomaly_vae"):
        run_batch(inputs, tmp_path / "out", VAEDetector.load(model_dir), "m")
    lines = [r.getMessage() for r in caplog.records if r.name == "anomaly_vae.batch"]
    assert [line.split(": ")[1].split(" (")[0] for line in lines] == [
        "scoring",
        "scored 30 rows",
        "scoring",
        "scored 20 rows",
    ]
    assert lines[1].startswith(f"{inputs / 'a.csv'}: scored 30 rows (") and "a.csv" in lines[1]


def test_a_tracking_server_that_is_down_costs_seconds_after_scoring(
    model_dir, tmp_path, monkeypatch
):
    # MLflow's own retries (7 by default, with exponentially growing waits) held the
    # finished run for minutes before the same error.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5628")  # nothing listens
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "in").mkdir()
    mixed_table(30, seed=1).to_csv(tmp_path / "in" / "a.csv", index=False)
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        [
            "batch",
            str(tmp_path / "in"),
            "--output-dir",
            str(tmp_path / "out"),
            "--model",
            str(model_dir),
        ],
    )
    assert time.monotonic() - started < 60
    assert result.exit_code == 1
    assert f"the scores are written to {tmp_path / 'out'}, but logging to MLflow" in result.output
    assert (tmp_path / "out" / "a.csv").is_file()
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # as it was


def test_a_model_folder_with_other_weights_under_the_same_description_is_another_model(
    model_dir, tmp_path
):
    # The identity hashed only the folder's JSON files: weights.pt replaced under the same
    # detector.json kept it, and the next run skipped the input as already scored, its
    # output the old weights' scores (5.2 where the model now gave 164). An ensemble's
    # identity did not look into members/ at all.
    import shutil

    import torch

    from anomaly_vae.ensemble import EnsembleDetector

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    (tmp_path / "in").mkdir()
    table = mixed_table(40, seed=5)
    table.to_csv(tmp_path / "in" / "a.csv", index=False)
    assert "scored 1 file" in batch(folder, tmp_path / "in", tmp_path / "out").output
    description = (folder / "detector.json").read_bytes()
    changed = VAEDetector.load(folder)
    with torch.no_grad():
        for parameter in changed.model_.parameters():
            parameter.add_(0.3)
    changed.save(folder)
    assert (folder / "detector.json").read_bytes() == description  # only the weights differ
    second = batch(folder, tmp_path / "in", tmp_path / "out")
    assert second.exit_code == 0 and "scored 1 file" in second.output, second.output
    scores = pd.read_csv(tmp_path / "out" / "a.csv")["score"]
    np.testing.assert_allclose(scores, changed.score_frame(table)["score"], rtol=1e-6)

    members = {"a": VAEDetector.load(model_dir), "b": VAEDetector.load(model_dir)}
    reference = members["a"].anomaly_score(mixed_table(100, seed=0))
    ensemble = EnsembleDetector(members, {"a": reference, "b": reference})
    ensemble.threshold_from_normal_scores(ensemble.anomaly_score(mixed_table(100, seed=1)), 0.01)
    ensemble.n_training_rows_ = dict(members["a"].n_training_rows_)
    before = batch_identity(ensemble.save(tmp_path / "e"))
    changed.save(tmp_path / "e" / "members" / "b")  # a member's weights, nothing else
    after = batch_identity(tmp_path / "e")
    assert after != before
    # Files that are no part of the model leave it as it was.
    (tmp_path / "e" / "notes.txt").write_text("not part of the model")
    (tmp_path / "e" / "mlflow_run_id").write_text("0123\n")
    assert batch_identity(tmp_path / "e") == after


def test_a_failure_that_names_its_input_does_not_name_it_twice(model_dir, tmp_path):
    # "failed: in/empty.csv: in/empty.csv has a header but no data rows": the reason,
    # naming the file already, was prefixed with it again.
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    mixed_table(30, seed=1).to_csv(inputs / "a.csv", index=False)
    mixed_table(30, seed=1).iloc[:0].to_csv(inputs / "empty.csv", index=False)
    (inputs / "garbage.csv").write_bytes(b"\x00\xff\xfe\x81garbage\x00\n\x81\x82,\x00")
    result = batch(model_dir, inputs, out)
    assert result.exit_code == 1, result.output
    empty, garbage = inputs / "empty.csv", inputs / "garbage.csv"
    assert f"failed: {empty} has a header but no data rows (attempt 1 of 3)\n" in result.output
    assert f"failed: {garbage} is not a readable CSV file" in result.output
    assert result.output.count(str(empty)) == 1 and result.output.count(str(garbage)) == 1
    # The ledger keeps the reason as it was given.
    reasons = Ledger(out / LEDGER_FILE).entries().set_index("input")["reason"]
    assert reasons[str(empty.resolve())] == f"{empty} has a header but no data rows"


def test_a_bad_cell_is_named_with_its_file_by_score_calibrate_and_batch(
    model_dir, tmp_path, monkeypatch
):
    # fit said "train.csv: column 'load' holds infinite values (row 8)", score and
    # calibrate "column 'load' holds infinite values (row 8)", without the file.
    monkeypatch.chdir(tmp_path)
    inputs = Path("in")
    inputs.mkdir()
    table = mixed_table(40, seed=1)
    table.loc[7, "load"] = float("inf")
    table.to_csv(inputs / "bad.csv", index=False)
    table.drop(columns="is_fault").assign(load=1.0).drop(columns="temperature").to_csv(
        inputs / "nocol.csv", index=False
    )
    cell = f"{inputs / 'bad.csv'}: column 'load' holds infinite values (row 8)"
    for command in (
        ["score", str(inputs / "bad.csv"), "-o", "scores.csv"],
        ["calibrate", str(inputs / "bad.csv"), "--method", "quantile", "--no-tracking"],
    ):
        result = CliRunner().invoke(main, [*command, "--model", str(model_dir), "--quiet"])
        assert result.exit_code == 1 and result.output == f"Error: {cell}\n", result.output
    missing = CliRunner().invoke(
        main, ["score", str(inputs / "nocol.csv"), "-o", "x.csv", "--model", str(model_dir)]
    )
    assert missing.output.startswith(f"Error: {inputs / 'nocol.csv'}: missing column")
    # batch names each file once, as before.
    result = batch(model_dir, inputs, Path("out"))
    assert f"failed: {cell} (attempt 1 of 3)\n" in result.output, result.output
    assert f"failed: {inputs / 'nocol.csv'}: missing column 'temperature'" in result.output


def test_missing_values_are_counted_over_the_file_scored_in_parts(tmp_path, monkeypatch):
    """A file read and scored a part at a time (score, batch, calibrate) said the first
    failing part's count of missing values for a model without missing indicators ("has
    13 missing values", of 42 in the file); the count is now the file's."""
    from anomaly_vae import scoring

    monkeypatch.chdir(tmp_path)
    config = tiny_config(
        "data.id_column=reading_id",
        "data.missing_indicators=false",
        "scoring.batch_size=50",  # parts of 100 rows are whole scoring batches
        "training.epochs=2",
    )
    training = mixed_table(300, seed=0).drop(columns="is_fault").dropna()
    VAEDetector(config.detector_config()).fit(training).save(tmp_path / "model")
    table = mixed_table(400, seed=1).drop(columns="is_fault")
    table["vibration"] = table["vibration"].fillna(1.0)
    table.loc[list(range(120, 133)) + list(range(250, 279)), "vibration"] = np.nan  # 13 + 29
    table.to_csv(tmp_path / "new.csv", index=False)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", 100)  # 4 parts of 100 rows
    said = "column 'vibration' has 42 missing values and the model was trained without missing"
    model = str(tmp_path / "model")
    for command in (
        ["score", "new.csv", "-o", "scores.csv"],
        ["calibrate", "new.csv", "--method", "quantile", "--no-tracking", "--model-dir", "c"],
    ):
        result = CliRunner().invoke(main, [*command, "--model", model])
        assert result.exit_code == 1 and f"new.csv: {said}" in result.output, result.output
    report = run_batch(tmp_path / "new.csv", tmp_path / "out", VAEDetector.load(model), "m", 100)
    assert list(report.failed.values()) == [f"{said} indicators"]
    # A part after the first failing one whose cell is no number ends the count: at least.
    table["vibration"] = table["vibration"].astype(object)
    table.loc[260, "vibration"] = "?"
    table.to_csv(tmp_path / "new.csv", index=False)
    result = CliRunner().invoke(main, ["score", "new.csv", "-o", "s.csv", "--model", model])
    assert "'vibration' has at least 13 missing values" in result.output, result.output


def test_a_column_not_seen_in_training_is_warned_of_with_its_file(model_dir, tmp_path, caplog):
    """Only batch named the file of "ignoring column not seen in training"; score and
    calibrate name it now too, as their errors name it."""
    new = mixed_table(200, seed=4).assign(comment="x")
    new.to_csv(tmp_path / "new.csv", index=False)
    commands = [
        ["score", str(tmp_path / "new.csv"), "-o", str(tmp_path / "scores.csv")],
        ["calibrate", str(tmp_path / "new.csv"), "--method", "quantile", "--no-tracking"],
    ]
    for command in commands:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            extra = (
                ["--model-dir", str(tmp_path / "recalibrated")] if "calibrate" in command else []
            )
            result = CliRunner().invoke(main, [*command, "--model", str(model_dir), *extra])
        assert result.exit_code == 0, result.output
        said = f"{tmp_path / 'new.csv'}: ignoring column not seen in training: comment"
        assert said in caplog.text, command


def _explained(out: Path, name: str) -> list[str]:
    """The explanation columns of the output ``name`` in ``out``."""
    path = out / name
    scores = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return [c for c in scores.columns if c.startswith("why_")]


def test_batch_explain_writes_the_columns_and_a_rerun_with_another_k_scores_again(
    model_dir, tmp_path
):
    from anomaly_vae.explanation import explanation_columns

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    rows = mixed_table(120, seed=1, anomalies=5)
    rows.to_csv(inputs / "a.csv", index=False)
    mixed_table(80, seed=2).to_parquet(inputs / "b.parquet")
    first = batch(model_dir, inputs, out, "--chunk-rows", "50", "--explain", "2")
    assert first.exit_code == 0, first.output
    # The summary names the model as the ledger does, with K: a rerun with another K
    # scores every input again, and the summary said nothing of K.
    model = batch_identity(model_dir)
    assert f"Model {model} --explain 2: scored 2 files (200 rows" in first.output
    scores = pd.read_csv(out / "a.csv")
    expected = ["reading_id", "reconstruction_error", "negative_elbo", "negative_iwae_bound"]
    assert scores.columns.tolist() == [*expected, "score", "is_anomaly", *explanation_columns(2)]
    # In parts of 50 rows, as explain gives them for the whole file
    why = VAEDetector.load(model_dir).explain(rows, top=2)
    assert scores["why_1"].tolist() == why["why_1"].tolist()
    assert scores["why_2"].tolist() == why["why_2"].tolist()
    np.testing.assert_allclose(scores["why_2_nats"], why["why_2_nats"], rtol=1e-5)
    assert _explained(out, "b.parquet") == explanation_columns(2)
    # The same K: nothing to do. Another K, or none: the outputs' columns differ, so every
    # input is scored again.
    same = batch(model_dir, inputs, out, "--explain", "2")
    assert "scored 0 files" in same.output and "skipped 2 already scored" in same.output
    more = batch(model_dir, inputs, out, "--explain", "3")
    assert "scored 2 files (200 rows" in more.output, more.output
    assert _explained(out, "a.csv") == _explained(out, "b.parquet") == explanation_columns(3)
    plain = batch(model_dir, inputs, out)
    assert f"Model {model}: scored 2 files (200 rows" in plain.output, plain.output
    assert _explained(out, "a.csv") == _explained(out, "b.parquet") == []
    assert "skipped 2 already scored" in batch(model_dir, inputs, out).output
    models = Ledger(out / LEDGER_FILE).entries()["model"].tolist()
    assert [m.partition(" --explain ")[2] for m in models] == ["2"] * 2 + ["3"] * 2 + [""] * 2


def test_a_ledger_row_written_before_explain_counts_as_no_explanation(model_dir, tmp_path):
    import sqlite3

    from anomaly_vae.batch import file_digest, model_identity

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    mixed_table(40, seed=1).to_csv(inputs / "a.csv", index=False)
    assert batch(model_dir, inputs, out).exit_code == 0
    # The ledger as a version without --explain wrote it: its table and its row.
    (out / LEDGER_FILE).unlink()
    with contextlib.closing(sqlite3.connect(out / LEDGER_FILE)) as old:
        old.execute(
            "CREATE TABLE scored (input TEXT, size INTEGER, sha256 TEXT, model TEXT, "
            "status TEXT, rows INTEGER, output TEXT, reason TEXT, at TEXT)"
        )
        old.execute(
            "INSERT INTO scored VALUES (?, ?, ?, ?, 'done', 40, ?, NULL, '2026-12-01T00:00:00')",
            (
                str((inputs / "a.csv").resolve()),
                (inputs / "a.csv").stat().st_size,
                file_digest(inputs / "a.csv"),
                model_identity(str(model_dir), model_dir),
                str((out / "a.csv").resolve()),
            ),
        )
        old.commit()
    plain = batch(model_dir, inputs, out)
    assert plain.exit_code == 0 and "skipped 1 already scored" in plain.output, plain.output
    explained = batch(model_dir, inputs, out, "--explain", "1")
    assert explained.exit_code == 0 and "scored 1 file (40 rows" in explained.output
    assert _explained(out, "a.csv") == ["why_1", "why_1_nats"]


def test_batch_explain_refuses_images_and_ensembles_before_scoring(image_model_dir, tmp_path):
    from anomaly_vae.ensemble import EnsembleDetector
    from tests.test_images import bars

    _images(tmp_path / "images" / "day1", bars(4, seed=1))
    images = batch(image_model_dir, tmp_path / "images", tmp_path / "out", "--explain", "2")
    assert images.exit_code == 2, images.output
    assert "--explain is for tables" in images.output and "--maps DIR" in images.output
    assert not (tmp_path / "out").exists()  # nothing scored, no folder left behind
    family = tmp_path / "family"
    train = mixed_table(500, seed=0)
    config = tiny_config("data.id_column=reading_id", "data.label_column=is_fault")
    member = VAEDetector(config.detector_config()).fit(train)  # its training rows known
    EnsembleDetector.from_members({"vae": member}, train).save(family)
    (tmp_path / "in").mkdir()
    mixed_table(30, seed=1).to_csv(tmp_path / "in" / "a.csv", index=False)
    ensemble = batch(family, tmp_path / "in", tmp_path / "out", "--explain", "1")
    assert ensemble.exit_code == 2, ensemble.output
    assert "family ensemble" in ensemble.output and "members/<variant>" in ensemble.output
    assert not (tmp_path / "out").exists()
    # In Python too, before anything is scored
    with pytest.raises(DataError, match="--explain is for tables"):
        run_batch(
            tmp_path / "images", tmp_path / "out", VAEDetector.load(image_model_dir), "m", explain=1
        )
    assert not (tmp_path / "out").exists()


def test_the_pipeline_script_passes_explain_to_batch(model_dir, tmp_path, monkeypatch):
    script = Path(__file__).parents[1] / "pipelines" / "batch_score.py"
    (tmp_path / "in").mkdir()
    mixed_table(30, seed=1).to_csv(tmp_path / "in" / "a.csv", index=False)
    args = [str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"), "--model", str(model_dir)]
    monkeypatch.setattr(sys, "argv", [str(script), *args, "--explain", "1", "--no-tracking"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    assert _explained(tmp_path / "out", "a.csv") == ["why_1", "why_1_nats"]


# Quarantine: an input that fails run after run stops failing the runs.


def test_a_bad_input_is_quarantined_after_three_failed_attempts_and_fails_no_more_runs(
    model_dir, tmp_path
):
    # Before, a file that could never be scored failed every scheduled run (exit 1), so a
    # scheduler's alerts could not tell a new bad input from the same old one.
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    mixed_table(50, seed=1).drop(columns="load").to_csv(inputs / "bad.csv", index=False)
    mixed_table(40, seed=2).to_csv(inputs / "good.csv", index=False)
    failed = f"failed: {inputs / 'bad.csv'}: missing column 'load'"
    for attempt in (1, 2, 3):  # batch.max_attempts, by default
        result = batch(model_dir, inputs, out)
        assert result.exit_code == 1, result.output
        assert failed in result.output and f"(attempt {attempt} of 3" in result.output
    said = "(attempt 3 of 3: quarantined; fix or replace it, or rerun with --retry-quarantined)\n"
    assert said in result.output
    passed_over = batch(model_dir, inputs, out)
    assert passed_over.exit_code == 0, passed_over.output
    assert "skipped 1 already scored, 0 failed, 1 quarantined." in passed_over.output
    assert failed not in passed_over.output
    assert (
        "1 input quarantined after 3 failed attempts: bad.csv; fix or replace it, or rerun "
        "with --retry-quarantined\n"
    ) in passed_over.output
    ledger = Ledger(out / LEDGER_FILE).entries()
    attempts = ledger.groupby("status")["attempt"].agg(list)  # no row for the run passing over
    assert attempts["failed"] == [1, 2, 3] and attempts["done"] == [pd.NA]
    # A new bad input still fails the run; the quarantined one is named apart.
    mixed_table(10, seed=3).drop(columns="load").to_csv(inputs / "new.csv", index=False)
    new = batch(model_dir, inputs, out)
    assert new.exit_code == 1, new.output
    assert f"failed: {inputs / 'new.csv'}: missing column 'load'" in new.output
    assert "(attempt 1 of 3)\n" in new.output and "1 failed, 1 quarantined." in new.output
    assert "1 input quarantined after 3 failed attempts: bad.csv;" in new.output


def test_a_quarantined_input_is_tried_again_when_changed_retried_or_scored_otherwise(
    model_dir, tmp_path
):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    bad = inputs / "a.csv"
    mixed_table(20, seed=1).drop(columns="load").to_csv(bad, index=False)
    once = ("--max-attempts", "1")
    first = batch(model_dir, inputs, out, *once)
    assert first.exit_code == 1 and "(attempt 1 of 1: quarantined;" in first.output
    passed_over = batch(model_dir, inputs, out, *once)
    assert passed_over.exit_code == 0 and "after 1 failed attempt: a.csv;" in passed_over.output
    # Other bytes are another input: tried at once, its attempts counted from 1.
    mixed_table(25, seed=2).drop(columns="load").to_csv(bad, index=False)
    changed = batch(model_dir, inputs, out, *once)
    assert changed.exit_code == 1 and "(attempt 1 of 1: quarantined;" in changed.output
    # Told to, a run tries it once more; failing again, it stays quarantined.
    retried = batch(model_dir, inputs, out, *once, "--retry-quarantined")
    assert retried.exit_code == 1, retried.output
    assert "(attempt 2, retried: still quarantined; fix or replace it)\n" in retried.output
    assert batch(model_dir, inputs, out, *once).exit_code == 0
    # Another model (here the same one with --explain) is a new attempt, as it scores
    # every input again.
    explained = batch(model_dir, inputs, out, *once, "--explain", "1")
    assert explained.exit_code == 1 and "(attempt 1 of 1: quarantined;" in explained.output
    # A higher limit tries it until it is reached; 0 never quarantines.
    more = batch(model_dir, inputs, out, "--max-attempts", "3")
    assert more.exit_code == 1 and "(attempt 3 of 3: quarantined;" in more.output
    never = batch(model_dir, inputs, out, "--max-attempts", "0")
    assert never.exit_code == 1 and "(attempt 4)\n" in never.output
    # Fixed, it is scored; its old bad bytes back, their attempts count from 1 again.
    mixed_table(25, seed=2).to_csv(bad, index=False)
    fixed = batch(model_dir, inputs, out, *once)
    assert fixed.exit_code == 0 and "scored 1 file (25 rows" in fixed.output
    mixed_table(25, seed=2).drop(columns="load").to_csv(bad, index=False)
    again = batch(model_dir, inputs, out, *once)
    assert again.exit_code == 1 and "(attempt 1 of 1: quarantined;" in again.output


def test_inputs_of_one_name_fail_every_run_and_are_never_quarantined(model_dir, tmp_path):
    # Their conflict is no failure of their bytes: resolved, the one left is scored.
    out = tmp_path / "out"
    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
        mixed_table(20, seed=1).to_csv(tmp_path / folder / "x.csv", index=False)
    for _ in range(2):
        result = batch(model_dir, tmp_path / "[AB]" / "*.csv", out, "--max-attempts", "1")
        assert result.exit_code == 1 and "2 inputs are named x.csv" in result.output
        assert "quarantined" not in result.output and "attempt" not in result.output
    (tmp_path / "B" / "x.csv").unlink()
    resolved = batch(model_dir, tmp_path / "[AB]" / "*.csv", out, "--max-attempts", "1")
    assert resolved.exit_code == 0 and "scored 1 file (20 rows" in resolved.output


def test_an_input_that_cannot_be_read_is_quarantined_until_it_can_be(
    model_dir, tmp_path, monkeypatch
):
    from anomaly_vae import batch as batch_module
    from anomaly_vae.batch import Failures

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    mixed_table(20, seed=1).to_csv(inputs / "a.csv", index=False)
    path, detector = str(inputs / "a.csv"), VAEDetector.load(model_dir)

    def unreadable(source: Path) -> tuple[int, str]:  # as for root, chmod cannot make it so
        raise PermissionError(13, "Permission denied", str(source))

    monkeypatch.setattr(batch_module, "input_fingerprint", unreadable)
    reason = "cannot read it: Permission denied"
    for attempt in (1, 2):
        report = run_batch(inputs, out, detector, "m", max_attempts=2)
        assert report.failed == {path: reason} and report.attempts == {path: attempt}
    report = run_batch(inputs, out, detector, "m", max_attempts=2)
    assert not report.failed and report.quarantined == {path: Failures(2, reason)}
    monkeypatch.undo()  # readable: its bytes are another input than "unreadable"
    assert run_batch(inputs, out, detector, "m", max_attempts=2).scored == [path]


def test_a_ledger_written_before_attempts_were_counted_keeps_working(model_dir, tmp_path):
    import sqlite3

    from anomaly_vae.batch import file_digest, model_identity

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    mixed_table(40, seed=1).to_csv(inputs / "a.csv", index=False)
    assert batch(model_dir, inputs, out).exit_code == 0
    mixed_table(30, seed=2).drop(columns="load").to_csv(inputs / "bad.csv", index=False)
    # The ledger as the version before wrote it: its table, a.csv scored, bad.csv failed
    # three times.
    (out / LEDGER_FILE).unlink()
    model = model_identity(str(model_dir), model_dir)
    columns = "input, size, sha256, model, status, rows, output, reason, at"

    def old_row(name: str, status: str) -> tuple:
        source = inputs / name
        rows, output = (40, str((out / name).resolve())) if status == "done" else (None, None)
        reason = None if status == "done" else "missing column 'load'"
        size, digest = source.stat().st_size, file_digest(source)
        return (str(source.resolve()), size, digest, model, status, rows, output, reason)

    with contextlib.closing(sqlite3.connect(out / LEDGER_FILE)) as old:
        old.execute(
            "CREATE TABLE scored (input TEXT, size INTEGER, sha256 TEXT, model TEXT, "
            "status TEXT, rows INTEGER, output TEXT, reason TEXT, at TEXT)"
        )
        at = "2026-12-01T00:00:00"
        for row in [old_row("a.csv", "done")] + [old_row("bad.csv", "failed")] * 3:
            old.execute(
                f"INSERT INTO scored ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*row, at)
            )
        old.commit()
    result = batch(model_dir, inputs, out, "--max-attempts", "2")
    assert result.exit_code == 1 and "skipped 1 already scored" in result.output, result.output
    # Its failures were not counted (a conflict between inputs cannot be told from them):
    # this is the first counted attempt.
    assert "(attempt 1 of 2)\n" in result.output
    assert Ledger(out / LEDGER_FILE).entries()["attempt"].fillna(0).tolist() == [0] * 4 + [1]
    # The version before still writes to it (it names its columns), and its rows count not.
    with contextlib.closing(sqlite3.connect(out / LEDGER_FILE)) as older:
        older.execute(
            f"INSERT INTO scored ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*old_row("bad.csv", "failed"), "2026-12-01T01:00:00"),
        )
        older.commit()
    again = batch(model_dir, inputs, out, "--max-attempts", "2")
    assert again.exit_code == 1 and "(attempt 2 of 2: quarantined;" in again.output
    assert batch(model_dir, inputs, out, "--max-attempts", "2").exit_code == 0


def test_a_batch_run_in_mlflow_records_the_quarantined_inputs(model_dir, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    inputs = tmp_path / "in"
    inputs.mkdir()
    mixed_table(50, seed=1).drop(columns="load").to_csv(inputs / "bad.csv", index=False)
    mixed_table(30, seed=2).to_csv(inputs / "a.csv", index=False)

    def run(*extra: str):
        arguments = ["--model", str(model_dir), "--quiet", "--max-attempts", "1", *extra]
        return CliRunner().invoke(main, ["batch", "in", "--output-dir", "out", *arguments])

    def runs() -> list:
        return mlflow.search_runs(experiment_names=["anomaly-vae-batch"], output_format="list")

    def artifact(run, name: str) -> pd.DataFrame:
        return pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/{name}"))

    assert run().exit_code == 1
    (first,) = runs()
    assert first.data.metrics["files_quarantined"] == 0
    assert "quarantined_inputs" not in first.data.tags
    assert artifact(first, "failed.csv")["attempt"].tolist() == [1]  # the one that quarantines
    # Nothing new, nothing tried: no run, as for a run that only skipped.
    assert run().exit_code == 0 and len(runs()) == 1
    mixed_table(20, seed=3).to_csv(inputs / "b.csv", index=False)
    assert run().exit_code == 0
    latest = runs()[0]
    assert latest.data.metrics["files_scored"] == 1 and latest.data.metrics["files_failed"] == 0
    assert latest.data.metrics["files_quarantined"] == 1
    assert latest.data.tags["quarantined_inputs"] == "bad.csv"
    quarantined = artifact(latest, "quarantined.csv")
    assert quarantined.columns.tolist() == ["input", "attempts", "reason"]
    assert quarantined["input"].tolist() == [str(inputs / "bad.csv")]
    assert quarantined["attempts"].tolist() == [1]
    assert quarantined["reason"][0].startswith("missing column 'load'")
    names = [a.path for a in mlflow.MlflowClient().list_artifacts(latest.info.run_id)]
    assert names == ["quarantined.csv"]


def test_the_ledgers_lookups_search_its_indexes_and_an_older_ledger_gets_them(tmp_path):
    # Each input looked itself up by output and by input with a scan of the whole ledger,
    # which grows by a row per input per run (timed in docs/batch.md).
    import sqlite3

    path = tmp_path / LEDGER_FILE
    with contextlib.closing(sqlite3.connect(path)) as old:  # as a version before wrote it
        old.execute(
            "CREATE TABLE scored (input TEXT, size INTEGER, sha256 TEXT, model TEXT, "
            "status TEXT, rows INTEGER, output TEXT, reason TEXT, at TEXT, attempt INTEGER)"
        )
        old.commit()
    ledger = Ledger(path)
    statements: list[str] = []
    ledger.connection.set_trace_callback(statements.append)  # the SQL as run, values bound
    ledger.last_written("/out/a.csv")
    ledger.failed_attempts("/in/a.csv", "ab12", "anomaly-vae/1")
    ledger.failed_attempts("/in/a.csv", None, "anomaly-vae/1")  # unreadable: sha256 IS NULL
    ledger.connection.set_trace_callback(None)
    assert len(statements) == 3
    for statement in statements:
        plan = [row[3] for row in ledger.connection.execute(f"EXPLAIN QUERY PLAN {statement}")]
        searches = [step for step in plan if "scored" in step]
        assert searches and all(" USING " in step and "INDEX" in step for step in searches), (
            statement,
            plan,
        )
        assert not any(step.startswith("SCAN") for step in plan), (statement, plan)
    ledger.close()
    # Opening it again (each run does) keeps the table's rows and the indexes as they are.
    Ledger(path).record(input="/in/a.csv", status="done", output="/out/a.csv")
    with contextlib.closing(sqlite3.connect(path)) as reopened:
        names = {row[1] for row in reopened.execute("PRAGMA index_list(scored)")}
        assert names == {"scored_by_output", "scored_by_input"}
        assert reopened.execute("SELECT COUNT(*) FROM scored").fetchone() == (1,)
