"""An MLflow run in a temporary store holds what a reviewer needs, and the logged
pyfunc model scores exactly like the detector it wraps."""

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from anomaly_vae.fitting import fit_table, latest_model_dir
from anomaly_vae.scoring import load_detector
from anomaly_vae.tracking import CHAMPION_ALIAS, tracking_uri, use_tracking
from tests.conftest import TINY, mislabelled_table, mixed_table, tiny_config


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'store' / 'mlflow.db'}")
        (root / "store").mkdir()
        mixed_table(600, seed=0, anomalies=25).to_csv(root / "train.csv", index=False)
        config = tiny_config("data.id_column=reading_id", "data.label_column=is_fault")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_table(root / "train.csv", config, project_dir=root, register=True)
        result.warnings = [str(warning.message) for warning in caught]
        use_tracking(project_dir=root)
        yield root, result


def artifact_paths(client, run_id, path=None):
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def test_run_and_version_say_what_the_model_is(fitted_run):
    # Runs were told apart by name ("fit vae") and versions by number alone.
    _, result = fitted_run
    client = MlflowClient()
    note = client.get_run(result.run.run_id).data.tags["mlflow.note.content"]
    version = client.get_model_version("anomaly-vae", result.run.model_version)
    assert version.description == note
    rows = result.detector.n_training_rows_["train"]
    auroc = 100 * result.evaluation["auroc"]
    assert note == (
        f"vae on train.csv ({rows:,} training rows): flags negative_elbo above "
        f"{result.detector.threshold_:.4g} (quantile of held-out normal scores, target "
        f"false-positive rate 1%); AUROC {auroc:.2f}% on the run's labelled rows"
    )


def test_a_fit_version_carries_its_runs_tags_on_data_and_model(fitted_run):
    # The registry's Models page shows the version's tags, which were empty ({}).
    root, result = fitted_run
    client = MlflowClient()
    version = client.get_model_version("anomaly-vae", result.run.model_version)
    assert version.tags == {
        "kind": "fit",
        "model": "vae",
        "score": "negative_elbo",
        "threshold_method": "quantile",
        "data": str(root / "train.csv"),
        # which bytes: the path alone says nothing once the file is replaced
        "data_sha256": hashlib.sha256((root / "train.csv").read_bytes()).hexdigest(),
    }
    run_tags = client.get_run(result.run.run_id).data.tags
    assert all(run_tags[key] == value for key, value in version.tags.items())


def test_run_has_params_per_epoch_losses_and_calibration(fitted_run):
    _, result = fitted_run
    client = MlflowClient()
    run = client.get_run(result.run.run_id)
    assert run.data.params["model.latent_dim"] == "2"
    assert run.data.params["data.label_column"] == "is_fault"
    # min_log_variance is auto in this config; the value in effect is logged beside it
    assert run.data.params["model.min_log_variance"] == "None"
    assert run.data.params["auto.model.min_log_variance"] == "-6.0"
    assert run.data.params["auto.scoring.score"] == "negative_elbo"
    assert "auto.model.latent_dim" not in run.data.params  # not an auto setting
    epochs = len(result.detector.history_.epochs)
    for key in (
        "train_loss",
        "train_reconstruction",
        "train_kl",
        "val_loss",
        "val_reconstruction",
        "val_kl",
    ):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(1, epochs + 1)), key
        stamps = [m.timestamp for m in history]  # when training ran, not 1970
        assert stamps == sorted(stamps) and stamps[0] > run.info.start_time - 600_000, key
    assert run.data.tags["data"] == str(fitted_run[0] / "train.csv")
    assert run.info.run_name == "fit vae"
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "train.csv" and dataset.tags[0].value == "training"
    metrics = run.data.metrics
    assert metrics["epochs"] == epochs
    assert metrics["best_epoch"] == result.detector.history_.best_epoch
    assert metrics["epoch_limit"] == result.detector.history_.epoch_limit >= epochs
    assert metrics["patience_epochs"] == result.detector.history_.patience > 0
    ended_by = "early stopping" if result.detector.history_.stopped_early else "epoch limit"
    assert run.data.tags["training_ended_by"] == ended_by
    assert metrics["threshold"] == pytest.approx(result.detector.threshold_)
    # The rate to expect on new normal rows, as the calibration record has it: 460 normal
    # rows fit on, 69 of them held out for calibration, none above the threshold (their
    # highest score), so Beta(1, 69).
    calibration = result.detector.calibration_
    assert calibration["n_calibration"] == metrics["rows_calibration"] == 69
    for key in ("expected_fpr_low", "expected_fpr_mean", "expected_fpr_high"):
        assert metrics[key] == pytest.approx(calibration[key])
    assert metrics["expected_fpr_mean"] == pytest.approx(1 / 70)
    assert metrics["expected_fpr_high"] == pytest.approx(1 - 0.05 ** (1 / 69))
    assert 0.9 < metrics["auroc"] <= 1.0 + 1e-9 and 0 < metrics["aucpr"] <= 1.0 + 1e-9
    for name in ("auroc", "aucpr"):  # scikit-learn's AUCPR of a perfect ranking: 1 + 2e-16
        low, high = metrics[f"{name}_interval_low"], metrics[f"{name}_interval_high"]
        assert low - 1e-9 <= metrics[name] <= high + 1e-9 and high <= 1
    assert {
        "confusion_tp",
        "confusion_fp",
        "confusion_fn",
        "confusion_tn",
        "f1_optimal_threshold",
    } <= set(metrics)


@pytest.mark.parametrize("dtype, grey", [(np.uint8, 128), (np.float32, 0.5)])
def test_a_synthetic_image_example_is_one_mid_grey_image(dtype, grey):
    from anomaly_vae.tracking import input_example

    images = np.random.default_rng(0).integers(0, 256, size=(3, 1, 8, 8)).astype(dtype)
    example = input_example(None, images, kind="synthetic")
    assert example.shape == (1, 1, 8, 8) and example.dtype == dtype
    assert (example == grey).all()
    assert input_example(None, images).tolist() == images[:2].tolist()  # the default


def test_a_fit_run_raises_no_mlflow_schema_hints(fitted_run):
    # MLflow's advice about integer columns in inferred schemas does not apply to the
    # logged dataset or to the signature (its inputs are not declared): it is noise.
    _, result = fitted_run
    assert not [message for message in result.warnings if "Inferred schema" in message]


def refuse_token(token: str) -> None:
    raise ValueError(f"{token} is no JSON")


def test_run_has_every_review_artifact(fitted_run):
    root, result = fitted_run
    client = MlflowClient()
    paths = set(artifact_paths(client, result.run.run_id))
    assert {
        "plots/roc_curve.png",
        "plots/pr_curve.png",
        "plots/score_histogram.png",
        "plots/latent_means.png",
        "latents/validation_latent_means.csv",
        "calibration.json",
        "evaluation.json",
        "config.yaml",
        "views/01_generated.png",
        "views/01_generated.csv",
        "views/02_reconstructions.png",
        "views/03_latent_scatter.png",
        "views/04_manifold.png",
        "views/05_traversal.png",
        "views/06_interpolation.png",
    } <= paths
    local = mlflow.artifacts.download_artifacts(
        run_id=result.run.run_id, artifact_path="latents/validation_latent_means.csv"
    )
    latents = pd.read_csv(local)
    assert len(latents) == result.detector.n_training_rows_["validation"]
    assert {"reading_id", "z0", "z1"} <= set(latents.columns)
    # `row` counts the training file's data rows from 1, as `score` does.
    train = pd.read_csv(root / "train.csv")
    assert (train["reading_id"].to_numpy()[latents["row"] - 1] == latents["reading_id"]).all()
    calibration_file = mlflow.artifacts.download_artifacts(
        run_id=result.run.run_id, artifact_path="calibration.json"
    )
    calibration = json.loads(Path(calibration_file).read_text())
    # Strict JSON: scikit-learn's first ROC threshold is +inf, which Python's json wrote
    # as `Infinity`, a token JSON does not have (JavaScript's JSON.parse refuses it).
    evaluation_file = mlflow.artifacts.download_artifacts(
        run_id=result.run.run_id, artifact_path="evaluation.json"
    )
    evaluation = json.loads(Path(evaluation_file).read_text(), parse_constant=refuse_token)
    assert evaluation["curves"]["roc"]["thresholds"][0] is None
    assert evaluation["auroc"] == pytest.approx(result.evaluation["auroc"])
    assert (
        calibration["target_fpr"] == 0.01 and calibration["threshold"] == result.detector.threshold_
    )


def test_loading_a_logged_model_does_not_import_matplotlib(fitted_run):
    # matplotlib takes 0.4 s to import; `score --model models:/...`, a served model and
    # Spark's workers load a logged model and draw nothing. A fresh interpreter: this
    # one has drawn plots for the fit.
    root, result = fitted_run
    script = (
        "import sys\n"
        "import mlflow\n"
        "from anomaly_vae.scoring import load_detector\n"
        f"load_detector({result.run.model_uri!r})\n"
        f"mlflow.pyfunc.load_model({result.run.model_uri!r})\n"
        "print('matplotlib' in sys.modules)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'store' / 'mlflow.db'}"}
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split()[-1] == "False"


def test_pyfunc_model_scores_like_the_detector(fitted_run, caplog):
    _, result = fitted_run
    fresh = mixed_table(120, seed=5, anomalies=10).drop(columns="is_fault")
    expected = result.detector.score_frame(fresh)
    model = mlflow.pyfunc.load_model(result.run.model_uri)
    got = model.predict(fresh)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))
    # Integer-valued input columns and a missing id column still fit the signature.
    no_id = fresh.drop(columns="reading_id").assign(
        temperature=fresh["temperature"].round().astype(int)
    )
    assert len(model.predict(no_id)) == len(fresh)
    # A text column empty in every row, or holding integer codes, scores as with the CLI.
    for machine in (np.nan, 7):
        odd = fresh.assign(machine=machine)
        got = model.predict(odd).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, result.detector.score_frame(odd).reset_index(drop=True))
    assert model.metadata.signature is not None
    # No input schema (see test_the_served_table_model_takes_json_csv_and_parquet); the
    # input example names the columns, the id first.
    assert model.metadata.get_input_schema() is None
    # By default (tracking.input_example: rows) the example is the first 5 normal rows
    # fit on, their ids first, as read from the file.
    example = model.metadata.load_input_example()
    train = pd.read_csv(fitted_run[0] / "train.csv")
    first = train[train["is_fault"] == 0].head(5).drop(columns="is_fault")
    pd.testing.assert_frame_equal(example.reset_index(drop=True), first.reset_index(drop=True))
    # A missing id comes back as JSON null from the scoring server, not a bare NaN.
    import io

    from mlflow.pyfunc.scoring_server import predictions_to_json

    answer = io.StringIO()
    predictions_to_json(model.predict(fresh.assign(reading_id=[None] + ["r"] * 119)), answer)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    rows = json.loads(answer.getvalue(), parse_constant=refuse)["predictions"]
    assert rows[0]["reading_id"] is None and rows[1]["reading_id"] == "r"

    # Warnings about the data are logged, unless the caller says it has logged them (the
    # Spark engine's driver, once per file, where each executor would repeat them).
    unseen = fresh.assign(machine="saw")
    for params, logged in ((None, True), ({"log_warnings": False}, False)):
        with caplog.at_level(logging.WARNING, logger="anomaly_vae"):
            caplog.clear()
            model.predict(unseen, params=params)
        assert ("not seen in training" in caplog.text) is logged, params
    # The parameter explain (the Spark engine's batch --explain): the columns that
    # score --explain writes, after the scores
    explained = model.predict(fresh, params={"explain": 2})
    expected = result.detector.score_frame(fresh).join(result.detector.explain(fresh, 2))
    pd.testing.assert_frame_equal(explained, expected)
    # The model's own message on bad input, as an MLflow error a server answers 400 with.
    from mlflow.exceptions import MlflowException

    broken = fresh.astype({"temperature": object})
    broken.loc[broken.index[1], "temperature"] = "hot"
    with pytest.raises(MlflowException, match=r"temperature.*'hot'") as error:
        model.predict(broken)
    assert error.value.error_code == "INVALID_PARAMETER_VALUE"


def test_the_signature_declares_the_ids_as_the_model_returns_them(fitted_run):
    """Integer ids came back as int64 (and as JSON numbers from the scoring server) from a
    model whose signature declared the id column ``string`` (its input example reads ids
    as text): the id is passed through as given, so the signature says ``Any``, optional
    (a request without ids gets none back), and every other column as predict returns it."""
    from mlflow.pyfunc.scoring_server import invocations
    from mlflow.types.schema import AnyType

    _, result = fitted_run
    model = mlflow.pyfunc.load_model(result.run.model_uri)
    outputs = model.metadata.get_output_schema()
    (id_spec,) = [spec for spec in outputs.inputs if spec.name == "reading_id"]
    assert isinstance(id_spec.type, AnyType) and not id_spec.required
    fresh = mixed_table(6, seed=8).drop(columns="is_fault")
    for ids in (np.arange(100, 106), fresh["reading_id"], None):
        request = fresh.drop(columns="reading_id") if ids is None else fresh.assign(reading_id=ids)
        scores = model.predict(request)
        for spec in outputs.inputs:
            if spec.name not in scores.columns:
                assert not spec.required, spec.name
            elif not isinstance(spec.type, AnyType):
                assert scores[spec.name].dtype == spec.type.to_pandas(), spec.name
        if ids is not None:
            assert scores["reading_id"].tolist() == list(ids)  # as given, numbers or text
            # The scoring server answers JSON with the ids as they were posted.
            split = json.loads(request.to_json(orient="split", index=False))
            answer = invocations(
                json.dumps({"dataframe_split": split}), "application/json", model, None
            )
            served = [row["reading_id"] for row in json.loads(answer.response)["predictions"]]
            assert served == [row[0] for row in split["data"]] == scores["reading_id"].tolist()


def test_the_served_table_model_takes_json_csv_and_parquet(fitted_run):
    """`mlflow models serve` answers JSON, CSV and Parquet requests alike, with the
    scores of the detector; bad input is the model's own 400 error. (CSV was refused
    while the signature declared the input columns Any: MLflow reads a CSV request by
    the signature's column types.)"""
    import io

    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import invocations

    _, result = fitted_run
    model = mlflow.pyfunc.load_model(result.run.model_uri)
    fresh = mixed_table(20, seed=7, anomalies=2).drop(columns="is_fault")
    fresh.loc[fresh.index[3], "vibration"] = np.nan
    expected = result.detector.score_frame(fresh)["score"].to_numpy()
    split = json.loads(fresh.to_json(orient="split", index=False))
    records = json.loads(fresh.to_json(orient="records"))
    parquet = io.BytesIO()
    fresh.to_parquet(parquet)

    def served(body, content_type):
        answer = invocations(body, content_type, model, model.metadata.get_input_schema())
        assert answer.status == 200, answer.response
        return pd.DataFrame(json.loads(answer.response)["predictions"])

    for body, content_type in (
        (json.dumps({"dataframe_split": split}), "application/json"),
        (json.dumps({"dataframe_records": records}), "application/json"),
        (fresh.to_csv(index=False), "text/csv"),
        (fresh.to_csv(index=False).encode(), "text/csv; charset=utf-8"),
        (parquet.getvalue(), "application/vnd.apache.parquet"),
    ):
        scores = served(body, content_type)
        assert scores["reading_id"].tolist() == fresh["reading_id"].tolist(), content_type
        np.testing.assert_allclose(scores["score"], expected, rtol=1e-6, err_msg=content_type)
    # Integer-valued numbers and integer category codes, as pandas reads them from CSV.
    odd = fresh.assign(temperature=fresh["temperature"].round().astype(int), machine=7)
    scores = served(odd.to_csv(index=False), "text/csv")
    np.testing.assert_allclose(
        scores["score"], result.detector.score_frame(odd)["score"], rtol=1e-6
    )
    broken = fresh.astype({"temperature": object})
    broken.loc[broken.index[1], "temperature"] = "hot"
    with pytest.raises(MlflowException, match=r"temperature.*'hot'") as error:
        invocations(
            broken.to_csv(index=False), "text/csv", model, model.metadata.get_input_schema()
        )
    assert error.value.error_code == "INVALID_PARAMETER_VALUE"


def test_model_is_registered_and_champion_alias_moves(fitted_run):
    root, result = fitted_run
    client = MlflowClient()
    version = client.get_model_version_by_alias("anomaly-vae", CHAMPION_ALIAS)
    assert str(version.version) == result.run.model_version == "1"
    champion = load_detector("models:/anomaly-vae@champion", project_dir=root)
    fresh = mixed_table(50, seed=6)
    np.testing.assert_array_equal(
        champion.anomaly_score(fresh), result.detector.anomaly_score(fresh)
    )
    from anomaly_vae.batch import model_identity
    from anomaly_vae.errors import ModelNotFoundError

    # batch's ledger pins the version that "latest" and an alias name today
    assert model_identity("models:/anomaly-vae/latest") == "anomaly-vae/1"
    assert model_identity("models:/anomaly-vae@champion") == "anomaly-vae/1"

    with pytest.raises(ModelNotFoundError, match=r"--register. sets the champion alias"):
        load_detector("models:/anomaly-vae@nosuch", project_dir=root)
    # The local "latest" model is the same detector.
    np.testing.assert_array_equal(
        load_detector(None, project_dir=root).anomaly_score(fresh),
        result.detector.anomaly_score(fresh),
    )


def test_a_run_logs_the_register_flag_it_was_given(fitted_run):
    # fit_table(register=True) with tracking.register_champion false in the config (as
    # `fit --register` without the setting): the alias moved, and the run says so.
    _, result = fitted_run
    client = MlflowClient()
    params = client.get_run(result.run.run_id).data.params
    logged = yaml.safe_load(
        Path(client.download_artifacts(result.run.run_id, "config.yaml")).read_text()
    )
    assert result.run.champion
    assert params["tracking.register_champion"] == "True"
    assert logged["tracking"]["register_champion"] is True


def test_fit_register_keeps_the_champion_on_its_version_when_the_threshold_asks_for_a_check(
    tracking_store,
):
    # fit --register moved the alias whatever the threshold, as calibrate --register did
    # before: an F1 threshold chosen on mislabelled rows, flagging most normal rows, went
    # live at once for scheduled scoring (batch --model models:/anomaly-vae@champion).
    from click.testing import CliRunner

    from anomaly_vae.cli import main

    client = MlflowClient(tracking_store)
    # The champion in service: any version will do (fitting one costs a tracked fit)
    client.create_registered_model("anomaly-vae")
    client.create_model_version("anomaly-vae", source=Path.cwd().as_uri())
    client.set_registered_model_alias("anomaly-vae", CHAMPION_ALIAS, "1")
    mislabelled_table(400, seed=1).to_csv("mislabelled.csv", index=False)
    arguments = ["fit", "mislabelled.csv", "--label-col", "is_fault", "--id-col", "reading_id"]
    arguments += ["--quiet", "--register"]
    settings = [*TINY, "training.epochs=5", "tracking.log_views=false", "calibration.method=f1"]
    result = CliRunner().invoke(main, [*arguments, *(a for s in settings for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    assert "Check before you use it: it flags more than 5 times the 1% of normal rows" in (
        result.output
    )
    assert "Registered model models:/anomaly-vae/2\n" in result.output  # not moved
    said = "Alias 'champion' left on version 1, as the threshold asks for a check; to move "
    said += "it to version 2 once checked: "
    (line,) = [line for line in result.output.splitlines() if line.startswith(said)]
    assert line.endswith("""set_registered_model_alias("anomaly-vae", "champion", "2")'""")
    assert client.get_registered_model("anomaly-vae").aliases == {CHAMPION_ALIAS: 1}
    version = client.get_model_version("anomaly-vae", "2")
    assert re.fullmatch(
        r"it flags \d+\.\d\d% of the fit's \d+ held-out normal rows, more than 5 times the "
        "1% the model was fit to flag; --register did not move the champion alias to it",
        version.tags["needs_check"],
    )
    run = client.get_run(version.run_id)
    assert run.data.tags["needs_check"] == version.tags["needs_check"]
    assert run.data.params["tracking.register_champion"] == "False"  # as the run did


def test_a_run_logs_only_the_model_settings_its_variant_reads(fitted_run, tmp_path, monkeypatch):
    _, result = fitted_run
    vae_params = MlflowClient().get_run(result.run.run_id).data.params
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mixed_table(300, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config(
        "model.name=vq-vae",
        "data.id_column=reading_id",
        "training.epochs=2",
        "tracking.log_views=false",
    )
    vq = fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)
    vq_params = MlflowClient().get_run(vq.run.run_id).data.params
    logged = yaml.safe_load(
        Path(mlflow.artifacts.download_artifacts(vq.run.artifact_uri + "/config.yaml")).read_text()
    )
    assert "model.codebook_size" not in vae_params and "model.top_latent_dim" not in vae_params
    assert "model.conv_channels" not in vae_params and "model.capacity" not in vae_params
    assert vae_params["model.hidden_dims"] == "[32]" and vae_params["model.beta"] == "1.0"
    assert vq_params["model.codebook_size"] == "64" and "model.beta" not in vq_params
    assert vq_params["training.epochs"] == "2"  # every other section as it was
    assert logged["model"]["beta"] == 1.0  # the artifact keeps every setting


def test_default_store_is_sqlite_inside_mlruns(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking_uri(tmp_path)
    assert uri == f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5999"


def test_pyfunc_model_carries_the_latent_scores_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mixed_table(300, seed=0, anomalies=10).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config(
        "data.id_column=reading_id",
        "data.label_column=is_fault",
        "training.epochs=5",
        "scoring.score=elbo_latent_knn",
    )
    result = fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)
    fresh = mixed_table(50, seed=5, anomalies=5).drop(columns="is_fault")
    got = mlflow.pyfunc.load_model(result.run.model_uri).predict(fresh)
    expected = result.detector.score_frame(fresh)
    assert "elbo_latent_knn" in got
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))


def test_an_unreachable_store_fails_before_training_and_a_failed_log_names_the_model(
    tmp_path, monkeypatch
):
    import socket
    import time

    from click.testing import CliRunner
    from mlflow.exceptions import MlflowException

    from anomaly_vae import tracking
    from anomaly_vae.cli import main
    from tests.conftest import TINY

    monkeypatch.chdir(tmp_path)
    mixed_table(300, seed=0).drop(columns="reading_id").to_csv("train.csv", index=False)
    with socket.socket() as probe:  # a free port: nothing answers there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    options = [arg for item in TINY for arg in ("--set", item)]
    start = time.perf_counter()
    refused = CliRunner().invoke(main, ["fit", "train.csv", "--quiet", *options])
    assert time.perf_counter() - start < 30  # not MLflow's minutes of retries
    assert refused.exit_code == 1
    assert f"cannot use the MLflow tracking store http://127.0.0.1:{port}" in refused.output
    assert "--no-tracking" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "mlruns" / "models").exists()  # nothing was trained

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    def server_gone(*args, **kwargs):
        raise MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed")

    monkeypatch.setattr(tracking, "log_fit_run", server_gone)
    failed = CliRunner().invoke(main, ["fit", "train.csv", "--quiet", *options])
    assert failed.exit_code == 1, failed.output
    saved = latest_model_dir(tmp_path)
    assert f"the model is saved in {saved}" in failed.output
    assert "runs/create failed" in failed.output
    assert (saved / "detector.json").is_file()


def test_a_version_registered_without_a_run_has_no_source_run(tracking_store, tmp_path):
    from anomaly_vae.errors import ModelNotFoundError
    from anomaly_vae.tracking import source_of_model

    use_tracking(project_dir=tmp_path)  # the store of MLFLOW_TRACKING_URI, not an earlier test's
    client = MlflowClient()
    client.create_registered_model("bare")
    client.create_model_version("bare", source=str(tmp_path / "somewhere"))
    with pytest.raises(ModelNotFoundError, match="registered without an MLflow run"):
        source_of_model("models:/bare/1", tmp_path)


def test_a_model_logged_when_windows_1252_files_read_as_latin_1_takes_its_signature_names(
    tmp_path, monkeypatch
):
    """A model logged before CSV files that are not UTF-8 were read as Windows-1252 has
    a signature naming "Preis €" "Preis \\x80"; it loads the column as "Preis €" now, and
    refused the very inputs its signature asks for ("missing column 'Preis €'")."""
    from anomaly_vae.spark_engine import signature_names

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"Preis €": rng.normal(size=200), "x": rng.normal(size=200)})
    frame.to_csv(tmp_path / "t.csv", index=False, encoding="cp1252")
    result = fit_table(tmp_path / "t.csv", tiny_config(), project_dir=tmp_path)
    use_tracking(project_dir=tmp_path)
    local = Path(
        mlflow.artifacts.download_artifacts(result.run.model_uri, dst_path=str(tmp_path / "m"))
    )

    def as_latin_1(text):
        return text.encode("cp1252").decode("latin-1")

    # The same model as logged when the file read as Latin-1.
    [saved] = local.rglob("detector.json")
    document = json.loads(saved.read_text())
    del document["schema"]["non_utf8_csv"]
    for column in document["schema"]["columns"]:
        column["name"] = as_latin_1(column["name"])
    document["feature_names_in"] = [as_latin_1(name) for name in document["feature_names_in"]]
    saved.write_text(json.dumps(document))
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    # Its signature then declared each input column, of type Any.
    inputs = [{"type": "any", "name": as_latin_1(name), "required": True} for name in frame]
    mlmodel["signature"]["inputs"] = json.dumps(inputs)
    (local / "MLmodel").write_text(yaml.safe_dump(mlmodel))

    model = mlflow.pyfunc.load_model(str(local))
    assert model.metadata.get_input_schema().input_names() == ["Preis \x80", "x"]
    sent = frame.rename(columns={"Preis €": "Preis \x80"})
    expected = result.detector.score_frame(frame).reset_index(drop=True)
    pd.testing.assert_frame_equal(model.predict(sent).reset_index(drop=True), expected)
    # The Spark engine sends its columns, read as now, by the signature's names.
    old = load_detector(str(saved.parent))
    assert signature_names(model.metadata.signature, old) == {"Preis €": "Preis \x80"}
    logged = mlflow.models.get_model_info(result.run.model_uri).signature
    assert signature_names(logged, result.detector) == {}


def test_a_recalibrated_ensemble_is_described_as_the_ensemble(normal_rows):
    # A calibrate run has no "model" tag, and an ensemble's effective_config is its first
    # member's: a family ensemble recalibrated was registered as "vae recalibrated on ...".
    from types import SimpleNamespace

    from anomaly_vae.detector import VAEDetector
    from anomaly_vae.ensemble import EnsembleDetector
    from anomaly_vae.tracking import model_description

    members = {
        name: VAEDetector(
            tiny_config(f"model.name={name}", "training.epochs=3").detector_config()
        ).fit(normal_rows)
        for name in ("vae", "beta-vae")
    }
    ensemble = EnsembleDetector.from_members(members, normal_rows)
    tags = {"kind": "calibrate", "data": "/somewhere/new.csv"}
    run = SimpleNamespace(data=SimpleNamespace(tags=tags, metrics={}))
    assert model_description(ensemble, run).startswith(
        "ensemble recalibrated on new.csv: flags ensemble_rank above "
    )
    assert model_description(members["vae"], run).startswith(
        "vae recalibrated on new.csv: flags negative_elbo above "
    )


def test_a_large_table_is_logged_as_a_labelled_sample_with_the_whole_schema(
    tracking_store, tmp_path, monkeypatch
):
    """MLflow infers a dataset's schema and digest with a Python pass over every cell
    (a cost that grows with the table); above DATASET_ROWS a sample is logged, named so,
    whose schema is the whole table's: a column missing a value only outside the random
    rows is still optional."""
    from anomaly_vae import tracking
    from anomaly_vae.fitting import TrainingData

    monkeypatch.setattr(tracking, "DATASET_ROWS", 40, raising=False)
    frame = mixed_table(300, seed=0)
    frame["humidity"] = np.arange(300.0)
    frame.loc[287, "humidity"] = np.nan  # the only missing value of the column
    frame.to_csv(tmp_path / "train.csv", index=False)
    use_tracking("sampled")
    with mlflow.start_run() as run:
        tracking.log_sources(TrainingData(frame, sources={"data": str(tmp_path / "train.csv")}))
    (logged,) = MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    dataset = logged.dataset
    rows = json.loads(dataset.profile)["num_rows"]
    assert 40 <= rows < 300
    assert dataset.name == f"train.csv (sample of {rows} of 300 normal rows)"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Hint: Inferred schema", UserWarning)
        whole = mlflow.data.from_pandas(frame)
        assert json.loads(dataset.schema)["mlflow_colspec"] == whole.schema.to_dict()
    assert {"name": "humidity", "type": "double", "required": False} in whole.schema.to_dict()


def test_the_dataset_counts_the_normal_rows_and_the_description_the_training_rows(
    tracking_store, tmp_path, monkeypatch
):
    """One fit called two counts "training rows": the description the training split
    ('174 training rows'), the dataset input's name every normal row given to fit,
    validation and calibration rows too ('sample of 10,000 of 15,839 training rows' for
    11,879 training rows). The dataset's count is now of normal rows, as the summary's
    'Trained ... on 15,839 normal rows (train 11,879 / ...)' says."""
    from anomaly_vae import tracking

    monkeypatch.setattr(tracking, "DATASET_ROWS", 40, raising=False)
    mixed_table(300, seed=0, anomalies=25).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config("data.id_column=reading_id", "data.label_column=is_fault")
    config.tracking.log_views = False
    result = fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)
    rows = result.rows
    normal = rows["train"] + rows["validation"] + rows["calibration"]
    assert len(result.data.train) == normal != rows["train"]
    run = MlflowClient().get_run(result.run.run_id)
    (logged,) = run.inputs.dataset_inputs
    sampled = json.loads(logged.dataset.profile)["num_rows"]
    assert logged.dataset.name == f"train.csv (sample of {sampled} of {normal} normal rows)"
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith(f"vae on train.csv ({rows['train']} training rows): ")


def test_a_large_tracked_fit_says_when_it_logs_the_run(
    tracking_store, tmp_path, monkeypatch, capsys
):
    """After the threshold, a tracked fit of 1,000,000 rows logged to MLflow for seconds
    in silence; from PHASE_LINE_ROWS rows (here 0) a line says so first."""
    from anomaly_vae import training

    monkeypatch.setattr(training, "PHASE_LINE_ROWS", 0, raising=False)
    mixed_table(300, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config("data.id_column=reading_id")
    config.training.progress = True
    result = fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.endswith(" ...")]
    assert result.run is not None and lines[-1] == "logging the run to MLflow ..."


def test_a_tracked_fit_names_the_store_it_creates(tracking_store, tmp_path, capsys):
    """A fit's first use of a store spent 4 to 5 s in MLflow's schema migrations before
    its progress bar, on any data; a line names that step (the calibrate side, an existing
    store and --quiet: test_recalibration)."""
    mixed_table(300, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config("data.id_column=reading_id")
    config.training.progress = True
    fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.endswith(" ...")]
    store = tracking_store.removeprefix("sqlite:///")
    assert lines == [f"creating the MLflow tracking store {store} (first use) ..."]


def test_a_model_saved_over_a_tracked_one_is_not_taken_for_its_run(tracking_store, tmp_path):
    """A fit with --no-tracking into the folder of a tracked fit kept that fit's
    mlflow_run_id, so `view --log` logged the new model's views to the old model's run
    (and calibrate named it as the source); a save now removes the note."""
    from click.testing import CliRunner

    from anomaly_vae.cli import main
    from tests.conftest import tiny_fit

    mixed_table(300, seed=0).to_csv(tmp_path / "train.csv", index=False)
    tracked = tiny_fit("train.csv", "--id-col", "reading_id", "--model-dir", "model")
    assert tracked.exit_code == 0, tracked.output
    assert (tmp_path / "model" / "mlflow_run_id").is_file()
    untracked = tiny_fit(
        "train.csv", "--id-col", "reading_id", "--model-dir", "model", "--no-tracking"
    )
    assert untracked.exit_code == 0, untracked.output
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["detector.json", "weights.pt"]
    result = CliRunner().invoke(main, ["view", "generate", "--model", "model", "--log"])
    assert result.exit_code == 1
    assert "no MLflow run is recorded for model model" in result.output


@pytest.mark.parametrize("family", [False, True])
def test_a_tracked_fit_scores_its_evaluation_rows_once(
    tracking_store, tmp_path, monkeypatch, family
):
    """The run's score histogram scored the labelled anomalies again after the evaluation
    had scored them (49,951 rows twice in a fit on 500,000 labelled rows; in a family, in
    every candidate's run and the parent's). It draws the evaluation's scores now."""
    from anomaly_vae import plots
    from anomaly_vae.detector import VAEDetector
    from anomaly_vae.family import fit_family

    mixed_table(300, seed=0, anomalies=20).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config(
        "data.id_column=reading_id",
        "data.label_column=is_fault",
        "training.epochs=3",
        "tracking.log_views=false",
        "family.variants=[vae,beta-vae]",
    )
    scored, histograms = [], []
    score, histogram = VAEDetector.anomaly_score, plots.score_histogram

    def counted(self, X, *args, **kwargs):
        scored.append(len(X))
        return score(self, X, *args, **kwargs)

    def kept(normal, threshold, name, anomalous=None, *args, **kwargs):
        histograms.append(anomalous)
        return histogram(normal, threshold, name, anomalous, *args, **kwargs)

    monkeypatch.setattr(VAEDetector, "anomaly_score", counted)
    monkeypatch.setattr(plots, "score_histogram", kept)
    fit = fit_family if family else fit_table
    result = fit(tmp_path / "train.csv", config, project_dir=tmp_path)
    evaluation_rows = result.rows["evaluation"]
    # Every member scores the evaluation rows once (an ensemble's members again, for it).
    members = 2 * 2 if family else 1
    assert scored.count(evaluation_rows) == members
    assert 20 not in scored  # the anomalies alone, for the histogram
    labels = result.data.evaluation_labels
    assert labels.sum() == 20
    np.testing.assert_array_equal(histograms[-1], result.evaluation_scores[labels])
    assert len(histograms) == (4 if family else 1)  # the family: 3 candidates and the parent


def test_views_logged_at_fit_name_rows_by_their_file_and_row(tracking_store, tmp_path):
    # Without an id column the reconstructions named a row by its place among the
    # evaluation rows drawn: 'row 141' (score 117) was the 141st of them, while row 141
    # of the file was a normal row scoring 3.7. Rows now name their file and row there,
    # the training file's and the --eval file's alike.
    train = mixed_table(400, seed=0, anomalies=20).drop(columns="reading_id")
    extra = mixed_table(60, seed=3, anomalies=10).drop(columns="reading_id")
    train.to_csv(tmp_path / "train.csv", index=False)
    extra.to_csv(tmp_path / "extra.csv", index=False)
    config = tiny_config("data.label_column=is_fault", "training.epochs=20")
    config.tracking.view_rows = 50  # a sample of the 156 evaluation rows
    result = fit_table(
        tmp_path / "train.csv", config, eval_source=tmp_path / "extra.csv", project_dir=tmp_path
    )
    local = mlflow.artifacts.download_artifacts(
        run_id=result.run.run_id, artifact_path="views/02_reconstructions.csv"
    )
    shown = pd.read_csv(local)
    assert list(shown.columns[:3]) == ["file", "row", "score"]
    assert set(shown["file"]) == {"train.csv", "extra.csv"}
    files = {"train.csv": train, "extra.csv": extra}
    for file, row, score in shown[["file", "row", "score"]].itertuples(index=False):
        expected = result.detector.anomaly_score(files[file].iloc[[row - 1]])[0]
        assert score == pytest.approx(expected, rel=1e-4), (file, row)


def test_validation_latents_count_rows_of_a_parquet_file_that_stores_an_index(
    tracking_store, tmp_path
):
    # The CSV's `row` was the frame's index + 1: a Parquet file written with a pandas
    # index (here 1000, 1010, ...) read back with it, so reading r0-250, row 251 of the
    # file, was called row 3501.
    table = mixed_table(300, seed=0, anomalies=15)
    table.index = table.index * 10 + 1000
    table.to_parquet(tmp_path / "plant.parquet", index=True)
    config = tiny_config(
        "data.id_column=reading_id", "data.label_column=is_fault", "training.epochs=5"
    )
    config.tracking.log_views = False
    result = fit_table(tmp_path / "plant.parquet", config, project_dir=tmp_path)
    local = mlflow.artifacts.download_artifacts(
        run_id=result.run.run_id, artifact_path="latents/validation_latent_means.csv"
    )
    latents = pd.read_csv(local)
    assert (latents["reading_id"] == [f"r0-{row - 1}" for row in latents["row"]]).all()


def test_a_synthetic_input_example_logs_no_row_of_the_data(tracking_store, tmp_path):
    """tracking.input_example=synthetic: the logged model's example, and the serving example
    MLflow makes of it, are one row of medians and most common values, without ids."""
    table = mixed_table(300, seed=0).drop(columns="is_fault")
    table.to_csv("train.csv", index=False)
    config = tiny_config(
        "data.id_column=reading_id",
        "tracking.input_example=synthetic",
        "tracking.log_views=false",
        "training.epochs=5",
    )
    result = fit_table(tmp_path / "train.csv", config, project_dir=tmp_path)
    model = mlflow.pyfunc.load_model(result.run.model_uri)
    example = model.metadata.load_input_example()
    # The schema is fit on every normal row (training, validation and calibration).
    assert example.to_dict("records") == [
        {
            "machine": table["machine"].mode()[0],
            "temperature": pytest.approx(table["temperature"].median()),
            "load": pytest.approx(table["load"].median()),
            "vibration": pytest.approx(table["vibration"].median()),
        }
    ]
    folder = Path(mlflow.artifacts.download_artifacts(result.run.model_uri))
    served = (folder / "serving_input_example.json").read_text()
    assert "reading_id" not in served and "r0-" not in served  # no id, nor any id's value
    rows = table[["machine", "temperature", "load", "vibration"]].astype(str)
    assert not (rows == example.astype(str).iloc[0]).all(axis=1).any()  # no row of the data
    scored = model.predict(example)
    assert len(scored) == 1 and not scored["is_anomaly"].iloc[0]  # a typical row
