"""The family pipeline: every suitable variant on the same splits, compared, the
ensemble offered, the best kept and tracked as a parent run with child runs."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from anomaly_vae.ensemble import EnsembleDetector, load_saved, reference_percentile
from anomaly_vae.errors import ConfigError, DataError
from anomaly_vae.family import fit_family, format_comparison, suitable_variants
from anomaly_vae.models import available_models, get_model
from tests.conftest import (
    TINY,
    correlated_normal,
    mislabelled_table,
    mixed_table,
    run_pipeline_script,
    tiny_config,
)


def test_suitable_variants_follow_what_models_declare():
    config = tiny_config()
    tables = suitable_variants(config, "table")
    images = suitable_variants(config, "image")
    assert "conv-vae" not in tables and "conv-vae" in images
    assert "cvae" not in tables  # no condition columns configured
    assert "cvae" in suitable_variants(tiny_config("data.condition_columns=[machine]"), "table")
    for name in available_models():
        cls = get_model(name)
        if "table" in cls.data_kinds and not cls.uses_condition:
            assert name in tables


@pytest.fixture(scope="module")
def family_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("family")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mixed_table(600, seed=0, anomalies=30).to_csv(root / "train.csv", index=False)
        mixed_table(100, seed=3, anomalies=10).to_csv(root / "eval.csv", index=False)
        config = tiny_config(
            "data.id_column=reading_id",
            "data.label_column=is_fault",
            "data.condition_columns=[machine]",
        )
        yield (
            root,
            fit_family(
                root / "train.csv",
                config,
                eval_source=root / "eval.csv",
                project_dir=root,
                register=True,
            ),
        )


def test_family_compares_every_variant_and_the_ensemble(family_run):
    _, result = family_run
    table = result.comparison
    expected = suitable_variants(tiny_config("data.condition_columns=[machine]"), "table")
    assert table["variant"].tolist() == [*expected, "ensemble"]
    assert table["chosen"].sum() == 1
    assert table.loc[table["chosen"], "variant"].item() == result.chosen
    assert result.select_by == "auroc"  # labels were given
    assert table.loc[table["chosen"], "auroc"].item() == table["auroc"].max()
    # Label-free criterion: finite for p(x) models, absent for p(x | c) and the ensemble.
    criterion = table.set_index("variant")["validation_neg_elbo_nats"]
    assert np.isfinite(criterion["vae"]) and np.isnan(criterion["cvae"])
    assert np.isnan(criterion["ensemble"])
    assert (table["auroc"] > 90).all()
    assert "chosen: " in format_comparison(result)


def test_family_is_tracked_as_parent_with_children(family_run):
    import mlflow
    from mlflow.tracking import MlflowClient

    _, result = family_run
    client = MlflowClient()
    parent = client.get_run(result.run.run_id)
    assert parent.data.tags["chosen_variant"] == result.chosen == parent.data.tags["model"]
    assert parent.data.tags["score"] == result.detector.calibration_["score"]
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(children["tags.mlflow.runName"]) == sorted(result.comparison["variant"])
    # Each child carries the label-free criterion the table compares (where it has one).
    logged = children.set_index("tags.mlflow.runName")["metrics.validation_neg_elbo_nats"]
    expected = result.comparison.set_index("variant")["validation_neg_elbo_nats"]
    pd.testing.assert_series_equal(logged.sort_index(), expected.sort_index(), check_names=False)
    # Each child logs the model settings its variant reads (an ensemble its members'); the
    # parent those any candidate reads.
    codebook = children.set_index("tags.mlflow.runName")["params.model.codebook_size"]
    assert codebook["vq-vae"] == codebook["ensemble"] == "64" and pd.isna(codebook["vae"])
    assert parent.data.params["model.codebook_size"] == "64"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.csv", "comparison.md", "plots", "config.yaml"} <= artifacts
    # What every fit run records of its data, on the run that holds the registered model.
    root, _ = family_run
    assert parent.data.tags["data"] == str(root / "train.csv")
    assert parent.data.tags["eval_data"] == str(root / "eval.csv")
    (dataset,) = parent.inputs.dataset_inputs
    assert dataset.dataset.name == "train.csv" and dataset.tags[0].value == "training"
    config = yaml.safe_load(
        Path(client.download_artifacts(parent.info.run_id, "config.yaml")).read_text()
    )
    assert config["model"]["name"] == result.chosen
    assert config["data"]["condition_columns"] == ["machine"]
    # register=True over the config's false: the parameter and config.yaml say it moved.
    assert parent.data.params["tracking.register_champion"] == "True"
    assert config["tracking"]["register_champion"] is True
    version = client.get_model_version_by_alias("anomaly-vae", "champion")
    assert str(version.version) == result.run.model_version


def test_chosen_model_loads_and_scores_the_same(family_run):
    import mlflow

    _, result = family_run
    fresh = mixed_table(100, seed=7, anomalies=10)
    expected = result.detector.anomaly_score(fresh)
    loaded = load_saved(result.model_dir)
    np.testing.assert_allclose(loaded.anomaly_score(fresh), expected)
    # Saved with the training file's identity, for calibrate's check (ensembles: per member).
    root, _ = family_run
    fitted_on = getattr(loaded, "first", loaded).training_source_
    train = root / "train.csv"
    digest = hashlib.sha256(train.read_bytes()).hexdigest()
    assert fitted_on == {
        "path": str(train.resolve()),
        "bytes": train.stat().st_size,
        "sha256": digest,
    }
    pyfunc = mlflow.pyfunc.load_model(result.run.model_uri)
    np.testing.assert_allclose(pyfunc.predict(fresh)["score"].to_numpy(), expected)


def test_an_id_column_named_like_an_ensemble_score_is_refused_before_training(tmp_path):
    table = mixed_table(100, seed=0).rename(columns={"reading_id": "score_vae"})
    table.to_csv(tmp_path / "t.csv", index=False)
    config = tiny_config(
        "data.id_column=score_vae", "tracking.enabled=false", "family.variants=[vae, beta-vae]"
    )
    with pytest.raises(DataError, match="id column 'score_vae' has the name of a column"):
        fit_family(tmp_path / "t.csv", config, project_dir=tmp_path)


def test_without_labels_the_lowest_validation_elbo_wins(tmp_path):
    mixed_table(400, seed=0).drop(columns="is_fault").to_csv(tmp_path / "t.csv", index=False)
    config = tiny_config(
        "data.id_column=reading_id", "tracking.enabled=false", "family.variants=[vae, beta-vae]"
    )
    result = fit_family(tmp_path / "t.csv", config, project_dir=tmp_path)
    assert result.select_by == "criterion"
    table = result.comparison.set_index("variant")
    assert result.chosen == table["validation_neg_elbo_nats"].idxmin()
    assert table.index.tolist() == ["vae", "beta-vae", "ensemble"]


def test_ensemble_ranks_and_round_trips(tmp_path):
    from anomaly_vae import VAEDetector

    train = mixed_table(500, seed=0)
    members = {
        name: VAEDetector(
            tiny_config(
                f"model.name={name}", "data.id_column=reading_id", "data.label_column=is_fault"
            ).detector_config()
        ).fit(train)
        for name in ("vae", "beta-vae")
    }
    ensemble = EnsembleDetector.from_members(members, train)
    test = mixed_table(200, seed=1, anomalies=20)
    scores = ensemble.score_frame(test)
    assert {"score_vae", "score_beta-vae", "ensemble_rank", "score", "is_anomaly"} <= set(scores)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test["is_fault"], scores["score"]) > 0.9
    ensemble.save(tmp_path / "e")
    loaded = load_saved(tmp_path / "e")
    pd.testing.assert_frame_equal(loaded.score_frame(test), scores)
    # The ensemble's threshold can also be chosen on labelled rows, and is saved.
    ensemble.calibrate_threshold(test, test["is_fault"], method="recall", target_recall=0.9)
    assert ensemble.score_frame(test)["is_anomaly"][test["is_fault"] == 1].mean() >= 0.9
    ensemble.save(tmp_path / "e2")
    assert load_saved(tmp_path / "e2").threshold_ == ensemble.threshold_


class _ArrayOnly:
    """An array-like known by ``__array__`` alone (no ``__len__``, no indexing), as
    scikit-learn's ``check_array`` and VAEDetector.fit take."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.array if dtype is None else self.array.astype(dtype)


def test_an_ensemble_takes_the_array_likes_its_members_fit_on():
    """from_members failed on a training object with only __array__ ('object is not
    subscriptable') or a list of rows, which its members' fit took; it converts them as
    fit does, and builds the ensemble it builds on the array."""
    from anomaly_vae import VAEDetector
    from tests.test_images import bars

    table, images = correlated_normal(300, seed=0), bars(100, seed=0)
    for array, others in [
        (table, [_ArrayOnly(table), table.tolist()]),
        (images, [_ArrayOnly(images)]),
    ]:
        members = {
            name: VAEDetector(
                tiny_config("training.epochs=3", f"model.name={name}").detector_config()
            ).fit(_ArrayOnly(array))
            for name in ("vae", "beta-vae")
        }
        expected = EnsembleDetector.from_members(members, array)
        for train in others:
            ensemble = EnsembleDetector.from_members(members, train)
            assert ensemble.threshold_ == expected.threshold_
            for name, reference in expected.references.items():
                np.testing.assert_array_equal(ensemble.references[name], reference)


def test_reference_percentile_keeps_ranking_beyond_the_reference():
    reference = np.array([1.0, 2.0, 3.0, 4.0])
    got = reference_percentile(reference, np.array([0.5, 2.0, 4.0, 6.0, 10.0]))
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 1 + 2 / 3, 1 + 6 / 3])


def test_a_row_a_member_cannot_score_is_flagged_by_the_ensemble():
    # searchsorted put a NaN score after every reference score, at percentile 1.0: averaged
    # with the other members' it fell below the threshold, and the row was passed as normal
    # although the member itself flags it (a NaN score is not shown to be normal).
    reference = np.array([1.0, 2.0, 3.0, 4.0])
    got = reference_percentile(reference, np.array([2.0, np.nan]))
    assert got[0] == 0.5 and np.isnan(got[1])

    class Member:
        def __init__(self, scores):
            self.scores = np.asarray(scores)

        def anomaly_score(self, X, condition=None):
            return self.scores

    members = {"a": Member([1.0, np.nan]), "b": Member([1.0, 1.0])}
    ensemble = EnsembleDetector(members, {"a": reference, "b": reference})
    ensemble.threshold_, ensemble.offset_ = 0.9, -0.9
    np.testing.assert_array_equal(ensemble.predict(np.zeros((2, 1))), [1, -1])


def test_variants_repeat_no_warning_of_the_shared_data(caplog):
    import logging

    from anomaly_vae.calibration import quantile_threshold
    from anomaly_vae.family import _each_message_once

    few_rows = np.arange(20.0)  # too few to resolve a 1% false-positive rate
    with caplog.at_level(logging.WARNING), _each_message_once():
        for _ in range(3):
            quantile_threshold(few_rows, 0.01)
    assert caplog.text.count("cannot resolve") == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            quantile_threshold(few_rows, 0.01)
    assert caplog.text.count("cannot resolve") == 2  # the filter is gone afterwards


def test_a_family_setting_that_cannot_work_stops_before_training(tmp_path, monkeypatch):
    from anomaly_vae import family

    mixed_table(300, seed=0).to_csv(tmp_path / "train.csv", index=False)
    trained = []
    monkeypatch.setattr(family, "_fit_variant", lambda name, *args: trained.append(name))
    config = tiny_config(
        "data.id_column=reading_id", "tracking.enabled=false", "family.select_by=auroc"
    )
    with pytest.raises(ConfigError, match="select_by=auroc needs labelled evaluation data"):
        fit_family(tmp_path / "train.csv", config, project_dir=tmp_path)
    assert trained == []


def test_a_family_of_one_variant_without_a_criterion_keeps_it(tmp_path):
    mixed_table(300, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config(
        "data.id_column=reading_id",
        "tracking.enabled=false",
        "family.variants=[cvae]",
        "data.condition_columns=[machine]",
    )
    result = fit_family(tmp_path / "train.csv", config, project_dir=tmp_path)
    assert result.chosen == "cvae"


def test_the_pipeline_script_is_fit_family(tmp_path, monkeypatch, capsys):
    """Its options, help and output are those of `anomaly-vae fit --family`."""
    from click.testing import CliRunner

    from anomaly_vae.cli import main
    from anomaly_vae.scoring import load_detector
    from tests.conftest import TINY

    monkeypatch.chdir(tmp_path)
    mixed_table(300, seed=0).to_csv("train.csv", index=False)
    settings = [f"--set={item}" for item in (*TINY, "family.variants=[vae,beta-vae]")]
    args = ["train.csv", "--id-col", "reading_id", "--ignore-col", "vibration", *settings]
    code = run_pipeline_script(
        monkeypatch, "family.py", *args, "--model-dir", "m", "--no-tracking", "--quiet"
    )
    assert code == 0
    out = capsys.readouterr()
    assert (
        "chosen: " in out.out and "Family trained in" in out.out and "Model saved to m" in out.out
    )
    assert "Training" not in out.err  # --quiet: no step lines (it printed one per variant)
    assert (
        run_pipeline_script(monkeypatch, "family.py", *args, "--model-dir", "m2", "--no-tracking")
        == 0
    )
    announced = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("Training")
    ]
    assert announced == ["Training vae ...", "Training beta-vae ..."]
    assert "vibration" not in load_detector("m").preprocessor_.feature_names
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # --no-tracking
    assert run_pipeline_script(monkeypatch, "family.py", "--help") == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert help_text.startswith("Usage: python pipelines/family.py [OPTIONS] DATA")
    cli_help = " ".join(CliRunner().invoke(main, ["fit", "--help"]).output.split())
    options = cli_help.split("Options:", 1)[1]
    family_flag = options[options.index("--family") : options.index("--no-tracking")]
    assert help_text.split("Options:", 1)[1] == options.replace(family_flag, "")
    assert run_pipeline_script(monkeypatch, "family.py", "train.csv", "--nope") == 2
    assert "No such option '--nope'" in capsys.readouterr().err


def test_named_variants_that_do_not_suit_the_data_are_left_out_with_a_warning(tmp_path, caplog):
    mixed_table(200, seed=5).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config(
        "data.id_column=reading_id",
        "family.variants=[vae,conv-vae,cvae]",
        "family.ensemble=false",
        "tracking.enabled=false",
        "training.epochs=3",
    )
    with caplog.at_level("WARNING"):
        result = fit_family(tmp_path / "train.csv", config, model_dir=tmp_path / "model")
    assert result.comparison["variant"].tolist() == ["vae"]
    assert (
        "family.variants: left out conv-vae (image data only); cvae (a conditional model: "
        "it needs data.condition_columns)"
    ) in caplog.text


def test_the_first_variant_is_not_charged_for_a_one_off_import(tmp_path):
    # In a fresh process, as a user's fit is: the first Adam optimizer imports
    # torch._dynamo (a one-off cost, seconds), which the first variant's fit time used to
    # include. Comparing the two fit times failed on a loaded machine (2.36 s against
    # 0.10 s); so this asks instead, at each clock read that times a variant (family's
    # time.perf_counter, called from _fit_variant), whether the import is done already.
    import json
    import subprocess
    import sys

    mixed_table(300, seed=0).drop(columns=["reading_id", "is_fault"]).to_csv(
        tmp_path / "train.csv", index=False
    )
    script = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from anomaly_vae import family\n"
        "from anomaly_vae.config import load_config\n"
        "readings = []\n"
        "class Clock:  # family's time module, each perf_counter read recorded\n"
        "    def __getattr__(self, name):\n"
        "        return getattr(time, name)\n"
        "    def perf_counter(self):\n"
        "        caller = sys._getframe(1).f_code.co_name\n"
        "        readings.append([caller, 'torch._dynamo' in sys.modules])\n"
        "        return time.perf_counter()\n"
        "family.time = Clock()\n"
        "config = load_config(sys.argv[2], ['tracking.enabled=false', "
        "'training.progress=false', 'family.variants=[vae,beta-vae]', "
        "'family.ensemble=false', 'training.epochs=2'])\n"
        "before = 'torch._dynamo' in sys.modules\n"
        "family.fit_family(sys.argv[1], config, project_dir=Path(sys.argv[3]))\n"
        "print(json.dumps({'before': before, 'readings': readings}))\n"
    )
    fast = Path(__file__).parents[1] / "configs" / "fast.yaml"
    ran = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "train.csv"), str(fast), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(ran.stdout.splitlines()[-1])
    # Else no variant would pay for the import, and this would test nothing.
    assert not seen["before"], "torch._dynamo is imported before fit_family: test elsewhere"
    # Each variant's start and end, vae's then beta-vae's: the import done at every one.
    timing = [imported for caller, imported in seen["readings"] if caller == "_fit_variant"]
    assert timing == [True] * 4, seen["readings"]


@pytest.fixture(scope="module")
def two_ensembles():
    """Two ensembles of the same variants on one table (other seeds), quick to fit."""
    from anomaly_vae import VAEDetector

    train = pd.DataFrame(correlated_normal(300, seed=0), columns=list("abcdef"))

    def ensemble(seed: int) -> EnsembleDetector:
        members = {
            name: VAEDetector(
                tiny_config(
                    f"model.name={name}", "training.epochs=5", f"training.seed={seed}"
                ).detector_config()
            ).fit(train)
            for name in ("vae", "beta-vae")
        }
        return EnsembleDetector.from_members(members, train)

    return train, ensemble(0), ensemble(7)


def test_an_ensemble_names_its_input_as_the_detector_does(two_ensembles, tmp_path):
    _, ensemble, _ = two_ensembles
    assert ensemble.n_features_in_ == 6
    assert ensemble.feature_names_in_.tolist() == list("abcdef")
    loaded = load_saved(ensemble.save(tmp_path / "e"))
    assert loaded.n_features_in_ == 6 and loaded.feature_names_in_.tolist() == list("abcdef")


def test_an_ensemble_is_built_only_from_members_fit_on_one_split_of_its_rows(
    two_ensembles, tmp_path
):
    """from_members takes the first member's held-out rows as every member's reference:
    members fit with another seed (whose training rows are among them) or a train of
    more rows gave a threshold silently wrong; fewer rows failed with an IndexError, a
    loaded member (no split kept) with an AttributeError. Each is a DataError now."""
    from anomaly_vae import VAEDetector

    train, first, other = two_ensembles
    mixed = {"vae": first.members["vae"], "beta-vae": other.members["beta-vae"]}
    with pytest.raises(DataError, match="'vae' and 'beta-vae' were fit with different splits"):
        EnsembleDetector.from_members(mixed, train)
    for rows in (train.head(100), pd.concat([train, train.head(10)])):
        with pytest.raises(DataError, match=f"train has {len(rows)} rows and the members were"):
            EnsembleDetector.from_members(first.members, rows)
    loaded = {"vae": VAEDetector.load(first.members["vae"].save(tmp_path / "m"))}
    with pytest.raises(DataError, match="'vae' has no record of the rows it trained on"):
        EnsembleDetector.from_members(loaded, train)
    assert EnsembleDetector.from_members(first.members, train).threshold_ == first.threshold_


def test_an_ensemble_save_cut_short_leaves_no_ensemble_that_loads(
    two_ensembles, tmp_path, monkeypatch
):
    from anomaly_vae import VAEDetector
    from anomaly_vae.errors import ModelNotFoundError

    train, first, second = two_ensembles
    original = VAEDetector.save

    def interrupted_at_the_second_member(self, path):
        if path.name == "beta-vae":
            raise KeyboardInterrupt  # Ctrl-C, after the first member was written
        return original(self, path)

    # Over an ensemble saved there before: its description once stayed, and the folder
    # loaded the new vae member under the old references and threshold, silently.
    first.save(tmp_path / "model")
    monkeypatch.setattr(VAEDetector, "save", interrupted_at_the_second_member)
    with pytest.raises(KeyboardInterrupt):
        second.save(tmp_path / "model")
    with pytest.raises(ModelNotFoundError, match="not a saved anomaly-vae model"):
        load_saved(tmp_path / "model")
    # A folder the save created is removed again: no half-written model is left.
    with pytest.raises(KeyboardInterrupt):
        second.save(tmp_path / "new" / "model")
    assert not (tmp_path / "new" / "model").exists()
    monkeypatch.setattr(VAEDetector, "save", original)
    loaded = load_saved(second.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.anomaly_score(train), second.anomaly_score(train))


def test_a_save_leaves_in_its_folder_only_the_model_it_wrote(two_ensembles, tmp_path):
    """An ensemble saved over a detector left detector.json and weights.pt, which
    VAEDetector.load read (load_saved, the ensemble); over an ensemble of other members,
    the old members' folders. A save now removes an earlier model's files, not others."""
    from anomaly_vae import VAEDetector
    from anomaly_vae.errors import ModelNotFoundError

    train, first, _ = two_ensembles
    folder = tmp_path / "model"
    first.members["vae"].save(folder)
    (folder / "notes.txt").write_text("a user's file\n")
    first.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["ensemble.json", "members", "notes.txt"]
    with pytest.raises(ModelNotFoundError, match=r"holds a family ensemble.*load_saved"):
        VAEDetector.load(folder)
    np.testing.assert_allclose(load_saved(folder).anomaly_score(train), first.anomaly_score(train))
    EnsembleDetector.from_members({"beta-vae": first.members["beta-vae"]}, train).save(folder)
    assert [p.name for p in (folder / "members").iterdir()] == ["beta-vae"]
    first.members["vae"].save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["detector.json", "notes.txt", "weights.pt"]
    with pytest.raises(ModelNotFoundError, match=r"ensemble: it holds one detector"):
        EnsembleDetector.load(folder)
    assert (folder / "notes.txt").read_text() == "a user's file\n"
    # A user's own members/ folder, holding other files, is no ensemble's: left alone.
    (folder / "members").mkdir()
    (folder / "members" / "team.csv").write_text("name\nada\n")
    first.members["vae"].save(folder)
    assert (folder / "members" / "team.csv").read_text() == "name\nada\n"


def test_a_large_tracked_family_says_each_step_as_a_fit_does(tmp_path, monkeypatch, capsys):
    """A family fit of a large table named each variant's steps but not the ensemble's
    nor the seconds of MLflow logging that follow (a single fit says 'logging the run to
    MLflow ...'): from PHASE_LINE_ROWS rows (here 0) lines say so too."""
    from anomaly_vae import training

    monkeypatch.setattr(training, "PHASE_LINE_ROWS", 0, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mixed_table(300, seed=0).to_csv(tmp_path / "train.csv", index=False)
    config = tiny_config(
        "data.id_column=reading_id", "family.variants=[vae,beta-vae]", "training.epochs=3"
    )
    config.training.progress = True
    result = fit_family(tmp_path / "train.csv", config, project_dir=tmp_path)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.endswith(" ...")]
    assert result.run is not None
    calibrating = f"calibrating the threshold on {result.rows['calibration']} held-out rows ..."
    assert lines[-3:] == [
        calibrating,  # the last variant's
        "building the ensemble of 2 variants ...",
        "logging the family to MLflow (4 runs) ...",  # its own, 2 variants, the ensemble
    ]
    assert lines.count(calibrating) == 2  # one a variant


def test_family_register_keeps_the_champion_off_a_threshold_that_asks_for_a_check(
    tmp_path, monkeypatch
):
    # fit --family --register moved the alias to the chosen model whatever its threshold,
    # as a single fit did: an F1 threshold chosen on mislabelled rows went live at once.
    from click.testing import CliRunner
    from mlflow import MlflowClient

    from anomaly_vae.cli import main

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    mislabelled_table(300, seed=1).to_csv("mislabelled.csv", index=False)
    arguments = ["fit", "mislabelled.csv", "--family", "--label-col", "is_fault"]
    arguments += ["--id-col", "reading_id", "--quiet", "--register"]
    settings = [*TINY, "training.epochs=3", "tracking.log_views=false"]
    settings += ["calibration.method=f1", "family.variants=[vae,beta-vae]"]
    result = CliRunner().invoke(main, [*arguments, *(a for s in settings for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    assert "Check before you use it: it flags more than 5 times" in result.output
    assert "Alias 'champion' left unset, as the threshold asks for a check; to move it to " in (
        result.output
    )
    client = MlflowClient(store)
    assert client.get_registered_model("anomaly-vae").aliases == {}
    version = client.get_model_version("anomaly-vae", "1")
    assert version.tags["needs_check"].endswith(
        "; --register did not move the champion alias to it"
    )
    parent = client.get_run(version.run_id)
    assert parent.info.run_name == "family"
    assert parent.data.params["tracking.register_champion"] == "False"
