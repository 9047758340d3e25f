"""`anomaly-vae calibrate`: a fitted model's threshold chosen again on labelled data."""

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from anomaly_vae.cli import main
from anomaly_vae.detector import VAEDetector
from anomaly_vae.fitting import latest_model_dir
from tests.conftest import TINY, mislabelled_table, mixed_table, tiny_config

FAST = [arg for item in TINY for arg in ("--set", item)]


def _fit(folder: str, *extra: str) -> None:
    mixed_table(500, seed=0).drop(columns="is_fault").to_csv("train.csv", index=False)
    arguments = ["fit", "train.csv", "--id-col", "reading_id", "--quiet", *FAST, *extra]
    result = CliRunner().invoke(main, [*arguments, "--model-dir", folder])
    assert result.exit_code == 0, result.output


def _calibrate(model: str, *extra: str):
    """`anomaly-vae calibrate labelled.csv --label-col is_fault --model MODEL ...`"""
    arguments = ["calibrate", "labelled.csv", "--label-col", "is_fault", "--model", model]
    return CliRunner().invoke(main, [*arguments, *extra])


def _fit_on_labelled_file(folder: str) -> None:
    """``labelled.csv`` (400 rows, 30 anomalies) written and fit, labels given, into ``folder``."""
    mixed_table(400, seed=0, anomalies=30).to_csv("labelled.csv", index=False)
    arguments = ["fit", "labelled.csv", "--label-col", "is_fault", "--id-col", "reading_id"]
    fitted = CliRunner().invoke(main, [*arguments, "--no-tracking", *FAST, "--model-dir", folder])
    assert fitted.exit_code == 0, fitted.output


def test_threshold_reaches_the_target_recall_and_the_source_model_is_untouched(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    _fit("source", "--no-tracking")
    source_document = (tmp_path / "source" / "detector.json").read_text()
    mixed_table(400, seed=1, anomalies=40).to_csv("labelled.csv", index=False)
    result = _calibrate("source", "--method", "recall", "--target-recall", "0.9", "--no-tracking")
    assert result.exit_code == 0, result.output
    # The labels came after the fit: the column named by --label-col is not "unseen".
    assert "not seen in training" not in caplog.text
    assert "target recall 90%" in result.output and "(optimistic)" in result.output
    new_model = latest_model_dir(tmp_path)
    assert new_model != tmp_path / "source"
    assert (tmp_path / "source" / "detector.json").read_text() == source_document
    saved = json.loads((new_model / "detector.json").read_text())
    assert saved["calibration"]["method"] == "recall"
    assert saved["config"]["calibration"]["method"] == "recall"
    assert saved["threshold"] != json.loads(source_document)["threshold"]
    scored = CliRunner().invoke(main, ["score", "labelled.csv", "-o", "s.csv", "--quiet"])
    assert scored.exit_code == 0, scored.output
    scores = pd.read_csv("s.csv")
    labels = pd.read_csv("labelled.csv")["is_fault"] == 1
    assert scores["is_anomaly"][labels].mean() >= 0.9  # the new model is the latest


def test_recall_without_a_target_takes_the_models_target_recall(tmp_path, monkeypatch):
    # It took the global default, 0.9, while --target-fpr took the model's own setting.
    monkeypatch.chdir(tmp_path)
    _fit("source", "--no-tracking", "--set", "calibration.target_recall=0.5")
    mixed_table(400, seed=1, anomalies=40).to_csv("labelled.csv", index=False)
    result = _calibrate("source", "--method", "recall", "--no-tracking")
    assert result.exit_code == 0, result.output
    assert "target recall 50%" in result.output
    saved = json.loads((latest_model_dir(tmp_path) / "detector.json").read_text())
    assert saved["calibration"]["target_recall"] == 0.5


def test_small_and_near_whole_targets_print_as_given(tmp_path, monkeypatch):
    # A target recall printed with no decimals: 0.0001 read "target recall 0%" and 0.995
    # "100%"; fit's target false-positive rate of 0.00001 read "0.00%".
    monkeypatch.chdir(tmp_path)
    mixed_table(400, seed=1, anomalies=40).to_csv("labelled.csv", index=False)
    arguments = ["fit", "labelled.csv", "--id-col", "reading_id", "--label-col", "is_fault"]
    arguments += ["--quiet", "--no-tracking", *FAST, "--set", "training.epochs=3"]
    arguments += ["--set", "calibration.target_fpr=0.00001", "--model-dir", "quantile"]
    fit = CliRunner().invoke(main, arguments)
    assert fit.exit_code == 0, fit.output
    assert "(target false-positive rate 0.001%;" in fit.output
    recall = ["--set", "calibration.method=recall", "--set", "calibration.target_recall=0.0001"]
    fit = CliRunner().invoke(main, [*arguments[:-1], "recall", *recall])
    assert fit.exit_code == 0, fit.output
    assert ", target recall 0.01%;" in fit.output
    result = _calibrate("recall", "--method", "recall", "--target-recall", "0.995", "--no-tracking")
    assert result.exit_code == 0, result.output
    assert ", target recall 99.5%)" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            [],
            "--method f1 chooses the threshold on labelled rows: name their label column "
            "with --label-col (0 = normal, 1 = anomaly), or use --method quantile",
        ),
        (
            ["--label-col", "machine"],
            "label column 'machine' must hold 0 (normal) and 1 (anomaly); found 'lathe'. If "
            "it holds text, name the value that marks an anomaly: --anomaly-label VALUE\n",
        ),
        (["--label-col", "is_fault", "--target-recall", "1.5"], "1.5 is not in the range"),
    ],
)
def test_bad_labels_are_a_clear_error_and_save_nothing(tmp_path, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    _fit("source", "--no-tracking")
    mixed_table(100, seed=1, anomalies=10).to_csv("labelled.csv", index=False)
    result = CliRunner().invoke(
        main, ["calibrate", "labelled.csv", "--model", "source", "--no-tracking", *arguments]
    )
    assert result.exit_code != 0
    assert message in result.output
    assert "--set" not in result.output  # nor a --set of the model's own settings
    assert latest_model_dir(tmp_path) == (tmp_path / "source").resolve()


def test_data_of_the_other_kind_is_named_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit("source", "--no-tracking")
    result = CliRunner().invoke(
        main,
        ["calibrate", "fashionmnist:nowhere", "--normal-class", "0", "--model", "source"],
    )
    assert result.exit_code == 1
    assert "this model was fit on tables, but fashionmnist:nowhere is an image source" in (
        result.output
    )


def test_a_registered_model_gets_a_new_version_and_the_champion_alias(tracking_store):
    import mlflow
    from mlflow import MlflowClient

    _fit("source", "--set", "tracking.log_views=false")
    mixed_table(300, seed=1, anomalies=30).to_csv("labelled.csv", index=False)
    result = _calibrate("models:/anomaly-vae/1", "--register")
    assert result.exit_code == 0, result.output
    assert "models:/anomaly-vae/2 (alias 'champion' moved to it)" in result.output
    mlflow.set_tracking_uri(tracking_store)
    champion = MlflowClient().get_model_version_by_alias("anomaly-vae", "champion")
    assert str(champion.version) == "2"
    run = MlflowClient().get_run(champion.run_id)
    assert run.data.tags["source_model"] == "models:/anomaly-vae/1"
    assert run.data.params["method"] == "f1" and "previous_threshold" in run.data.metrics
    assert champion.description.startswith(  # the registry says what each version is
        "vae recalibrated on labelled.csv: flags negative_elbo above"
    ) and champion.description.endswith(
        "(F1-optimal on the precision-recall curve); "
        f"AUROC {100 * run.data.metrics['auroc']:.2f}% on the run's labelled rows"
    )
    loaded = mlflow.pyfunc.load_model("models:/anomaly-vae@champion")
    labelled = pd.read_csv("labelled.csv")
    flagged = loaded.predict(labelled.drop(columns="is_fault"))["is_anomaly"]
    assert flagged[labelled["is_fault"] == 1].mean() > 0.8


def test_text_labels_fit_and_calibrate_with_the_anomaly_label(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = mixed_table(500, seed=0, anomalies=40)
    table["is_fault"] = table["is_fault"].map({0: "ok", 1: "yes"})
    table.to_csv("labelled.csv", index=False)
    arguments = ["fit", "labelled.csv", "--label-col", "is_fault", "--id-col", "reading_id"]
    arguments += ["--quiet", "--no-tracking"]
    refused = CliRunner().invoke(main, [*arguments, *FAST])
    assert refused.exit_code == 1 and "--set data.anomaly_label=VALUE" in refused.output
    fit = CliRunner().invoke(main, [*arguments, *FAST, "--set", "data.anomaly_label=yes"])
    assert fit.exit_code == 0, fit.output
    assert "Kept 40 labelled anomalies out of training." in fit.output
    # calibrate takes the model's anomaly label unless told otherwise
    result = _calibrate(str(latest_model_dir(tmp_path)), "--no-tracking")
    assert result.exit_code == 0, result.output
    assert "of 500 labelled rows" in result.output
    # An anomaly label without the column that holds it is refused, not ignored.
    quantile = ["calibrate", "labelled.csv", "--method", "quantile", "--no-tracking"]
    alone = CliRunner().invoke(main, [*quantile, "--anomaly-label", "yes"])
    assert alone.exit_code == 2 and "--anomaly-label names a value of the --label-col" in (
        alone.output
    )


def _drifted(n: int, seed: int) -> pd.DataFrame:
    """Normal operation after the fit: every machine runs 15 degrees hotter, load following."""
    table = mixed_table(n, seed=seed)
    table["temperature"] += 15.0
    table["load"] += 30.0
    return table


def test_quantile_on_recent_normal_rows_sets_the_false_positive_rate_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit("source", "--no-tracking")
    _drifted(800, seed=1).drop(columns="is_fault").to_csv("recent.csv", index=False)
    _drifted(800, seed=2).drop(columns="is_fault").to_csv("later.csv", index=False)

    def flagged_share(model: str) -> float:
        scored = CliRunner().invoke(
            main, ["score", "later.csv", "--model", model, "-o", "s.csv", "--quiet"]
        )
        assert scored.exit_code == 0, scored.output
        return pd.read_csv("s.csv")["is_anomaly"].mean()

    assert flagged_share("source") > 0.15
    arguments = ["calibrate", "recent.csv", "--model", "source", "--method", "quantile"]
    result = CliRunner().invoke(main, [*arguments, "--target-fpr", "0.05", "--no-tracking"])
    assert result.exit_code == 0, result.output
    assert "the 95% quantile of 800 normal rows" in result.output
    # Most of them were above the old threshold: the drift, and a reminder to check them.
    above = float(result.output.split("; ")[-1].split("%")[0])
    assert above > 15 and "Check that these rows are all normal" in result.output
    assert "(optimistic)" not in result.output  # no labels, no labelled evaluation
    assert 0.02 < flagged_share(str(latest_model_dir(tmp_path))) < 0.09
    saved = json.loads((latest_model_dir(tmp_path) / "detector.json").read_text())
    assert saved["config"]["calibration"]["target_fpr"] == 0.05
    assert saved["calibration"]["n_calibration"] == 800
    # 39 of the 800 are above the threshold (the 40th largest score): Beta(40, 761) of
    # new rows above it, enough rows to pin it down.
    assert saved["calibration"]["expected_fpr_mean"] == pytest.approx(40 / 801)
    assert "3.8% to 6.3% of new normal rows expected above it, 90% interval" in result.output
    assert "too few to pin" not in result.output


def test_quantile_with_labels_takes_the_normal_rows_and_reports_the_labelled(tracking_store):
    import mlflow
    from mlflow import MlflowClient

    _fit("source", "--set", "tracking.log_views=false")
    mixed_table(400, seed=1, anomalies=40).to_csv("labelled.csv", index=False)
    result = _calibrate("models:/anomaly-vae/1", "--method", "quantile")
    assert result.exit_code == 0, result.output
    assert "quantile of 360 normal rows" in result.output
    assert "On the labelled rows (optimistic)" in result.output
    mlflow.set_tracking_uri(tracking_store)
    client = MlflowClient()
    run = client.get_run(client.get_model_version("anomaly-vae", "2").run_id)
    params = run.data.params
    assert params["method"] == "quantile" and params["target_fpr"] == "0.01"
    # The recalibrated model's settings as the fit logged its own (they were missing):
    # every parameter of the fit run, auto settings included, with its value, as this
    # quantile at the fit's target changed none.
    fit_params = client.get_run(client.get_model_version("anomaly-vae", "1").run_id).data.params
    assert "model.latent_dim" in fit_params and "auto.scoring.score" in fit_params
    assert {key: params.get(key) for key in fit_params} == fit_params
    logged = yaml.safe_load(
        Path(client.download_artifacts(run.info.run_id, "config.yaml")).read_text()
    )
    assert logged["calibration"]["method"] == "quantile" and logged["model"]["latent_dim"] == 2
    # The data, by path, SHA-256 and row counts (a table file read a part at a time is
    # never held whole, so a dataset input by reference, without a schema).
    sha256 = hashlib.sha256(Path("labelled.csv").read_bytes()).hexdigest()
    assert run.data.tags["data_sha256"] == sha256
    counts = {"data_rows": 400, "data_normal_rows": 360, "data_anomalous_rows": 40}
    assert {key: run.data.metrics[key] for key in counts} == counts
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.tags[0].value == "calibration"
    assert (dataset.dataset.name, dataset.dataset.digest) == ("labelled.csv", sha256[:8])
    assert json.loads(dataset.dataset.source)["uri"] == str(Path.cwd() / "labelled.csv")
    assert json.loads(dataset.dataset.profile) == {
        "num_rows": 400,
        "num_normal_rows": 360,
        "num_anomalous_rows": 40,
    }
    # Its calibration rows are the 360 normal rows, which calibration_fpr counts; the
    # fit's held-out 75 were logged as rows_calibration beside it.
    assert run.data.metrics["rows_calibration"] == 360
    # 3 of the 360 above the threshold: its rate on new rows is Beta(4, 357), too wide.
    assert run.data.metrics["expected_fpr_mean"] == pytest.approx(4 / 361)
    assert "(target 1%; 0.38% to 2.1% of new normal rows expected above it" in result.output
    assert (
        "Only 3 of 360 normal rows are above the threshold, too few to pin its false-positive "
        "rate down: about 501 would put 5 above it (calibrate on more normal rows)."
    ) in result.output
    assert run.data.metrics["rows_train"] == 375  # the fit's split, which the model keeps
    above = round(run.data.metrics["calibration_fpr"] * 360)
    assert above == pytest.approx(run.data.metrics["calibration_fpr"] * 360)
    # The run's description names the rows the quantile was taken of: not "held-out".
    assert (
        "(quantile of the normal scores it was recalibrated on, target"
        in (run.data.tags["mlflow.note.content"])
    )
    refused = _calibrate("source", "--method", "f1", "--target-fpr", "0.05")
    assert refused.exit_code != 0 and "--target-fpr is for --method quantile" in refused.output
    ignored = _calibrate("source", "--target-recall", "0.8")  # --method left at f1
    assert ignored.exit_code != 0 and "--target-recall is for --method recall" in ignored.output


def test_calibrate_logs_the_input_example_its_source_fit_logged(tracking_store):
    """A fit with tracking.input_example=synthetic logged no row of its data; a calibrate
    of it (and of that calibrated model) logs none of its rows either, unless told to."""
    import mlflow

    _fit("source", "--set", "tracking.log_views=false", "--set", "tracking.input_example=synthetic")
    mixed_table(200, seed=1).drop(columns="is_fault").to_csv("recent.csv", index=False)
    mlflow.set_tracking_uri(tracking_store)

    def calibrated(model: str, *extra: str) -> pd.DataFrame:
        """The input example of the model `calibrate recent.csv --model MODEL` logs."""
        arguments = ["calibrate", "recent.csv", "--model", model, "--method", "quantile"]
        result = CliRunner().invoke(main, [*arguments, "--quiet", *extra])
        assert result.exit_code == 0, result.output
        uri = result.output.split("registered model ")[-1].split()[0]
        return mlflow.pyfunc.load_model(uri).metadata.load_input_example()

    columns = ["machine", "temperature", "load", "vibration"]
    assert calibrated("source").columns.tolist() == columns  # one typical row, no id
    assert len(calibrated("models:/anomaly-vae/2")) == 1  # a calibrate of a calibrate
    rows = calibrated("models:/anomaly-vae/3", "--set", "tracking.input_example=rows")
    recent = pd.read_csv("recent.csv")
    pd.testing.assert_frame_equal(rows.reset_index(drop=True), recent.head(5))


def test_calibrate_logs_beside_its_source_and_records_where_it_came_from(tracking_store):
    import mlflow
    from mlflow import MlflowClient

    named = ["--set", "tracking.registered_model_name=pumps", "--set", "tracking.experiment=plant"]
    _fit("source", "--set", "tracking.log_views=false", *named, "--register")
    mixed_table(300, seed=1, anomalies=30).to_csv("labelled.csv", index=False)
    # The latest local fit: no registry reference given, yet the source's name is kept.
    result = CliRunner().invoke(
        main, ["calibrate", "labelled.csv", "--label-col", "is_fault", "--register"]
    )
    assert result.exit_code == 0, result.output
    assert "models:/pumps/2 (alias 'champion' moved to it)" in result.output
    assert "Created version" not in result.output  # MLflow's own words, said once by ours
    mlflow.set_tracking_uri(tracking_store)
    client = MlflowClient()
    source_run = client.get_model_version("pumps", "1").run_id
    run = client.get_run(client.get_model_version("pumps", "2").run_id)
    assert client.get_experiment(run.info.experiment_id).name == "plant"
    # An F1 threshold was chosen without the fit's held-out rows: their count above it gives
    # the rate to expect (its estimate, the share above, and the exact binomial interval).
    metrics = run.data.metrics
    assert metrics["expected_fpr_mean"] == pytest.approx(metrics["calibration_fpr"])
    assert (
        metrics["expected_fpr_low"] <= metrics["expected_fpr_mean"] < metrics["expected_fpr_high"]
    )
    assert "of new normal rows expected above it, 90% interval" in result.output
    assert run.data.tags["source_run_id"] == source_run
    assert run.data.tags["source_model_version"] == "pumps/1"
    # Absolute: a reviewer of the run cannot resolve a path relative to where it ran.
    assert run.data.tags["data"] == str(Path.cwd() / "labelled.csv")
    # The same on the registered version, which a reviewer of the Models page sees (its
    # tags were empty); the fit's version has its data and no source.
    assert client.get_model_version("pumps", "2").tags == {
        "kind": "calibrate",
        "threshold_method": "f1",
        "data": str(Path.cwd() / "labelled.csv"),
        "data_sha256": hashlib.sha256(Path("labelled.csv").read_bytes()).hexdigest(),
        "source_model": f"latest local fit ({Path.cwd() / 'source'})",
        "source_run_id": source_run,
        "source_model_version": "pumps/1",
    }
    fit_tags = client.get_model_version("pumps", "1").tags
    assert fit_tags["data"] == str(Path.cwd() / "train.csv") and fit_tags["kind"] == "fit"
    assert fit_tags["data_sha256"] == hashlib.sha256(Path("train.csv").read_bytes()).hexdigest()
    assert "source_run_id" not in fit_tags
    assert client.search_registered_models(filter_string="name = 'anomaly-vae'") == []
    assert client.get_experiment_by_name("anomaly-vae") is None  # nothing logged there
    # An alias is recorded as the version it pointed at before it moved.
    again = _calibrate("models:/pumps@champion", "--register")
    assert again.exit_code == 0, again.output
    run = client.get_run(client.get_model_version("pumps", "3").run_id)
    assert run.data.tags["source_model_version"] == "pumps/2"


def test_a_source_model_whose_run_is_not_in_this_store_is_refused_in_one_line(
    tracking_store, tmp_path, monkeypatch
):
    # A model folder fit with tracking, calibrated from another project folder or with
    # MLFLOW_TRACKING_URI naming another store: the run its mlflow_run_id names is not
    # there. calibrate ended in MLflow's traceback ("Run with id=... not found").
    _fit("source", "--set", "tracking.log_views=false")
    mixed_table(300, seed=1, anomalies=30).to_csv("labelled.csv", index=False)
    source, labelled = str(tmp_path / "source"), str(tmp_path / "labelled.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    arguments = ["calibrate", labelled, "--label-col", "is_fault", "--model", source]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere / 'other.db'}")
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "is not in the tracking store" in result.output
    assert "set MLFLOW_TRACKING_URI to its tracking store, or pass --no-tracking" in result.output
    assert not (elsewhere / "mlruns" / "models").exists()  # no model saved
    # The embedded store of a folder where nothing was tracked: refused as the store is
    # missing, before an empty one is created.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "no MLflow tracking store at" in result.output
    assert not (elsewhere / "mlruns").exists()
    untracked = CliRunner().invoke(main, [*arguments, "--no-tracking", "--model-dir", "new"])
    assert untracked.exit_code == 0, untracked.output


def test_one_labelled_anomaly_is_evaluated_without_an_interval(tmp_path, monkeypatch, caplog):
    # A bootstrap needs two rows of each class; with one anomaly fit and calibrate still
    # report AUROC (without an interval) and save their model.
    monkeypatch.chdir(tmp_path)
    mixed_table(400, seed=0, anomalies=1).to_csv("labelled.csv", index=False)
    arguments = ["fit", "labelled.csv", "--label-col", "is_fault", "--id-col", "reading_id"]
    fitted = CliRunner().invoke(main, [*arguments, "--no-tracking", *FAST, "--model-dir", "m"])
    assert "Kept 1 labelled anomaly out of training." in fitted.output
    calibrated = _calibrate("m", "--method", "f1", "--no-tracking")
    for result in (fitted, calibrated):
        assert result.exit_code == 0, result.output
        # No AUROC interval ("AUROC 98.21% (95% interval 96.79 to 99.31)"); the fit's
        # threshold line gives its own, of the false-positive rate on new normal rows.
        assert "AUROC" in result.output and "(95% interval" not in result.output
    said = [r.getMessage() for r in caplog.records if "no bootstrap interval" in r.getMessage()]
    assert len(said) == 2 and all("1 anomalous (it needs 2 of each)" in text for text in said)


def test_quantile_keeps_the_anomalies_of_the_models_own_label_column_out(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    mixed_table(500, seed=0, anomalies=40).to_csv("train.csv", index=False)
    arguments = ["fit", "train.csv", "--label-col", "is_fault", "--id-col", "reading_id"]
    fitted = CliRunner().invoke(main, [*arguments, "--no-tracking", *FAST, "--model-dir", "m"])
    assert fitted.exit_code == 0, fitted.output
    mixed_table(400, seed=1, anomalies=40).to_csv("new.csv", index=False)
    arguments = ["calibrate", "new.csv", "--model", "m", "--method", "quantile", "--no-tracking"]
    result = CliRunner().invoke(main, [*arguments, "--model-dir", "q"])
    assert result.exit_code == 0, result.output
    assert "new.csv holds the model's label column 'is_fault'" in caplog.text
    # The 1% quantile of the normal rows: about 1% of them flagged, not none of 400 rows.
    calibrated = VAEDetector.load(tmp_path / "q")
    frame = pd.read_csv("new.csv")
    normal = frame[frame["is_fault"] == 0].drop(columns="is_fault")
    flagged = (calibrated.predict(normal) == -1).mean()
    assert 0.002 < flagged < 0.05


def test_a_threshold_that_flags_much_of_normal_operation_asks_for_a_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit("source", "--no-tracking")
    # Normal rows, 30 of them labelled anomalous by mistake: to reach 90% recall on them
    # the threshold must flag most normal rows.
    mislabelled_table(400, seed=1).to_csv("labelled.csv", index=False)
    arguments = ("--method", "recall", "--target-recall", "0.9", "--no-tracking")
    result = _calibrate("source", *arguments)
    assert result.exit_code == 0, result.output
    assert "Check before you use it: it flags more than 5 times the 1% of normal rows" in (
        result.output
    )
    mixed_table(400, seed=1, anomalies=40).to_csv("labelled.csv", index=False)
    sound = _calibrate("source", "--method", "f1", "--no-tracking")
    assert sound.exit_code == 0 and "Check before you use it" not in sound.output


def test_register_keeps_the_champion_on_its_version_when_the_threshold_asks_for_a_check(
    tracking_store,
):
    # The alias moved to the new version even after the warning, and scheduled batch
    # scoring follows models:/anomaly-vae@champion: a suspect threshold went live at once.
    import subprocess

    import mlflow
    from mlflow import MlflowClient

    _fit("source", "--set", "tracking.log_views=false", "--register")
    # normal rows, 30 labelled anomalous by mistake
    mislabelled_table(400, seed=1).to_csv("labelled.csv", index=False)
    result = _calibrate("source", "--method", "recall", "--target-recall", "0.9", "--register")
    assert result.exit_code == 0, result.output
    assert "Check before you use it" in result.output
    assert result.output.count("registered model models:/anomaly-vae/2\n") == 1  # not moved
    said = "Alias 'champion' left on version 1, as the threshold asks for a check; to move "
    said += "it to version 2 once checked: "
    (line,) = [line for line in result.output.splitlines() if line.startswith(said)]
    mlflow.set_tracking_uri(tracking_store)
    client = MlflowClient()
    assert client.get_registered_model("anomaly-vae").aliases == {"champion": 1}
    version = client.get_model_version("anomaly-vae", "2")
    assert version.tags["needs_check"].startswith("it flags ")
    assert version.tags["needs_check"].endswith(
        "times the 1% the model was fit to flag; --register did not move the champion alias to it"
    )
    params = client.get_run(version.run_id).data.params
    assert params["tracking.register_champion"] == "False"  # as the run did
    # The command it names moves the alias, from anywhere (the store is named in it).
    command = line.removeprefix(said)
    unset = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    moved = subprocess.run(command, shell=True, cwd="/", env=unset, capture_output=True, text=True)
    assert moved.returncode == 0, moved.stderr
    assert client.get_registered_model("anomaly-vae").aliases == {"champion": 2}


def test_evaluation_settings_set_the_interval_and_other_settings_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit("source", "--no-tracking")
    mixed_table(400, seed=1, anomalies=40).to_csv("labelled.csv", index=False)
    default = _calibrate("source", "--no-tracking")
    assert default.exit_code == 0, default.output
    assert "95% interval" in default.output
    narrower = _calibrate("source", "--no-tracking", "--set", "evaluation.interval_level=0.8")
    assert narrower.exit_code == 0, narrower.output
    assert "80% interval" in narrower.output
    none = _calibrate("source", "--no-tracking", "--set", "evaluation.interval_resamples=0")
    assert none.exit_code == 0, none.output
    (auroc,) = [line for line in none.output.splitlines() if "AUROC" in line]
    assert "interval" not in auroc
    # The level of the new threshold's expected false-positive rate, saved with it.
    assert "of new normal rows expected above it, 90% interval" in default.output
    level = _calibrate("source", "--no-tracking", "--set", "calibration.expected_fpr_level=0.5")
    assert level.exit_code == 0, level.output
    assert "of new normal rows expected above it, 50% interval" in level.output
    calibration = json.loads((latest_model_dir(tmp_path) / "detector.json").read_text())
    assert calibration["calibration"]["expected_fpr_level"] == 0.5
    saved = latest_model_dir(tmp_path)
    # A configuration error, exit code 1, as a bad --set key is in fit (not click's 2)
    refused = _calibrate("source", "--no-tracking", "--set", "model.latent_dim=4")
    assert refused.exit_code == 1
    assert (
        "calibrate takes evaluation.interval_level, evaluation.interval_resamples, "
        "calibration.expected_fpr_level and tracking.input_example only" in refused.output
    )
    # It splits a fit's own data: calibrate would ignore it.
    fraction = _calibrate("source", "--no-tracking", "--set", "evaluation.fraction=0.5")
    assert fraction.exit_code == 1 and "--set evaluation.fraction=0.5" in fraction.output
    too_few = _calibrate("source", "--no-tracking", "--set", "evaluation.interval_resamples=5")
    assert too_few.exit_code == 1
    assert "evaluation.interval_resamples must be 0" in too_few.output
    assert latest_model_dir(tmp_path) == saved  # neither saved a model


def test_normal_class_is_refused_for_a_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit("source", "--no-tracking")
    mixed_table(100, seed=1, anomalies=10).to_csv("labelled.csv", index=False)
    result = _calibrate("source", "--normal-class", "press", "--no-tracking")
    assert result.exit_code == 1
    assert "--normal-class is for image sources; tables use --label-col" in result.output
    assert latest_model_dir(tmp_path) == (tmp_path / "source").resolve()


def test_calibrating_on_the_training_file_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    _fit_on_labelled_file("m")
    said = "labelled.csv is the file this model was fit on"
    with caplog.at_level("WARNING"):
        same = _calibrate("m", "--no-tracking")
    assert same.exit_code == 0, same.output
    assert said in caplog.text
    # The fit's held-out rows are rows of that file: some may have chosen the threshold.
    assert (
        "No false-positive rate to expect on new normal rows: labelled.csv holds rows the "
        "model was fit on" in same.output
    )
    assert "of new normal rows expected" not in same.output
    saved = json.loads((latest_model_dir(tmp_path) / "detector.json").read_text())
    assert "expected_fpr_high" not in saved["calibration"]
    assert "expected_fpr_withheld" in saved["calibration"]
    caplog.clear()
    mixed_table(400, seed=1, anomalies=30).to_csv("reviewed.csv", index=False)
    other = CliRunner().invoke(
        main,
        ["calibrate", "reviewed.csv", "--label-col", "is_fault", "--model", "m", "--no-tracking"],
    )
    assert other.exit_code == 0, other.output
    assert "the file this model was fit on" not in caplog.text
    assert "of new normal rows expected above it" in other.output
    # A link to the training file is the training file.
    Path("link.csv").symlink_to(Path("labelled.csv").resolve())
    linking = ["calibrate", "link.csv", "--label-col", "is_fault", "--model", "m", "--no-tracking"]
    with caplog.at_level("WARNING"):
        linked = CliRunner().invoke(main, linking)
    assert linked.exit_code == 0 and "link.csv is the file this model was fit on" in caplog.text
    # A recalibrated model still knows its training file.
    with caplog.at_level("WARNING"):
        again = _calibrate(str(latest_model_dir(tmp_path)), "--no-tracking")
    assert again.exit_code == 0 and said in caplog.text


def test_a_labelled_threshold_on_the_rows_of_an_earlier_quantile_calibration_has_no_rate(
    tmp_path, monkeypatch
):
    """After `calibrate --method quantile` on reviewed.csv, the model's calibration rows
    are that file's normal rows: an f1 threshold chosen on reviewed.csv (or a copy) is
    chosen on them too, and gets no interval; on another file it does, and the lines
    name the rows the rate is counted on, which are no longer the fit's."""
    monkeypatch.chdir(tmp_path)
    _fit("source", "--no-tracking")
    mixed_table(400, seed=1, anomalies=30).to_csv("reviewed.csv", index=False)
    mixed_table(400, seed=2, anomalies=30).to_csv("other.csv", index=False)
    Path("copy.csv").write_bytes(Path("reviewed.csv").read_bytes())

    def calibrate(data: str, model: str, into: str, *method: str) -> tuple[str, dict]:
        arguments = ["calibrate", data, "--label-col", "is_fault", "--model", model, *method]
        result = CliRunner().invoke(main, [*arguments, "--model-dir", into, "--no-tracking"])
        assert result.exit_code == 0, result.output
        return result.output, json.loads(Path(into, "detector.json").read_text())["calibration"]

    calibrate("reviewed.csv", "source", "quantile", "--method", "quantile")
    withheld = (
        "No false-positive rate to expect on new normal rows: the calibration rows are the "
        "normal rows of an earlier calibrate --method quantile on reviewed.csv{}, so they may "
        "be among the labelled rows that chose the threshold."
    )
    counted_on = "On the 370 normal rows of the earlier calibrate --method quantile: "
    for data, held in (("reviewed.csv", ""), ("copy.csv", " (copy.csv holds them)")):
        output, calibration = calibrate(data, "quantile", f"f1-{data}")
        assert counted_on in output and withheld.format(held) in output
        assert "of new normal rows expected" not in output
        assert "expected_fpr_high" not in calibration and "expected_fpr_withheld" in calibration
    # Other rows choose a threshold fixed with respect to them: an interval. The record of
    # where they came from is kept with it, for the next labelled threshold.
    output, calibration = calibrate("other.csv", "quantile", "f1-other")
    assert counted_on in output and "of new normal rows expected above it" in output
    output, calibration = calibrate("reviewed.csv", "f1-other", "f1-other-reviewed")
    assert withheld.format("") in output and "expected_fpr_withheld" in calibration


def test_calibrating_on_a_copy_of_the_training_file_warns(tmp_path, monkeypatch, caplog):
    import hashlib
    import shutil

    monkeypatch.chdir(tmp_path)
    _fit_on_labelled_file("m")
    # A copy (another folder, another name) was not caught: the check was by path.
    Path("exports").mkdir()
    shutil.copy("labelled.csv", "exports/reviewed.csv")
    copy = ["calibrate", "exports/reviewed.csv", "--label-col", "is_fault", "--model", "m"]
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(main, [*copy, "--no-tracking"])
    assert result.exit_code == 0, result.output
    training = str(Path("labelled.csv").resolve())
    assert f"reviewed.csv is a copy of {training}, the file this model was fit on" in (caplog.text)
    saved = json.loads(Path("m/detector.json").read_text())["training"]["source"]
    assert saved["sha256"] == hashlib.sha256(Path("labelled.csv").read_bytes()).hexdigest()
    caplog.clear()
    # The same size with other bytes is another file.
    text = Path("labelled.csv").read_text()
    Path("exports/reviewed.csv").write_text(text.replace(",0\n", ",1\n", 1))
    assert Path("exports/reviewed.csv").stat().st_size == Path("labelled.csv").stat().st_size
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(main, [*copy, "--no-tracking"])
    assert result.exit_code == 0 and "fit on" not in caplog.text


def test_calibrating_on_the_image_folder_fit_on_warns(tmp_path, monkeypatch, caplog):
    # A table's training file was warned of, an image model's training folder not: image
    # models saved no source (training.source null), so the folder went unrecognised.
    from PIL import Image

    from tests.test_images import bars

    monkeypatch.chdir(tmp_path)
    for folder, images in (
        ("flat", bars(40, seed=0)),
        ("classes/good", bars(40, seed=0)),
        ("classes/bad", bars(5, seed=2, vertical=True)),
    ):
        Path(folder).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image[0]).save(f"{folder}/{i:03d}.png")
    settings = [*FAST, "--set", "training.epochs=2", "--no-tracking", "--quiet"]
    for data, model, extra in (("flat", "m1", []), ("classes", "m2", ["--normal-class", "good"])):
        fitted = CliRunner().invoke(main, ["fit", data, *extra, *settings, "--model-dir", model])
        assert fitted.exit_code == 0, fitted.output
    saved = json.loads(Path("m2/detector.json").read_text())["training"]["source"]
    assert saved == {
        "folder": str(Path("classes").resolve()),
        "image_folders": [str(Path("classes/good").resolve())],
    }
    said = (
        "{} this model was fit on: its normal images include images the model trained on, "
        "which score lower than new images, so the threshold and the figures on it are "
        "optimistic; calibrate on images the model did not train on"
    )
    cases = [
        ("flat", "m1", [], said.format("flat is the folder")),
        ("classes", "m2", ["--normal-class", "good"], said.format("classes is the folder")),
        (
            "classes/good",
            "m2",
            [],
            said.format(f"good holds images of {Path('classes').resolve()}, the folder"),
        ),
        ("classes", "m2", ["--normal-class", "bad"], None),  # not the images trained on
        ("classes/good", "m1", [], None),  # another folder
    ]
    for data, model, extra, warning in cases:
        caplog.clear()
        command = ["calibrate", data, *extra, "--method", "quantile", "--model", model]
        with caplog.at_level("WARNING"):
            result = CliRunner().invoke(main, [*command, "--no-tracking", "--quiet"])
        assert result.exit_code == 0, result.output
        if warning is None:
            assert "this model was fit on" not in caplog.text, (data, model)
        else:
            assert warning in caplog.text, (data, model, caplog.text)
    # From inside the folder (`calibrate .`), named by the folder: the name of "." is
    # empty, and the warning read "WARNING:  is the folder this model was fit on".
    monkeypatch.chdir("flat")
    caplog.clear()
    command = ["calibrate", ".", "--method", "quantile", "--model", "../m1"]
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(
            main, [*command, "--model-dir", "../m3", "--no-tracking", "--quiet"]
        )
    assert result.exit_code == 0, result.output
    assert said.format("flat is the folder") in caplog.text, caplog.text


def test_a_model_saved_without_the_digest_knows_its_training_file_by_path(tmp_path):
    from anomaly_vae.fitting import same_training_file, training_file

    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    saved_before = training_file(data, digest=False)  # a model saved before the digest
    assert saved_before is not None and "sha256" not in saved_before
    assert same_training_file(saved_before, data) == "same"
    (tmp_path / "copy.csv").write_bytes(data.read_bytes())
    assert same_training_file(saved_before, tmp_path / "copy.csv") is None
    assert same_training_file(training_file(data), tmp_path / "copy.csv") == "copy"


def test_the_set_help_names_both_intervals():
    # evaluation.interval_* bound AUROC and AUCPR alike (anomaly_vae.intervals).
    shown = CliRunner().invoke(main, ["calibrate", "--help"]).output
    assert "Set the AUROC and AUCPR intervals" in " ".join(shown.split())


def test_a_large_calibrate_names_its_steps_and_scores_a_part_at_a_time(tracking_store, monkeypatch):
    """calibrate on a 500,000-row labelled table said nothing for seconds (reading, scoring,
    the threshold and its evaluation) when the model had been fit with --quiet, and only
    'evaluating on 500,000 labelled rows ...' when not: it took the saved model's progress
    setting, not the run's, and had no --quiet. It scored the table whole (1.42 GB peak
    against 1.05 GB a part at a time). Now, as in fit and score, from PHASE_LINE_ROWS rows
    or PHASE_LINE_BYTES (here 0) lines name its steps, its scoring counts the rows (off a
    terminal a line each PROGRESS_LINE_SECONDS, here every part) a part at a time, and
    --quiet hides them; the threshold is the one the table scored whole gives."""
    from anomaly_vae import scoring, training

    monkeypatch.setattr(training, "PHASE_LINE_ROWS", 0)
    monkeypatch.setattr(training, "PHASE_LINE_BYTES", 0)
    monkeypatch.setattr(training, "PROGRESS_LINE_SECONDS", 0.0)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", 100)
    _fit("source", "--no-tracking", "--set", "scoring.batch_size=50")  # fit --quiet
    mixed_table(400, seed=1, anomalies=40).to_csv("labelled.csv", index=False)
    scored: list[int] = []
    whole_score = VAEDetector.anomaly_score

    def recorded(self, X, condition=None):
        scored.append(len(X))
        return whole_score(self, X, condition)

    monkeypatch.setattr(VAEDetector, "anomaly_score", recorded)
    result = _calibrate("source", "--model-dir", "loud")
    assert result.exit_code == 0, result.output
    lines = [re.sub(r" \(\d+ s\)$", "", line) for line in result.stderr.splitlines()]
    store = tracking_store.removeprefix("sqlite:///")  # a new store: created by this run
    assert [line for line in lines if line.endswith(" ...") or "rows" in line] == [
        f"creating the MLflow tracking store {store} (first use) ...",
        "reading labelled.csv (0 MB) ...",
        *(f"scoring labelled.csv: {rows} rows" for rows in (100, 200, 300, 400)),
        "evaluating on 400 labelled rows ...",
        "logging the run to MLflow ...",
    ]
    assert max(scored) == 100
    quiet = _calibrate("source", "--model-dir", "quiet", "--no-tracking", "--quiet")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    frame = pd.read_csv("labelled.csv")
    monkeypatch.setattr(VAEDetector, "anomaly_score", whole_score)
    whole = VAEDetector.load("source").calibrate_threshold(
        frame.drop(columns="is_fault"), frame["is_fault"].to_numpy(), method="f1"
    )
    for folder in ("loud", "quiet"):
        assert VAEDetector.load(folder).threshold_ == whole.threshold_


def test_a_tracked_run_names_the_store_it_creates(tracking_store, monkeypatch):
    """On a store's first use MLflow creates its tables and runs its schema migrations,
    4 to 5 s before calibrate (or fit) said anything, on any data. A line names that step
    as it starts; a store that exists, or --quiet, shows none."""
    _fit_on_labelled_file("source")
    first = _calibrate("source", "--model-dir", "first")
    assert first.exit_code == 0, first.output
    store = tracking_store.removeprefix("sqlite:///")
    created = f"creating the MLflow tracking store {store} (first use) ..."
    assert first.stderr.splitlines()[0] == created
    again = _calibrate("source", "--model-dir", "again")
    assert again.exit_code == 0, again.output
    assert "creating the MLflow tracking store" not in again.stderr
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{tracking_store}.other")  # a new store
    quiet = _calibrate("source", "--model-dir", "quiet", "--quiet")
    assert quiet.exit_code == 0, quiet.output
    assert "creating the MLflow tracking store" not in quiet.stderr
    assert Path(f"{store}.other").is_file()


PART_ROWS = 100  # rows read and scored at a time in the tests below: 400-row tables, 4 parts


@pytest.fixture(scope="module")
def parted_model(tmp_path_factory):
    """A tiny model that scores 50 rows a batch, so that parts of PART_ROWS are whole batches."""
    folder = tmp_path_factory.mktemp("model")
    config = tiny_config("data.id_column=reading_id", "scoring.batch_size=50")
    training = mixed_table(500, seed=0).drop(columns="is_fault")
    VAEDetector(config.detector_config()).fit(training).save(folder)
    return folder


@pytest.mark.parametrize("method", ["f1", "quantile"])
def test_a_table_is_read_a_part_at_a_time_with_the_results_of_the_whole(
    parted_model, tmp_path, monkeypatch, method
):
    """calibrate read the whole table into memory before scoring it a part at a time (196
    MiB above a small table's peak for 500,000 rows of 30 columns, 955 MiB for 2,000,000). It
    now reads and scores a part at a time, the whole-table readers never called, and
    gives the scores, threshold and evaluation of the table read whole: from CSV, and
    from Parquet whose row groups end within parts."""
    from anomaly_vae import scoring
    from anomaly_vae.data import tables
    from anomaly_vae.recalibration import calibrate_model

    table = mixed_table(400, seed=1, anomalies=40).astype({"machine": "category"})
    table.to_csv(tmp_path / "labelled.csv", index=False)
    table.to_parquet(tmp_path / "labelled.parquet", row_group_size=150)
    labels = table["is_fault"].to_numpy() == 1
    whole_scores = VAEDetector.load(parted_model).anomaly_score(table.drop(columns="is_fault"))
    whole = VAEDetector.load(parted_model)
    if method == "f1":
        whole.calibrate_threshold(table.drop(columns="is_fault"), labels, method="f1")
    else:
        whole.threshold_from_normal_scores(whole_scores[~labels])

    def read_whole(*args, **kwargs):
        raise AssertionError("the table was read whole")

    monkeypatch.setattr(tables, "read_csv", read_whole)
    monkeypatch.setattr(pd, "read_parquet", read_whole)
    results = []
    for name, rows in [("labelled.csv", PART_ROWS), ("labelled.parquet", PART_ROWS)]:
        monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", rows)
        result = calibrate_model(
            tmp_path / name,
            str(parted_model),
            method,
            label_column="is_fault",
            project_dir=tmp_path,
            model_dir=tmp_path / f"{name}-{rows}",
            track=False,
        )
        results.append(result)
        assert result.detector.threshold_ == whole.threshold_
        assert result.evaluation is not None
        assert result.evaluation["n_anomalous"] == 40
    first, *others = results

    def same_rows(calibration: dict) -> dict:  # but for the file a quantile's rows came from
        return {k: v for k, v in calibration.items() if k != "calibration_rows_from"}

    for other in others:
        assert same_rows(other.detector.calibration_) == same_rows(first.detector.calibration_)
        assert other.evaluation == first.evaluation
    if method == "quantile":  # the normal rows' scores, kept with the model
        np.testing.assert_array_equal(first.detector.calibration_scores_, whole_scores[~labels])


def _bad_cell(table: pd.DataFrame, row: int) -> pd.DataFrame:
    """``table`` with 'oops' in the load column of data row ``row`` (1-based, as messages
    count rows)."""
    table = table.astype({"load": object})
    table.loc[row - 1, "load"] = "oops"
    return table


def _label(table: pd.DataFrame, row: int, value: object) -> pd.DataFrame:
    """``table`` with ``value`` as the label of data row ``row`` (1-based)."""
    table = table.astype({"is_fault": object})
    table.loc[row - 1, "is_fault"] = value
    return table


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda t: _bad_cell(t, 358), "holds 'oops' (row 358)"),
        (lambda t: _label(t, 258, "maybe"), "label column 'is_fault' must hold 0 (normal) and 1"),
        # Empty values come first, counted over the whole column, as when read whole
        (
            lambda t: _label(_label(_label(t, 58, "maybe"), 258, None), 358, None),
            "label column 'is_fault' has 2 empty values",
        ),
        # The labels' errors before a bad cell, wherever each lies, as when read whole
        (
            lambda t: _label(_bad_cell(t, 58), 358, "maybe"),
            "found 'maybe'. If it holds text",
        ),
        (
            lambda t: t.assign(is_fault=0),
            "labelled.csv needs labelled rows of both classes (normal and anomalous)",
        ),
        (lambda t: t.iloc[:0], "labelled.csv has a header but no data rows"),
        (
            lambda t: t.rename(columns={"is_fault": "is_falt"}),
            "label column 'is_fault' is not in the data (similar names in the data: 'is_falt')",
        ),
    ],
)
def test_an_error_in_a_later_part_is_the_one_reading_the_table_whole_gives(
    parted_model, tmp_path, monkeypatch, spoil, message
):
    """Read a part at a time, a table's errors are those of the table read whole: the
    labels' over the whole column, before a bad cell found by the scoring, which is named
    by its row in the file; and nothing is saved."""
    from anomaly_vae import scoring

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", PART_ROWS)
    spoil(mixed_table(400, seed=1, anomalies=40)).to_csv("labelled.csv", index=False)
    result = _calibrate(str(parted_model), "--no-tracking")
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert latest_model_dir(tmp_path) is None and not Path("mlruns").exists()


def _spy_on_scoring(monkeypatch, caplog=None, said: str = "") -> list[bool]:
    """Each call of VAEDetector.anomaly_score, as whether ``caplog`` held ``said`` then."""
    calls: list[bool] = []
    score = VAEDetector.anomaly_score

    def spied(self, *args, **kwargs):
        calls.append(caplog is not None and said in caplog.text)
        return score(self, *args, **kwargs)

    monkeypatch.setattr(VAEDetector, "anomaly_score", spied)
    return calls


@pytest.mark.parametrize(
    ("spoil", "extra", "suffix"),
    [
        (lambda t: t.assign(is_fault=0), [], ".csv"),
        (lambda t: t.assign(is_fault=0), [], ".parquet"),
        (lambda t: t.assign(is_fault=1), ["--method", "quantile"], ".csv"),
        (lambda t: _label(t, 358, "maybe"), [], ".csv"),
        (lambda t: _label(_label(t, 358, None), 399, None), [], ".csv"),
        (lambda t: t.assign(is_fault="no"), ["--anomaly-label", "yes"], ".csv"),
        (lambda t: t.rename(columns={"is_fault": "is_falt"}), [], ".parquet"),
    ],
    ids=[
        "one-class",
        "one-class-parquet",
        "no-normal-row",
        "bad-label-in-the-last-part",
        "empty-labels",
        "anomaly-label-nowhere",
        "no-label-column-parquet",
    ],
)
def test_the_labels_errors_come_before_any_scoring(
    parted_model, tmp_path, monkeypatch, spoil, extra, suffix
):
    """Read a part at a time, the errors that need the whole label column (one class
    only, none normal for the quantile, a bad or empty label in the last part, the
    anomaly label never found) came once the whole table was scored (docs/usage.md,
    `calibrate`); the label column is now read alone first, and they come before any
    row is scored, in the words of the table read whole (after the file's name)."""
    from anomaly_vae import scoring
    from anomaly_vae.data import label_vector, read_table
    from anomaly_vae.errors import DataError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", PART_ROWS)
    table = spoil(mixed_table(400, seed=1, anomalies=40))
    path = f"labelled{suffix}"
    if suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, row_group_size=150)
    calls = _spy_on_scoring(monkeypatch)
    arguments = ["calibrate", path, "--label-col", "is_fault", "--model", str(parted_model)]
    result = CliRunner().invoke(main, [*arguments, "--no-tracking", *extra])
    assert result.exit_code == 1, result.output
    assert calls == []
    if "--method" in extra:
        expected = f"{path} has no normal rows to take the quantile of"
    else:
        try:  # the table read whole, as calibrate read it before it read in parts
            anomaly = extra[-1] if extra else None
            labels = label_vector(read_table(path), "is_fault", anomaly, "--anomaly-label VALUE")
        except DataError as error:
            expected = f"{path}: {error}"  # named with its file, as fit names it
        else:
            assert not labels.any()
            expected = (
                f"{path} needs labelled rows of both classes (normal and anomalous) for "
                "--method f1; rows of normal operation alone take --method quantile"
            )
    assert result.output.splitlines()[-1] == f"Error: {expected}"
    assert latest_model_dir(tmp_path) is None


def test_a_reading_error_in_another_column_still_comes_before_the_labels_error(
    parted_model, tmp_path, monkeypatch
):
    """The label column read alone cannot see a value of another column that does not
    read (here a number without its decimal comma, past the rows that tell the file's
    number format): as when the table was read whole, that error comes first."""
    from anomaly_vae import scoring
    from anomaly_vae.data import read_table, tables
    from anomaly_vae.errors import DataError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", PART_ROWS)
    monkeypatch.setattr(tables, "SAMPLE_ROWS", 100)
    table = _bad_cell(mixed_table(400, seed=1).astype({"load": str}), 358)
    table["load"] = table["load"].str.replace(".", ",", regex=False)
    table.to_csv("labelled.csv", index=False, sep=";")
    with pytest.raises(DataError) as whole:
        read_table("labelled.csv")
    assert "but for 'oops' (row 358)" in str(whole.value)
    calls = _spy_on_scoring(monkeypatch)
    result = _calibrate(str(parted_model), "--no-tracking")
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == f"Error: {whole.value}"
    assert calls == []


def test_the_training_file_warning_comes_before_the_scoring(tmp_path, monkeypatch, caplog):
    """Its SHA-256 was compared once the whole table was scored; now before any row is."""
    from anomaly_vae import scoring

    monkeypatch.chdir(tmp_path)
    _fit_on_labelled_file("m")
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", PART_ROWS)
    said = "labelled.csv is the file this model was fit on"
    calls = _spy_on_scoring(monkeypatch, caplog, said)
    with caplog.at_level("WARNING"):
        result = _calibrate("m", "--no-tracking")
    assert result.exit_code == 0, result.output
    assert said in caplog.text
    assert calls and all(calls)


def test_a_table_that_grows_between_its_two_reads_is_refused(parted_model, tmp_path, monkeypatch):
    """The labels come from a first read of the label column alone, the scores from a
    second read of every column; rows appended between the two (a file still being
    written) would pair labels with other rows' scores. calibrate stops, saving nothing."""
    from anomaly_vae import recalibration, scoring

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scoring, "PROGRESS_CHUNK_ROWS", PART_ROWS)
    table = mixed_table(400, seed=1, anomalies=40)
    table.to_csv("labelled.csv", index=False)
    read_labels = recalibration._read_labels

    def read_then_append(*args, **kwargs):
        labels = read_labels(*args, **kwargs)
        table.head(10).to_csv("labelled.csv", mode="a", header=False, index=False)
        return labels

    monkeypatch.setattr(recalibration, "_read_labels", read_then_append)
    arguments = ["calibrate", "labelled.csv", "--label-col", "is_fault"]
    result = CliRunner().invoke(main, [*arguments, "--model", str(parted_model), "--no-tracking"])
    assert result.exit_code == 1, result.output
    assert "labelled.csv changed while it was read: 400 labels, then 410 rows" in result.output
    assert latest_model_dir(tmp_path) is None
