"""The classic VAE views: every kind for tables and images, the CLI, logging to a run."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from anomaly_vae import VAEDetector, views
from anomaly_vae.errors import DataError
from tests.conftest import mixed_table, tiny_config
from tests.test_images import IMAGE_MODEL, bars


@pytest.fixture(scope="module")
def table_detector():
    config = tiny_config("data.id_column=reading_id", "data.label_column=is_fault")
    return VAEDetector(config.detector_config()).fit(mixed_table(600, seed=0))


@pytest.fixture(scope="module")
def image_detector():
    config = tiny_config("model.name=conv-vae", *IMAGE_MODEL)
    return VAEDetector(config.detector_config()).fit(bars(300, seed=0))


def test_every_table_view_is_written_with_tables_in_original_units(table_detector, tmp_path):
    test = mixed_table(200, seed=1, anomalies=20)
    made = views.standard_views(table_detector, test, test["is_fault"].to_numpy() == 1)
    names = [v.name for v in made]
    assert names == sorted(names) and len(names) == 6
    paths = [p for v in made for p in views.save_view(v, tmp_path)]
    assert all(p.stat().st_size > 1000 for p in paths if p.suffix == ".png")
    generated = pd.read_csv(tmp_path / "01_generated.csv")
    assert list(generated.columns) == ["machine", "temperature", "load", "vibration"]
    assert set(generated["machine"]) <= {"press", "lathe", "drill"}
    assert 40 < generated["temperature"].median() < 80  # original units (training mean 60)


def test_reconstruction_view_names_the_broken_columns(table_detector):
    test = mixed_table(200, seed=1, anomalies=20)
    view = views.reconstructions(table_detector, test, count=10)
    table = view.table
    assert table["score"].is_monotonic_decreasing
    assert set(test["is_fault"].iloc[table["row"]]) == {1}  # the worst rows are the faults
    surprise = table.filter(like="surprise:").mean()
    # Faults break the load-temperature relation: those two columns carry the surprise.
    assert set(surprise.nlargest(2).index) == {"surprise:load", "surprise:temperature"}
    assert "reconstructed:load" in table.columns


def test_image_views_and_discrete_latents(image_detector, tmp_path):
    test = np.concatenate([bars(30, seed=1), bars(5, seed=2, vertical=True)])
    for view in views.standard_views(image_detector, test):
        (path,) = views.save_view(view, tmp_path)
        assert path.stat().st_size > 1000
    vq = VAEDetector(tiny_config("model.name=vq-vae", "training.epochs=2").detector_config())
    vq.fit(mixed_table(100, seed=0).drop(columns=["reading_id", "is_fault"]))
    with pytest.raises(DataError, match="discrete latent: no manifold"):
        views.manifold(vq)


def test_view_cli_writes_and_logs_to_the_models_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from anomaly_vae.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mixed_table(400, seed=0, anomalies=20).to_csv("train.csv", index=False)
    options = [f"--set={item}" for item in ("model.hidden_dims=[32]", "training.epochs=20")]
    fit = CliRunner().invoke(
        main,
        [
            "fit",
            "train.csv",
            "--label-col",
            "is_fault",
            "--id-col",
            "reading_id",
            "--set=tracking.log_views=false",
            "--quiet",
            *options,
        ],
    )
    assert fit.exit_code == 0, fit.output
    # A file of another model already in the folder must not reach this model's run.
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "01_generated.png").write_bytes(b"another model's view")
    result = CliRunner().invoke(main, ["view", "reconstruct", "train.csv", "--out", "v", "--log"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "v" / "02_reconstructions.png").is_file()
    run_id, folder = result.output.strip().split()[-3].rstrip(","), result.output.split()[-1]
    assert folder.startswith("views/added-")
    client = MlflowClient()
    assert [a.path for a in client.list_artifacts(run_id, "views")] == [folder.rstrip("/")]
    logged = {a.path for a in client.list_artifacts(run_id, folder.rstrip("/"))}
    added = {f"{folder}02_reconstructions.png", f"{folder}02_reconstructions.csv"}
    assert logged == added
    missing = CliRunner().invoke(main, ["view", "latents"])
    assert missing.exit_code == 2 and "needs DATA" in missing.output


def test_cvae_generates_for_a_chosen_condition():
    train = mixed_table(600, seed=0)
    config = tiny_config(
        "model.name=cvae",
        "data.id_column=reading_id",
        "data.label_column=is_fault",
        "data.condition_columns=[machine]",
    )
    detector = VAEDetector(config.detector_config()).fit(train)
    loads = {}
    for machine in ("drill", "lathe"):
        rows = views.generation(detector, 200, detector.condition_vector({"machine": machine}))
        loads[machine] = rows.table["load"].mean()
        assert set(rows.table["machine"]) == {machine}  # the condition is written back
    # Normal loads sit 10 units apart between drills and lathes (offsets -5 and +5).
    assert loads["lathe"] - loads["drill"] > 5
    with pytest.raises(DataError, match="generates for a condition"):
        views.generation(detector)
